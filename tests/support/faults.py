"""A simulated broker that misbehaves on request, for failover and reconciliation tests.

`FaultyBroker` is a `SimulatedBroker` (same venue, same `BrokerAdapter` interface) that a test
can tell, at any time, how to fail its next calls: `broker.inject(Fault.TIMEOUT, times=2)`.
Injected faults queue up per method (submit, cancel, query) in injection order; each applies
to the next `times` calls of its method that reach the broker, then the next fault (or normal
behaviour) takes over. A call refused locally (not connected) consumes no fault.

What each fault does, and whether the venue gets the order:

    fault                   the caller sees                          the venue
    HANG_ON_SUBMIT          no answer until cancelled                never gets the order
    TIMEOUT                 OutcomeUnknown after `delay`             `reached`: accepted it
    DISCONNECT_MID_SUBMIT   ConnectionLost; `run` raises too         accepted it
    REJECT                  BrokerRejected(`reason`)                 nothing recorded
    RATE_LIMITED            RateLimited(`retry_after`)               nothing recorded
    SERVER_ERROR            ServerError (503)                        `created`: accepted it
    ACCEPT_AFTER_DEADLINE   no answer until cancelled                accepts it `delay` seconds
                                                                     after the cancellation
    QUERY_FAILS             query: OutcomeUnknown after `delay`      -
    CANCEL_FAILS            cancel: OutcomeUnknown after `delay`     `reached`: canceled it

An order the venue accepts behind a failure streams its OrderAccepted (and fills) as usual, and
`query` finds it: exactly what reconciliation has to discover.

Connection. DISCONNECT_MID_SUBMIT (or `drop_connection`) ends the current `run` with
ConnectionLost, as a dropped socket would, so a supervisor restarts it. Until a new `run` reports
started, every call raises ConnectionLost. Events still queued at the drop may be lost, as on a
real stream; `query` after the reconnect tells the truth (the venue keeps its orders).

Late arrivals. An ACCEPT_AFTER_DEADLINE request waits, after its caller gave up, in a task of the
current `run`'s nursery, then goes through the venue like any request (its latency included). If
the connection ends first, the request dies with it and the order never arrives.
"""

from __future__ import annotations

import logging
from enum import StrEnum

import msgspec
import trio

from adapters.base import (
    BrokerAck,
    BrokerError,
    BrokerOrderSnapshot,
    BrokerRejected,
    ConnectionLost,
    OutcomeUnknown,
    RateLimited,
    ServerError,
    SubmitRequest,
)
from adapters.simulated.config import SimulatedBrokerConfig
from adapters.simulated.market import Clock, SimulatedMarket
from adapters.simulated.venue import SimulatedBroker
from api.events import AnyBrokerEvent

__all__ = ["AdapterMethod", "Fault", "FaultPlan", "FaultyBroker", "InjectedFault", "RecordedCall"]

log = logging.getLogger(__name__)


class AdapterMethod(StrEnum):
    SUBMIT = "submit"
    CANCEL = "cancel"
    QUERY = "query"


class Fault(StrEnum):
    HANG_ON_SUBMIT = "HANG_ON_SUBMIT"
    TIMEOUT = "TIMEOUT"
    DISCONNECT_MID_SUBMIT = "DISCONNECT_MID_SUBMIT"
    REJECT = "REJECT"
    RATE_LIMITED = "RATE_LIMITED"
    SERVER_ERROR = "SERVER_ERROR"
    ACCEPT_AFTER_DEADLINE = "ACCEPT_AFTER_DEADLINE"
    QUERY_FAILS = "QUERY_FAILS"
    CANCEL_FAILS = "CANCEL_FAILS"

    @property
    def method(self) -> AdapterMethod:
        """The adapter method this fault applies to."""
        if self is Fault.QUERY_FAILS:
            return AdapterMethod.QUERY
        if self is Fault.CANCEL_FAILS:
            return AdapterMethod.CANCEL
        return AdapterMethod.SUBMIT


