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
    reported twice (stream replay, reconciliation) is recognised and stored once."""

    fill_id: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    venue: str
    broker_order_id: str | None = None


class OrderCanceled(BrokerEvent, frozen=True):
    reason: str = ""


class OrderExpired(BrokerEvent, frozen=True):
    reason: str = ""


AnyBrokerEvent = OrderAccepted | OrderRejected | OrderFilled | OrderCanceled | OrderExpired
