"""The simulated market: deterministic with a seed, always a sane top of book, listeners told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import trio

from adapters.simulated.config import InstrumentConfig, MarketConfig, default_instruments
from adapters.simulated.market import MarketEvent, Quote, QuoteEvent, SimulatedMarket, TradeEvent
from api.enums import AssetClass

D = Decimal
T0 = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)


class StepClock:
    """A clock that advances one millisecond per reading."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def instrument(
    symbol: str = "TEST",
    *,
    price: str = "100.00",
    spread_bps: str = "2",
    volatility_bps: str = "5",
    top_size: str = "100",
    tick_size: str = "0.01",
    trade_probability: float = 0.5,
) -> InstrumentConfig:
    return InstrumentConfig(
        symbol=symbol,
        asset_class=AssetClass.EQUITY,
        price=D(price),
        spread_bps=D(spread_bps),
        volatility_bps=D(volatility_bps),
        top_size=D(top_size),
        tick_size=D(tick_size),
        trade_probability=trade_probability,
    )


def market(
    *instruments: InstrumentConfig, seed: int = 7, tick_interval_ms: float | None = None
) -> SimulatedMarket:
    config = MarketConfig(
        seed=seed, tick_interval_ms=tick_interval_ms, instruments=instruments or default_instruments()
    )
    return SimulatedMarket(config, clock=lambda: T0)


def path(m: SimulatedMarket, ticks: int) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    out = []
    for _ in range(ticks):
        m.tick()
        out += [(s, m.quote(s).bid, m.quote(s).ask, m.quote(s).last) for s in m.symbols]
    return out


def test_same_seed_same_path_and_different_seed_different_path() -> None:
    assert path(market(seed=1), 200) == path(market(seed=1), 200)
    assert path(market(seed=1), 200) != path(market(seed=2), 200)


def test_prices_move_but_stay_sane_for_every_default_instrument() -> None:
    m = market()
    start = {s: m.quote(s).bid for s in m.symbols}
    for _ in range(2000):
        m.tick()
        for symbol in m.symbols:
            q = m.quote(symbol)
            tick = m.instrument(symbol).tick_size
            assert 0 < q.bid < q.ask, q
            assert q.bid % tick == 0
            assert q.ask % tick == 0
            assert q.last % tick == 0
            assert q.bid_size == q.ask_size == m.instrument(symbol).top_size
    assert any(m.quote(s).bid != start[s] for s in m.symbols)


def test_initial_quote_is_around_the_configured_price_with_the_configured_spread() -> None:
    m = market(instrument(price="100.00", spread_bps="10", tick_size="0.01"))
    q = m.quote("TEST")
    assert (q.bid, q.ask, q.last) == (D("99.95"), D("100.05"), D("100.00"))
    assert q.at == T0


def test_prices_are_rounded_to_a_coarse_tick() -> None:
    m = market(instrument(price="50.00", spread_bps="1", volatility_bps="20", tick_size="0.25"))
    for _ in range(500):
        m.tick()
        q = m.quote("TEST")
        assert q.bid % D("0.25") == 0
        assert q.ask % D("0.25") == 0
        assert q.ask - q.bid >= D("0.25")


def test_a_price_near_the_tick_keeps_a_positive_bid_below_the_ask() -> None:
    m = market(instrument(price="0.01", spread_bps="500", volatility_bps="500", tick_size="0.01"))
    for _ in range(500):
        m.tick()
        q = m.quote("TEST")
        assert D("0.01") <= q.bid < q.ask


def test_zero_spread_still_gives_bid_below_ask() -> None:
    m = market(instrument(price="100.00", spread_bps="0", volatility_bps="0"))
    m.tick()
    q = m.quote("TEST")
    assert q.ask - q.bid == D("0.01")


def test_listeners_hear_every_quote_and_the_trade_prints() -> None:
    m = market(instrument("A", trade_probability=1.0), instrument("B", trade_probability=0.0))
    heard: list[MarketEvent] = []
    m.add_listener(heard.append)
    m.tick()
    assert [(type(e), e.symbol) for e in heard] == [(QuoteEvent, "A"), (TradeEvent, "A"), (QuoteEvent, "B")]
    quote_event, trade, _ = heard
    assert isinstance(quote_event, QuoteEvent)
    assert isinstance(trade, TradeEvent)
    assert trade.price in (quote_event.bid, quote_event.ask)
    assert D(0) < trade.size <= D(100)
    assert trade.size % 1 == 0  # whole units, like top_size
    assert m.quote("A").last == trade.price
    assert quote_event == QuoteEvent("A", m.quote("A").bid, m.quote("A").ask, D(100), D(100), T0)


def test_trade_sizes_keep_the_decimals_of_top_size() -> None:
    m = market(instrument(top_size="2.500", trade_probability=1.0))
    trades: list[MarketEvent] = []
    m.add_listener(trades.append)
    for _ in range(50):
        m.tick()
    sizes = [e.size for e in trades if isinstance(e, TradeEvent)]
    assert len(sizes) == 50
    assert all(D("0") < s <= D("2.5") and s % D("0.001") == 0 for s in sizes)


def test_removed_listener_hears_nothing_more() -> None:
    m = market(instrument())
    heard: list[MarketEvent] = []
    m.add_listener(heard.append)
    m.tick()
    count = len(heard)
    m.remove_listener(heard.append)
    m.remove_listener(heard.append)  # not registered any more: ignored
    m.tick()
    assert len(heard) == count


