"""A simulated market: a seeded random walk of top-of-book quotes and trade prints per instrument.

Each tick moves every instrument's mid by a lognormal step (`volatility_bps` per tick), derives a
bid and an ask `spread_bps` apart rounded outward to `tick_size` (so bid < ask and both > 0
always hold), shows `top_size` on both sides, and with `trade_probability` prints a trade at the
bid or the ask. The same seed gives the same path.

Listeners are called synchronously, in registration order, after each quote change (a
`QuoteEvent`) and each trade print (a `TradeEvent`). They run inside `tick()` / the manual
drivers, so they must be quick and must not raise: an exception propagates to the caller.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import trio

from adapters.simulated.config import InstrumentConfig, MarketConfig
from api.enums import AssetClass


class Quote(msgspec.Struct, frozen=True):
    """The current top of book of one instrument, with the last traded price."""

    symbol: str
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal
    last: Decimal
    at: datetime


class QuoteEvent(msgspec.Struct, frozen=True, tag=True):
    symbol: str
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal
    at: datetime


class TradeEvent(msgspec.Struct, frozen=True, tag=True):
    symbol: str
    price: Decimal
    size: Decimal
    at: datetime


MarketEvent = QuoteEvent | TradeEvent
MarketListener = Callable[[MarketEvent], None]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def quantum_of(value: Decimal) -> Decimal:
    """The unit of `value`'s last decimal place: 1 for `500`, 0.001 for `2.500`."""
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):
        raise ValueError(f"not a finite decimal: {value}")
    return Decimal(1).scaleb(exponent)


class _Instrument:
    """Mutable state of one instrument. The mid walks in float (speed); published prices are
    whole numbers of ticks, computed exactly in Decimal."""

    __slots__ = (
        "ask",
        "ask_size",
        "at",
        "bid",
        "bid_size",
        "config",
        "half_spread",
        "last",
        "mid",
        "size_quanta",
        "size_quantum",
        "tick",
        "tick_float",
        "volatility",
    )

    def __init__(self, config: InstrumentConfig, at: datetime) -> None:
        self.config = config
        self.tick = config.tick_size
        self.tick_float = float(config.tick_size)
        self.mid = float(config.price)
        self.half_spread = float(config.spread_bps) / 20_000.0
        self.volatility = float(config.volatility_bps) / 10_000.0
        self.size_quantum = quantum_of(config.top_size)
        self.size_quanta = int(config.top_size / self.size_quantum)
        self.bid_size = config.top_size
        self.ask_size = config.top_size
        self.at = at
        self.bid, self.ask = self.top_from_mid()
        self.last = self.tick * round(self.mid / self.tick_float)

    def top_from_mid(self) -> tuple[Decimal, Decimal]:
        half = self.mid * self.half_spread
        bid_ticks = math.floor((self.mid - half) / self.tick_float)
        ask_ticks = math.ceil((self.mid + half) / self.tick_float)
        bid_ticks = max(bid_ticks, 1)
        ask_ticks = max(ask_ticks, bid_ticks + 1)
        return self.tick * bid_ticks, self.tick * ask_ticks

    def on_tick(self, value: Decimal) -> bool:
        return value % self.tick == 0


