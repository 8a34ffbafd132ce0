"""Alpaca's JSON, as far as the adapter reads it: orders, trade updates, FILL activities.

Decoded with msgspec straight into `Decimal` (Alpaca sends quantities and prices as strings;
a number is accepted too). alpaca-py's own models are not used for reading: they turn prices
into floats (`TradeUpdate.price`, `TradeActivity.price`) and insist on fields the trading API
does not send (`TradeActivity.account_id`). Unknown fields are ignored, so Alpaca adding one
breaks nothing; a missing required field is a `msgspec.ValidationError` (mapped to
OutcomeUnknown at the boundary).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


class AlpacaOrder(msgspec.Struct, frozen=True):
    """An order (`GET /v2/orders/...`, `POST /v2/orders`, the `order` of a trade update)."""

    id: str
    client_order_id: str
    status: str
    submitted_at: datetime
    symbol: str | None = None
    side: str | None = None
    type: str | None = None
    time_in_force: str | None = None
    qty: Decimal | None = None
    notional: Decimal | None = None
    filled_qty: Decimal = Decimal(0)
    filled_avg_price: Decimal | None = None
    updated_at: datetime | None = None
    replaced_by: str | None = None


class TradeUpdate(msgspec.Struct, frozen=True):
    """The `data` of one `trade_updates` stream message. `qty` and `price` are this
    execution's (fill and partial_fill only); `order` is the order after the event."""

    event: str
    order: AlpacaOrder
    timestamp: datetime | None = None
    execution_id: str | None = None
    qty: Decimal | None = None
    price: Decimal | None = None
    position_qty: Decimal | None = None


class FillActivity(msgspec.Struct, frozen=True):
    """One execution from `GET /v2/account/activities/FILL`. `id` is `<time>::<uuid>` and is
    the page token; `cum_qty` is the order's filled quantity after this execution."""

    id: str
    transaction_time: datetime
    order_id: str
    qty: Decimal
    price: Decimal
    cum_qty: Decimal
    activity_type: str = "FILL"
    type: str | None = None
    side: str | None = None
    symbol: str | None = None
    leaves_qty: Decimal | None = None
    order_status: str | None = None


class AlpacaAccount(msgspec.Struct, frozen=True):
    """The fields of `GET /v2/account` that decide whether orders can be sent."""

    id: str
    status: str
    trading_blocked: bool = False
    account_blocked: bool = False
    trade_suspended_by_user: bool = False


class StreamMessage(msgspec.Struct, frozen=True):
    """The envelope of every stream message: `{"stream": ..., "data": {...}}`."""

    stream: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)


def convert(raw: object, kind: type[T]) -> T:
    """A decoded JSON value (what requests' `response.json()` gave) as `kind`."""
    return msgspec.convert(raw, kind, strict=False)
