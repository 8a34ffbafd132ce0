"""Routing one order: check it, choose its brokers, claim it once, and answer every repeat with
the first answer.

`OrderRouter.route` is RouteOrder behind the service facade (`nursery.engine`). Contract:

- `orderId` is the idempotency key. The first request for an order id claims it in PostgreSQL
  (one row, primary key) with the order, the routing decision, the chosen broker and the first
  attempt's client order id — committed before any broker is called (write before send) — and
  then `nursery.failover` places it. Every repeat (sequential, concurrent here, or through
  another daemon on the same database) sends nothing and gets the first answer, byte for byte:
  from memory while its write is still queued, else from the stored claim, polled while the
  first request is still being routed. A repeat carrying a *different* order is refused (400
  on `orderId`).
- A repeat nobody answers (a crashed or dead daemon held it) is taken over through
  `take_orphan` (the orphan sweeper's, when the daemon runs one) after
  `REPEAT_TAKEOVER_AFTER_S`, and answered here; a repeat still unanswered after
  `duplicate_wait` gets 503 (ask again, or GetExecution).
- With no eligible broker the order is claimed with its REJECTED answer and nothing is sent.
- Pre-trade checks (`pre_trade`, when the daemon sets it: `nursery.pretrade`): before a broker
  is chosen, the kill switches and the execution safeguards; once it is chosen, the Risk
  Analysis Service (`risk`, when configured); an order they refuse is claimed
  with its REJECTED answer (`rejectionReason` names the safeguard, the limit and the value) and
  nothing is sent. What they decided rides in the stored decision (`nursery.pretrade.record`),
  so `why` explains it; an admitted order that ends up not routed (a repeat, no eligible
  broker) is given back to the account-wide counters.
"""

from __future__ import annotations

import difflib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

import trio

from api.contracts import FieldError, OrderRoutingRequest, OrderRoutingResponse
from api.enums import AssetClass, RoutingStatus
from api.errors import InvalidRequest, Unavailable
from api.orders import BrokerOrder
from nursery import milestones
from nursery.brokers import BrokerHandle
from nursery.failover import Failover, estimate_ms
from nursery.identity import client_order_id, execution_id, request_hash
from nursery.live import LiveBook, LiveExecution
from nursery.pretrade.checks import Refusal
from nursery.pretrade.gate import PreTradeGate
from nursery.pretrade.record import PreTradeRecord, SafeguardOutcome, merge
from nursery.pretrade.risk import RiskAssessor, refusal_of
from routing.config import RoutingConfig
from routing.decision import decision_of
from routing.decision import encode as encode_decision
from routing.impact import MarketStats
from routing.select import Selection, select_broker
from routing.stats import RoutingStats
from sql.records import ClaimResult, OrderClaim
from sql.store import Store

__all__ = [
    "REPEAT_POLL_FIRST_S",
    "REPEAT_POLL_MAX_S",
    "REPEAT_TAKEOVER_AFTER_S",
    "MarketView",
    "OrderRouter",
]

#: A repeated request polls the stored claim from this pause, doubling up to the max (s), and
#: after this long asks whether the order is orphaned (`take_orphan`).
REPEAT_POLL_FIRST_S = 0.01
REPEAT_POLL_MAX_S = 0.5
REPEAT_TAKEOVER_AFTER_S = 0.5

log = logging.getLogger(__name__)

#: The pre-trade record of an order that passed the safeguards (the common case: no encoding).
_PASSED = PreTradeRecord(safeguards=SafeguardOutcome(passed=True))
#: The decision of an order refused before routing: no broker was considered.
_NOT_ROUTED = Selection(ranked=(), ineligible=())


def unknown_symbol(symbol: str, known: Sequence[str]) -> str:
    """The error for an unknown instrument, listing the closest known ones (`BTC/USD` finds
    `BTC-USD`: the same letters and digits first, then the most similar spellings)."""

    def letters(text: str) -> str:
        return "".join(c for c in text.upper() if c.isalnum())

    same = [k for k in known if letters(k) == letters(symbol)]
    similar = difflib.get_close_matches(symbol.upper(), [k.upper() for k in known], n=5, cutoff=0.5)
    by_upper = {k.upper(): k for k in known}
    closest = list(dict.fromkeys([*same, *(by_upper[u] for u in similar)]))[:5]
    message = f"unknown instrument {symbol!r}"
    if closest:
        return f"{message}; closest known: {', '.join(closest)}"
    if known:
        shown = sorted(known)[:20]
        return f"{message}; known: {', '.join(shown)}{', ...' if len(known) > 20 else ''}"
    return message