#: The parameters each fault takes beyond `times`; passing another one is a mistake in the test.
_PARAMETERS: dict[Fault, frozenset[str]] = {
    Fault.HANG_ON_SUBMIT: frozenset(),
    Fault.TIMEOUT: frozenset({"delay", "reached", "reason"}),
    Fault.DISCONNECT_MID_SUBMIT: frozenset({"reason"}),
    Fault.REJECT: frozenset({"reason"}),
    Fault.RATE_LIMITED: frozenset({"reason", "retry_after"}),
    Fault.SERVER_ERROR: frozenset({"reason", "created"}),
    Fault.ACCEPT_AFTER_DEADLINE: frozenset({"delay"}),
    Fault.QUERY_FAILS: frozenset({"delay", "reason"}),
    Fault.CANCEL_FAILS: frozenset({"delay", "reason", "reached"}),
}

_DEFAULT_DELAY = {Fault.TIMEOUT: 5.0, Fault.ACCEPT_AFTER_DEADLINE: 1.0}

_DEFAULT_REASON = {
    Fault.TIMEOUT: "read timeout",
    Fault.DISCONNECT_MID_SUBMIT: "connection lost before the response arrived",
    Fault.REJECT: "rejected by the venue (injected fault)",
    Fault.RATE_LIMITED: "429 Too Many Requests",
    Fault.SERVER_ERROR: "503 Service Unavailable",
    Fault.QUERY_FAILS: "read timeout",
    Fault.CANCEL_FAILS: "read timeout",
}


class InjectedFault(msgspec.Struct, frozen=True, kw_only=True):
    """One injected fault with its parameters resolved. `times` is how many calls it still
    applies to. `reached`: whether the venue processed the request behind the failure (spelled
    `created=` for SERVER_ERROR when injecting)."""

    fault: Fault
    times: int
    delay: float = 0.0
    reached: bool = False
    reason: str = ""
    retry_after: float | None = None


class RecordedCall(msgspec.Struct, frozen=True):
    """One call of an adapter method: the order it named, its trio time, the fault it met."""

    client_order_id: str
    at: float
    fault: Fault | None = None


class _Armed:
    __slots__ = ("injection", "left")

    def __init__(self, injection: InjectedFault) -> None:
        self.injection = injection
        self.left = injection.times


class FaultPlan:
    """The faults still to apply, in injection order (pure: no Trio, no venue)."""

    def __init__(self) -> None:
        self._armed: list[_Armed] = []

    def __repr__(self) -> str:
        pending = ", ".join(f"{i.fault} x{i.times}" for i in self.pending())
        return f"<FaultPlan [{pending}]>"

    def __bool__(self) -> bool:
        return bool(self._armed)

    def inject(
        self,
        fault: Fault,
        *,
        times: int = 1,
        delay: float | None = None,
        reached: bool | None = None,
        created: bool | None = None,
        reason: str | None = None,
        retry_after: float | None = None,
    ) -> InjectedFault:
        """Apply `fault` to the next `times` calls of its method (after the faults already
        queued for that method). Raises ValueError for a parameter `fault` does not take."""
        given = {
            name
            for name, value in (
                ("delay", delay),
                ("reached", reached),
                ("created", created),
                ("reason", reason),
                ("retry_after", retry_after),
            )
            if value is not None
        }
        unexpected = given - _PARAMETERS[fault]
        if unexpected:
            raise ValueError(f"{fault} takes no {', '.join(sorted(unexpected))}")
        if times < 1:
            raise ValueError("times must be at least 1")
        if delay is not None and delay < 0:
            raise ValueError("delay must not be negative")
        injection = InjectedFault(
            fault=fault,
            times=times,
            delay=_DEFAULT_DELAY.get(fault, 0.0) if delay is None else delay,
            reached=bool(reached or created),
            reason=_DEFAULT_REASON.get(fault, "") if reason is None else reason,
            retry_after=retry_after,
        )
        self._armed.append(_Armed(injection))
        return injection

    def take(self, method: AdapterMethod) -> InjectedFault | None:
        """The fault the next call of `method` meets (counting it), or None: behave."""
        for index, armed in enumerate(self._armed):
            if armed.injection.fault.method is method:
                armed.left -= 1
                if not armed.left:
                    del self._armed[index]
                return armed.injection
        return None

    def pending(self) -> tuple[InjectedFault, ...]:
        """The faults still to apply, each with the number of calls it still applies to."""
        return tuple(msgspec.structs.replace(a.injection, times=a.left) for a in self._armed)

    def clear(self) -> None:
        self._armed.clear()


