"""ExplainOrder (`trading.broker.v1.ExplainOrder`, `broker-integration why`): everything the
service decided about one order, whether or not it reached a broker.

GetExecution answers only for orders with an execution; an order refused before any broker saw
it (a safeguard, the kill switch, the Risk Analysis Service, no eligible broker) has none, yet
that is exactly when a desk asks why. ExplainOrder answers from the order's idempotency record:
its first answer, the routing decision with every broker's reason, the pre-trade record
(`nursery.pretrade.record`), and the execution when there is one. NotFound for an order never
seen; read-only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec

from api.contracts import (
    ExecutionDetails,
    GetExecutionRequest,
    OrderRoutingResponse,
    RoutingDecision,
    Wire,
    WireOut,
)
from api.errors import NotFound
from api.validation import decode_request
from nursery.pretrade.record import PreTradeRecord, extract
from routing.decision import decode as decode_decision
from sql.store import Store

__all__ = ["EXPLAIN_ORDER", "ExplainOrderRequest", "OrderExplainer", "OrderExplanation", "decode_explain"]

log = logging.getLogger(__name__)

EXPLAIN_ORDER = "trading.broker.v1.ExplainOrder"


class ExplainOrderRequest(Wire, frozen=True):
    order_id: str


class OrderExplanation(WireOut, frozen=True):
    order_id: str
    #: The order's first answer; None while it is still being routed.
    response: OrderRoutingResponse | None = None
    routing_decision: RoutingDecision | None = None
    pre_trade: PreTradeRecord | None = None
    #: The order's latest execution (with every attempt), if a broker was ever tried.
    execution: ExecutionDetails | None = None


def decode_explain(body: bytes | str) -> ExplainOrderRequest:
    return decode_request(body, ExplainOrderRequest)


class OrderExplainer:
    def __init__(
        self, store: Store, get_execution: Callable[[GetExecutionRequest], Awaitable[ExecutionDetails]]
    ) -> None:
        self._store = store
        self._get_execution = get_execution

    def __repr__(self) -> str:
        return "<OrderExplainer>"

    async def explain(self, request: ExplainOrderRequest) -> OrderExplanation:
        order_id = request.order_id
        claim = await self._store.get_claim(order_id)
        if claim is None:
            raise NotFound(f"no order {order_id!r}")
        stored = await self._store.load_decision(order_id)
        decision = None
        if stored is not None:
            try:
                decision = decode_decision(stored)
            except (msgspec.DecodeError, msgspec.ValidationError):
                log.warning("routing decision unreadable", extra={"order_id": order_id})
        execution = None
        if claim.execution_id is not None:
            try:
                execution = await self._get_execution(GetExecutionRequest(order_id=order_id))
            except NotFound:
                pass
            else:
                execution = msgspec.structs.replace(execution, routing_decision=None)  # given once, above
        return OrderExplanation(order_id, claim.response, decision, extract(stored), execution)
