"""What the service knows of the market: per configured instrument, the last quote (the arrival
price of an order is the mid at the moment it was received), bounded tapes of quotes and trades
(the windows TCA measures against), the official closes, and the online volatility / ADV /
spread estimate that the routing impact model reads.

Fed by `market.intake` (NATS) — nothing here does I/O or reads a clock: times are the messages'
own timestamps. Symbols that are not configured instruments are counted and ignored (the service
cannot route them: it does not know their asset class).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal

from api.enums import AssetClass
from market.messages import CloseMessage, QuoteMessage, TradeMessage
from market.tape import Tape
from routing.impact import EQUITY_SESSION_S, MarketStats, MarketStatsEstimator
from tca.model import MarketData, Quotes, Trades, ns_of

log = logging.getLogger(__name__)

DAY_S = 24 * 3600.0
#: How long a trading day is, per asset class: what one ADV is traded over.
SESSION_SECONDS: Mapping[AssetClass, float] = {
    AssetClass.EQUITY: EQUITY_SESSION_S,
    AssetClass.OPTIONS: EQUITY_SESSION_S,
    AssetClass.FUTURES: DAY_S,
    AssetClass.FOREX: DAY_S,
    AssetClass.CRYPTO: DAY_S,
}
NS = 1_000_000_000
#: Trade ids remembered per instrument for deduplication.
TRADE_ID_MEMORY = 10_000


class Instrument:
    """Everything kept about one symbol."""

    __slots__ = (
        "ask",
        "asset_class",
        "bid",
        "closes",
        "estimator",
        "quote_ns",
        "quotes",
        "trade_ids",
        "trades",
    )

    def __init__(self, asset_class: AssetClass, capacity: int, retain_ns: int) -> None:
        self.asset_class = asset_class
        self.bid: Decimal | None = None
        self.ask: Decimal | None = None
        self.quote_ns = 0
        self.quotes = Tape(capacity, retain_ns)
        self.trades = Tape(capacity, retain_ns)
        self.closes: dict[date, Decimal] = {}
        #: The ids of the last trades seen (a print delivered twice is counted once).
        self.trade_ids: dict[str, None] = {}
        self.estimator = MarketStatsEstimator(session_seconds=SESSION_SECONDS.get(asset_class, DAY_S))

    def __repr__(self) -> str:
        return f"<Instrument {self.asset_class} {self.bid}/{self.ask} {self.quotes!r} {self.trades!r}>"


class MarketBook:
    def __init__(
        self,
        instruments: Mapping[str, AssetClass],
        *,
        capacity: int = 200_000,
        retain_s: float = 12 * 3600.0,
        max_closes: int = 30,
        max_quote_age_s: float | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """`max_quote_age_s`: a quote older than this (against `clock_ns`) gives no mid: an
        order does not get yesterday's price as its arrival price when the feed has stopped."""
        retain_ns = int(retain_s * NS)
        self._instruments = {s: Instrument(a, capacity, retain_ns) for s, a in instruments.items()}
        self._max_closes = max_closes
        self._max_age_ns = None if max_quote_age_s is None else int(max_quote_age_s * NS)
        self._clock_ns = clock_ns
        self.received = 0
        self.ignored = 0
        self.duplicates = 0
        #: The market time of the first message received: the tapes say nothing about before.
        self.since_ns: int | None = None

    def __repr__(self) -> str:
        return (
            f"<MarketBook {len(self._instruments)} instruments"
            f" received={self.received} ignored={self.ignored}>"
        )

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._instruments)

    # --- intake ---------------------------------------------------------------------------

    def _known(self, symbol: str) -> Instrument | None:
        """The instrument of a message, or None (the message is counted as ignored)."""
        instrument = self._instruments.get(symbol)
        if instrument is None:
            self.ignored += 1
        return instrument

    def _heard(self, at: datetime) -> int:
        """Count a message taken in; its time in ns (the first one starts the coverage)."""
        self.received += 1
        ts = ns_of(at)
        if self.since_ns is None:
            self.since_ns = ts
        return ts

    def on_quote(self, message: QuoteMessage) -> None:
        instrument = self._known(message.symbol)
        if instrument is None:
            return
        ts = self._heard(message.timestamp)
        bid, ask = float(message.bid), float(message.ask)
        instrument.quotes.append(ts, bid, ask)
        if ts >= instrument.quote_ns:
            instrument.bid, instrument.ask, instrument.quote_ns = message.bid, message.ask, ts
        instrument.estimator.on_quote(bid, ask, ts / NS)

    def on_trade(self, message: TradeMessage) -> None:
        instrument = self._known(message.symbol)
        if instrument is None:
            return
        if message.trade_id is not None:
            seen = instrument.trade_ids
            if message.trade_id in seen:
                self.duplicates += 1
                return
            seen[message.trade_id] = None
            if len(seen) > TRADE_ID_MEMORY:
                del seen[next(iter(seen))]
        ts = self._heard(message.timestamp)
        price, size = float(message.price), float(message.size)
        instrument.trades.append(ts, price, size)
        instrument.estimator.on_trade(price, size, ts / NS)

    def on_close(self, message: CloseMessage) -> bool:
        """Keep an official close; False when the symbol is not a configured instrument."""
        instrument = self._known(message.symbol)
        if instrument is None:
            return False
        self.received += 1
        closes = instrument.closes
        closes[message.date] = message.price
        while len(closes) > self._max_closes:
            del closes[min(closes)]
        return True

    # --- reading --------------------------------------------------------------------------

    def asset_class(self, symbol: str) -> AssetClass | None:
        instrument = self._instruments.get(symbol)
        return None if instrument is None else instrument.asset_class

    def mid(self, symbol: str) -> Decimal | None:
        """The mid of the last quote received (None before the first)."""
        instrument = self._instruments.get(symbol)
        if instrument is None or instrument.bid is None or instrument.ask is None:
            return None
        if self._max_age_ns is not None and self._clock_ns() - instrument.quote_ns > self._max_age_ns:
            return None
        return (instrument.bid + instrument.ask) / 2

    def mark_gap(self) -> None:
        """Messages were lost: the tapes no longer cover anything before the next message
        (a window reaching back past it is reported unavailable, never measured on a hole)."""
        self.since_ns = None

    def has_quotes(self, symbols: Iterable[str]) -> bool:
        return all(self.mid(s) is not None for s in symbols)

    def stats(self, symbol: str) -> MarketStats | None:
        """The instrument's estimated volatility, ADV and spread (None until there is enough)."""
        instrument = self._instruments.get(symbol)
        return None if instrument is None else instrument.estimator.snapshot()

    def close(self, symbol: str, day: date) -> Decimal | None:
        instrument = self._instruments.get(symbol)
        return None if instrument is None else instrument.closes.get(day)

    def covers(self, symbol: str, start_ns: int) -> bool:
        """Whether the tapes hold everything from `start_ns` on: the intake was already
        receiving then (not, say, an order from before a restart), and nothing since was
        trimmed away."""
        instrument = self._instruments.get(symbol)
        return (
            instrument is not None
            and self.since_ns is not None
            and self.since_ns <= start_ns
            and instrument.trades.covers(start_ns)
            and instrument.quotes.covers(start_ns)
        )

    def quote_ns(self, symbol: str) -> int | None:
        """The market time of the quote `mid` is taken from (the newest received), or None
        before the first. A trade never moves it: a mid is only as fresh as its quote."""
        instrument = self._instruments.get(symbol)
        if instrument is None or instrument.bid is None:
            return None
        return instrument.quote_ns

    def latest_ns(self, symbol: str) -> int | None:
        """The market time of the newest quote or trade of `symbol` on the tapes."""
        instrument = self._instruments.get(symbol)
        if instrument is None:
            return None
        times = [t for t in (instrument.quotes.last_ns, instrument.trades.last_ns) if t is not None]
        return max(times) if times else None

    def mid_at(self, symbol: str, ts_ns: int) -> Decimal | None:
        """The mid of the last quote at or before `ts_ns` still on the tape (None if none)."""
        instrument = self._instruments.get(symbol)
        row = None if instrument is None else instrument.quotes.last_at_or_before(ts_ns)
        if row is None:
            return None
        return Decimal(repr((row[1] + row[2]) / 2.0))

    def market_data(
        self, symbol: str, start_ns: int, end_ns: int, close_day: date | None = None
    ) -> MarketData:
        """The quotes and trades of `[start_ns, end_ns)` (plus the one row before each, what
        prevailed at the start), and the official close of `close_day` if known."""
        instrument = self._instruments.get(symbol)
        if instrument is None:
            return MarketData(trades=Trades.empty())
        ts, price, size = instrument.trades.window(start_ns, end_ns)
        qts, bid, ask = instrument.quotes.window(start_ns, end_ns)
        close = instrument.closes.get(close_day) if close_day is not None else None
        return MarketData(
            trades=Trades.of(ts, price, size),
            quotes=Quotes.of(qts, bid, ask) if len(qts) else None,
            close_price=float(close) if close is not None else None,
        )