class _Link:
    """One life of the connection: the nursery of its `run`, and how it was dropped."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.dropped = trio.Event()
        self.reason = "connection ended"


class FaultyBroker(SimulatedBroker):
    """A `SimulatedBroker` that fails its next calls as told (see the module docstring).
    `submits`, `cancels` and `queries` record every call, faulty or not."""

    def __init__(
        self,
        config: SimulatedBrokerConfig,
        market: SimulatedMarket,
        *,
        clock: Clock | None = None,
        session: str | None = None,
    ) -> None:
        super().__init__(config, market, clock=clock, session=session)
        self.faults = FaultPlan()
        self.submits: list[RecordedCall] = []
        self.cancels: list[RecordedCall] = []
        self.queries: list[RecordedCall] = []
        # Distinct prefix: SimulatedBroker's own private names must never be shadowed.
        self._fault_link: _Link | None = None
        self._fault_lost: str | None = None  # why calls fail until the next run is started
        self._fault_sent: dict[str, None] = {}  # client order ids sent to the venue, in order
        self._fault_stuck: list[str] = []

    def __repr__(self) -> str:
        state = (
            "dropped" if self._fault_lost is not None else "connected" if self.connected else "disconnected"
        )
        return (
            f"<FaultyBroker {self.broker_id} {state} open={self.engine.open_orders}"
            f" faults={[f'{i.fault} x{i.times}' for i in self.faults.pending()]}>"
        )

    @property
    def connected(self) -> bool:
        return super().connected and self._fault_lost is None

    def inject(
        self,
        fault: Fault,
        *,
        times: int = 1,
        delay: float | None = None,
        reached: bool | None = None,
        created: bool | None = None,
        reason: str | None = None,
        retry_after: float | None = None,
    ) -> InjectedFault:
        """`FaultPlan.inject` on this broker's plan."""
        return self.faults.inject(
            fault,
            times=times,
            delay=delay,
            reached=reached,
            created=created,
            reason=reason,
            retry_after=retry_after,
        )

    def live_orders(self) -> list[str]:
        """Client order ids the venue holds that are not final (accepted or partially filled)."""
        live = []
        for client_order_id in self._fault_sent:
            order = self.engine.order(client_order_id)
            if order is not None and order.is_open:
                live.append(client_order_id)
        return live

    def stuck_requests(self) -> list[str]:
        """Client order ids of ACCEPT_AFTER_DEADLINE requests still on their way to the venue."""
        return list(self._fault_stuck)

    def drop_connection(self, reason: str = "connection reset by peer") -> None:
        """Drop the current connection now: `run` raises ConnectionLost(reason) and every call
        raises ConnectionLost until the next `run` reports started. No-op when not running."""
        link = self._fault_link
        if link is None or link.dropped.is_set():
            return
        link.reason = reason
        link.dropped.set()
        self._fault_lost = reason
        link.nursery.cancel_scope.cancel()

    # --- the adapter -----------------------------------------------------------------------

    async def run(
        self,
        events: trio.MemorySendChannel[AnyBrokerEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """`SimulatedBroker.run`, in a nursery that also holds the late arrivals; raises
        ConnectionLost when the connection is dropped. One at a time: restart it once the
        previous `run` has returned or raised, as a supervisor does."""
        if self._fault_link is not None:
            raise RuntimeError(f"{self.broker_id}: run() is already active")
        try:
            async with trio.open_nursery() as nursery:
                link = self._fault_link = _Link(nursery)
                await nursery.start(super().run, events)
                self._fault_lost = None
                task_status.started()
        finally:
            self._fault_link = None
        # The nursery only ends on its own when dropped (cancelled from inside).
        raise ConnectionLost(link.reason)

    async def submit(self, request: SubmitRequest) -> BrokerAck:
        """`SimulatedBroker.submit`, unless a submit fault is armed (see the module table)."""
        fault = self._arrive(self.submits, request.client_order_id, AdapterMethod.SUBMIT)
        if fault is None:
            return await self._send(request)
        kind = fault.fault
        if kind is Fault.HANG_ON_SUBMIT:
            await trio.sleep_forever()
        if kind is Fault.ACCEPT_AFTER_DEADLINE:
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                self._strand(request, fault.delay)
                raise
        if kind is Fault.TIMEOUT:
            deadline = trio.current_time() + fault.delay
            if fault.reached:
                await self._send_unanswered(request)
            await trio.sleep_until(deadline)
            raise OutcomeUnknown(fault.reason)
        if kind is Fault.DISCONNECT_MID_SUBMIT:
            await self._send_unanswered(request)
            self.drop_connection(fault.reason)
            raise ConnectionLost(fault.reason)
        if kind is Fault.SERVER_ERROR and fault.reached:
            await self._send_unanswered(request)
        else:
            await self._round_trip()
        if kind is Fault.REJECT:
            raise BrokerRejected(fault.reason)
        if kind is Fault.RATE_LIMITED:
            raise RateLimited(fault.reason, retry_after=fault.retry_after)
        assert kind is Fault.SERVER_ERROR, kind
        raise ServerError(fault.reason)

    async def cancel(self, client_order_id: str) -> None:
        """`SimulatedBroker.cancel`, unless CANCEL_FAILS is armed."""
        fault = self._arrive(self.cancels, client_order_id, AdapterMethod.CANCEL)
        if fault is None:
            await super().cancel(client_order_id)
            return
        deadline = trio.current_time() + fault.delay
        if fault.reached:
            try:
                await super().cancel(client_order_id)
            except BrokerError:
                pass  # the answer is what gets lost
        await trio.sleep_until(deadline)
        raise OutcomeUnknown(fault.reason)

    async def query(self, client_order_id: str) -> BrokerOrderSnapshot | None:
        """`SimulatedBroker.query`, unless QUERY_FAILS is armed."""
        fault = self._arrive(self.queries, client_order_id, AdapterMethod.QUERY)
        if fault is None:
            return await super().query(client_order_id)
        await trio.sleep(fault.delay)
        raise OutcomeUnknown(fault.reason)

    # --- internals -----------------------------------------------------------------------

    def _arrive(
        self, calls: list[RecordedCall], client_order_id: str, method: AdapterMethod
    ) -> InjectedFault | None:
        """Record the call; raise ConnectionLost while dropped. A connected call takes its fault;
        a disconnected one takes none (the venue's DeniedLocally follows)."""
        now = trio.current_time()
        if self._fault_lost is not None:
            calls.append(RecordedCall(client_order_id, now))
            raise ConnectionLost(f"not connected: {self._fault_lost}")
        fault = self.faults.take(method) if self.connected else None
        calls.append(RecordedCall(client_order_id, now, None if fault is None else fault.fault))
        return fault

    async def _send(self, request: SubmitRequest) -> BrokerAck:
        self._fault_sent[request.client_order_id] = None
        return await super().submit(request)

    async def _send_unanswered(self, request: SubmitRequest) -> None:
        """Send to the venue and lose the answer, whatever it was."""
        try:
            await self._send(request)
        except BrokerError:
            pass

    async def _round_trip(self) -> None:
        """The time an answer that did not involve the venue's book still takes."""
        latency = self.sample_latency()
        if latency:
            await trio.sleep(latency)

    def _strand(self, request: SubmitRequest, delay: float) -> None:
        """Leave the request in the network: it reaches the venue `delay` seconds from now,
        unless the connection ends first."""
        link = self._fault_link
        if link is None or link.dropped.is_set():
            return
        self._fault_stuck.append(request.client_order_id)
        link.nursery.start_soon(self._arrive_late, request, delay)

    async def _arrive_late(self, request: SubmitRequest, delay: float) -> None:
        try:
            await trio.sleep(delay)
            try:
                await self._send(request)
            except BrokerError as exc:  # nobody is waiting for this answer any more
                log.info("late request %s refused: %r", request.client_order_id, exc)
        finally:
            self._fault_stuck.remove(request.client_order_id)
