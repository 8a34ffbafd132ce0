"""One attempt to place an order at one broker, classified.

    confirmed   the broker acknowledged: the order lives there
    rejected    the broker said no: nothing lives there; the next broker may have it
    denied      we did not send it (circuit open, no rate-limit capacity before the deadline,
                not connected): nothing lives there; the next broker may have it
    unknown     timeout, disconnect, 5xx, 429, a cancelled scope: the order may live there.
                Never resend; `nursery.reconcile` finds out first.

The attempt runs under a cancel scope whose deadline comes from the order's urgency. Outcomes
feed the broker's circuit breaker (only signs of an unwell broker count as failures: a rejection
of a valid order is a healthy answer) and its rate limiter (a 429 backs it off).
"""

from __future__ import annotations

import logging
import time
from enum import StrEnum

import msgspec
import trio

from adapters.base import (
    BrokerAck,
    BrokerRejected,
    ConnectionLost,
    DeniedLocally,
    OutcomeUnknown,
    RateLimited,
    SubmitRequest,
)
from api.enums import IssueType
from nursery.brokers import BrokerHandle

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"
    DENIED = "DENIED"
    UNKNOWN = "UNKNOWN"


class Placement(msgspec.Struct, frozen=True):
    outcome: Outcome
    reason: str = ""
    ack: BrokerAck | None = None
    #: Time from the grant (after any rate-limit wait) to the broker's answer, or to giving up.
    latency_ms: float = 0.0
    #: The attempt ended at its deadline without an answer (the broker may be hanging).
    timed_out: bool = False

    @property
    def nothing_placed(self) -> bool:
        """The broker provably holds no order from this attempt."""
        return self.outcome in (Outcome.REJECTED, Outcome.DENIED)


async def place(handle: BrokerHandle, request: SubmitRequest, deadline: float) -> Placement:
    """Try `request` at `handle`'s broker until the absolute trio time `deadline`."""
    if not handle.breaker.allow():
        return Placement(Outcome.DENIED, f"circuit breaker {handle.breaker.state.value.lower()}")
    verdict = False  # whether the breaker heard how this attempt went
    handle.in_flight += 1
    started = time.perf_counter()

    def elapsed() -> float:
        return (time.perf_counter() - started) * 1000.0

    try:
        try:
            await handle.limiter.acquire(deadline)
        except DeniedLocally as exc:
            return Placement(Outcome.DENIED, exc.reason)
        started = time.perf_counter()
        with trio.move_on_at(deadline) as scope:
            try:
                ack = await handle.adapter.submit(request)
            except BrokerRejected as exc:
                handle.breaker.record_success()
                verdict = True
                return Placement(Outcome.REJECTED, exc.reason, latency_ms=elapsed())
            except DeniedLocally as exc:
                return Placement(Outcome.DENIED, exc.reason)
            except RateLimited as exc:
                handle.limiter.penalize(exc.retry_after)
                handle.report_issue(IssueType.RATE_LIMIT, exc.reason)
                return Placement(Outcome.UNKNOWN, f"rate limited: {exc.reason}", latency_ms=elapsed())
            except OutcomeUnknown as exc:
                handle.breaker.record_failure()
                verdict = True
                kind = IssueType.CONNECTIVITY if isinstance(exc, ConnectionLost) else IssueType.API_ERROR
                handle.report_issue(kind, exc.reason)
                return Placement(Outcome.UNKNOWN, exc.reason, latency_ms=elapsed())
            except Exception as exc:  # an adapter bug must not look like a rejection
                log.exception("adapter submit failed", extra={"broker_id": handle.broker_id})
                handle.breaker.record_failure()
                verdict = True
                handle.report_issue(IssueType.API_ERROR, f"adapter error: {exc!r}")
                return Placement(Outcome.UNKNOWN, f"adapter error: {exc!r}", latency_ms=elapsed())
        if scope.cancelled_caught:
            handle.breaker.record_failure()
            verdict = True
            handle.report_issue(IssueType.CONNECTIVITY, "no answer to an order within the attempt deadline")
            return Placement(
                Outcome.UNKNOWN,
                "no answer from the broker within the attempt deadline",
                latency_ms=elapsed(),
                timed_out=True,
            )
        took = elapsed()
        handle.breaker.record_success()
        handle.limiter.record_success()
        verdict = True
        handle.record_latency(took)
        return Placement(Outcome.CONFIRMED, ack=ack, latency_ms=took)
    finally:
        handle.in_flight -= 1
        if not verdict:
            handle.breaker.release_probe()
