"""The order state machine: the only place a `BrokerOrder` changes status.

A transition table, the NautilusTrader way: `TRANSITIONS` maps (status now, event type) to the
handler that computes the new order (the row's comment names the status it leads to); a pair
the table lacks is illegal and `apply_event` raises `IllegalTransition`. Handlers still check
what depends on the event's values (a fill beyond the order quantity raises). In pictures:

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
from collections.abc import Callable, Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from types import MappingProxyType
from typing import Any, Final

import msgspec

from api.enums import BrokerOrderStatus as S
from api.events import (
    AnyBrokerEvent,
    BrokerEvent,
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
    """Apply one broker event to `order`: the handler `TRANSITIONS` holds for (its status, the
    event's type); a pair the table lacks raises `IllegalTransition`. Pure: the caller persists
    and publishes the result."""
    handler = TRANSITIONS.get((order.status, type(event)))
    if handler is None:
        if type(event) not in EVENT_TYPES:
            raise TypeError(f"not a broker event: {event!r}")
        raise IllegalTransition(order, event, _why_illegal(order, event))
    return handler(order, event)


def _accept(order: BrokerOrder, event: OrderAccepted) -> Transition:
    """PENDING -> ACCEPTED, remembering the broker order id."""
    return _changed(order, event, status=S.ACCEPTED, broker_order_id=event.broker_order_id)


def _late_ack(order: BrokerOrder, event: OrderAccepted) -> Transition:
    """An ack after a fill, a cancel or another ack: the status stays; the broker order id is
    recorded quietly (no new `sequence`) when the order has none yet (the fill came first)."""
    if order.broker_order_id is None:
        return Transition(msgspec.structs.replace(order, broker_order_id=event.broker_order_id), True)
    return Transition(order, False)


def _reject(order: BrokerOrder, event: OrderRejected) -> Transition:
    """-> REJECTED with the broker's reason."""
    return _changed(order, event, status=S.REJECTED, rejection_reason=event.reason)


def _cancel(order: BrokerOrder, event: OrderCanceled) -> Transition:
    """-> CANCELED (the reason, if any, kept)."""
    return _changed(order, event, status=S.CANCELED, rejection_reason=event.reason or None)


def _expire(order: BrokerOrder, event: OrderExpired) -> Transition:
    """-> EXPIRED (the reason, if any, kept)."""
    return _changed(order, event, status=S.EXPIRED, rejection_reason=event.reason or None)


def _ignore(order: BrokerOrder, event: AnyBrokerEvent) -> Transition:
    """No change: a repeat, or news about an order that is already final."""
    return Transition(order, False)


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


Handler = Callable[[BrokerOrder, Any], Transition]
"""What the table holds: the order and an event of the row's type in, the transition out."""

# The transition table, read row by row: (status now, event type) -> handler, and in the comment
# the status it leads to. A pair that is not here is illegal: `apply_event` raises.
# Fills are legal in every status (the broker's word is a fact; overfill is checked by the
# handler), so are acks, cancels and expiries (news about a final order changes nothing).
# The one illegal pair: a rejection after fills (PARTIALLY_FILLED + OrderRejected).
_TABLE: dict[tuple[S, type[BrokerEvent]], Handler] = {
    # PENDING: sent, not yet acknowledged
    (S.PENDING, OrderAccepted): _accept,  # -> ACCEPTED
    (S.PENDING, OrderRejected): _reject,  # -> REJECTED
    (S.PENDING, OrderFilled): _apply_fill,  # -> PARTIALLY_FILLED / FILLED (the fill implies the ack)
    (S.PENDING, ReconstructedFill): _apply_reconstructed,  # -> PARTIALLY_FILLED / FILLED
    (S.PENDING, OrderCanceled): _cancel,  # -> CANCELED
    (S.PENDING, OrderExpired): _expire,  # -> EXPIRED
    # ACCEPTED: working at the broker, nothing filled
    (S.ACCEPTED, OrderAccepted): _late_ack,  # unchanged (a repeated ack)
    (S.ACCEPTED, OrderRejected): _reject,  # -> REJECTED
    (S.ACCEPTED, OrderFilled): _apply_fill,  # -> PARTIALLY_FILLED / FILLED
    (S.ACCEPTED, ReconstructedFill): _apply_reconstructed,  # -> PARTIALLY_FILLED / FILLED
    (S.ACCEPTED, OrderCanceled): _cancel,  # -> CANCELED
    (S.ACCEPTED, OrderExpired): _expire,  # -> EXPIRED
    # PARTIALLY_FILLED: working, some filled (a rejection is illegal: not in the table)
    (S.PARTIALLY_FILLED, OrderAccepted): _late_ack,  # unchanged (id recorded if missing)
    (S.PARTIALLY_FILLED, OrderFilled): _apply_fill,  # -> PARTIALLY_FILLED / FILLED
    (S.PARTIALLY_FILLED, ReconstructedFill): _apply_reconstructed,  # -> PARTIALLY_FILLED / FILLED
    (S.PARTIALLY_FILLED, OrderCanceled): _cancel,  # -> CANCELED
    (S.PARTIALLY_FILLED, OrderExpired): _expire,  # -> EXPIRED
    # FILLED: final
    (S.FILLED, OrderAccepted): _late_ack,  # unchanged (id recorded if missing)
    (S.FILLED, OrderRejected): _ignore,  # unchanged
    (S.FILLED, OrderFilled): _apply_fill,  # unchanged for a repeat; a new fill overfills: raises
    (S.FILLED, ReconstructedFill): _apply_reconstructed,  # unchanged, or raises on overfill
    (S.FILLED, OrderCanceled): _ignore,  # unchanged
    (S.FILLED, OrderExpired): _ignore,  # unchanged
    # CANCELED: final, but a fill that raced the cancel is still booked
    (S.CANCELED, OrderAccepted): _late_ack,  # unchanged (id recorded if missing)
    (S.CANCELED, OrderRejected): _ignore,  # unchanged
    (S.CANCELED, OrderFilled): _apply_fill,  # stays CANCELED, or -> FILLED when complete
    (S.CANCELED, ReconstructedFill): _apply_reconstructed,  # stays CANCELED, or -> FILLED
    (S.CANCELED, OrderCanceled): _ignore,  # unchanged
    (S.CANCELED, OrderExpired): _ignore,  # unchanged
    # EXPIRED: final, late fills booked as for CANCELED
    (S.EXPIRED, OrderAccepted): _late_ack,  # unchanged (id recorded if missing)
    (S.EXPIRED, OrderRejected): _ignore,  # unchanged
    (S.EXPIRED, OrderFilled): _apply_fill,  # stays EXPIRED, or -> FILLED when complete
    (S.EXPIRED, ReconstructedFill): _apply_reconstructed,  # stays EXPIRED, or -> FILLED
    (S.EXPIRED, OrderCanceled): _ignore,  # unchanged
    (S.EXPIRED, OrderExpired): _ignore,  # unchanged
    # REJECTED: final, late fills booked as for CANCELED
    (S.REJECTED, OrderAccepted): _late_ack,  # unchanged (id recorded if missing)
    (S.REJECTED, OrderRejected): _ignore,  # unchanged (a repeated reject)
    (S.REJECTED, OrderFilled): _apply_fill,  # stays REJECTED, or -> FILLED when complete
    (S.REJECTED, ReconstructedFill): _apply_reconstructed,  # stays REJECTED, or -> FILLED
    (S.REJECTED, OrderCanceled): _ignore,  # unchanged
    (S.REJECTED, OrderExpired): _ignore,  # unchanged
}

TRANSITIONS: Final[Mapping[tuple[S, type[BrokerEvent]], Handler]] = MappingProxyType(_TABLE)
"""The legal (status, event type) pairs and their handlers; read-only."""

EVENT_TYPES: Final[frozenset[type[BrokerEvent]]] = frozenset(
    (OrderAccepted, OrderRejected, OrderFilled, ReconstructedFill, OrderCanceled, OrderExpired)
)
"""Every event type the table knows; each has a row for every status but the illegal pairs."""


def _why_illegal(order: BrokerOrder, event: AnyBrokerEvent) -> str:
    if isinstance(event, OrderRejected):
        return f"after fills ({order.filled_quantity} filled)"
    return f"in status {order.status}"  # pragma: no cover - the table has no other illegal pair
