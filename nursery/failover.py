"""Placing a claimed order: the ranked brokers in turn, until one holds it.

`Failover.place` takes an execution whose claim is committed (`nursery.router`) and returns the
routing answer. Contract:

- Write before send: every attempt after the first is recorded (`Store.start_attempt`, with
  its own deterministic client order id) before its broker is called; when it cannot be, the
  order is answered REJECTED and nothing more is sent. A claim another daemon took over (our
  lease lapsed) stops the failover and gets that daemon's answer.
- A broker that rejected the order, or a local denial (breaker, rate limit), provably holds
  nothing: the next broker is tried, the failed attempt recorded REJECTED but not published.
- After an unknown outcome the broker is asked (by client order id, within the reconcile
  budget) before anything else: an order it holds is adopted (policy "adopt", or the last
  broker) or cancelled and, once the cancel is confirmed with nothing filled, failed over
  (policy "failover"); an order it provably never got fails over; no answer yet: PENDING, and
  `nursery.resolver` goes on in the background. No order is ever sent twice.
- ACCEPTED is answered before the broker's ack is written (`durable=False`, see
  `nursery.applier`, "Deferred writes") when the broker outlives the daemon
  (`BrokerAdapter.outlives_daemon`); with one that dies with it, after. A cancel requested
  while the order was PENDING is sent as soon as it is acknowledged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal

import msgspec
import trio

from adapters.base import SubmitRequest
from api.contracts import OrderRoutingRequest, OrderRoutingResponse
from api.enums import AssetClass, BrokerOrderStatus, RoutingStatus
from api.errors import Unavailable
from api.events import OrderAccepted, OrderRejected
from api.orders import BrokerOrder
from nursery import milestones
from nursery.answers import routing_answer
from nursery.applier import EventApplier
from nursery.brokers import BrokerHandle
from nursery.cancels import Cancels
from nursery.hooks import Spawn
from nursery.identity import client_order_id, execution_id
from nursery.live import LiveBook, LiveExecution
from nursery.placement import Outcome, Placement, place
from nursery.post_trade import PostTrade
from nursery.reconcile import Resolution
from nursery.resolver import PendingResolver, broker_order_id
from routing.select import Selection
from sql.records import ClaimTakenOver
from sql.store import Store
from sql.writer import DatabaseUnavailable

__all__ = ["UNKNOWN_POLICIES", "Failover", "estimate_ms", "submit_request"]

log = logging.getLogger(__name__)

#: What to do with an order found at a broker after an unknown outcome.
UNKNOWN_POLICIES = ("adopt", "failover")


def estimate_ms(selection: Selection, broker_id: str) -> float | None:
    """The routing model's expected time to fill at `broker_id`, in ms (None: unbounded)."""
    score = selection.score_of(broker_id)
    if score is None or not math.isfinite(score.expected_time_ms):
        return None
    return round(score.expected_time_ms, 3)


def submit_request(order: BrokerOrder, asset_class: AssetClass) -> SubmitRequest:
    """What the adapter is sent for `order`."""
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


