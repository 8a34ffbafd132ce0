"""Broker connections: one child nursery per broker under a supervisor.

Each broker's `adapter.run` (connect, authenticate, stream executions) lives in its own nursery.
When it fails, only that broker restarts — with capped exponential backoff and jitter — while the
other brokers and the daemon keep serving. `BrokerHandle` holds what the rest of the daemon
reads about a broker: connection status, issues, in-flight orders and measured latency.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import trio

from adapters.base import BrokerAdapter
from api.contracts import BrokerInfo, BrokerIssue, BrokerStatus, LatencyStats
from api.enums import BrokerListStatus, ConnectionStatus, IssueType
from api.events import AnyBrokerEvent
from nursery.breaker import BreakerState, CircuitBreaker
from nursery.ratelimit import RateLimiter
from nursery.uptime import uptime_percent
from routing.select import BrokerCandidate
from sql.records import BrokerRecord, StatusChange

log = logging.getLogger(__name__)

LATENCY_WINDOW = 1000
#: The headroom of a broker with full windows that can still take an order before its deadline.
QUEUED_HEADROOM = 0.001
DAY = timedelta(hours=24)


def _now() -> datetime:
    return datetime.now(UTC)


class BrokerHandle:
    """Live state of one broker connection (mutated only by its supervisor and order tasks)."""

    def __init__(
        self,
        adapter: BrokerAdapter,
        name: str,
        clock: Callable[[], datetime] = _now,
        *,
        settle: float = 2.0,
        capacity: int = 100,
        breaker: CircuitBreaker | None = None,
        venue_access: float = 1.0,
        max_participation: float = 1.0,
    ) -> None:
        self.adapter = adapter
        self.broker_id = adapter.broker_id
        self.name = name
        #: How long an order can still arrive at this broker after we stopped waiting for it.
        self.settle = settle
        #: In-flight orders that count as a full load (currentLoad = 100 %).
        self.capacity = capacity
        #: A 2 ms margin on every window absorbs the jitter between our grant and the broker's
        #: arrival time (see RateLimiter); raise it for brokers far away on the network.
        self.limiter = RateLimiter(
            adapter.capabilities.rate_limits, broker_id=adapter.broker_id, margin=0.002
        )
        self.breaker = breaker or CircuitBreaker(clock=trio.current_time)
        self.status = ConnectionStatus.DISCONNECTED
        self.maintenance = False
        self.last_connected: datetime | None = None
        self.issues: deque[BrokerIssue] = deque(maxlen=20)
        self.in_flight = 0
        self.running_volume = Decimal(0)
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._latency_sum = 0.0  # of the window, kept incrementally (read on every routing)
        self._clock = clock
        self._first_seen: datetime | None = None  # from a previous run's history, if any
        #: Status changes of the last 24 h (loaded from PostgreSQL at start, then appended):
        #: what `uptime` is computed from, so a restart keeps it.
        self.history: list[StatusChange] = []
        #: Where each change goes to be persisted (set by the daemon; None in unit tests).
        self.changes: trio.MemorySendChannel[StatusChange] | None = None
        #: Impact-model configuration: the share of the market's volume this broker's venues
        #: reach, and the largest share of it the broker will take (routing.impact).
        self.venue_access = venue_access
        self.max_participation = max_participation
        #: Told each heartbeat's round trip in ms (the routing statistics' latency prior).
        self.probe_listener: Callable[[str, float], None] | None = None
        #: When the connection was last known alive (connected, or a heartbeat answered).
        self.last_alive: datetime | None = None

    def __repr__(self) -> str:
        return f"<BrokerHandle {self.broker_id} {self.status} in_flight={self.in_flight}>"

    # --- state changes --------------------------------------------------------------------

    def load_history(self, history: list[StatusChange], started: datetime | None) -> None:
        """The persisted changes of the window (oldest first) and when the broker was first
        seen, from a previous run of the daemon."""
        self.history = list(history)
        self._first_seen = started

    def mark_connected(self) -> None:
        now = self._clock()
        self.status = ConnectionStatus.CONNECTED
        self.last_connected = now
        self._changed(now, None)

    def mark_disconnected(self, issue: IssueType, message: str) -> None:
        self.status = ConnectionStatus.DISCONNECTED
        self.report_issue(issue, message)
        self._changed(self._clock(), message)

    def mark_stopped(self) -> None:
        """The daemon is stopping: from now on nobody serves this broker."""
        self.status = ConnectionStatus.DISCONNECTED
        self._changed(self._clock(), "daemon stopped")

    def set_maintenance(self, on: bool, reason: str | None) -> None:
        self.maintenance = on
        self._changed(self._clock(), reason)

    def _changed(self, at: datetime, reason: str | None) -> None:
        status = ConnectionStatus.MAINTENANCE if self.maintenance else self.status
        if self.history and self.history[-1].status is status:
            return
        change = StatusChange(self.broker_id, status, at, reason)
        self.history.append(change)
        # Keep two days, and the last change before them (the state at the start of the window).
        cutoff = at - 2 * DAY
        older = [i for i, c in enumerate(self.history) if c.at < cutoff]
        if len(older) > 1:
            del self.history[: older[-1]]
        if self.changes is not None:
            try:
                self.changes.send_nowait(change)
            except trio.WouldBlock:
                log.warning("status change not persisted (queue full)", extra={"broker_id": self.broker_id})

    def report_issue(self, issue: IssueType, message: str) -> None:
        self.issues.append(BrokerIssue(type=issue, message=message, timestamp=self._clock()))

    def record_latency(self, milliseconds: float) -> None:
        if len(self._latencies) == LATENCY_WINDOW:
            self._latency_sum -= self._latencies[0]
        self._latencies.append(milliseconds)
        self._latency_sum += milliseconds

    # --- views ----------------------------------------------------------------------------

    @property
    def effective_status(self) -> ConnectionStatus:
        """MAINTENANCE (operator) over DISCONNECTED over DEGRADED (breaker not closed, or the
        broker is throttling us) over CONNECTED."""
        if self.maintenance:
            return ConnectionStatus.MAINTENANCE
        if self.status is not ConnectionStatus.CONNECTED:
            return self.status
        if self.breaker.state is not BreakerState.CLOSED or self.limiter.penalized():
            return ConnectionStatus.DEGRADED
        return ConnectionStatus.CONNECTED

    def blocked(self) -> str | None:
        """Why no new order may go to this broker right now (None: it may)."""
        if self.breaker.state is BreakerState.OPEN and not self.breaker.would_allow():
            return "circuit breaker open"
        return None

    def current_load(self) -> float:
        """0-100: the larger of in-flight orders against capacity and rate-limit usage."""
        in_flight = 100.0 * self.in_flight / self.capacity if self.capacity else 0.0
        return round(min(100.0, max(in_flight, 100.0 - self.limiter.headroom())), 3)

    def latency_stats(self) -> LatencyStats:
        if not self._latencies:
            return LatencyStats()
        ordered = sorted(self._latencies)

        def pct(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

        return LatencyStats(average_ms=sum(ordered) / len(ordered), p95_ms=pct(0.95), p99_ms=pct(0.99))

    def mean_latency_ms(self) -> float:
        return max(0.0, self._latency_sum / len(self._latencies)) if self._latencies else 0.0

    def uptime_percent(self) -> float:
        """Percentage of the last 24 h (counted from the broker's first recorded status, if
        later) spent connected, from the persisted status history."""
        return round(uptime_percent(self.history, self._clock(), DAY, started=self._first_seen), 3)

    def record(self, connection_params: dict[str, str] | None = None) -> BrokerRecord:
        """This broker's `broker_connections` row (never its credentials)."""
        caps = self.adapter.capabilities
        return BrokerRecord(
            broker_id=self.broker_id,
            name=self.name,
            status=self.status.value,
            supported_asset_classes=tuple(sorted(caps.asset_classes)),
            features=tuple(sorted(caps.features)),
            commission_structure=self.adapter.commission,
            connection_params=connection_params or {},
            rate_limits=msgspec.structs.asdict(caps.rate_limits),
            latency_stats=self.latency_stats(),
        )

    #: The last `candidate()`, returned again while nothing in it changed.
    _candidate: BrokerCandidate | None = None

    def candidate(self, within: float | None = None) -> BrokerCandidate:
        """This broker for one routing decision. With `within` (the order's attempt deadline,
        seconds), a broker whose rate-limit windows are full but can still take the order in
        time keeps a token headroom: it stays eligible and its limiter queues the order.

        The same object as the last call's while every field is equal (a candidate is frozen):
        no validation of an unchanged snapshot, and routing recognises the broker it has
        already worked out (`routing.select`)."""
        headroom = self.limiter.headroom()
        if headroom <= 0.0 and within is not None and self.limiter.grant_delay() <= within:
            headroom = QUEUED_HEADROOM
        status = self.effective_status
        latency = self.mean_latency_ms()
        blocked = self.blocked()
        adapter = self.adapter
        last = self._candidate
        if (
            last is not None
            and last.rate_headroom == headroom
            and last.status is status
            and last.latency_ms == latency
            and last.running_volume is self.running_volume
            and last.blocked == blocked
            and last.capabilities is adapter.capabilities
            and last.commission is adapter.commission
            and last.venue_access == self.venue_access
            and last.max_participation == self.max_participation
            and last.broker_id == self.broker_id
        ):
            return last
        self._candidate = last = BrokerCandidate(
            self.broker_id,
            status,
            adapter.capabilities,
            adapter.commission,
            latency,
            self.running_volume,
            blocked,
            headroom,
            self.venue_access,
            self.max_participation,
        )
        return last

    def info(self) -> BrokerInfo:
        status = self.effective_status
        if status is ConnectionStatus.MAINTENANCE:
            listed = BrokerListStatus.MAINTENANCE
        elif status in (ConnectionStatus.CONNECTED, ConnectionStatus.DEGRADED):
            listed = BrokerListStatus.ACTIVE
        else:
            listed = BrokerListStatus.INACTIVE
        caps = self.adapter.capabilities
        return BrokerInfo(
            id=self.broker_id,
            name=self.name,
            status=listed,
            supported_asset_classes=tuple(sorted(caps.asset_classes)),
            features=tuple(sorted(caps.features)),
            commission_structure=self.adapter.commission,
            latency_stats=self.latency_stats(),
        )

    def status_report(self) -> BrokerStatus:
        return BrokerStatus(
            broker_id=self.broker_id,
            status=self.effective_status,
            uptime=self.uptime_percent(),
            current_load=self.current_load(),
            issues=tuple(self.issues),
            last_connected=self.last_connected,
        )


