"""One INFO log line per order milestone, for operators: `jq 'select(.logger == "orders")'`.

    received   the request, before anything is decided
    routed     the chosen broker and its score, once the claim is written (write before send)
    refused    answered REJECTED before any broker (no eligible broker, a safeguard, risk)
    acked      the broker acknowledged the order
    fill       each fill (quantity, price, cumulative)
    final      the execution's last status (FILLED, CANCELLED, REJECTED, EXPIRED)

Every line carries `order_id` and, once known, `broker_id` and `client_order_id`;
`latency_ms` is the time since the order was received (its `created_at`). The logger is
`orders`: raise it to WARNING to silence the lines without touching the rest. When INFO is off,
each call costs one level check and builds nothing. No secrets: orders carry none.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from api.contracts import OrderRoutingRequest
from api.orders import BrokerOrder, OrderFill

log = logging.getLogger("orders")

__all__ = ["acked", "fill", "final", "received", "refused", "routed"]


def _since(at: datetime) -> float:
    return round((datetime.now(UTC) - at).total_seconds() * 1000.0, 3)


def _ids(order: BrokerOrder) -> dict[str, object]:
    return {
        "order_id": order.order_id,
        "broker_id": order.broker_id,
        "client_order_id": order.client_order_id,
        "execution_id": order.id,
        "latency_ms": _since(order.created_at),
    }


def received(request: OrderRoutingRequest) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(
            "order received",
            extra={
                "milestone": "received",
                "order_id": request.order_id,
                "account_id": request.account_id,
                "symbol": request.symbol,
                "side": request.side.value,
                "type": request.type.value,
                "quantity": str(request.quantity),
            },
        )


def routed(order: BrokerOrder, score: float | None) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(
            "order routed",
            extra={"milestone": "routed", "score": score, "attempt": order.attempt, **_ids(order)},
        )


def refused(order_id: str, received_at: datetime, reason: str | None) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(
            "order refused",
            extra={
                "milestone": "refused",
                "order_id": order_id,
                "reason": reason,
                "latency_ms": _since(received_at),
            },
        )


def acked(order: BrokerOrder, broker_order_id: str) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(
            "order acked", extra={"milestone": "acked", "broker_order_id": broker_order_id, **_ids(order)}
        )


def fill(order: BrokerOrder, filled: OrderFill) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(
            "order fill",
            extra={
                "milestone": "fill",
                "quantity": str(filled.quantity),
                "price": str(filled.price),
                "filled_quantity": str(order.filled_quantity),
                **_ids(order),
            },
        )


def final(order: BrokerOrder) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(
            "order final",
            extra={
                "milestone": "final",
                "status": order.status.value,
                "filled_quantity": str(order.filled_quantity),
                "average_price": None if order.average_price is None else str(order.average_price),
                "reason": order.rejection_reason,
                **_ids(order),
            },
        )
