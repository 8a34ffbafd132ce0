"""The market-data messages, as JSON on NATS (camelCase, like the service's own API).

    marketdata.v1.quotes.<symbol>   {"symbol", "bid", "ask", "bidSize", "askSize", "timestamp"}
    marketdata.v1.trades.<symbol>   {"symbol", "price", "size", "timestamp", "tradeId"?}
    marketdata.v1.close.<symbol>    {"symbol", "date", "price"}

Prices and sizes are decimal numbers (JSON numbers or strings); `timestamp` is RFC 3339 with an
offset; `date` the trade date (YYYY-MM-DD) the official close belongs to. The `<symbol>` token
is escaped like every subject token of the service (`api.subjects.escape_token`).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import msgspec


class _Message(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=False):
    pass


class QuoteMessage(_Message, frozen=True):
    symbol: str
    bid: Decimal
    ask: Decimal
    timestamp: datetime
    bid_size: Decimal | None = None
    ask_size: Decimal | None = None


class TradeMessage(_Message, frozen=True):
    symbol: str
    price: Decimal
    size: Decimal
    timestamp: datetime
    trade_id: str | None = None


class CloseMessage(_Message, frozen=True):
    symbol: str
    date: date
    price: Decimal


QUOTE_DECODER = msgspec.json.Decoder(QuoteMessage, float_hook=Decimal)
TRADE_DECODER = msgspec.json.Decoder(TradeMessage, float_hook=Decimal)
CLOSE_DECODER = msgspec.json.Decoder(CloseMessage, float_hook=Decimal)
ENCODER = msgspec.json.Encoder(decimal_format="number")


class BadMarketData(ValueError):
    """A message that is not a valid quote, trade or close (it is counted and dropped)."""


def check_quote(message: QuoteMessage) -> QuoteMessage:
    if not (message.bid > 0 and message.ask >= message.bid):
        raise BadMarketData(f"{message.symbol}: quote needs 0 < bid <= ask (got {message.bid}/{message.ask})")
    if message.timestamp.tzinfo is None:
        raise BadMarketData(f"{message.symbol}: timestamp needs a UTC offset")
    return message


def check_trade(message: TradeMessage) -> TradeMessage:
    if not (message.price > 0 and message.size > 0):
        raise BadMarketData(f"{message.symbol}: trade needs a positive price and size")
    if message.timestamp.tzinfo is None:
        raise BadMarketData(f"{message.symbol}: timestamp needs a UTC offset")
    return message


def check_close(message: CloseMessage) -> CloseMessage:
    if not message.price > 0:
        raise BadMarketData(f"{message.symbol}: close needs a positive price")
    return message
