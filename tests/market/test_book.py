"""market: subjects, messages, tapes and the book (pure), and the intake fed over a real NATS
server by the simulated feed (the embedded default's Market Data Service)."""

from __future__ import annotations

import random
from bisect import bisect_left, insort
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import trio
import trio_asyncio

from adapters.simulated import SimulatedMarket
from adapters.simulated.config import MarketConfig, default_instruments
from adapters.simulated.feed import SimulatedFeed
from api.enums import AssetClass
from daemon.bus import NatsBus
from market.book import MarketBook
from market.intake import Intake
from market.messages import ENCODER, CloseMessage, QuoteMessage, TradeMessage
from market.subjects import parse, subject, subscriptions
from market.tape import Tape
from tca.model import ns_of
from tests.support.polling import condition, wait_until

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_subjects_round_trip_and_escape_symbols() -> None:
    assert subject("quotes", "AAPL") == "marketdata.v1.quotes.AAPL"
    assert subject("trades", "BRK.B") == "marketdata.v1.trades.BRK%2EB"
    assert parse(subject("close", "EUR/USD.SPOT")) == ("close", "EUR/USD.SPOT")
    assert subscriptions("md") == ("md.quotes.*", "md.trades.*", "md.close.*")
    bad_subjects = (
        "marketdata.v1.quotes",
        "marketdata.v1.bars.AAPL",
        "other.quotes.AAPL",
        "marketdata.v1.quotes.A.B",
    )
    for bad in bad_subjects:
        with pytest.raises(ValueError):
            parse(bad)
    with pytest.raises(ValueError):
        subject("bars", "AAPL")


def test_tape_keeps_order_bounds_memory_and_finds_windows() -> None:
    tape = Tape(capacity=5, retain_ns=10**12)
    for i in (1, 2, 4, 3, 5):  # one late row: inserted in its place
        tape.append(i, float(i), 1.0)
    ts, prices, _ = tape.window(2, 5)  # [2, 5) plus the row before 2
    assert ts.tolist() == [1, 2, 3, 4] and prices.tolist() == [1.0, 2.0, 3.0, 4.0]
    for i in range(6, 20):
        tape.append(i, float(i), 1.0)
    assert len(tape) < 10 and tape.dropped > 0  # bounded by capacity (trimmed in batches)
    assert not tape.covers(3) and tape.covers(19)
    old = Tape(capacity=1000, retain_ns=10)
    for i in range(0, 100, 5):
        old.append(i, 1.0, 1.0)
    assert old.first_ns is not None and old.last_ns is not None
    assert old.last_ns - old.first_ns <= 20  # bounded by age


def test_book_keeps_the_last_quote_the_window_and_the_close() -> None:
    book = MarketBook({"AAPL": AssetClass.EQUITY})
    assert book.mid("AAPL") is None and book.stats("AAPL") is None
    book.on_quote(QuoteMessage("AAPL", Decimal("10.00"), Decimal("10.02"), at(0)))
    book.on_quote(QuoteMessage("AAPL", Decimal("10.10"), Decimal("10.12"), at(2)))
    book.on_quote(QuoteMessage("AAPL", Decimal("9.00"), Decimal("9.02"), at(1)))  # late: not the last
    assert book.mid("AAPL") == Decimal("10.11")
    for i, (price, size) in enumerate([(10, 100), (11, 200), (12, 300)]):
        book.on_trade(TradeMessage("AAPL", Decimal(price), Decimal(size), at(3 + i)))
    book.on_trade(TradeMessage("MSFT", Decimal(1), Decimal(1), at(3)))  # not configured
    assert book.ignored == 1
    book.on_close(CloseMessage("AAPL", date(2026, 3, 2), Decimal("11.5")))
    data = book.market_data("AAPL", ns_of(at(3)), ns_of(at(10)), date(2026, 3, 2))
    assert data.trades.price.tolist() == [10.0, 11.0, 12.0]
    assert data.quotes is not None and len(data.quotes) == 1  # only what prevailed at the start
    assert data.close_price == 11.5
    assert book.close("AAPL", date(2026, 3, 3)) is None


