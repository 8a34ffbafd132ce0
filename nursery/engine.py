"""The execution engine: routes orders to brokers and follows each execution to its end.

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
"""

from __future__ import annotations

import functools
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

import msgspec
import trio

from adapters.base import (
    SubmitRequest,
)
from analysis.queue import ReportJob
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
from api.enums import AssetClass, BrokerOrderStatus, RoutingStatus, Urgency
from api.errors import InvalidRequest, NotFound, Unavailable
from api.events import AnyBrokerEvent, OrderAccepted, OrderRejected
from api.orders import BrokerOrder
from nursery.applier import MAX_UNSAVED, EventApplier
from nursery.brokers import BrokerHandle
from nursery.cancels import Cancels
from nursery.identity import client_order_id, execution_id, execution_of_client_order, request_hash
from nursery.live import LiveBook, LiveExecution
from nursery.placement import Outcome, Placement, place
from nursery.reconcile import Finding, Resolution, find_order
from nursery.recovery import reconcile_with_broker
from routing.config import DEFAULT_CONFIG as DEFAULT_ROUTING
from routing.config import RoutingConfig
from routing.decision import decision_of
from routing.decision import decode as decode_decision
from routing.decision import encode as encode_decision
from routing.impact import MarketStats
from routing.select import Selection, select_broker
from routing.stats import RoutingStats
from sql.records import ClaimResult, ClaimTakenOver, OrderClaim, OutboxEvent
from sql.store import Store
from sql.writer import DatabaseUnavailable

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """Execution reports and TCA (`analysis.reporter.ExecutionReporter`)."""

    async def report(
        self,
        order: BrokerOrder,
        arrival_price: Decimal | None = None,
        *,
        arrival_known: bool = False,
        replace: bool = False,
    ) -> object: ...

    async def analyse(self, request: TCARequest) -> TCAResponse: ...

    # The batching queue (`analysis.queue.ReportQueue`): finished executions wait there and
    # are reported many at a time, off the order path.
    @property
    def pending(self) -> int: ...

    def queue(
        self,
        order: BrokerOrder,
        arrival_price: Decimal | None = None,
        *,
        arrival_known: bool = False,
        replace: bool = False,
    ) -> bool: ...

    async def next_batch(self) -> list[ReportJob]: ...

    async def report_many(self, jobs: Sequence[ReportJob]) -> object: ...

    def batch_done(self, batch: Sequence[ReportJob]) -> None: ...

    def discard(self) -> int: ...


class MarketView(Protocol):
    def asset_class(self, symbol: str) -> AssetClass | None: ...

    def mid(self, symbol: str) -> Decimal | None: ...

    def stats(self, symbol: str) -> MarketStats | None: ...


def _left_pending(live: LiveExecution) -> bool:
    """The broker's stream already said something about the order (so the broker has it)."""
    return live.order.status is not BrokerOrderStatus.PENDING


def _utcnow() -> datetime:
    return datetime.now(UTC)


#: A repeated request polls the stored claim from this pause, doubling up to the max (s), and
#: after this long asks whether the order is orphaned (`take_orphan`).
REPEAT_POLL_FIRST_S = 0.01
REPEAT_POLL_MAX_S = 0.5
REPEAT_TAKEOVER_AFTER_S = 0.5
#: A batch of reports that met a database outage waits this long (s) for the database, then is
#: left to the periodic backfill.
REPORT_OUTAGE_WAIT_S = 60.0
RECOVERY_LOOKBACK = timedelta(days=7)
RECOVERY_TIMEOUT = 30.0
#: Recovery lookups go only while more than this share (%) of the broker's rate limits is free.
RECOVERY_HEADROOM = 50.0


