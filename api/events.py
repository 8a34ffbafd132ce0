"""What a broker tells us about an order: the inputs of the order state machine.

Every adapter translates its broker's messages into these events, keyed by our client order id.
They are facts from the broker, so the state machine must accept them even when they arrive in
an awkward order (a fill after a cancel, a fill before the ack).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec


class BrokerEvent(msgspec.Struct, frozen=True, tag=True):
    client_order_id: str
    at: datetime


class OrderAccepted(BrokerEvent, frozen=True):
    broker_order_id: str


class OrderRejected(BrokerEvent, frozen=True):
    reason: str


class OrderFilled(BrokerEvent, frozen=True):
    """One execution. `fill_id` is the broker's execution id: unique per broker, so a fill
    reported twice (stream replay, reconciliation) is recognised and stored once.
    `cumulative_quantity` is the order's filled quantity at the broker once this fill is counted
    (FIX CumQty), when the broker reports it: it tells a late report of quantity that a
    `ReconstructedFill` already booked from a new fill."""

    fill_id: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    venue: str
    broker_order_id: str | None = None
    cumulative_quantity: Decimal | None = None


class ReconstructedFill(OrderFilled, frozen=True):
    """Fills we never received, inferred from the broker's word that the order's filled quantity
    is `cumulative_quantity` at `average_price` (a FIX status answer after a sequence reset
    discarded the reports, an order looked up after a restart). `quantity` and `price` are the
    difference from the fills held when it was computed; the state machine books the difference
    from the fills held when it is applied (nothing when they already reach the cumulative
    quantity), so a real report racing it is never counted twice. `fill_id` is derived from the
    client order id and the cumulative quantity (`api.lifecycle.reconstructed_fill_id`): asking
    twice books it once."""

    average_price: Decimal | None = None

    def __post_init__(self) -> None:
        if self.cumulative_quantity is None:
            raise ValueError("a reconstructed fill needs the broker's cumulative quantity")


class OrderCanceled(BrokerEvent, frozen=True):
    reason: str = ""


class OrderExpired(BrokerEvent, frozen=True):
    reason: str = ""


AnyBrokerEvent = OrderAccepted | OrderRejected | OrderFilled | OrderCanceled | OrderExpired