def test_book_estimates_the_market_statistics_routing_reads() -> None:
    book = MarketBook({"X": AssetClass.CRYPTO})
    price = 100.0
    for i in range(200):
        price *= 1.001 if i % 2 else 0.999
        bid, ask = Decimal(str(round(price - 0.05, 4))), Decimal(str(round(price + 0.05, 4)))
        book.on_quote(QuoteMessage("X", bid, ask, at(i)))
        book.on_trade(TradeMessage("X", bid, Decimal(10), at(i + 0.5)))
    stats = book.stats("X")
    assert stats is not None
    assert stats.spread_bps == pytest.approx(10.0, rel=0.05)  # 0.10 on ~100
    assert stats.adv == pytest.approx(10 * 24 * 3600, rel=0.05)  # 10 units a second, a 24 h day
    assert 0.0 < stats.daily_volatility < 1.0


def test_intake_drops_bad_messages_and_counts_them() -> None:
    book = MarketBook({"AAPL": AssetClass.EQUITY})
    intake = Intake(book)
    good = ENCODER.encode(QuoteMessage("AAPL", Decimal("1"), Decimal("2"), at(0)))
    assert intake.handle(subject("quotes", "AAPL"), good) is None
    crossed = ENCODER.encode(QuoteMessage("AAPL", Decimal("3"), Decimal("2"), at(0)))
    naive = b'{"symbol":"AAPL","price":1,"size":1,"timestamp":"2026-03-02T14:30:00"}'
    wrong_symbol = ENCODER.encode(QuoteMessage("MSFT", Decimal("1"), Decimal("2"), at(0)))
    for subj, payload in [
        (subject("quotes", "AAPL"), crossed),
        (subject("trades", "AAPL"), naive),
        (subject("quotes", "AAPL"), b"not json"),
        (subject("quotes", "AAPL"), wrong_symbol),
        ("marketdata.v1.bars.AAPL", good),
    ]:
        intake.handle(subj, payload)
    assert intake.bad == 5 and book.mid("AAPL") == Decimal("1.5")
    close = ENCODER.encode(CloseMessage("AAPL", date(2026, 3, 2), Decimal("1.7")))
    expected = CloseMessage("AAPL", date(2026, 3, 2), Decimal("1.7"))
    assert intake.handle(subject("close", "AAPL"), close) == expected


