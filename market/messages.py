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


#: Prices and sizes beyond this are refused as garbage (DECIMAL(20, 8) holds < 1e12).
MAX_VALUE = Decimal("1e11")
#: The smallest price kept: prices are stored as DECIMAL(20, 8).
MIN_PRICE = Decimal("1e-8")


def _sane(symbol: str, smallest: Decimal = Decimal(0), **values: Decimal | None) -> None:
    """Finite, above `smallest` (and positive) and below MAX_VALUE ("NaN", "Infinity", "1e400"
    decode as Decimals)."""
    for name, value in values.items():
        if value is None:
            continue
        if not value.is_finite() or not (0 < value < MAX_VALUE) or value < smallest:
            raise BadMarketData(
                f"{symbol}: {name} must be a finite number in [{max(smallest, Decimal(0))}, {MAX_VALUE})"
            )


def check_quote(message: QuoteMessage) -> QuoteMessage:
    _sane(message.symbol, MIN_PRICE, bid=message.bid, ask=message.ask)
    if message.bid_size is not None and not (message.bid_size.is_finite() and message.bid_size >= 0):
        raise BadMarketData(f"{message.symbol}: bidSize must be a finite number >= 0")
    if message.ask_size is not None and not (message.ask_size.is_finite() and message.ask_size >= 0):
        raise BadMarketData(f"{message.symbol}: askSize must be a finite number >= 0")
    if not (message.bid > 0 and message.ask >= message.bid):
        raise BadMarketData(f"{message.symbol}: quote needs 0 < bid <= ask (got {message.bid}/{message.ask})")
    if message.timestamp.tzinfo is None:
        raise BadMarketData(f"{message.symbol}: timestamp needs a UTC offset")
    return message


def check_trade(message: TradeMessage) -> TradeMessage:
    _sane(message.symbol, MIN_PRICE, price=message.price)
    _sane(message.symbol, size=message.size)
    if not (message.price > 0 and message.size > 0):
        raise BadMarketData(f"{message.symbol}: trade needs a positive price and size")
    if message.timestamp.tzinfo is None:
        raise BadMarketData(f"{message.symbol}: timestamp needs a UTC offset")
    return message


def check_close(message: CloseMessage) -> CloseMessage:
    _sane(message.symbol, MIN_PRICE, price=message.price)
    if not message.price > 0:
        raise BadMarketData(f"{message.symbol}: close needs a positive price")
    return message
