"""The order state machine: the only place a `BrokerOrder` changes status.

    PENDING ──accepted──> ACCEPTED ──fill──> PARTIALLY_FILLED ──fill──> FILLED
       │                     │                     │
       ├──rejected──> REJECTED                     ├──canceled──> CANCELED
       ├──canceled / expired (IOC/FOK, DAY end)    └──expired───> EXPIRED
       └──fill (before the ack) ──> PARTIALLY_FILLED / FILLED

The awkward cases, all legal because the broker's word is a fact:
- a fill before the ack: the fill implies acceptance;
- a repeated event (same fill id, a second ack or cancel): no change, not an error;
- a late fill after CANCELED / EXPIRED / REJECTED (the cancel raced the fill): the fill is
  recorded, quantities move, and the status becomes FILLED if the order is now complete;
- an ack after a fill or cancel: ignored (it carries nothing new but the broker order id).
What cannot be true raises `IllegalTransition`: a fill beyond the order quantity (overfill), a
rejection after fills.
"""

from __future__ import annotations

import uuid
from decimal import ROUND_HALF_EVEN, Decimal

import msgspec

from api.enums import BrokerOrderStatus as S
from api.events import (
    AnyBrokerEvent,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)
from api.orders import BrokerOrder, OrderFill

_FILL_NAMESPACE = uuid.UUID("6f1c2a4e-8d3b-4c7a-9e55-0b1d2c3e4f50")
PRICE_QUANTUM = Decimal("0.00000001")


class IllegalTransition(Exception):
    def __init__(self, order: BrokerOrder, event: AnyBrokerEvent, why: str) -> None:
        super().__init__(f"{order!r}: {type(event).__name__} {why}")
        self.order = order
        self.event = event


class Transition(msgspec.Struct, frozen=True):
    """The result of applying one event: the new order, whether anything changed, and the fill it
    added, if any. Every change is persisted; it is published only when it advanced `sequence`
    (a late ack that merely records the broker order id is stored quietly)."""

    order: BrokerOrder
    changed: bool
    fill: OrderFill | None = None


def fill_uuid(broker_id: str, broker_fill_id: str) -> str:
    """Our id of a broker fill: deterministic, so a replayed fill maps to the same row."""
    return str(uuid.uuid5(_FILL_NAMESPACE, f"{broker_id}\x1f{broker_fill_id}"))


def apply_event(order: BrokerOrder, event: AnyBrokerEvent) -> Transition:
    """Apply one broker event to `order`. Pure: the caller persists and publishes the result."""
    if isinstance(event, OrderFilled):
        return _apply_fill(order, event)
    if isinstance(event, OrderAccepted):
        if order.status is S.PENDING:
            return _changed(order, event, status=S.ACCEPTED, broker_order_id=event.broker_order_id)
        if order.broker_order_id is None:  # the fill came first; remember the id quietly
            return Transition(msgspec.structs.replace(order, broker_order_id=event.broker_order_id), True)
        return Transition(order, False)
    if isinstance(event, OrderRejected):
        if order.status in (S.PENDING, S.ACCEPTED):
            return _changed(order, event, status=S.REJECTED, rejection_reason=event.reason)
        if order.status is S.REJECTED:
            return Transition(order, False)
        if order.status.is_final:
            return Transition(order, False)  # a reject of a finished order changes nothing
        raise IllegalTransition(order, event, f"after fills ({order.filled_quantity} filled)")
    if isinstance(event, (OrderCanceled, OrderExpired)):
        target = S.CANCELED if isinstance(event, OrderCanceled) else S.EXPIRED
        if order.status.is_final:
            return Transition(order, False)
        return _changed(order, event, status=target, rejection_reason=event.reason or None)
    raise TypeError(f"not a broker event: {event!r}")  # pragma: no cover


def _apply_fill(order: BrokerOrder, event: OrderFilled) -> Transition:
    if any(f.broker_fill_id == event.fill_id for f in order.fills):
        return Transition(order, False)
    if event.quantity <= 0:
        raise IllegalTransition(order, event, f"with non-positive quantity {event.quantity}")
    if event.quantity > order.leaves_quantity:
        raise IllegalTransition(
            order, event, f"overfill: {event.quantity} > {order.leaves_quantity} remaining"
        )
    fill = OrderFill(
        id=fill_uuid(order.broker_id, event.fill_id),
        broker_fill_id=event.fill_id,
        quantity=event.quantity,
        price=event.price,
        fees=event.fee,
        timestamp=event.at,
        venue=event.venue,
    )
    fills = (*order.fills, fill)
    filled = order.filled_quantity + event.quantity
    notional = sum((f.quantity * f.price for f in fills), Decimal(0))
    average = (notional / filled).quantize(PRICE_QUANTUM, rounding=ROUND_HALF_EVEN)
    if filled == order.quantity:
        status = S.FILLED
    elif order.status.is_final:
        status = order.status  # late fill on a canceled/expired/rejected order
    else:
        status = S.PARTIALLY_FILLED
    new = msgspec.structs.replace(
        order,
        status=status,
        fills=fills,
        filled_quantity=filled,
        average_price=average,
        fees=order.fees + event.fee,
        broker_order_id=order.broker_order_id or event.broker_order_id,
        updated_at=max(order.updated_at, event.at),
        sequence=order.sequence + 1,
    )
    return Transition(new, True, fill)


def _changed(order: BrokerOrder, event: AnyBrokerEvent, **changes: object) -> Transition:
    new = msgspec.structs.replace(
        order, updated_at=max(order.updated_at, event.at), sequence=order.sequence + 1, **changes
    )
    return Transition(new, True)