async def test_the_simulated_feed_reaches_the_book_over_nats(nats_url: str) -> None:
    market = SimulatedMarket(MarketConfig(seed=1, tick_interval_ms=None, instruments=default_instruments()))
    book = MarketBook({s: market.asset_class(s) or AssetClass.EQUITY for s in market.symbols}, capacity=50)
    closes: list[CloseMessage] = []
    every_close = trio.Event()

    async def on_close(message: CloseMessage) -> None:
        closes.append(message)
        if len(closes) == len(market.symbols):
            every_close.set()

    intake = Intake(book, prefix="test.md", on_close=on_close)
    feed = SimulatedFeed(market, prefix="test.md")
    async with (
        trio_asyncio.open_loop(),
        NatsBus.connect(nats_url, name="md-test") as bus,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(intake.run, bus)
        await nursery.start(feed.run, bus)  # publishes a snapshot of every quote first
        await wait_until(  # the book has no event of its own
            lambda: condition(lambda: book.has_quotes(market.symbols)),
            what="a quote of every symbol in the book",
            timeout=5,
        )
        for _ in range(50):
            market.tick()
        feed.publish_closes(date(2026, 3, 2))
        with trio.fail_after(5):
            await every_close.wait()  # the closes come after the ticks' quotes, on one connection
        nursery.cancel_scope.cancel()
    for symbol in market.symbols:
        quote = market.quote(symbol)
        assert book.mid(symbol) == (quote.bid + quote.ask) / 2  # the last tick's quote
        assert book.close(symbol, date(2026, 3, 2)) == quote.last
    assert intake.bad == 0 and book.ignored == 0


def test_the_book_covers_only_what_it_was_listening_to_and_gives_the_mid_at_a_time() -> None:
    book = MarketBook({"AAPL": AssetClass.EQUITY})
    assert not book.covers("AAPL", ns_of(at(0)))  # nothing received yet
    book.on_quote(QuoteMessage("AAPL", Decimal("10.00"), Decimal("10.02"), at(5)))
    book.on_quote(QuoteMessage("AAPL", Decimal("10.10"), Decimal("10.12"), at(9)))
    assert not book.covers("AAPL", ns_of(at(4)))  # an order from before the intake started
    assert book.covers("AAPL", ns_of(at(5))) and book.covers("AAPL", ns_of(at(6)))
    assert book.mid_at("AAPL", ns_of(at(4))) is None
    assert book.mid_at("AAPL", ns_of(at(8))) == Decimal("10.01")
    assert book.mid_at("AAPL", ns_of(at(9))) == Decimal("10.11")


def test_garbage_numbers_and_future_timestamps_are_refused_not_fatal() -> None:
    book = MarketBook({"AAPL": AssetClass.EQUITY})
    now_ns = ns_of(at(0))
    intake = Intake(book, clock_ns=lambda: now_ns)
    q = subject("quotes", "AAPL")
    for payload in (
        b'{"symbol":"AAPL","bid":"NaN","ask":"1","timestamp":"2026-03-02T14:30:00Z"}',
        b'{"symbol":"AAPL","bid":"1","ask":"Infinity","timestamp":"2026-03-02T14:30:00Z"}',
        b'{"symbol":"AAPL","bid":"1","ask":1e400,"timestamp":"2026-03-02T14:30:00Z"}',
        b'{"symbol":"AAPL","bid":"sNaN","ask":"1","timestamp":"2026-03-02T14:30:00Z"}',
        b'{"symbol":"AAPL","bid":"1","ask":"2","timestamp":"2026-03-04T14:30:00Z"}',  # 2 days ahead
    ):
        intake.handle(q, payload)
    assert intake.bad == 5 and book.mid("AAPL") is None
    intake.handle(q, b'{"symbol":"AAPL","bid":"1","ask":"2","timestamp":"2026-03-02T14:30:00Z"}')
    assert book.mid("AAPL") == Decimal("1.5")


def test_a_stale_quote_gives_no_mid_and_a_gap_resets_coverage() -> None:
    clock = [ns_of(at(0))]
    book = MarketBook({"AAPL": AssetClass.EQUITY}, max_quote_age_s=60, clock_ns=lambda: clock[0])
    book.on_quote(QuoteMessage("AAPL", Decimal("10"), Decimal("10.02"), at(0)))
    assert book.mid("AAPL") == Decimal("10.01")
    clock[0] = ns_of(at(61))
    assert book.mid("AAPL") is None  # the feed stopped: no arrival price rather than a stale one
    assert book.covers("AAPL", ns_of(at(1)))
    book.mark_gap()
    assert not book.covers("AAPL", ns_of(at(1)))
    book.on_quote(QuoteMessage("AAPL", Decimal("10"), Decimal("10.02"), at(62)))
    assert book.covers("AAPL", ns_of(at(62))) and not book.covers("AAPL", ns_of(at(30)))


def test_a_print_delivered_twice_counts_once() -> None:
    book = MarketBook({"AAPL": AssetClass.EQUITY})
    for _ in range(2):
        book.on_trade(TradeMessage("AAPL", Decimal(10), Decimal(100), at(1), trade_id="T-1"))
    book.on_trade(TradeMessage("AAPL", Decimal(11), Decimal(100), at(2)))  # no id: kept
    data = book.market_data("AAPL", ns_of(at(0)), ns_of(at(5)))
    assert data.trades.price.tolist() == [10.0, 11.0] and book.duplicates == 1


def test_the_tape_matches_a_plain_sorted_list_through_appends_late_rows_and_trims() -> None:
    rng = random.Random(3)
    tape = Tape(capacity=50, retain_ns=400)
    model: list[tuple[int, float, float]] = []
    now = 0
    for n in range(5_000):
        now += rng.choice((0, 1, 2, 5))
        ts = now - (rng.randint(1, 30) if rng.random() < 0.1 else 0)  # some late rows
        tape.append(ts, float(n), -float(n))
        insort(model, (ts, float(n), -float(n)), key=lambda row: row[0])
        while len(model) > 50:
            model.pop(0)
        while model and model[0][0] < model[-1][0] - 400:
            model.pop(0)
        if n % 97 == 0:
            lo, hi = now - rng.randint(0, 200), now + 1
            got = tape.window(lo, hi)
            times = [row[0] for row in model]
            i = max(0, bisect_left(times, lo) - 1)
            j = bisect_left(times, hi)
            assert got[0].tolist() == times[i:j]
            assert sorted(got[1].tolist()) == sorted(row[1] for row in model[i:j])
    assert len(tape) == len(model) and tape.first_ns == model[0][0] and tape.last_ns == model[-1][0]
