"""What one broker lookup after a (re)connect means for an open execution: the events to apply.

`reconcile_with_broker(order, snapshot, at)` is pure (no I/O, no clock: `at` is given). Its
contract, for an execution the broker had acknowledged (the engine's `recover` asks it for every
one still open, after queueing the fills `fills_since` returned):

- The broker reports more filled than the fills `order` holds (`snapshot.filled_quantity`, FIX
  CumQty) at a known average price: a `ReconstructedFill` for the difference, priced so the
  execution's average becomes the broker's (`api.lifecycle.missing_fill`). Its fill id depends
  only on the client order id and the cumulative quantity, so asking again books it once; the
  state machine recomputes the difference when it applies it, so fills queued before it (or
  racing it) are never counted twice, and a real report of quantity it already booked is ignored
  later. The fee is 0: a status answer carries no commission (FIX 35=8 150=I, Alpaca's order),
  and an estimate from the configured schedule would be booked as if the broker had charged it;
  the fill's `reconstructed` flag says its fee is unknown. Its venue is the broker id.
  Without an average price (none reported, or 0) nothing can be booked:
  `Reconciliation.unpriced` says how much is missing, for the log.
- The broker reports the order ended (CANCELED, EXPIRED, REJECTED): that event, after the fill.
  A REJECTED answer for an order with fills (ours or the broker's) cannot be a rejection (the
  state machine refuses one after fills): it ends CANCELED, the fills kept.
- FILLED needs no event of its own: the fills (held, queued, or reconstructed) bring it.
- The broker does not know the order (`snapshot is None`, FIX 39=8/103=5 after a broker restart
  that lost its orders): `OrderCanceled` with `UNKNOWN_AT_BROKER`. Nothing lives there any more,
  so no cancel can be sent and no fill is expected; one that does arrive later is still booked
  (the state machine accepts a fill after CANCELED). A PENDING order is left alone: for it None
  means "never arrived", which `nursery.reconcile` decides with its settle time.
- Anything else (still open, or the broker reports no more than we hold): no event.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec

from adapters.base import BrokerOrderSnapshot
from api.enums import BrokerOrderStatus
from api.events import AnyBrokerEvent, OrderCanceled, OrderExpired, OrderRejected, ReconstructedFill
from api.lifecycle import missing_fill, reconstructed_fill_id
from api.orders import BrokerOrder

__all__ = ["ENDED_AT_BROKER", "UNKNOWN_AT_BROKER", "Reconciliation", "reconcile_with_broker"]

#: The reason of an execution ended because the broker no longer knows the order.
UNKNOWN_AT_BROKER = "unknown at the broker after reconnect"
#: The reason of an execution the broker reports cancelled, expired or rejected meanwhile.
ENDED_AT_BROKER = "found at the broker after a reconnect"


class Reconciliation(msgspec.Struct, frozen=True):
    """What one lookup decided: `events` to apply in this order, and what they are (for the log)."""

    events: tuple[AnyBrokerEvent, ...] = ()
    reconstructed: bool = False  # events holds a ReconstructedFill
    ended: bool = False  # events ends the order as the broker reports it ended
    unknown_at_broker: bool = False  # events ends the order: the broker does not know it
    unpriced: Decimal = Decimal(0)  # filled at the broker, not held, and no price to book it at

    def __repr__(self) -> str:
        kinds = ", ".join(type(e).__name__ for e in self.events) or "nothing"
        extra = f" unpriced={self.unpriced}" if self.unpriced else ""
        return f"<Reconciliation {kinds}{extra}>"


def reconcile_with_broker(
    order: BrokerOrder, snapshot: BrokerOrderSnapshot | None, at: datetime
) -> Reconciliation:
    """The events that bring `order` to what the broker reports (`snapshot`; None: the broker
    does not know it), stamped `at`. See the module docstring for the contract."""
    cid = order.client_order_id
    if snapshot is None:
        if order.status is BrokerOrderStatus.PENDING or order.status.is_final:
            return Reconciliation()
        return Reconciliation((OrderCanceled(cid, at, UNKNOWN_AT_BROKER),), unknown_at_broker=True)
    events: list[AnyBrokerEvent] = []
    unpriced = Decimal(0)
    reconstructed = False
    cumulative = snapshot.filled_quantity
    if cumulative > order.filled_quantity:
        missing = missing_fill(order, cumulative, snapshot.average_price)
        if missing is None:
            unpriced = cumulative - order.filled_quantity
        else:
            quantity, price = missing
            assert snapshot.average_price is not None  # missing_fill prices only with one
            events.append(
                ReconstructedFill(
                    cid,
                    at,
                    fill_id=reconstructed_fill_id(cid, cumulative),
                    quantity=quantity,
                    price=price,
                    fee=Decimal(0),
                    venue=order.broker_id,
                    broker_order_id=snapshot.broker_order_id or None,
                    cumulative_quantity=cumulative,
                    average_price=snapshot.average_price,
                )
            )
            reconstructed = True
    ending = _ending(order, snapshot, at)
    if ending is not None:
        events.append(ending)
    return Reconciliation(
        tuple(events), reconstructed=reconstructed, ended=ending is not None, unpriced=unpriced
    )


def _ending(order: BrokerOrder, snapshot: BrokerOrderSnapshot, at: datetime) -> AnyBrokerEvent | None:
    """The event that ends `order` as the broker reports it ended (None: not ended, or FILLED,
    which its fills bring)."""
    if order.status.is_final:
        return None
    cid, status = order.client_order_id, snapshot.status
    if status is BrokerOrderStatus.CANCELED:
        return OrderCanceled(cid, at, ENDED_AT_BROKER)
    if status is BrokerOrderStatus.EXPIRED:
        return OrderExpired(cid, at, ENDED_AT_BROKER)
    if status is BrokerOrderStatus.REJECTED:
        if order.filled_quantity > 0 or snapshot.filled_quantity > 0:
            return OrderCanceled(cid, at, f"{ENDED_AT_BROKER}: reported rejected after fills")
        return OrderRejected(cid, at, ENDED_AT_BROKER)
    return None