class SimulatedMarket:
    """Top-of-book quotes and trade prints for the configured instruments.

    Not thread-safe; everything runs in the Trio thread. `tick()` and the manual drivers
    (`set_quote`, `print_trade`) are synchronous so tests can drive the market by hand.
    """

    def __init__(self, config: MarketConfig, *, clock: Clock = utc_now) -> None:
        self.config = config
        self._clock = clock
        self._random = random.Random(config.seed)
        now = clock()
        self._instruments = {i.symbol: _Instrument(i, now) for i in config.instruments}
        self._listeners: tuple[MarketListener, ...] = ()

    def __repr__(self) -> str:
        return (
            f"<SimulatedMarket {len(self._instruments)} instruments"
            f" tick={self.config.tick_interval_ms}ms listeners={len(self._listeners)}>"
        )

    # --- reading -----------------------------------------------------------------------

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._instruments)

    def now(self) -> datetime:
        """The market's clock (injectable), which venues share for their timestamps."""
        return self._clock()

    def asset_class(self, symbol: str) -> AssetClass | None:
        instrument = self._instruments.get(symbol)
        return None if instrument is None else instrument.config.asset_class

    def instrument(self, symbol: str) -> InstrumentConfig:
        """The configuration of `symbol`; KeyError if the market does not trade it."""
        return self._get(symbol).config

    def quote(self, symbol: str) -> Quote:
        """The current top of book of `symbol`; KeyError if the market does not trade it."""
        i = self._get(symbol)
        return Quote(symbol, i.bid, i.ask, i.bid_size, i.ask_size, i.last, i.at)

    # --- listeners ---------------------------------------------------------------------

    def add_listener(self, callback: MarketListener) -> None:
        self._listeners = (*self._listeners, callback)

    def remove_listener(self, callback: MarketListener) -> None:
        """Remove one registration of `callback`; a callback not registered is ignored."""
        listeners = list(self._listeners)
        if callback in listeners:
            listeners.remove(callback)
        self._listeners = tuple(listeners)

    # --- driving -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick every `tick_interval_ms` until cancelled (ticks lost to a slow loop are skipped,
        not bunched up). With no interval configured, just wait to be cancelled."""
        task_status.started()
        if self.config.tick_interval_ms is None:
            await trio.sleep_forever()
        period = self.config.tick_interval_ms / 1000.0
        deadline = trio.current_time() + period
        while True:
            await trio.sleep_until(deadline)
            self.tick()
            deadline = max(deadline + period, trio.current_time())

    def tick(self) -> None:
        """Advance every instrument one step: a new quote, and maybe a trade print."""
        rng = self._random
        at = self._clock()
        for i in self._instruments.values():
            i.mid *= math.exp(i.volatility * rng.gauss(0.0, 1.0))
            i.bid, i.ask = i.top_from_mid()
            i.bid_size = i.ask_size = i.config.top_size
            i.at = at
            self._publish(QuoteEvent(i.config.symbol, i.bid, i.ask, i.bid_size, i.ask_size, at))
            if rng.random() < i.config.trade_probability:
                price = i.bid if rng.random() < 0.5 else i.ask
                size = i.size_quantum * max(1, int(i.size_quanta * rng.uniform(0.05, 1.0)))
                i.last = price
                self._publish(TradeEvent(i.config.symbol, price, size, at))

    def set_quote(
        self,
        symbol: str,
        bid: Decimal,
        ask: Decimal,
        bid_size: Decimal | None = None,
        ask_size: Decimal | None = None,
    ) -> None:
        """Set the top of book by hand (tests). Sizes left out are the instrument's `top_size`.
        Prices must be whole ticks with 0 < bid < ask; later ticks walk on from their mid."""
        i = self._get(symbol)
        if not 0 < bid < ask:
            raise ValueError(f"{symbol}: need 0 < bid < ask, got {bid} / {ask}")
        if not (i.on_tick(bid) and i.on_tick(ask)):
            raise ValueError(f"{symbol}: prices must be multiples of the tick size {i.tick}")
        bid_size = i.config.top_size if bid_size is None else bid_size
        ask_size = i.config.top_size if ask_size is None else ask_size
        if bid_size < 0 or ask_size < 0:
            raise ValueError(f"{symbol}: sizes must not be negative")
        i.bid, i.ask, i.bid_size, i.ask_size = bid, ask, bid_size, ask_size
        i.mid = float((bid + ask) / 2)
        i.at = at = self._clock()
        self._publish(QuoteEvent(symbol, bid, ask, bid_size, ask_size, at))

    def print_trade(self, symbol: str, price: Decimal, size: Decimal) -> None:
        """Print a market trade by hand (tests): it sets `last` and triggers stop orders."""
        i = self._get(symbol)
        if price <= 0 or size <= 0:
            raise ValueError(f"{symbol}: a trade needs a positive price and size")
        if not i.on_tick(price):
            raise ValueError(f"{symbol}: price must be a multiple of the tick size {i.tick}")
        i.last = price
        self._publish(TradeEvent(symbol, price, size, self._clock()))

    # --- internals ---------------------------------------------------------------------

    def _get(self, symbol: str) -> _Instrument:
        try:
            return self._instruments[symbol]
        except KeyError:
            raise KeyError(f"unknown symbol {symbol!r}") from None

    def _publish(self, event: MarketEvent) -> None:
        for listener in self._listeners:
            listener(event)