def test_set_quote_drives_the_top_of_book_and_tells_listeners() -> None:
    m = market(instrument())
    heard: list[MarketEvent] = []
    m.add_listener(heard.append)
    m.set_quote("TEST", D("101.00"), D("101.02"), ask_size=D("7"))
    assert heard == [QuoteEvent("TEST", D("101.00"), D("101.02"), D("100"), D("7"), T0)]
    assert m.quote("TEST") == Quote("TEST", D("101.00"), D("101.02"), D("100"), D("7"), D("100.00"), T0)


def test_ticks_walk_on_from_a_quote_set_by_hand() -> None:
    m = market(instrument(volatility_bps="1"))
    m.set_quote("TEST", D("200.00"), D("200.04"))
    m.tick()
    assert abs(m.quote("TEST").bid - D("200.00")) < D("1")


@pytest.mark.parametrize(
    ("bid", "ask", "message"),
    [
        ("100.02", "100.00", "bid < ask"),
        ("100.00", "100.00", "bid < ask"),
        ("0", "0.01", "bid < ask"),
        ("100.001", "100.02", "tick size"),
    ],
)
def test_set_quote_refuses_an_impossible_book(bid: str, ask: str, message: str) -> None:
    m = market(instrument())
    with pytest.raises(ValueError, match=message):
        m.set_quote("TEST", D(bid), D(ask))


def test_print_trade_sets_last_and_tells_listeners() -> None:
    m = market(instrument())
    heard: list[MarketEvent] = []
    m.add_listener(heard.append)
    m.print_trade("TEST", D("99.50"), D("10"))
    assert heard == [TradeEvent("TEST", D("99.50"), D("10"), T0)]
    assert m.quote("TEST").last == D("99.50")
    with pytest.raises(ValueError, match="positive"):
        m.print_trade("TEST", D("99.50"), D("0"))
    with pytest.raises(ValueError, match="tick size"):
        m.print_trade("TEST", D("99.505"), D("1"))


def test_unknown_symbols() -> None:
    m = market()
    assert m.asset_class("NOPE") is None
    with pytest.raises(KeyError, match="NOPE"):
        m.quote("NOPE")
    with pytest.raises(KeyError, match="NOPE"):
        m.set_quote("NOPE", D(1), D(2))


def test_symbols_and_asset_classes_of_the_default_instruments() -> None:
    m = market()
    assert set(m.symbols) >= {"AAPL", "MSFT", "SPY", "EUR/USD", "GBP/USD", "BTC-USD", "ETH-USD"}
    assert m.asset_class("AAPL") is AssetClass.EQUITY
    assert m.asset_class("EUR/USD") is AssetClass.FOREX
    assert m.asset_class("BTC-USD") is AssetClass.CRYPTO
    assert D("180") < m.quote("AAPL").bid < D("200")
    assert D("1.0") < m.quote("EUR/USD").bid < D("1.2")


def test_the_injected_clock_stamps_quotes_and_events() -> None:
    clock = StepClock()
    m = SimulatedMarket(MarketConfig(seed=1, tick_interval_ms=None, instruments=(instrument(),)), clock=clock)
    m.tick()
    assert m.quote("TEST").at == clock.now
    assert m.now() > m.quote("TEST").at


async def test_run_ticks_at_the_configured_interval(autojump_clock: trio.testing.MockClock) -> None:
    m = market(instrument(), tick_interval_ms=100.0)
    quotes: list[MarketEvent] = []
    m.add_listener(lambda e: quotes.append(e) if isinstance(e, QuoteEvent) else None)
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run)
        await trio.sleep(1.05)
        nursery.cancel_scope.cancel()
    assert len(quotes) == 10


async def test_run_without_an_interval_never_ticks(autojump_clock: trio.testing.MockClock) -> None:
    m = market(instrument())
    heard: list[MarketEvent] = []
    m.add_listener(heard.append)
    with trio.move_on_after(60):
        await m.run()
    assert heard == []


@pytest.mark.parametrize(
    "changes",
    [
        {"price": D(0)},
        {"tick_size": D(0)},
        {"top_size": D(-1)},
        {"spread_bps": D(-1)},
        {"trade_probability": 1.5},
    ],
)
def test_instrument_config_refuses_nonsense(changes: dict[str, object]) -> None:
    fields = {
        "symbol": "X",
        "asset_class": AssetClass.EQUITY,
        "price": D(1),
        "spread_bps": D(1),
        "volatility_bps": D(1),
        "top_size": D(1),
        "tick_size": D("0.01"),
        "trade_probability": 0.5,
    } | changes
    with pytest.raises(ValueError):
        InstrumentConfig(**fields)  # type: ignore[arg-type]


def test_market_config_refuses_duplicate_symbols_and_decodes_from_toml() -> None:
    import msgspec

    with pytest.raises(ValueError, match="unique"):
        MarketConfig(instruments=(instrument(), instrument()))
    decoded = msgspec.toml.decode(
        b"""
        seed = 3
        [[instruments]]
        symbol = "XYZ"
        asset_class = "EQUITY"
        price = 12.5
        spread_bps = 3
        volatility_bps = "0.5"
        top_size = 100
        tick_size = "0.01"
        trade_probability = 0.2
        """,
        type=MarketConfig,
    )
    assert decoded.instruments[0].price == D("12.5")
    assert decoded.tick_interval_ms == 100.0
    with pytest.raises(msgspec.ValidationError):
        msgspec.toml.decode(b"sed = 3", type=MarketConfig)