class HeartbeatFailed(Exception):
    pass


#: Recovery after a lost connection starts this long before the connection was last known
#: alive (its last heartbeat answer), for clock skew and events in flight.
RECOVERY_OVERLAP = timedelta(seconds=5)
RECOVERY_RETRY_MAX = 30.0

#: What runs after every connect: recover what the broker reported while we were not
#: listening, since the given time (None: the first connect since the daemon started).
Recover = Callable[[BrokerHandle, datetime | None], Awaitable[None]]


async def supervise_brokers(
    handles: Sequence[BrokerHandle],
    events: trio.MemorySendChannel[AnyBrokerEvent],
    *,
    backoff_initial: float = 0.25,
    backoff_max: float = 30.0,
    heartbeat_every: float = 5.0,
    heartbeat_timeout: float = 5.0,
    recover: Recover | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run every broker connection until cancelled. Reports started once each broker has either
    connected or failed its first attempt, so a dead broker does not hold the daemon back.

    After every connect, `recover(handle, since)` runs (the engine's: missed fills and terminal
    states) — retried with backoff while connected until it completes. `since` only moves
    forward once a recovery completed: a gap that was never recovered is recovered by the next
    connection, from its start; after a completed one, from the last heartbeat answer of the
    connection that was lost, less `RECOVERY_OVERLAP`."""
    async with trio.open_nursery() as nursery:
        for handle in handles:
            await nursery.start(
                _supervise_one,
                handle,
                events.clone(),
                (backoff_initial, backoff_max),
                (heartbeat_every, heartbeat_timeout),
                recover,
            )
        task_status.started()


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def _heartbeat(handle: BrokerHandle, every: float, timeout: float) -> None:
    """Ping the broker every `every` seconds; a failed or late answer ends the connection (the
    supervisor restarts it)."""
    while True:
        await trio.sleep(every)
        started = trio.current_time()
        try:
            with trio.fail_after(timeout):
                await handle.adapter.heartbeat()
        except trio.TooSlowError:
            raise HeartbeatFailed(f"no heartbeat answer within {timeout}s") from None
        except Exception as exc:
            raise HeartbeatFailed(f"heartbeat failed: {exc!r}") from exc
        handle.last_alive = _now()
        if handle.probe_listener is not None:
            handle.probe_listener(handle.broker_id, (trio.current_time() - started) * 1000.0)


async def _recover_until_done(
    handle: BrokerHandle, recover: Recover, since: datetime | None, done: list[bool]
) -> None:
    """Run `recover` until it completes (then `done[0]` is True), with backoff between tries;
    the connection's end cancels it."""
    delay = 1.0
    while True:
        try:
            await recover(handle, since)
        except Exception as exc:
            log.warning(
                "recovery after connecting failed; retrying",
                extra={"broker_id": handle.broker_id, "error": repr(exc), "retry_in_s": delay},
            )
            await trio.sleep(delay)
            delay = min(RECOVERY_RETRY_MAX, delay * 2)
            continue
        done[0] = True
        return


async def _supervise_one(
    handle: BrokerHandle,
    events: trio.MemorySendChannel[AnyBrokerEvent],
    backoff: tuple[float, float],
    heartbeat: tuple[float, float],
    recover: Recover | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    backoff_initial, backoff_max = backoff
    delay = backoff_initial
    first = True
    since: datetime | None = None  # the first connect since the daemon started
    async with events:
        while True:
            was_up = False
            recovered = [recover is None]
            try:
                async with trio.open_nursery() as connection:
                    await connection.start(handle.adapter.run, events)
                    was_up = True
                    handle.last_alive = _now()
                    connection.start_soon(_heartbeat, handle, *heartbeat)
                    if recover is not None:
                        connection.start_soon(_recover_until_done, handle, recover, since, recovered)
                    handle.mark_connected()
                    log.info("broker connected", extra={"broker_id": handle.broker_id})
                    delay = backoff_initial
                    if first:
                        first = False
                        task_status.started()
            except Exception as exc:
                cause = _first_leaf(exc)
                handle.mark_disconnected(IssueType.CONNECTIVITY, f"connection failed: {cause}")
                log.warning(
                    "broker connection failed; restarting",
                    extra={"broker_id": handle.broker_id, "error": repr(exc), "retry_in_s": delay},
                )
            else:
                handle.mark_disconnected(IssueType.CONNECTIVITY, "connection ended")
            if was_up and recovered[0] and handle.last_alive is not None:
                since = handle.last_alive - RECOVERY_OVERLAP  # else: the older gap still stands
            if first:
                first = False
                task_status.started()
            await trio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(backoff_max, delay * 2)
