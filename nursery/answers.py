"""The routing answer (`OrderRoutingResponse`) an execution gives the OMS.

Pure: no I/O and no clock (the answer's timestamp is given). Every answer built for an
execution names its broker, its execution id and the routing model's time-to-fill estimate;
`adopted_answer` is the answer that follows from an execution's state alone (an order taken over
after its router stopped), with every attempt's rejection reason when it ended rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from api.contracts import OrderRoutingResponse
from api.enums import BrokerOrderStatus, RoutingStatus
from api.orders import BrokerOrder
from nursery.live import LiveExecution

__all__ = ["adopted_answer", "routing_answer"]


def routing_answer(
    live: LiveExecution, routing_id: str, status: RoutingStatus, at: datetime, **fields: object
) -> OrderRoutingResponse:
    """The answer `status` for `live`'s order, stamped `at`; `fields` add to it (a rejection
    reason, the broker's order id)."""
    order = live.order
    return OrderRoutingResponse(
        routing_id=routing_id,
        order_id=order.order_id,
        status=status,
        timestamp=at,
        selected_broker=order.broker_id,
        execution_id=order.id,
        estimated_execution_time=live.estimate_ms,
        **fields,  # type: ignore[arg-type]
    )


def adopted_answer(
    live: LiveExecution, routing_id: str, attempts: Sequence[BrokerOrder], at: datetime
) -> OrderRoutingResponse:
    """The answer that `live`'s state gives (its latest attempt; `attempts` are all of them):
    PENDING, REJECTED with every attempt's reason, or ACCEPTED with the broker's order id."""
    order = live.order
    if order.status is BrokerOrderStatus.PENDING:
        return routing_answer(live, routing_id, RoutingStatus.PENDING, at)
    if order.status is BrokerOrderStatus.REJECTED:
        reasons = [
            f"{a.broker_id}: {a.rejection_reason}" for a in (*attempts[:-1], order) if a.rejection_reason
        ]
        why = "; ".join(reasons)
        return routing_answer(live, routing_id, RoutingStatus.REJECTED, at, rejection_reason=why)
    return routing_answer(live, routing_id, RoutingStatus.ACCEPTED, at, broker_order_id=order.broker_order_id)