def _estimate(selection: Selection, broker_id: str) -> float | None:
    """The routing model's expected time to fill at `broker_id`, in ms (None: unbounded)."""
    score = selection.score_of(broker_id)
    if score is None or not math.isfinite(score.expected_time_ms):
        return None
    return round(score.expected_time_ms, 3)


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
        #: This daemon's id (`nursery.lease`): the owner of its claims, the fence of its attempts.
        self._owner = owner
        #: Takes over an order nobody answers and answers it (`OrphanSweeper.take_one`), when
        #: the daemon runs a sweeper: a repeated request does not wait on a dead daemon.
        self.take_orphan: Callable[[str], Awaitable[bool]] | None = None
        #: Execution ids whose PENDING attempt a background task is resolving.
        self._resolving: set[str] = set()
        self._brokers: dict[str, BrokerHandle] = {b.broker_id: b for b in brokers}
        self._market = market
        self._publish = publish
        self._attempt_deadline = attempt_deadline
        self._duplicate_wait = duplicate_wait
        if unknown_policy not in ("adopt", "failover"):
            raise ValueError(f"unknown_policy must be 'adopt' or 'failover', not {unknown_policy!r}")
        #: What to do with an order found at a broker after an unknown outcome: keep it there
        #: ("adopt"), or cancel it, wait for the cancel, and try the next broker ("failover").
        self._unknown_policy = unknown_policy
        #: How long routing waits to learn the fate of an unknown attempt before answering PENDING.
        self._reconcile_budget = reconcile_budget
        self._clock = clock
        #: The adaptive routing statistics: fed by every ack, reject, timeout, finished
        #: execution, heartbeat and TCA result; read by every routing decision.
        self.stats = stats if stats is not None else RoutingStats()
        self._routing_config = routing
        self._reporter = reporter
        for handle in self._brokers.values():
            handle.probe_listener = self._on_probe
        self._live = LiveBook()
        self._routing: dict[str, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self._events: trio.MemoryReceiveChannel[AnyBrokerEvent] | None = None
        self._stopping = False
        self._active_requests = 0
        self._idle = trio.Event()
        self._idle.set()
        self._applier = EventApplier(
            store,
            self._live,
            self._brokers,
            publish,
            self._spawn,
            on_zombie=lambda live: self._spawn(self._cancels.cancel_zombie, live),
            on_finished=self._on_finished,
            on_late_fill=self._on_late_fill,
            on_overflow=self._on_overflow,
            max_unsaved=max_unsaved,
        )
        self._cancels = Cancels(
            store,
            self._live,
            self._brokers,
            apply=self._applier.apply,
            spawn=self._spawn,
            attempt_deadline=attempt_deadline,
            clock=clock,
        )

    def __repr__(self) -> str:
        return (
            f"<ExecutionEngine brokers={len(self._brokers)} live={len(self._live)} stopping={self._stopping}>"
        )

    @property
    def brokers(self) -> Mapping[str, BrokerHandle]:
        return self._brokers

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
                    nursery.start_soon(self._resolve_in_background, live, "recovered after restart")
            nursery.start_soon(self._evict_periodically)
            self._events = events
            task_status.started()
            async with events:
                async for event in events:
                    self._applier.enqueue(event)

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

    def open_executions(self) -> int:
        return self._live.open_count()

    async def recover(self, handle: BrokerHandle, since: datetime | None) -> None:
        """After a connect: what the broker did while we were not listening.

        1. Fills since `since` (None, the first connect since start: since the oldest
           execution still open there, at most `RECOVERY_LOOKBACK` back), of our orders only,
           applied like stream events (stored once by fill id).
        2. Each execution still open there (and not PENDING: those are reconciled on their
           own) is looked up by client order id, and what the broker answers is applied after
           those fills (`nursery.recovery.reconcile_with_broker`): a fill reconstructed from its
           cumulative quantity when it reports more filled than we hold (reports it lost, a FIX
           sequence reset), the end it reports (cancelled, expired, rejected), and CANCELED
           when it does not know the order at all. Lookups go through the rate limiter, and
           only while half of its capacity is free: new orders come first.
        Raises on failure (the supervisor retries while connected)."""
        now = self._clock()
        broker_id = handle.broker_id
        open_here = [
            live
            for live in self._live
            if live.order.broker_id == broker_id and not live.order.status.is_final
        ]
        if since is None:
            if not open_here:
                return
            since = max(min(live.order.created_at for live in open_here), now - RECOVERY_LOOKBACK)
        with trio.fail_after(RECOVERY_TIMEOUT):
            fills = await handle.adapter.fills_since(since)
        ours = [f for f in fills if execution_of_client_order(f.client_order_id) is not None]
        for fill in ours:
            self._applier.enqueue(fill)
        ended = reconstructed = unknown = 0
        unpriced: list[str] = []
        for live in open_here:
            order = live.order
            if order.status is BrokerOrderStatus.PENDING or order.status.is_final:
                continue
            deadline = trio.current_time() + RECOVERY_TIMEOUT
            with trio.fail_after(RECOVERY_TIMEOUT):
                # Orders first: a lookup waits until the broker's rate limits have room to spare.
                while handle.limiter.headroom() <= RECOVERY_HEADROOM:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                await handle.limiter.acquire(deadline)
                snapshot = await handle.adapter.query(order.client_order_id)
            # `order` as queried: the applier recomputes a reconstructed fill against the fills
            # held when it applies it (the ones queued above come first).
            found = reconcile_with_broker(order, snapshot, self._clock())
            for event in found.events:
                self._applier.enqueue(event)
            ended += found.ended
            reconstructed += found.reconstructed
            unknown += found.unknown_at_broker
            if found.unpriced:
                unpriced.append(order.client_order_id)
        if ours or ended or reconstructed or unknown or unpriced:
            log.info(
                "recovered after connecting",
                extra={
                    "broker_id": broker_id,
                    "fills": len(ours),
                    "ended": ended,
                    "reconstructed_fills": reconstructed,
                    "unknown_at_broker": unknown,
                },
            )
        if unknown:
            log.warning(
                "open executions the broker does not know (a venue that lost its state?): ended CANCELED",
                extra={"broker_id": broker_id, "count": unknown},
            )
        if unpriced:
            log.error(
                "the broker reports fills we do not hold but no average price: not booked",
                extra={"broker_id": broker_id, "client_order_ids": unpriced[:20], "count": len(unpriced)},
            )

    # --- routing --------------------------------------------------------------------------

    async def route_order(self, request: OrderRoutingRequest) -> OrderRoutingResponse:
        self._check_accepting()
        asset_class = self._check_routable(request)
        fingerprint = request_hash(request)
        self._begin()
        try:
            earlier = self._routing.get(request.order_id)
            while earlier is not None:  # same order id already being routed here: wait for it
                with trio.move_on_after(self._duplicate_wait):
                    await earlier.wait()
                claim = await self._store.get_claim(request.order_id)
                if claim is not None:
                    # Still routing here (past the wait): not an orphan, only slow.
                    orphan = request.order_id not in self._routing
                    return await self._answer_repeat(request.order_id, fingerprint, claim, may_take=orphan)
                earlier = self._routing.get(request.order_id)  # it failed before claiming
            done = self._routing[request.order_id] = trio.Event()
            try:
                return await self._route_new(request, asset_class, fingerprint)
            finally:
                done.set()
                del self._routing[request.order_id]
        finally:
            self._end()

    def _check_accepting(self) -> None:
        if self._stopping:
            raise Unavailable("service is stopping: send the request again (another instance will take it)")

    def _check_routable(self, request: OrderRoutingRequest) -> AssetClass:
        errors: list[FieldError] = []
        asset_class = self._market.asset_class(request.symbol)
        if asset_class is None:
            errors.append(FieldError("symbol", f"unknown instrument {request.symbol!r}"))
        for i, broker in enumerate(request.preferred_brokers):
            if broker not in self._brokers:
                known = ", ".join(sorted(self._brokers))
                errors.append(
                    FieldError(f"preferredBrokers[{i}]", f"unknown broker {broker!r} (known: {known})")
                )
        if errors:
            raise InvalidRequest("invalid request: " + ", ".join(e.field for e in errors), errors)
        assert asset_class is not None
        return asset_class

    async def _route_new(
        self, request: OrderRoutingRequest, asset_class: AssetClass, fingerprint: str
    ) -> OrderRoutingResponse:
        received = self._clock()
        arrival = self._market.mid(request.symbol)
        reference = request.price or request.stop_price or arrival
        self.stats.advance(trio.current_time())
        within = self._attempt_deadline(request.urgency)
        selection = select_broker(
            [b.candidate(within) for b in self._brokers.values()],
            request,
            asset_class,
            reference,
            stats=self.stats,
            market=self._market.stats(request.symbol),
            config=self._routing_config,
        )
        decision = encode_decision(decision_of(selection, received, reference)).decode()
        routing_id = str(uuid.uuid4())
        broker_id = selection.chosen
        order: BrokerOrder | None = None
        response: OrderRoutingResponse | None = None
        if broker_id is None:
            response = OrderRoutingResponse(
                routing_id=routing_id,
                order_id=request.order_id,
                status=RoutingStatus.REJECTED,
                timestamp=received,
                rejection_reason=selection.rejection_reason(),
            )
        else:
            execution = execution_id(request.order_id, 1)
            order = BrokerOrder(
                id=execution,
                order_id=request.order_id,
                broker_id=broker_id,
                client_order_id=client_order_id(execution),
                account_id=request.account_id,
                symbol=request.symbol,
                side=request.side,
                order_type=request.type,
                quantity=request.quantity,
                time_in_force=request.time_in_force,
                execution_strategy=request.execution_strategy,
                urgency=request.urgency,
                created_at=received,
                updated_at=received,
                price=request.price,
                stop_price=request.stop_price,
            )
        claim = OrderClaim(
            order_id=request.order_id,
            routing_id=routing_id,
            request_hash=fingerprint,
            request=request,
            received_at=received,
            arrival_price=arrival,
            execution=order,
            asset_class=asset_class.value,
            event=None,
            response=response,
            decision=decision,
            chosen_broker=broker_id,
            owner=self._owner,
        )
        result = await self._store.claim_order(claim)  # write before send
        if not result.claimed:
            return await self._answer_repeat(request.order_id, fingerprint, result, may_take=True)
        if response is not None:  # no eligible broker: the rejection is the recorded answer
            return response
        assert order is not None
        live = LiveExecution(order)
        live.estimate_ms = _estimate(selection, order.broker_id)
        live.arrival_price, live.arrival_known = arrival, True
        live.decision = decision
        self._live.add(live)
        return await self._place_with_failover(live, selection, routing_id, asset_class, request)

    def _submit_request(self, order: BrokerOrder, asset_class: AssetClass) -> SubmitRequest:
        return SubmitRequest(
            client_order_id=order.client_order_id,
            account_id=order.account_id,
            symbol=order.symbol,
            asset_class=asset_class,
            side=order.side,
            order_type=order.order_type,
            quantity=order.quantity,
            time_in_force=order.time_in_force,
            price=order.price,
            stop_price=order.stop_price,
        )

    async def _place_with_failover(
        self,
        live: LiveExecution,
        selection: Selection,
        routing_id: str,
        asset_class: AssetClass,
        request: OrderRoutingRequest,
    ) -> OrderRoutingResponse:
        """Try the ranked brokers in turn until one holds the order. A broker that rejected or
        was denied provably holds nothing: the next one is tried. After an unknown outcome the
        next broker is tried only once this one provably holds no live order (absent, or
        cancelled with the cancel confirmed); an order it does hold is adopted."""
        reasons: list[str] = []
        ranked = selection.ranked
        for index, broker_id in enumerate(ranked):
            if index > 0:
                arrival, decision = live.arrival_price, live.decision
                try:
                    following = await self._next_attempt(live.order, broker_id, index + 1, asset_class)
                except DatabaseUnavailable:  # write before send: no record, no send
                    reasons.append(f"{broker_id}: not tried (the database is unavailable)")
                    answer = self._response(
                        live, routing_id, RoutingStatus.REJECTED, rejection_reason="; ".join(reasons)
                    )
                    await self._applier.apply(live, [], answer)
                    return answer
                except ClaimTakenOver as exc:  # our lease lapsed: another daemon answers it
                    log.warning("failover stopped: order taken over", extra={"order_id": live.order.order_id})
                    return await self._stored_answer(live.order.order_id, str(exc))
                live = following
                live.estimate_ms = _estimate(selection, broker_id)
                live.arrival_price, live.arrival_known = arrival, True
                live.decision = decision
            handle = self._brokers[broker_id]
            last = index == len(ranked) - 1
            deadline = trio.current_time() + self._attempt_deadline(request.urgency)
            placement = await place(handle, self._submit_request(live.order, asset_class), deadline)
            self._observe(broker_id, placement, request.urgency)
            if placement.outcome is Outcome.CONFIRMED:
                assert placement.ack is not None
                return await self._confirm(live, routing_id, placement.ack.broker_order_id, placement.ack.at)
            if not placement.nothing_placed:
                finding = await find_order(
                    handle,
                    live.order.client_order_id,
                    settle=handle.settle,
                    until=trio.current_time() + self._reconcile_budget,
                    query_timeout=self._attempt_deadline(request.urgency),
                    known_to_exist=functools.partial(_left_pending, live),
                )
                if finding.resolution is Resolution.UNRESOLVED:
                    return await self._answer_pending(live, routing_id, placement.reason)
                if finding.resolution is Resolution.EXISTS:
                    broker_order_id = self._broker_order_id(live, finding)
                    if self._unknown_policy == "adopt" or last:
                        return await self._confirm(live, routing_id, broker_order_id, self._clock())
                    if not await self._cancels.cancel_and_confirm(
                        live, broker_order_id, self._reconcile_budget
                    ):
                        return await self._confirm(live, routing_id, broker_order_id, self._clock())
                    reasons.append(f"{broker_id}: {placement.reason}; canceled there to fail over")
                    continue
                why = (
                    "the broker rejected it"
                    if finding.resolution is Resolution.REFUSED
                    else "the order never reached the broker"
                )
                placement = Placement(Outcome.REJECTED, f"{placement.reason}; {why}")
            reason = f"{broker_id}: {placement.reason}"
            reasons.append(reason)
            rejected = OrderRejected(live.order.client_order_id, self._clock(), reason)
            if not last:  # failing over: recorded, not published (the order lives on elsewhere)
                await self._applier.apply(live, [rejected], publish=False)
                log.info("failing over", extra={"order_id": live.order.order_id, "reason": reason})
                continue
            answer = self._response(
                live, routing_id, RoutingStatus.REJECTED, rejection_reason="; ".join(reasons)
            )
            await self._applier.apply(live, [rejected], answer)
            return answer
        raise AssertionError("ranked brokers cannot be empty here")  # pragma: no cover

    def _response(
        self, live: LiveExecution, routing_id: str, status: RoutingStatus, **fields: object
    ) -> OrderRoutingResponse:
        order = live.order
        return OrderRoutingResponse(
            routing_id=routing_id,
            order_id=order.order_id,
            status=status,
            timestamp=self._clock(),
            selected_broker=order.broker_id,
            execution_id=order.id,
            estimated_execution_time=live.estimate_ms,
            **fields,  # type: ignore[arg-type]
        )

    async def _confirm(
        self, live: LiveExecution, routing_id: str, broker_order_id: str, at: datetime
    ) -> OrderRoutingResponse:
        answer = self._response(live, routing_id, RoutingStatus.ACCEPTED, broker_order_id=broker_order_id)
        live.accepted_at = at
        # The reply goes out before the ack is written: the claim made the order recoverable
        # (see nursery.applier, "Deferred writes").
        accepted = OrderAccepted(live.order.client_order_id, at, broker_order_id)
        await self._applier.apply(live, [accepted], answer, durable=False)
        if live.cancel_requested and not live.order.status.is_final:
            self._spawn(self._cancels.send_cancel, live)
        return answer

    async def _answer_pending(
        self, live: LiveExecution, routing_id: str, reason: str
    ) -> OrderRoutingResponse:
        answer = self._response(live, routing_id, RoutingStatus.PENDING)
        await self._applier.apply(live, [], answer)
        log.warning(
            "order outcome unknown; still reconciling",
            extra={"order_id": live.order.order_id, "broker_id": live.order.broker_id, "reason": reason},
        )
        self._spawn(self._resolve_in_background, live, reason)
        return answer

    @staticmethod
    def _broker_order_id(live: LiveExecution, finding: Finding) -> str:
        if finding.snapshot is not None:
            return finding.snapshot.broker_order_id
        return live.order.broker_order_id or ""

    async def _next_attempt(
        self, previous: BrokerOrder, broker_id: str, attempt: int, asset_class: AssetClass
    ) -> LiveExecution:
        execution = execution_id(previous.order_id, attempt)
        now = self._clock()
        order = msgspec.structs.replace(
            previous,
            id=execution,
            broker_id=broker_id,
            client_order_id=client_order_id(execution),
            attempt=attempt,
            status=BrokerOrderStatus.PENDING,
            created_at=now,
            updated_at=now,
            broker_order_id=None,
            filled_quantity=Decimal(0),
            average_price=None,
            fees=Decimal(0),
            rejection_reason=None,
            sequence=0,
            fills=(),
        )
        await self._store.start_attempt(order, asset_class.value, owner=self._owner)  # write before send
        live = LiveExecution(order)
        self._live.add(live)
        return live

    async def _answer_repeat(
        self, order_id: str, fingerprint: str, claim: ClaimResult, *, may_take: bool
    ) -> OrderRoutingResponse:
        """The stored answer of an order claimed before (here or by another daemon), waiting
        for it while the first request is routed. `may_take`: no task here routes it, so if
        nobody answers it (a crash, a dead peer) it is taken over and answered here."""
        if claim.request_hash != fingerprint:
            raise InvalidRequest(
                "orderId already used for a different order",
                [FieldError("orderId", f"{order_id!r} was already routed with different parameters")],
            )
        started = trio.current_time()
        deadline = started + self._duplicate_wait
        pause = REPEAT_POLL_FIRST_S
        taking = not may_take or self.take_orphan is None
        while claim.response is None:  # the first request is still being routed (maybe elsewhere)
            held = self._held_answer(order_id)
            if held is not None:  # answered here, its write still queued: the same answer
                return held
            now = trio.current_time()
            if now > deadline:
                raise Unavailable(f"order {order_id!r} is still being routed; ask again or use GetExecution")
            if not taking and now - started >= REPEAT_TAKEOVER_AFTER_S:
                taking = True  # nobody may be routing it (a crash, a dead peer): answer it here
                assert self.take_orphan is not None
                await self.take_orphan(order_id)
            else:
                await trio.sleep(min(pause, max(0.0, deadline - now)))
                pause = min(pause * 2, REPEAT_POLL_MAX_S)
            fresh = await self._store.get_claim(order_id)
            assert fresh is not None
            claim = fresh
        return claim.response

    def _held_answer(self, order_id: str) -> OrderRoutingResponse | None:
        """The answer this daemon gave `order_id` and has not written yet (deferred, or kept
        through a database outage), if any."""
        live = self._live.by_order(order_id)
        if live is None or live.unsaved_response is None:
            return None
        return live.unsaved_response[1]

    async def _stored_answer(self, order_id: str, why: str) -> OrderRoutingResponse:
        """The answer another daemon recorded for an order it took over from us."""
        claim = await self._store.get_claim(order_id)
        if claim is not None and claim.response is not None:
            return claim.response
        raise Unavailable(f"order {order_id!r} is being answered by another daemon ({why}); ask again")

    def routing_here(self, order_id: str) -> bool:
        """A task of this daemon is routing `order_id`, or holds its answer for the database."""
        return order_id in self._routing or self._held_answer(order_id) is not None

    async def adopt(self, order_id: str) -> None:
        """Answer an order nobody is answering (`nursery.orphans`): the answer follows from its
        latest attempt, after asking the broker what became of it if it is PENDING (within the
        reconcile budget; still unknown: answered PENDING and resolved in the background, as an
        unknown outcome while routing is). Never sends anything. Raises `DatabaseUnavailable`
        (the next sweep tries again)."""
        claim = await self._store.get_claim(order_id)
        if claim is None or claim.routing_id is None:
            return
        attempts = await self._store.load_attempts(order_id)
        if not attempts:
            if claim.response is None:  # claimed without a broker is answered at claim time
                log.error("an unanswered claim has no attempt", extra={"order_id": order_id})
            return
        latest = attempts[-1]
        live = self._live.by_execution(latest.id)
        if live is None:
            live = LiveExecution(latest)
            self._live.add(live)
        if live.order.status is BrokerOrderStatus.PENDING:
            if latest.id in self._resolving:
                with trio.move_on_after(self._reconcile_budget):
                    while live.order.status is BrokerOrderStatus.PENDING:
                        await live.changed.wait()
            else:
                await self._resolve_adopted(live)
        if claim.response is None:
            answer = self._adopted_answer(live, claim.routing_id, attempts)
            await self._applier.apply(live, [], answer)
        log.info(
            "adopted an order nobody was answering",
            extra={
                "order_id": order_id,
                "status": live.order.status.value,
                "answered": claim.response is None,
            },
        )

    async def _resolve_adopted(self, live: LiveExecution) -> None:
        """One reconcile-budget's try at learning whether the broker holds `live`'s order; the
        background resolver goes on if it cannot tell yet."""
        handle = self._reconciling_handle(live)
        if handle is None:
            return
        finding = await self._ask_broker(handle, live, self._reconcile_budget)
        reason = "routing was interrupted (the daemon routing it stopped)"
        if finding.resolution is Resolution.UNRESOLVED:
            self._spawn(self._resolve_in_background, live, reason)
            return
        await self._settle(live, finding, reason)

    def _adopted_answer(
        self, live: LiveExecution, routing_id: str, attempts: Sequence[BrokerOrder]
    ) -> OrderRoutingResponse:
        order = live.order
        if order.status is BrokerOrderStatus.PENDING:
            return self._response(live, routing_id, RoutingStatus.PENDING)
        if order.status is BrokerOrderStatus.REJECTED:
            reasons = [
                f"{a.broker_id}: {a.rejection_reason}" for a in (*attempts[:-1], order) if a.rejection_reason
            ]
            return self._response(
                live, routing_id, RoutingStatus.REJECTED, rejection_reason="; ".join(reasons)
            )
        return self._response(live, routing_id, RoutingStatus.ACCEPTED, broker_order_id=order.broker_order_id)

    # --- reconciliation ----------------------------------------------------------------

    async def _resolve_in_background(self, live: LiveExecution, reason: str) -> None:
        """Keep asking the broker until it says whether it holds the order (no further failover:
        the requester already has its PENDING answer, updates tell the rest)."""
        handle = self._reconciling_handle(live)
        if handle is None:
            return
        if live.order.id in self._resolving:
            return
        self._resolving.add(live.order.id)
        try:
            await self._resolve_until_known(handle, live, reason)
        finally:
            self._resolving.discard(live.order.id)

    async def _resolve_until_known(self, handle: BrokerHandle, live: LiveExecution, reason: str) -> None:
        while live.order.status is BrokerOrderStatus.PENDING:
            finding = await self._ask_broker(handle, live, max(self._reconcile_budget, handle.settle))
            await self._settle(live, finding, reason)

    def _reconciling_handle(self, live: LiveExecution) -> BrokerHandle | None:
        """The connection to ask about `live`'s PENDING attempt; None (logged) if its broker is
        no longer configured."""
        handle = self._brokers.get(live.order.broker_id)
        if handle is None:
            log.error(
                "cannot reconcile: broker no longer configured", extra={"broker_id": live.order.broker_id}
            )
        return handle

    async def _ask_broker(self, handle: BrokerHandle, live: LiveExecution, within: float) -> Finding:
        """What the broker says of `live`'s attempt (by client order id), within `within` s."""
        return await find_order(
            handle,
            live.order.client_order_id,
            settle=handle.settle,
            until=trio.current_time() + within,
            query_timeout=self._attempt_deadline(live.order.urgency),
            known_to_exist=functools.partial(_left_pending, live),
        )

    async def _settle(self, live: LiveExecution, finding: Finding, reason: str) -> None:
        """Record what the broker said of a PENDING attempt: it holds it (accepted), or it
        never will (rejected). Unresolved: nothing."""
        if live.order.status is not BrokerOrderStatus.PENDING:
            return
        if finding.resolution is Resolution.EXISTS:
            adopted = OrderAccepted(
                live.order.client_order_id, self._clock(), self._broker_order_id(live, finding)
            )
            await self._applier.apply(live, [adopted])
        elif finding.resolution in (Resolution.ABSENT, Resolution.REFUSED):
            outcome = (
                "the broker rejected it"
                if finding.resolution is Resolution.REFUSED
                else "the order never reached the broker"
            )
            why = f"{live.order.broker_id}: {reason}; {outcome}"
            await self._applier.apply(live, [OrderRejected(live.order.client_order_id, self._clock(), why)])

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

    # --- routing statistics ---------------------------------------------------------------

    def _observe(self, broker_id: str, placement: Placement, urgency: Urgency) -> None:
        """What one attempt says about the broker: an ack and its latency, a refusal, or a
        timeout (its wait enters the latency tail). A local denial says nothing about it."""
        now = trio.current_time()
        if placement.outcome is Outcome.CONFIRMED:
            self.stats.on_ack(broker_id, placement.latency_ms, urgency, at=now)
        elif placement.outcome is Outcome.REJECTED:
            self.stats.on_reject(broker_id, at=now)
        elif placement.outcome is Outcome.UNKNOWN:
            self.stats.on_timeout(broker_id, placement.latency_ms, urgency, at=now)

    def _on_probe(self, broker_id: str, round_trip_ms: float) -> None:
        self.stats.on_probe(broker_id, round_trip_ms, at=trio.current_time())

    def _on_finished(self, live: LiveExecution) -> None:
        """An execution reached its end: one with fills is queued for its report (`_report`
        writes them in batches); how much of it filled and how fast feed the broker's fill
        statistics — unless the OMS cancelled it (that says nothing about the broker) or the
        broker never held it (rejections were counted when they happened)."""
        order = live.order
        if order.filled_quantity > 0:
            self._queue_report(live, replace=False)
        if order.status is BrokerOrderStatus.REJECTED or order.broker_order_id is None:
            return
        if live.cancel_requested and order.filled_quantity < order.quantity:
            return
        asset_class = self._market.asset_class(order.symbol)
        if asset_class is None:
            return
        fraction = float(order.filled_quantity / order.quantity) if order.quantity else 0.0
        time_to_fill = None
        if order.fills:
            start = live.accepted_at or order.created_at
            time_to_fill = max(0.0, (order.fills[-1].timestamp - start).total_seconds() * 1000.0)
        self.stats.on_fill(
            order.broker_id,
            asset_class,
            order.order_type,
            order.time_in_force,
            min(1.0, max(0.0, fraction)),
            time_to_fill,
            at=trio.current_time(),
        )

    def _on_overflow(self, since: datetime) -> None:
        """Broker events were dropped during a database outage: ask every broker again."""
        for handle in self._brokers.values():
            self._spawn(self._recover_dropped, handle, since)

    async def _recover_dropped(self, handle: BrokerHandle, since: datetime) -> None:
        """`recover(handle, since)` until it completes (the broker may be reconnecting)."""
        delay = 0.5
        while True:
            try:
                await self.recover(handle, since)
            except Exception as exc:
                log.warning(
                    "recovery of dropped broker events failed; retrying",
                    extra={"broker_id": handle.broker_id, "error": repr(exc), "retry_in_s": delay},
                )
                await trio.sleep(delay)
                delay = min(30.0, delay * 2)
                continue
            return

    def _on_late_fill(self, live: LiveExecution) -> None:
        """A fill after the execution ended (it raced a cancel): its report is rewritten."""
        self._queue_report(live, replace=True)

    @property
    def _reports_pending(self) -> int:
        """Reports queued or being written (shutdown waits for zero)."""
        return self._reporter.pending if self._reporter is not None else 0

    def _queue_report(self, live: LiveExecution, *, replace: bool) -> None:
        """Queue `live`'s report; start the writer (`_report`) if none runs: one runs exactly
        while reports are pending."""
        reporter = self._reporter
        if reporter is None:
            return
        idle = reporter.pending == 0
        reporter.queue(live.order, live.arrival_price, arrival_known=live.arrival_known, replace=replace)
        if idle and reporter.pending:
            self._spawn(self._report)

    async def _report(self) -> None:
        """The report writer: runs while reports are pending (queued or being written) and ends
        when none are. It takes the queued reports in batches (every ~150 ms,
        or as soon as enough wait: `ExecutionReporter.next_batch`) and writes each batch at
        once (`report_many`: one market wait, one vectorised analysis, one writer submission).
        A batch that meets a database outage waits for the database (at most
        `REPORT_OUTAGE_WAIT_S`) and is written once it is back; past that it is left to the
        periodic backfill. Reports never take the engine down: the orders are unaffected."""
        reporter = self._reporter
        assert reporter is not None
        try:
            while reporter.pending:
                batch = await reporter.next_batch()
                try:
                    for _ in range(2):
                        try:
                            await reporter.report_many(batch)
                            break
                        except DatabaseUnavailable:
                            with trio.move_on_after(REPORT_OUTAGE_WAIT_S):
                                await self._store.wait_available()
                    else:
                        log.warning(
                            "execution reports left to the backfill",
                            extra={"count": len(batch), "execution_ids": [j.order.id for j in batch]},
                        )
                except Exception:
                    log.exception(
                        "execution reports failed",
                        extra={"count": len(batch), "execution_ids": [j.order.id for j in batch]},
                    )
                reporter.batch_done(batch)
        finally:
            if reporter.pending:  # cancelled (the engine stops): the backfill writes the rest
                reporter.discard()

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
        if stored is None:
            try:
                stored = await self._store.load_decision(order.order_id)
            except DatabaseUnavailable:
                if live is None:
                    raise
                # answered from memory during an outage: everything but the (stored) decision
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
