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
- an ack after a fill or cancel: ignored (it carries nothing new but the broker order id);
- a reconstructed fill (`ReconstructedFill`: the broker's cumulative quantity and average price,
  when its reports were lost): it books what the fills held at that moment lack of the
  cumulative quantity (nothing when they reach it), priced so that the order's average becomes
  the broker's, and is flagged `reconstructed`;
- a real fill reaching an order that holds a reconstructed one: no change when the
  reconstruction already counted it (its CumQty is within the quantity held or, without a
  CumQty, it would overfill the order).
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
    ReconstructedFill,
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


def reconstructed_fill_id(client_order_id: str, cumulative_quantity: Decimal) -> str:
    """The broker fill id of the fill that brings the order to `cumulative_quantity` by
    reconstruction: the same for every recovery that sees the same cumulative quantity."""
    text = format(cumulative_quantity.normalize(), "f")
    return f"{client_order_id}:reconstructed:{text}"


def missing_fill(
    order: BrokerOrder, cumulative_quantity: Decimal, average_price: Decimal | None
) -> tuple[Decimal, Decimal] | None:
    """What the fills `order` holds lack of the broker's `cumulative_quantity` at
    `average_price`, as (quantity, price); None when nothing is missing (they reach it, or
    exceed it: a fill is never negative) or it cannot be priced (no average reported).

    The price makes the order's average the broker's: (cumulative x average - notional held) /
    quantity, exact, then rounded to `PRICE_QUANTUM` (the stored precision; the average may
    then differ from the broker's in the last places). When our fills alone already cost more
    than the broker's total (prices that disagree with the broker's), no positive price can
    match it: the broker's average is used."""
    gap = cumulative_quantity - order.filled_quantity
    if gap <= 0 or average_price is None or average_price <= 0:
        return None
    held = sum((f.quantity * f.price for f in order.fills), Decimal(0))
    price = ((cumulative_quantity * average_price - held) / gap).quantize(
        PRICE_QUANTUM, rounding=ROUND_HALF_EVEN
    )
    if price <= 0:
        price = average_price.quantize(PRICE_QUANTUM, rounding=ROUND_HALF_EVEN)
    return gap, price


def apply_event(order: BrokerOrder, event: AnyBrokerEvent) -> Transition:
    """Apply one broker event to `order`. Pure: the caller persists and publishes the result."""
    if isinstance(event, ReconstructedFill):
        return _apply_reconstructed(order, event)
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
    if _counted_by_reconstruction(order, event):
        return Transition(order, False)
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
    return _book(order, event, fill)


def _counted_by_reconstruction(order: BrokerOrder, event: OrderFilled) -> bool:
    """A real report of quantity a reconstructed fill of `order` already booked."""
    if not any(f.reconstructed for f in order.fills):
        return False
    if event.cumulative_quantity is not None:
        return event.cumulative_quantity <= order.filled_quantity
    return event.quantity > order.leaves_quantity


def _apply_reconstructed(order: BrokerOrder, event: ReconstructedFill) -> Transition:
    if any(f.broker_fill_id == event.fill_id for f in order.fills):
        return Transition(order, False)
    assert event.cumulative_quantity is not None  # ReconstructedFill.__post_init__
    cumulative = event.cumulative_quantity
    if cumulative > order.quantity:
        raise IllegalTransition(order, event, f"overfill: {cumulative} of {order.quantity} at the broker")
    gap = cumulative - order.filled_quantity
    if gap <= 0:  # the fills held reach it: the reports it stood for arrived meanwhile
        return Transition(order, False)
    quantity, price = event.quantity, event.price
    if gap != quantity:  # the fills held changed since it was computed (a report raced it)
        again = missing_fill(order, cumulative, event.average_price)
        quantity, price = again if again is not None else (gap, event.price)
    if price <= 0:
        raise IllegalTransition(order, event, f"with non-positive price {price}")
    fill = OrderFill(
        id=fill_uuid(order.broker_id, event.fill_id),
        broker_fill_id=event.fill_id,
        quantity=quantity,
        price=price,
        fees=event.fee,
        timestamp=event.at,
        venue=event.venue,
        reconstructed=True,
    )
    return _book(order, event, fill)


def _book(order: BrokerOrder, event: OrderFilled, fill: OrderFill) -> Transition:
    """`order` with `fill` added: quantities, average price, fees and status moved."""
    fills = (*order.fills, fill)
    filled = order.filled_quantity + fill.quantity
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
        fees=order.fees + fill.fees,
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
