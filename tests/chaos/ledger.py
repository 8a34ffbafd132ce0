"""What the chaos tests count, and where they read it: PostgreSQL (the daemon's record), the
JetStream stream (what subscribers can replay) and the OMS's own traces (what it was told).

The figures of a scenario (`order_figures`):

    sent              orders the OMS sent at least once
    answered          orders with a final answer at the OMS (ACCEPTED / REJECTED / PENDING)
    unanswered        sent and without a final answer when the OMS gave up (its deadline)
    stranded          claimed orders (a routed_orders row) still without a recorded answer
                      (response NULL) at the end: invariant 7 says this never lasts
    lost              answers the database does not hold: the OMS was told X, and routed_orders
                      has no row, another answer, or no execution behind an ACCEPTED/PENDING;
                      with a broker outside the daemons (tests/chaos/broker.py), also answers the
                      broker contradicts (REJECTED while it holds the order, ACCEPTED while it
                      has none)
    duplicated        orders of which more than one attempt was acknowledged by a broker
                      (broker order id or fills): sent twice; with a broker outside the daemons,
                      also orders of which the broker holds more than one
    pending_attempts  attempts still PENDING at the end: an outcome nobody reconciled
    updates           execution_events rows (every state change, with its Nats-Msg-Id)
    missing_updates   rows whose msg id is not in the stream BROKER_EXECUTIONS
    unpublished       rows the publisher has not marked published
    phantom_updates   stream messages whose msg id no row has (published, never committed)
    unreported        (extra, not a promise of issue 10) executions finished with fills that have
                      no TCA report (execution_reports row): GetTCA then recomputes from the
                      tapes, and the routing's peer statistics miss them
    resumed_s         seconds from the fault's end (the server or daemon back; for a dead peer,
                      its death) to the first final answer after it: the service answers again
    recovery_s        seconds from the fault's end until every order the OMS had sent by then
                      (in flight at the fault, or refused during it) has its final answer: what
                      the fault cost the OMS, retry backoff included, not the rest of the flood
                      (None: some of those orders were never answered)
    drain_s           (extra) seconds from the fault's end to the flood's last answer
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats
import nats.js.api
import psycopg

from tests.support.flood import Flood, Trace
from tests.support.polling import NotReached, poll_until

STREAM = "BROKER_EXECUTIONS"
T = TypeVar("T")


@dataclass
class Attempt:
    order_id: str
    attempt: int
    execution_id: str
    broker_id: str
    status: str
    broker_order_id: str | None
    filled_quantity: float
    client_order_id: str

    @property
    def held_by_broker(self) -> bool:
        """A broker acknowledged this attempt (an order lives, or lived, there)."""
        return self.broker_order_id is not None or self.filled_quantity > 0


@dataclass
class Ledger:
    """PostgreSQL's side of the story, read once at the end of a scenario."""

    claims: dict[str, Any]  # order id -> recorded response (None: no answer recorded)
    attempts: list[Attempt]
    events: dict[str, bool]  # msg id -> published
    event_rows: int
    unreported: list[str]  # execution ids: finished with fills, no execution_reports row

    def attempts_by_order(self) -> dict[str, list[Attempt]]:
        grouped: dict[str, list[Attempt]] = {}
        for attempt in self.attempts:
            grouped.setdefault(attempt.order_id, []).append(attempt)
        return grouped

    @property
    def stranded(self) -> list[str]:
        return sorted(order_id for order_id, response in self.claims.items() if response is None)

    @property
    def pending_attempts(self) -> list[Attempt]:
        return [a for a in self.attempts if a.status == "PENDING"]

    @property
    def duplicated(self) -> dict[str, list[Attempt]]:
        return {
            order_id: attempts
            for order_id, attempts in self.attempts_by_order().items()
            if sum(a.held_by_broker for a in attempts) > 1
        }


def read_ledger(database_url: str) -> Ledger:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        claims = {
            order_id: response
            for order_id, response in conn.execute("SELECT order_id, response FROM routed_orders")
        }
        attempts = [
            Attempt(order_id, attempt, execution_id, broker, status, held_as, float(filled), client)
            for order_id, attempt, execution_id, broker, status, held_as, filled, client in conn.execute(
                "SELECT order_id, attempt, id, broker_id, status, broker_order_id, filled_quantity,"
                " client_order_id FROM broker_orders ORDER BY order_id, attempt"
            )
        ]
        events = {
            msg_id: published
            for msg_id, published in conn.execute(
                "SELECT e.execution_id || ':' || e.sequence, u.execution_id IS NULL FROM execution_events e"
                " LEFT JOIN unpublished_events u USING (execution_id, sequence)"
            )
        }
        (rows,) = conn.execute("SELECT count(*) FROM execution_events").fetchone() or (0,)
        unreported = [execution_id for (execution_id,) in conn.execute(UNREPORTED)]
    return Ledger(claims, attempts, events, int(rows), unreported)


