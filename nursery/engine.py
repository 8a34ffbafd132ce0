"""The execution engine: the service facade that routes orders to brokers and follows each
execution to its end.

Guarantees (DESIGN.md invariants):
- `orderId` is the idempotency key. The first request for an order id claims it in PostgreSQL
  (one row, primary key); every repeat — sequential, concurrent, or through another daemon on the
  same database — gets the first answer and sends nothing. A repeat carrying a *different* order
  is refused (400 on `orderId`) instead of being answered with someone else's result.
- Write before send: the claim commits the order, the chosen broker and the deterministic client
  order id before the adapter is called.
- Every state change goes through `api.lifecycle.apply_event`, is committed together with its
  outbox row, and only then published; the publisher retries until JetStream acknowledges.
- An attempt whose outcome is unknown (timeout, disconnect) is never resent: the order is
  answered PENDING and reconciled by querying the broker with its client order id.

`ExecutionEngine` holds the lifecycle (run, stop intake, wait for quiet), the requests'
entry points and the read-only queries; the work is done by one module per concept, each
given its collaborators explicitly when the engine is built:

    nursery.router      RouteOrder: check, select, claim once, answer repeats
    nursery.failover    placing a claimed order at the ranked brokers in turn
    nursery.resolver    PENDING attempts: background reconciliation, adoption of orphans
    nursery.resync      after a connect or dropped events: what the broker did meanwhile
    nursery.post_trade  routing statistics and execution reports
    nursery.applier     broker events applied, persisted, published (`ApplierHooks`)
    nursery.cancels     cancels at brokers

Only the engine's nursery runs their background tasks (`_spawn`): `run` must be running.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime

import msgspec
import trio

from api.contracts import (
    BrokerInfo,
    BrokerStatus,
    CancelOrderRequest,
    CancelOrderResponse,
    ExecutionDetails,
    FieldError,
    GetExecutionRequest,
    ListBrokersRequest,
    MaintenanceRequest,
    OrderRoutingRequest,
    OrderRoutingResponse,
    TCARequest,
    TCAResponse,
)
from api.enums import BrokerOrderStatus
from api.errors import InvalidRequest, NotFound, Unavailable
from api.events import AnyBrokerEvent
from api.orders import BrokerOrder
from nursery.applier import MAX_UNSAVED, EventApplier
from nursery.brokers import BrokerHandle
from nursery.cancels import Cancels
from nursery.failover import Failover
from nursery.hooks import ApplierHooks
from nursery.live import LiveBook, LiveExecution
from nursery.post_trade import PostTrade, Reporter
from nursery.quiet import drain_nowait
from nursery.resolver import PendingResolver
from nursery.resync import BrokerResync
from nursery.router import MarketView, OrderRouter
from routing.config import DEFAULT_CONFIG as DEFAULT_ROUTING
from routing.config import RoutingConfig
from routing.decision import decode as decode_decision
from routing.stats import RoutingStats
from sql.records import OutboxEvent
from sql.store import Store
from sql.writer import DatabaseUnavailable

__all__ = ["ExecutionEngine", "MarketView", "Reporter"]

log = logging.getLogger(__name__)

#: GetExecution of an order live here waits at most this long for its routing decision (kept in
#: the store, not in memory): a database that does not answer does not hold up the rest.
DECISION_READ_BUDGET_S = 0.5


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ExecutionEngine:
    def __init__(
        self,
        store: Store,
        brokers: Sequence[BrokerHandle],
        market: MarketView,
        publish: trio.MemorySendChannel[OutboxEvent],
        *,
        attempt_deadline: Callable[[object], float],
        duplicate_wait: float = 10.0,
        unknown_policy: str = "adopt",
        reconcile_budget: float = 5.0,
        clock: Callable[[], datetime] = _utcnow,
        stats: RoutingStats | None = None,
        routing: RoutingConfig = DEFAULT_ROUTING,
        reporter: Reporter | None = None,
        max_unsaved: int = MAX_UNSAVED,
        owner: str | None = None,
    ) -> None:
        self._store = store
        self._brokers: dict[str, BrokerHandle] = {b.broker_id: b for b in brokers}
        self._clock = clock
        #: The adaptive routing statistics: fed by every ack, reject, timeout, finished
        #: execution, heartbeat and TCA result; read by every routing decision.
        self.stats = stats if stats is not None else RoutingStats()
        self._reporter = reporter
        self._live = LiveBook()
        self._nursery: trio.Nursery | None = None
        self._events: trio.MemoryReceiveChannel[AnyBrokerEvent] | None = None
        self._stopping = False
        self._active_requests = 0
        self._idle = trio.Event()
        self._idle.set()
        # Built leaves first: each part gets the parts it calls. The applier's hooks are
        # objects with named methods (`ApplierHooks`); the engine itself is its
        # `dropped_events` hook, since the resync it starts feeds the applier.
        self._post_trade = PostTrade(self.stats, market, reporter, store, self._spawn)
        self._cancels = Cancels(
            store,
            self._live,
            self._brokers,
            spawn=self._spawn,
            attempt_deadline=attempt_deadline,
            clock=clock,
        )
        self._applier = EventApplier(
            store,
            self._live,
            self._brokers,
            publish,
            self._spawn,
            ApplierHooks(zombies=self._cancels, after_execution=self._post_trade, dropped_events=self),
            max_unsaved=max_unsaved,
        )
        self._resync = BrokerResync(self._live, self._brokers, self._applier, self._spawn, clock=clock)
        self._resolver = PendingResolver(
            store,
            self._live,
            self._brokers,
            self._applier,
            self._spawn,
            attempt_deadline=attempt_deadline,
            reconcile_budget=reconcile_budget,
            clock=clock,
        )
        failover = Failover(
            store,
            self._live,
            self._brokers,
            self._spawn,
            applier=self._applier,
            cancels=self._cancels,
            resolver=self._resolver,
            post_trade=self._post_trade,
            attempt_deadline=attempt_deadline,
            unknown_policy=unknown_policy,
            reconcile_budget=reconcile_budget,
            clock=clock,
            owner=owner,
        )
        self._router = OrderRouter(
            store,
            self._live,
            self._brokers,
            market,
            failover,
            stats=self.stats,
            routing=routing,
            attempt_deadline=attempt_deadline,
            duplicate_wait=duplicate_wait,
            clock=clock,
            owner=owner,
        )
        for handle in self._brokers.values():
            handle.probe_listener = self._post_trade.on_probe

    def __repr__(self) -> str:
        return (
            f"<ExecutionEngine brokers={len(self._brokers)} live={len(self._live)} stopping={self._stopping}>"
        )

    @property
    def brokers(self) -> Mapping[str, BrokerHandle]:
        return self._brokers

    @property
    def router(self) -> OrderRouter:
        """The routing part: its pre-trade hooks (`pre_trade`, `risk`) are set by the daemon."""
        return self._router

    @property
    def take_orphan(self) -> Callable[[str], Awaitable[bool]] | None:
        """Takes over an order nobody answers and answers it (`OrphanSweeper.take_one`), when
        the daemon runs a sweeper: a repeated request does not wait on a dead daemon."""
        return self._router.take_orphan

    @take_orphan.setter
    def take_orphan(self, take: Callable[[str], Awaitable[bool]] | None) -> None:
        self._router.take_orphan = take

    # --- lifecycle ------------------------------------------------------------------------

    async def run(
        self,
        events: trio.MemoryReceiveChannel[AnyBrokerEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Recover open executions, then consume broker events until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for order in await self._store.load_open_executions():
                live = LiveExecution(order)
                self._live.add(live)
                if order.status is BrokerOrderStatus.PENDING:
                    nursery.start_soon(self._resolver.resolve_in_background, live, "recovered after restart")
            nursery.start_soon(self._evict_periodically)
            self._events = events
            task_status.started()
            async with events:
                async for event in events:
                    self._applier.enqueue(event)
                    for queued in drain_nowait(events):  # the rest of a burst: no checkpoint each
                        self._applier.enqueue(queued)

    def stop_intake(self) -> None:
        """New routing and cancel requests are refused from now on (503, 'service is stopping')."""
        self._stopping = True

    async def wait_idle(self) -> None:
        """Wait until no routing or cancel request is in progress."""
        await self._idle.wait()

    async def wait_written(self) -> None:
        """Wait until every deferred write (acks answered before they were written) is done."""
        while self._applier.pending_writes:  # noqa: ASYNC110 (a handful of ms, at shutdown)
            await trio.sleep(0.005)

    async def wait_settled(self, quiet_for: float = 0.05) -> None:
        """Wait until broker events stop arriving and every one received has been applied and
        persisted (used on shutdown, under the grace deadline, so fills already reported by the
        brokers are not left for the next start to reconcile)."""
        quiet_since = trio.current_time()
        while trio.current_time() - quiet_since < quiet_for:
            await trio.sleep(0.005)
            queued = self._events.statistics().current_buffer_used if self._events is not None else 0
            busy = self._applier.applying or self._applier.pending_writes or self._reports_pending
            if queued or busy:
                quiet_since = trio.current_time()

    @property
    def _reports_pending(self) -> int:
        """Reports queued or being written (shutdown waits for zero)."""
        return self._post_trade.reports_pending

    def open_executions(self) -> int:
        return self._live.open_count()

    # --- recovery -------------------------------------------------------------------------

    async def recover(self, handle: BrokerHandle, since: datetime | None) -> None:
        """After a connect: what the broker did while we were not listening (the supervisor's
        `recover`; `nursery.resync.BrokerResync.recover`). Raises on failure (the supervisor
        retries while connected)."""
        await self._resync.recover(handle, since)

    def recover_all_since(self, since: datetime) -> None:
        """Broker events were dropped during a database outage: ask every broker again (the
        applier's `dropped_events` hook)."""
        self._resync.recover_all_since(since)

    # --- requests -------------------------------------------------------------------------

    async def route_order(self, request: OrderRoutingRequest) -> OrderRoutingResponse:
        """RouteOrder (`nursery.router`): the first answer for `request.order_id`, routed here
        or by whoever routed it first."""
        self._check_accepting()
        asset_class = self._router.check_routable(request)
        self._begin()
        try:
            return await self._router.route(request, asset_class)
        finally:
            self._end()

    def routing_here(self, order_id: str) -> bool:
        """A task of this daemon is routing `order_id`, or holds its answer for the database."""
        return self._router.routing_here(order_id)

    async def adopt(self, order_id: str) -> None:
        """Answer an order nobody is answering (`nursery.orphans`; `PendingResolver.adopt`).
        Never sends anything. Raises `DatabaseUnavailable` (the next sweep tries again)."""
        await self._resolver.adopt(order_id)

    async def cancel_order(self, request: CancelOrderRequest) -> CancelOrderResponse:
        self._check_accepting()
        if request.broker_id not in self._brokers:
            raise InvalidRequest(
                "invalid request: brokerId", [FieldError("brokerId", f"unknown broker {request.broker_id!r}")]
            )
        self._begin()
        try:
            return await self._cancels.cancel(request)
        finally:
            self._end()

    def _check_accepting(self) -> None:
        if self._stopping:
            raise Unavailable("service is stopping: send the request again (another instance will take it)")

    # --- queries --------------------------------------------------------------------------

    async def transaction_cost_analysis(self, request: TCARequest) -> TCAResponse:
        if self._reporter is None:
            raise Unavailable("transaction cost analysis is not configured on this instance")
        return await self._reporter.analyse(request)

    async def get_execution(self, request: GetExecutionRequest) -> ExecutionDetails:
        if request.execution_id is not None:
            live = self._live.by_execution(request.execution_id)
            order = live.order if live else await self._store.load_execution(request.execution_id)
            key = f"execution {request.execution_id!r}"
        else:
            assert request.order_id is not None
            live = self._live.by_order(request.order_id)
            order = live.order if live else await self._store.load_latest_execution(request.order_id)
            key = f"order {request.order_id!r}"
        if order is None:
            raise NotFound(f"no execution for {key}")
        details = order.to_details()
        if order.attempt == 1:
            tried: tuple[BrokerOrder, ...] = (order,)
        else:  # after a failover: every attempt, for "why did this go to broker X?"
            tried = tuple(await self._store.load_attempts(order.order_id))
        stored = live.decision if live is not None and live.decision is not None else None
        if stored is None and live is None:
            stored = await self._store.load_decision(order.order_id)
        elif stored is None:  # live here: answered from memory, the decision within a bound
            with trio.move_on_after(DECISION_READ_BUDGET_S):
                try:
                    stored = await self._store.load_decision(order.order_id, abandonable=True)
                except DatabaseUnavailable:
                    pass  # during an outage: everything but the (stored) decision
        decision = None
        if stored is not None:
            try:
                decision = decode_decision(stored)
            except (msgspec.DecodeError, msgspec.ValidationError):  # an older or damaged record
                log.warning("routing decision unreadable", extra={"order_id": order.order_id})
        return msgspec.structs.replace(
            details, attempts=tuple(a.to_attempt() for a in tried), routing_decision=decision
        )

    async def get_broker_status(self, broker_id: str) -> BrokerStatus:
        handle = self._brokers.get(broker_id)
        if handle is None:
            raise NotFound(f"unknown broker {broker_id!r}")
        return handle.status_report()

    async def set_maintenance(self, broker_id: str, request: MaintenanceRequest) -> BrokerStatus:
        """Operator: take a broker out of routing (or back). Persisted, so a restart keeps it;
        orders open at the broker keep being tracked."""
        handle = self._brokers.get(broker_id)
        if handle is None:
            raise NotFound(f"unknown broker {broker_id!r}")
        await self._store.set_maintenance(broker_id, request.enabled, request.reason, self._clock())
        handle.set_maintenance(request.enabled, request.reason)
        log.warning(
            "maintenance on" if request.enabled else "maintenance off",
            extra={"broker_id": broker_id, "reason": request.reason},
        )
        return handle.status_report()

    async def list_brokers(self, request: ListBrokersRequest) -> list[BrokerInfo]:
        infos = [handle.info() for handle in self._brokers.values()]
        return [
            info
            for info in infos
            if (request.status is None or info.status == request.status)
            and (request.asset_class is None or request.asset_class in info.supported_asset_classes)
        ]

    # --- helpers --------------------------------------------------------------------------

    def _spawn(self, fn: Callable[..., object], *args: object) -> None:
        assert self._nursery is not None, "engine.run() is not running"
        self._nursery.start_soon(fn, *args)  # type: ignore[arg-type]

    def _begin(self) -> None:
        self._active_requests += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle

    def _end(self) -> None:
        self._active_requests -= 1
        if self._active_requests == 0:
            self._idle.set()

    async def _evict_periodically(self) -> None:
        while True:
            await trio.sleep(30)
            self._live.evict_finished()
