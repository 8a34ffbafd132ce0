"""Execution updates: what each persisted transition publishes, built once and stored in the
outbox in the same transaction as the state it describes (so a crash between commit and publish
loses nothing: the publisher sends it again with the same Nats-Msg-Id, `OutboxEvent.msg_id`)."""

from __future__ import annotations

from api.codec import encode
from api.contracts import ExecutionUpdate
from api.orders import BrokerOrder, OrderFill
from api.subjects import execution_subject
from sql.records import OutboxEvent


def outbox_event(order: BrokerOrder, fill: OrderFill | None) -> OutboxEvent:
    status = order.status.execution_status
    update = ExecutionUpdate(
        execution_id=order.id,
        order_id=order.order_id,
        broker_id=order.broker_id,
        status=status,
        filled_quantity=order.filled_quantity,
        timestamp=order.updated_at,
        sequence=order.sequence,
        latest_fill=fill.to_wire() if fill is not None else None,
        average_price=order.average_price,
        broker_order_id=order.broker_order_id,
        reason=order.rejection_reason,
    )
    return OutboxEvent(
        execution_id=order.id,
        sequence=order.sequence,
        subject=execution_subject(order.broker_id, status.value, order.order_id),
        payload=encode(update),
        created_at=order.updated_at,
    )