#: Executions finished with fills and without a TCA report (sql/reports.py load_unreported's
#: condition, at any time).
UNREPORTED = (
    "SELECT bo.id FROM broker_orders bo"
    " WHERE bo.status IN ('FILLED', 'CANCELED', 'EXPIRED', 'REJECTED') AND bo.filled_quantity > 0"
    " AND NOT EXISTS (SELECT 1 FROM execution_reports r WHERE r.id = bo.id)"
    " ORDER BY bo.id"
)


def unreported_count(database_url: str) -> int:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        return len(conn.execute(UNREPORTED).fetchall())


def poll(check: Callable[[], T | None], timeout: float, interval: float = 0.2) -> tuple[T | None, float]:
    """Call `check` until it returns something other than None, at most `timeout` seconds
    (errors such as a database still down count as "not yet"). Returns (result or None, seconds
    waited): a scenario judges a timeout itself and reports how long recovery took.

    The waiting is `tests.support.polling.poll_until`'s (the one polling implementation)."""
    started = time.monotonic()
    try:
        result: T | None = poll_until(
            check,
            _present,
            what="chaos ledger check",
            timeout=timeout,
            interval=interval,
            retry_on=(psycopg.OperationalError, OSError),
        )
    except NotReached:
        result = None
    return result, time.monotonic() - started


def _present(value: object) -> bool:
    return value is not None


def settled(database_url: str) -> bool | None:
    """True once every claim has an answer, no attempt is PENDING and the outbox is published
    (None until then: for `poll`)."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM routed_orders WHERE response IS NULL),"
            " (SELECT count(*) FROM broker_orders WHERE status = 'PENDING'),"
            " (SELECT count(*) FROM unpublished_events)"
        ).fetchone()
    return True if row is not None and not any(row) else None


def stream_msg_ids(nats_url: str, stream: str = STREAM, timeout: float = 20.0) -> list[str]:
    """The Nats-Msg-Id of every message the stream holds (in stream order)."""
    return asyncio.run(_stream_msg_ids(nats_url, stream, timeout))


async def _stream_msg_ids(nats_url: str, stream: str, timeout: float) -> list[str]:
    nc = await nats.connect(servers=[nats_url], connect_timeout=5)
    try:
        js = nc.jetstream()
        # Right after a cluster node dies, JetStream's API may not answer until the survivors
        # have elected new leaders (seconds): ask again until `timeout`, then let it raise.
        deadline = time.monotonic() + timeout
        while True:
            try:
                reading = await _read_stream(js, stream)
                break
            except (TimeoutError, nats.errors.Error):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        if reading is None:
            return []
        ids, expected, done, sub = reading
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"read {len(ids)} of the {expected} messages of stream {stream} in {timeout}s"
            ) from None
        finally:
            await sub.unsubscribe()
        return ids
    finally:
        await nc.close()


async def _read_stream(js: Any, stream: str) -> tuple[list[str], int, asyncio.Event, Any] | None:
    """Start reading every message of `stream` (None if it is empty): the Nats-Msg-Ids read so
    far, how many there are, an event set once all are read, and the subscription."""
    info = await js.stream_info(stream)
    expected = info.state.messages
    if expected == 0:
        return None
    ids: list[str] = []
    done = asyncio.Event()

    async def on_message(msg: Any) -> None:
        ids.append((msg.headers or {}).get("Nats-Msg-Id", ""))
        if len(ids) >= expected:
            done.set()

    subject = (info.config.subjects or [">"])[0]
    sub = await js.subscribe(
        subject,
        stream=stream,
        cb=on_message,
        ordered_consumer=True,
        deliver_policy=nats.js.api.DeliverPolicy.ALL,
    )
    return ids, expected, done, sub


def execution_attempts_held(flood: Flood) -> dict[str, int]:
    """From a GetExecution flood: per order, how many of its attempts have a broker order id."""
    held: dict[str, int] = {}
    for key, trace in flood.traces.items():
        if trace.error_code is None and isinstance(trace.answer, dict):
            attempts = trace.answer.get("attempts") or []
            held[key] = sum(1 for a in attempts if a.get("brokerOrderId"))
    return held


@dataclass
class Figures:
    """One scenario's figures (see the module docstring); `extra` holds scenario-specific ones."""

    scenario: str
    sent: int = 0
    answered: int = 0
    unanswered: int = 0
    stranded: int = 0
    lost: int = 0
    duplicated: int = 0
    pending_attempts: int = 0
    updates: int = 0
    missing_updates: int = 0
    unpublished: int = 0
    phantom_updates: int = 0
    resumed_s: float | None = None
    recovery_s: float | None = None
    answers: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def as_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=False, default=str)