class Failover:
    def __init__(
        self,
        store: Store,
        live: LiveBook,
        brokers: Mapping[str, BrokerHandle],
        spawn: Spawn,
        *,
        applier: EventApplier,
        cancels: Cancels,
        resolver: PendingResolver,
        post_trade: PostTrade,
        attempt_deadline: Callable[[object], float],
        unknown_policy: str,
        reconcile_budget: float,
        clock: Callable[[], datetime],
        owner: str | None,
    ) -> None:
        if unknown_policy not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown_policy must be 'adopt' or 'failover', not {unknown_policy!r}")
        self._store = store
        self._live = live
        self._brokers = brokers
        self._spawn = spawn
        self._applier = applier
        self._cancels = cancels
        self._resolver = resolver
        self._post_trade = post_trade
        self._attempt_deadline = attempt_deadline
        #: What to do with an order found at a broker after an unknown outcome: keep it there
        #: ("adopt"), or cancel it, wait for the cancel, and try the next broker ("failover").
        self._unknown_policy = unknown_policy
        #: How long routing waits to learn the fate of an unknown attempt before answering PENDING.
        self._reconcile_budget = reconcile_budget
        self._clock = clock
        #: This daemon's id (`nursery.lease`): the fence of its attempts.
        self._owner = owner

    def __repr__(self) -> str:
        return f"<Failover brokers={len(self._brokers)} unknown_policy={self._unknown_policy}>"

    async def place(
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
                    answer = routing_answer(
                        live,
                        routing_id,
                        RoutingStatus.REJECTED,
                        self._clock(),
                        rejection_reason="; ".join(reasons),
                    )
                    await self._applier.apply(live, [], answer)
                    return answer
                except ClaimTakenOver as exc:  # our lease lapsed: another daemon answers it
                    log.warning("failover stopped: order taken over", extra={"order_id": live.order.order_id})
                    return await self._stored_answer(live.order.order_id, str(exc))
                live = following
                live.estimate_ms = estimate_ms(selection, broker_id)
                live.arrival_price, live.arrival_known = arrival, True
                live.decision = decision
            handle = self._brokers[broker_id]
            last = index == len(ranked) - 1
            deadline = trio.current_time() + self._attempt_deadline(request.urgency)
            placement = await place(handle, submit_request(live.order, asset_class), deadline)
            self._post_trade.observe_attempt(broker_id, placement, request.urgency)
            if placement.outcome is Outcome.CONFIRMED:
                assert placement.ack is not None
                return await self._confirm(live, routing_id, placement.ack.broker_order_id, placement.ack.at)
            if not placement.nothing_placed:
                finding = await self._resolver.ask_broker(handle, live, self._reconcile_budget)
                if finding.resolution is Resolution.UNRESOLVED:
                    return await self._answer_pending(live, routing_id, placement.reason)
                if finding.resolution is Resolution.EXISTS:
                    found = broker_order_id(live, finding)
                    if self._unknown_policy == "adopt" or last:
                        return await self._confirm(live, routing_id, found, self._clock())
                    if not await self._cancel_to_fail_over(live, found):
                        return await self._confirm(live, routing_id, found, self._clock())
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
            answer = routing_answer(
                live, routing_id, RoutingStatus.REJECTED, self._clock(), rejection_reason="; ".join(reasons)
            )
            await self._applier.apply(live, [rejected], answer)
            return answer
        raise AssertionError("ranked brokers cannot be empty here")  # pragma: no cover

    async def _cancel_to_fail_over(self, live: LiveExecution, found: str) -> bool:
        """The broker holds the order after all (its id `found`): record it accepted, then cancel
        it there (`Cancels.cancel_and_confirm`). True when it is safe to fail over."""
        if live.order.status is BrokerOrderStatus.PENDING:
            await self._applier.apply(live, [OrderAccepted(live.order.client_order_id, self._clock(), found)])
        return await self._cancels.cancel_and_confirm(live, self._reconcile_budget)

    async def _confirm(
        self, live: LiveExecution, routing_id: str, broker_order_id: str, at: datetime
    ) -> OrderRoutingResponse:
        answer = routing_answer(
            live, routing_id, RoutingStatus.ACCEPTED, self._clock(), broker_order_id=broker_order_id
        )
        live.accepted_at = at
        milestones.acked(live.order, broker_order_id)
        # The reply goes out before the ack is written: the claim made the order recoverable
        # from a broker that outlives us (see nursery.applier, "Deferred writes"). One that dies
        # with us (a simulated venue) could not tell it again: its ack is written first.
        accepted = OrderAccepted(live.order.client_order_id, at, broker_order_id)
        recoverable = self._brokers[live.order.broker_id].adapter.outlives_daemon
        await self._applier.apply(live, [accepted], answer, durable=not recoverable)
        if live.cancel_requested and not live.order.status.is_final:
            self._spawn(self._cancels.send_cancel, live)
        return answer

    async def _answer_pending(
        self, live: LiveExecution, routing_id: str, reason: str
    ) -> OrderRoutingResponse:
        answer = routing_answer(live, routing_id, RoutingStatus.PENDING, self._clock())
        await self._applier.apply(live, [], answer)
        log.warning(
            "order outcome unknown; still reconciling",
            extra={"order_id": live.order.order_id, "broker_id": live.order.broker_id, "reason": reason},
        )
        self._spawn(self._resolver.resolve_in_background, live, reason)
        return answer

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

    async def _stored_answer(self, order_id: str, why: str) -> OrderRoutingResponse:
        """The answer another daemon recorded for an order it took over from us."""
        claim = await self._store.get_claim(order_id)
        if claim is not None and claim.response is not None:
            return claim.response
        raise Unavailable(f"order {order_id!r} is being answered by another daemon ({why}); ask again")
