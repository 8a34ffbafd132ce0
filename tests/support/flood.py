"""An OMS under stress, for the chaos tests: many requests over NATS, a bounded number in flight,
each retried with the *same* payload (same orderId: the idempotency key) until it gets a final
answer, the way an OMS must behave when the gateway, its database or NATS fail under it.

What counts as final, and what is retried (PITFALLS.md: "no responders" after a reconnect is
retryable; so is every 503, "database unavailable; retry with the same orderId" included):

    reply without an error header      final: the answer (RouteOrder: ACCEPTED, REJECTED, PENDING)
    error reply 400, 404, ...          final: an error (the request itself is wrong)
    error reply 500, 503               retried, with backoff
    no responders, timeout,            retried, with backoff
    connection errors

Runs nats-py on its own asyncio loop in a thread of its own, so a synchronous (or Trio) test can
inject faults while the flood goes on and wait for it with deadlines. Requests due for a retry
go before orders never sent (oldest first), as an OMS working through its backlog would.

Every trace keeps the number of requests, the reasons of the failures, when the answer came
(time.monotonic()) and the answer itself.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors

from api import subjects
from tests.support.polling import NotReached, poll_until

#: Error codes an OMS retries (same payload): the service could not complete the request now.
RETRYABLE_CODES = frozenset({500, 503})


@dataclass
class Trace:
    """One request's life: sent until answered (or given up)."""

    key: str
    payload: bytes
    seq: int
    first_sent: float | None = None
    answered_at: float | None = None
    #: The final reply's body (RouteOrder: the OrderRoutingResponse) and its error code (None:
    #: not an error reply).
    answer: Any = None
    error_code: int | None = None
    requests: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    last_failure: str | None = None
    backoff: float = 0.0

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def status(self) -> str | None:
        """RouteOrder's `status` of a final non-error answer."""
        if self.answered and self.error_code is None and isinstance(self.answer, dict):
            status = self.answer.get("status")
            return str(status) if status is not None else None
        return None

    def __repr__(self) -> str:
        state = f"answered {self.status or self.error_code}" if self.answered else "unanswered"
        return f"<Trace {self.key} {state} requests={self.requests} last_failure={self.last_failure!r}>"