def lost_answers(flood: Flood, ledger: Ledger) -> list[str]:
    """Orders whose final answer at the OMS the database does not hold."""
    by_id = {a.execution_id: a for a in ledger.attempts}
    lost: list[str] = []
    for key, trace in flood.traces.items():
        status = trace.status
        if status is None:
            continue
        recorded = ledger.claims.get(key)
        if not isinstance(recorded, dict) or recorded.get("status") != status:
            lost.append(f"{key}: told {status}, recorded {recorded and recorded.get('status')}")
            continue
        if recorded.get("routingId") != trace.answer.get("routingId"):
            lost.append(f"{key}: told routingId {trace.answer.get('routingId')}, recorded another")
            continue
        if status in ("ACCEPTED", "PENDING"):
            execution = by_id.get(trace.answer.get("executionId", ""))
            if execution is None:
                lost.append(f"{key}: told {status} with an execution the database does not have")
            elif status == "ACCEPTED" and execution.broker_order_id != trace.answer.get("brokerOrderId"):
                lost.append(
                    f"{key}: told brokerOrderId {trace.answer.get('brokerOrderId')}, recorded another"
                )
    return lost


def order_figures(
    scenario: str,
    floods: Sequence[Flood],
    ledger: Ledger,
    stream_ids: list[str] | None,
    *,
    restored_at: float | None,
) -> Figures:
    """The figures of RouteOrder floods (the first is the one the fault hit; later ones are the
    OMS sending the same orders again) against the end state (see the module docstring). An
    order counts as answered when the last flood that sent it got a final answer; every answer
    of every flood must be what the database holds. `stream_ids` None: the stream could not be
    read (every update then counts as missing)."""
    figures = Figures(scenario)
    last_trace: dict[str, Trace] = {}
    for flood in floods:
        for key, trace in flood.traces.items():
            if trace.first_sent is not None:
                last_trace[key] = trace
    traces = list(last_trace.values())
    figures.sent = len(traces)
    figures.answered = sum(1 for t in traces if t.status is not None)
    figures.unanswered = figures.sent - figures.answered
    figures.answers = dict(Counter(t.status or f"error {t.error_code}" for t in traces if t.answered))
    stranded = ledger.stranded
    figures.stranded = len(stranded)
    lost = sorted({problem for flood in floods for problem in lost_answers(flood, ledger)})
    figures.lost = len({problem.split(":", 1)[0] for problem in lost})
    duplicated = ledger.duplicated
    figures.duplicated = len(duplicated)
    pending = ledger.pending_attempts
    figures.pending_attempts = len(pending)
    figures.updates = ledger.event_rows
    in_stream = set(stream_ids or [])
    missing = [msg_id for msg_id in ledger.events if msg_id not in in_stream]
    figures.missing_updates = len(missing)
    figures.unpublished = sum(1 for published in ledger.events.values() if not published)
    phantom = [msg_id for msg_id in in_stream if msg_id not in ledger.events]
    figures.phantom_updates = len(phantom)
    if restored_at is not None:
        _recovery(figures, floods[0], restored_at)
    figures.requests = sum(flood.requests for flood in floods)
    reasons: Counter[str] = Counter()
    for flood in floods:
        reasons.update(flood.failure_reasons())
    figures.failure_reasons = dict(reasons.most_common(8))
    figures.extra["stream_messages"] = len(stream_ids) if stream_ids is not None else None
    figures.extra["unreported"] = len(ledger.unreported)
    figures.examples = {
        "unanswered": [repr(t) for t in traces if t.status is None][:5],
        "stranded": stranded[:5],
        "lost": lost[:5],
        "duplicated": [
            f"{order_id}: "
            + ", ".join(f"#{a.attempt} {a.broker_id} {a.status} {a.broker_order_id}" for a in attempts)
            for order_id, attempts in list(duplicated.items())[:5]
        ],
        "pending_attempts": [f"{a.order_id} #{a.attempt} {a.broker_id}" for a in pending[:5]],
        "missing_updates": missing[:5],
        "phantom_updates": phantom[:5],
        "unreported": ledger.unreported[:5],
    }
    return figures


def _recovery(figures: Figures, hit: Flood, restored_at: float) -> None:
    """`resumed_s`, `recovery_s` and `drain_s` of the flood the fault hit (module docstring)."""
    traces = hit.traces.values()
    after = [t.answered_at for t in traces if t.answered_at is not None and t.answered_at >= restored_at]
    if after:
        figures.resumed_s = round(min(after) - restored_at, 2)
    hit_by_fault = [t for t in traces if t.first_sent is not None and t.first_sent <= restored_at]
    if all(t.status is not None for t in hit_by_fault):
        last = max((t.answered_at or restored_at for t in hit_by_fault), default=restored_at)
        figures.recovery_s = round(max(0.0, last - restored_at), 2)
    if hit.sent and all(t.status is not None for t in traces if t.first_sent is not None):
        figures.extra["drain_s"] = round(max(0.0, (hit.last_answer_at() or restored_at) - restored_at), 2)