@dataclass(frozen=True, slots=True)
class _Arrived:
    """An order new here, and what was settled as it arrived: what refusing it and routing it
    both start from."""

    request: OrderRoutingRequest
    asset_class: AssetClass
    fingerprint: str  # the request's hash: a repeat must carry the same
    received: datetime
    arrival: Decimal | None  # the market's mid as it arrived
    reference: Decimal | None  # the price it is valued at (its limit or stop, else `arrival`)


class MarketView(Protocol):
    def asset_class(self, symbol: str) -> AssetClass | None: ...

    def mid(self, symbol: str) -> Decimal | None: ...

    def stats(self, symbol: str) -> MarketStats | None: ...


class OrderRouter:
    def __init__(
        self,
        store: Store,
        live: LiveBook,
        brokers: Mapping[str, BrokerHandle],
        market: MarketView,
        failover: Failover,
        *,
        stats: RoutingStats,
        routing: RoutingConfig,
        attempt_deadline: Callable[[object], float],
        duplicate_wait: float,
        clock: Callable[[], datetime],
        owner: str | None,
    ) -> None:
        self._store = store
        self._live = live
        self._brokers = brokers
        self._market = market
        self._failover = failover
        self._stats = stats
        self._routing_config = routing
        self._attempt_deadline = attempt_deadline
        self._duplicate_wait = duplicate_wait
        self._clock = clock
        #: This daemon's id (`nursery.lease`): the owner of its claims.
        self._owner = owner
        #: Takes over an order nobody answers and answers it (`OrphanSweeper.take_one`), when
        #: the daemon runs a sweeper: a repeated request does not wait on a dead daemon.
        self.take_orphan: Callable[[str], Awaitable[bool]] | None = None
        #: Order ids being routed by a task here; set when it is done.
        self._routing: dict[str, trio.Event] = {}
        #: The kill switches and execution safeguards every new order passes before a broker
        #: is chosen (`nursery.pretrade.gate`), when the daemon sets them.
        self.pre_trade: PreTradeGate | None = None
        #: The Risk Analysis Service, asked about every order once its broker is chosen
        #: (`nursery.pretrade.risk`), when configured.
        self.risk: RiskAssessor | None = None

    def __repr__(self) -> str:
        return f"<OrderRouter routing={len(self._routing)}>"

    def check_routable(self, request: OrderRoutingRequest) -> AssetClass:
        """The order's asset class; `InvalidRequest` (every field at fault) if its symbol or a
        preferred broker is unknown."""
        errors: list[FieldError] = []
        asset_class = self._market.asset_class(request.symbol)
        if asset_class is None:
            errors.append(
                FieldError("symbol", unknown_symbol(request.symbol, getattr(self._market, "symbols", ())))
            )
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

    async def route(self, request: OrderRoutingRequest, asset_class: AssetClass) -> OrderRoutingResponse:
        """Route a checked request (`check_routable`), or answer it as a repeat."""
        fingerprint = request_hash(request)
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

    async def _route_new(
        self, request: OrderRoutingRequest, asset_class: AssetClass, fingerprint: str
    ) -> OrderRoutingResponse:
        received = self._clock()
        milestones.received(request)
        arrival = self._market.mid(request.symbol)
        new = _Arrived(
            request,
            asset_class,
            fingerprint,
            received,
            arrival,
            request.price or request.stop_price or arrival,
        )
        gate = self.pre_trade
        if gate is None:
            response, _ = await self._route_admitted(new)
            return response
        verdict = gate.check(request, asset_class, trio.current_time())
        if isinstance(verdict, Refusal):
            outcome = SafeguardOutcome(False, verdict.safeguard, verdict.reason, verdict.limit, verdict.value)
            return await self._refuse(new, verdict, PreTradeRecord(outcome))
        # An error on the way (the database, a broker) keeps the order counted: its outcome
        # may be that it was routed, and a safeguard errs on the side of counting.
        response, routed = await self._route_admitted(new)
        if not routed:
            gate.release(verdict)
        return response

    async def _refuse(
        self, new: _Arrived, refusal: Refusal, record: PreTradeRecord, selection: Selection = _NOT_ROUTED
    ) -> OrderRoutingResponse:
        """Claim the order with its REJECTED answer (nothing is sent) and count the refusal,
        or answer it as a repeat of an order claimed before."""
        request, received = new.request, new.received
        response = OrderRoutingResponse(
            routing_id=str(uuid.uuid4()),
            order_id=request.order_id,
            status=RoutingStatus.REJECTED,
            timestamp=received,
            rejection_reason=refusal.rejection_reason,
        )
        decision = merge(encode_decision(decision_of(selection, received, new.reference)).decode(), record)
        claim = OrderClaim(
            order_id=request.order_id,
            routing_id=response.routing_id,
            request_hash=new.fingerprint,
            request=request,
            received_at=received,
            arrival_price=new.arrival,
            asset_class=new.asset_class.value,
            response=response,
            decision=decision,
            owner=self._owner,
        )
        result = await self._store.claim_order(claim)
        if not result.claimed:
            return await self._answer_repeat(request.order_id, new.fingerprint, result, may_take=True)
        if self.pre_trade is not None:
            self.pre_trade.count(refusal)
        milestones.refused(request.order_id, received, refusal.rejection_reason)
        log.warning(
            "order refused before routing",
            extra={
                "order_id": request.order_id,
                "account_id": request.account_id,
                "safeguard": refusal.safeguard,
                "reason": refusal.reason,
            },
        )
        return response

    async def _route_admitted(self, new: _Arrived) -> tuple[OrderRoutingResponse, bool]:
        """Choose, claim and place an order the pre-trade checks let through; its answer, and
        whether it was routed (claimed here with a chosen broker)."""
        request, received = new.request, new.received
        self._stats.advance(trio.current_time())
        within = self._attempt_deadline(request.urgency)
        selection = select_broker(
            [b.candidate(within) for b in self._brokers.values()],
            request,
            new.asset_class,
            new.reference,
            stats=self._stats,
            market=self._market.stats(request.symbol),
            config=self._routing_config,
        )
        decision = encode_decision(decision_of(selection, received, new.reference)).decode()
        broker_id = selection.chosen
        risk = self.risk
        if risk is not None and broker_id is not None:
            verdict = await risk.assess(
                request, new.asset_class, selection.score_of(broker_id), broker_id, new.reference
            )
            safeguards = _PASSED.safeguards if self.pre_trade is not None else None
            record = PreTradeRecord(safeguards, verdict)
            if not verdict.routed:
                refusal = refusal_of(verdict, risk.config.timeout_ms)
                return await self._refuse(new, refusal, record, selection), False
            decision = merge(decision, record)
        elif self.pre_trade is not None:
            decision = merge(decision, _PASSED)
        routing_id = str(uuid.uuid4())
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
            request_hash=new.fingerprint,
            request=request,
            received_at=received,
            arrival_price=new.arrival,
            execution=order,
            asset_class=new.asset_class.value,
            event=None,
            response=response,
            decision=decision,
            chosen_broker=broker_id,
            owner=self._owner,
        )
        result = await self._store.claim_order(claim)  # write before send
        if not result.claimed:
            return await self._answer_repeat(request.order_id, new.fingerprint, result, may_take=True), False
        if response is not None:  # no eligible broker: the rejection is the recorded answer
            milestones.refused(request.order_id, received, response.rejection_reason)
            return response, False
        assert order is not None
        chosen = selection.score_of(order.broker_id)
        milestones.routed(order, chosen.score if chosen is not None else None)
        live = LiveExecution(order)
        live.estimate_ms = estimate_ms(selection, order.broker_id)
        live.arrival_price, live.arrival_known = new.arrival, True
        live.decision = decision
        self._live.add(live)
        try:
            return await self._failover.place(live, selection, routing_id, new.asset_class, request), True
        finally:  # routed: the decision is in the store; not kept for every resting order
            live.decision = None
            final = self._live.by_order(request.order_id)
            if final is not None:
                final.decision = None

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

    def open_executions(self) -> Iterator[tuple[BrokerOrder, Decimal | None]]:
        """Every execution live here with its arrival price (the risk exposure's source)."""
        for live in self._live:
            yield live.order, live.arrival_price

    def routing_here(self, order_id: str) -> bool:
        """A task of this daemon is routing `order_id`, or holds its answer for the database."""
        return order_id in self._routing or self._held_answer(order_id) is not None