class Flood:
    """Send `payloads` (key -> JSON-able request) on `subject`, at most `in_flight` requests at
    a time, retrying each until final or until the flood's deadline (`finish_by`, default
    `give_up_after` seconds after `start`). Use:

        flood = Flood(url, orders).start()
        flood.wait_until(lambda: flood.answered >= 100, 30, "100 answers")
        ... inject a fault ...
        flood.finish_by(time.monotonic() + 30)
        flood.join()
    """

    def __init__(
        self,
        nats_url: str,
        payloads: Iterable[tuple[str, Any]],
        *,
        subject: str = subjects.ROUTE_ORDER,
        in_flight: int = 24,
        request_timeout: float = 5.0,
        min_backoff: float = 0.1,
        max_backoff: float = 1.0,
        give_up_after: float = 180.0,
        seed: int = 7,
    ) -> None:
        self.nats_url = nats_url
        self.subject = subject
        self.in_flight = in_flight
        self.request_timeout = request_timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.give_up_after = give_up_after
        self.traces: dict[str, Trace] = {}
        for seq, (key, payload) in enumerate(payloads):
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.traces[key] = Trace(key, data, seq)
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.error: BaseException | None = None
        self._deadline: float | None = None
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._thread_main, name="chaos-oms", daemon=True)

    def __repr__(self) -> str:
        return (
            f"<Flood {self.subject} sent={self.sent}/{len(self.traces)} answered={self.answered} "
            f"requests={self.requests}>"
        )

    # --- control (from the test's thread) -----------------------------------------------------

    def start(self) -> Flood:
        self.started_at = time.monotonic()
        if self._deadline is None:
            self._deadline = self.started_at + self.give_up_after
        self._thread.start()
        return self

    def finish_by(self, deadline: float) -> None:
        """Give up on what is still unanswered at `deadline` (time.monotonic())."""
        with self._lock:
            self._deadline = deadline

    def join(self, timeout: float | None = None) -> None:
        """Wait for the flood to end: everything final, or the deadline passed (then the
        unanswered traces keep their last failure)."""
        if timeout is None:
            assert self._deadline is not None
            timeout = max(0.0, self._deadline - time.monotonic()) + self.request_timeout + 10.0
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the flood did not end within {timeout:.0f}s: {self!r}")
        if self.error is not None:
            raise RuntimeError(f"the flood failed: {self.error!r}") from self.error

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `predicate` until it holds (`tests.support.polling.poll_until`); fail with `what`
        and the flood's state after `timeout` (TimeoutError), at once if the flood failed."""

        def holds() -> bool:
            if self.error is not None:
                raise RuntimeError(f"the flood failed while waiting for {what}: {self.error!r}")
            return predicate()

        try:
            poll_until(holds, what=what, timeout=timeout, interval=0.02)
        except NotReached as exc:
            raise TimeoutError(f"{exc} ({self!r})") from None

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    # --- figures ------------------------------------------------------------------------------

    @property
    def sent(self) -> int:
        return sum(1 for t in self.traces.values() if t.first_sent is not None)

    @property
    def answered(self) -> int:
        return sum(1 for t in self.traces.values() if t.answered)

    @property
    def requests(self) -> int:
        return sum(t.requests for t in self.traces.values())

    def unanswered(self) -> list[Trace]:
        return [t for t in self.traces.values() if not t.answered]

    def failure_reasons(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for trace in self.traces.values():
            total.update(trace.failures)
        return total

    def last_answer_at(self) -> float | None:
        times = [t.answered_at for t in self.traces.values() if t.answered_at is not None]
        return max(times) if times else None

    # --- the OMS (its own asyncio loop) --------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported to the test by join()/wait_until()
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    async def _run(self) -> None:
        nc = await nats.connect(
            servers=[self.nats_url],
            name="chaos-oms",
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            connect_timeout=2,
        )
        try:
            ready: list[tuple[int, str]] = [(t.seq, t.key) for t in self.traces.values()]
            heapq.heapify(ready)
            waiting: list[tuple[float, int, str]] = []  # (due, seq, key): retries after backoff
            workers = [asyncio.create_task(self._worker(nc, ready, waiting)) for _ in range(self.in_flight)]
            await asyncio.gather(*workers)
        finally:
            await nc.close()

    def _past_deadline(self) -> bool:
        with self._lock:
            deadline = self._deadline
        return deadline is not None and time.monotonic() > deadline

    async def _worker(
        self, nc: Any, ready: list[tuple[int, str]], waiting: list[tuple[float, int, str]]
    ) -> None:
        while not self._past_deadline():
            now = time.monotonic()
            while waiting and waiting[0][0] <= now:
                _, seq, key = heapq.heappop(waiting)
                heapq.heappush(ready, (seq, key))
            if not ready:
                if not waiting and all(t.answered for t in self.traces.values()):
                    return
                await asyncio.sleep(0.01)  # a retry is not due yet, or another worker holds one
                continue
            _, key = heapq.heappop(ready)
            trace = self.traces[key]
            if await self._request(nc, trace):
                continue
            trace.backoff = min(self.max_backoff, max(self.min_backoff, trace.backoff * 2))
            due = time.monotonic() + trace.backoff * self._random.uniform(0.8, 1.2)
            heapq.heappush(waiting, (due, trace.seq, key))

    async def _request(self, nc: Any, trace: Trace) -> bool:
        """One request; True when its reply is final."""
        sent = time.monotonic()
        if trace.first_sent is None:
            trace.first_sent = sent
        trace.requests += 1
        try:
            msg = await nc.request(self.subject, trace.payload, timeout=self.request_timeout)
        except nats.errors.NoRespondersError:
            return self._failed(trace, "no responders")
        except (TimeoutError, nats.errors.TimeoutError):
            return self._failed(trace, "timeout")
        except nats.errors.Error as exc:
            return self._failed(trace, f"nats: {type(exc).__name__}")
        headers = msg.headers or {}
        code_text = headers.get("Nats-Service-Error-Code")
        code = int(code_text) if code_text else None
        body = json.loads(msg.data) if msg.data else None
        if code in RETRYABLE_CODES:
            message = body.get("message", "") if isinstance(body, dict) else ""
            return self._failed(trace, f"{code} {_reason(message)}")
        trace.answer, trace.error_code = body, code
        trace.answered_at = time.monotonic()
        return True

    @staticmethod
    def _failed(trace: Trace, reason: str) -> bool:
        trace.failures[reason] += 1
        trace.last_failure = reason
        return False


def _reason(message: str) -> str:
    """An error message without the order id in it, so that failures group by kind."""
    head = message.split(";", 1)[0]
    return " ".join(word for word in head.split() if not (word.startswith("'") and word.endswith("'")))
