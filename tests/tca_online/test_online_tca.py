"""Online TCA through the engine: a finished execution gets its report (with its market window)
in PostgreSQL and feeds the routing statistics; TCA requests are answered for every benchmark,
from the report after the fact (also by a fresh reporter whose tapes are empty, as after a
restart), and bad requests get 400/404."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import numpy as np
import psycopg
import pytest
import trio

from adapters.simulated import SimulatedBroker, SimulatedMarket
from adapters.simulated.config import MarketConfig, default_instruments
from adapters.simulated.market import MarketEvent, QuoteEvent
from api.contracts import CancelOrderRequest, OrderRoutingRequest, TCARequest
from api.enums import AssetClass, OrderType, RoutingStatus, Side, TCABenchmark, TimeInForce
from api.errors import InvalidRequest, NotFound
from api.events import OrderFilled
from market.book import MarketBook
from market.messages import QuoteMessage, TradeMessage
from nursery.engine import ExecutionEngine
from routing.stats import RoutingStats
from sql.store import Store
from tca.model import MarketData, Quotes, TcaFill, TcaOrder, Trades
from tca_online import windows
from tca_online.reporter import ExecutionReporter, _online
from tests.nursery.test_failover import venue
from tests.support.engine_stack import engine_stack
from tests.support.polling import wait_until

SYMBOL = "AAPL"


def feed(book: MarketBook) -> object:
    """The book fed straight from the simulated market (the daemon goes through NATS)."""

    def on_event(event: MarketEvent) -> None:
        if isinstance(event, QuoteEvent):
            book.on_quote(QuoteMessage(event.symbol, event.bid, event.ask, event.at))
        else:
            book.on_trade(TradeMessage(event.symbol, event.price, event.size, event.at))

    return on_event


class Desk:
    def __init__(
        self,
        engine: ExecutionEngine,
        market: SimulatedMarket,
        book: MarketBook,
        store: Store,
        stats: RoutingStats,
    ) -> None:
        self.engine, self.market, self.book, self.store, self.stats = engine, market, book, store, stats


@pytest.fixture
async def desk(migrated_database_url: str) -> AsyncIterator[Desk]:
    market = SimulatedMarket(MarketConfig(seed=9, tick_interval_ms=None, instruments=default_instruments()))
    book = MarketBook({s: market.asset_class(s) or AssetClass.EQUITY for s in market.symbols})
    market.add_listener(feed(book))  # type: ignore[arg-type]
    for symbol in market.symbols:
        q = market.quote(symbol)
        book.on_quote(QuoteMessage(symbol, q.bid, q.ask, q.at))
    broker = SimulatedBroker(venue("tca-a", "0.0002"), market)
    stats = RoutingStats()
    async with Store.open(migrated_database_url) as store:
        reporter = ExecutionReporter(store, book, stats=stats, market_settle_s=0.0)
        async with engine_stack(
            migrated_database_url, [broker], book, drain=True, stats=stats, reporter=reporter
        ) as stack:
            yield Desk(stack.engine, market, book, stack.store, stats)


def order(side: Side = Side.BUY, **changes: object) -> OrderRoutingRequest:
    fields: dict[str, object] = dict(
        order_id=f"tca-{uuid.uuid4().hex[:12]}",
        account_id="ACC",
        symbol=SYMBOL,
        side=side,
        type=OrderType.LIMIT,
        quantity=Decimal(100),
        time_in_force=TimeInForce.GTC,
    )
    fields.update(changes)
    return OrderRoutingRequest(**fields)  # type: ignore[arg-type]


async def reported(desk: Desk, order_id: str) -> None:
    """Wait until the execution is final and its report task is done."""
    await wait_until(
        lambda: desk.store.load_latest_execution(order_id),
        lambda e: e is not None and e.status.is_final,
        what=f"execution of {order_id} final",
        timeout=5,
    )
    await desk.engine.wait_settled()


async def test_a_filled_order_gets_its_report_and_every_benchmark(desk: Desk) -> None:
    quote = desk.market.quote(SYMBOL)
    limit = quote.bid  # rests below the ask
    request = order(price=limit)
    response = await desk.engine.route_order(request)
    assert response.status is RoutingStatus.ACCEPTED
    arrival = (quote.bid + quote.ask) / 2
    low = limit - Decimal("0.02")
    desk.market.set_quote(SYMBOL, low, limit, ask_size=Decimal(40))  # a first fill of 40
    # The two sleeps separate timestamps on the market's wall clock: first fill, then the prints,
    # then the second fill, each strictly later (the window and the benchmarks depend on it).
    await trio.sleep(0.01)
    prints = [(limit + Decimal("0.05"), Decimal(300)), (limit + Decimal("0.10"), Decimal(100))]
    for price, size in prints:  # the market trades above our limit between our fills
        desk.market.print_trade(SYMBOL, price, size)
    await trio.sleep(0.01)
    desk.market.set_quote(SYMBOL, low, limit, ask_size=Decimal(100))  # the other 60
    await reported(desk, request.order_id)

    execution = await desk.store.load_latest_execution(request.order_id)
    assert execution is not None and execution.filled_quantity == Decimal(100)
    average = float(execution.average_price or 0)
    fees_bps = float(execution.fees) / (average * 100) * 1e4

    tca = await desk.engine.transaction_cost_analysis(TCARequest(order_id=request.order_id))
    assert tca.benchmark_price == pytest.approx(float(arrival))
    slippage = (average - float(arrival)) / float(arrival) * 1e4  # a buy: +1
    assert tca.slippage_bps == pytest.approx(slippage)
    assert tca.total_cost_bps == pytest.approx(slippage + fees_bps)
    assert tca.average_execution_price == pytest.approx(average)

    vwap = await desk.engine.transaction_cost_analysis(
        TCARequest(order_id=request.order_id, benchmark=TCABenchmark.VWAP)
    )
    expected_vwap = float(sum(p * s for p, s in prints) / sum(s for _, s in prints))
    assert vwap.benchmark_price == pytest.approx(expected_vwap)
    assert vwap.execution_quality_score == pytest.approx(100.0)  # every print was worse than ours

    close = await desk.engine.transaction_cost_analysis(
        TCARequest(order_id=request.order_id, benchmark=TCABenchmark.CLOSE_PRICE)
    )
    assert close.benchmark_price is None and close.slippage_bps is None  # no close yet: not guessed
    await desk.store.save_close(SYMBOL, execution.updated_at.date(), Decimal("190.25"), datetime.now(UTC))
    close = await desk.engine.transaction_cost_analysis(
        TCARequest(order_id=request.order_id, benchmark=TCABenchmark.CLOSE_PRICE)
    )
    assert close.benchmark_price == pytest.approx(190.25)

    stored = await desk.store.load_report(execution.id)
    assert stored is not None and stored.market_window is not None and stored.arrival_price == arrival
    broker = desk.stats.broker("tca-a")
    assert broker is not None and AssetClass.EQUITY in broker.tca  # fed to the routing statistics

    # A fresh reporter (empty tapes, as after a restart) answers from the stored window.
    fresh = ExecutionReporter(desk.store, MarketBook({SYMBOL: AssetClass.EQUITY}), market_settle_s=0.0)
    again = await fresh.analyse(TCARequest(order_id=request.order_id, benchmark=TCABenchmark.VWAP))
    # The same numbers; the reasons say what changed since: the close has arrived, and the fresh
    # reporter has not loaded its peer statistics yet.
    assert msgspec.structs.replace(again, unavailable={}) == msgspec.structs.replace(vwap, unavailable={})
    assert "CLOSE_PRICE" in vwap.unavailable and "CLOSE_PRICE" not in again.unavailable
    assert again.unavailable["brokerPerformanceRank"].startswith("unranked: no EQUITY orders of tca-a")


async def test_a_cancel_with_fills_is_reported_and_one_without_is_not(desk: Desk) -> None:
    quote = desk.market.quote(SYMBOL)
    partial = order(price=quote.ask, quantity=Decimal(10**6))  # more than the offer shows
    await desk.engine.route_order(partial)
    unfilled = order(price=quote.bid - Decimal(1))
    await desk.engine.route_order(unfilled)
    for request in (partial, unfilled):
        await desk.engine.cancel_order(CancelOrderRequest(order_id=request.order_id, broker_id="tca-a"))
        await reported(desk, request.order_id)
    first = await desk.store.load_latest_execution(partial.order_id)
    second = await desk.store.load_latest_execution(unfilled.order_id)
    assert first is not None and 0 < first.filled_quantity < first.quantity
    assert second is not None and second.filled_quantity == 0
    assert await desk.store.load_report(first.id) is not None
    assert await desk.store.load_report(second.id) is None
    nothing = await desk.engine.transaction_cost_analysis(TCARequest(order_id=unfilled.order_id))
    assert nothing.average_execution_price is None and nothing.slippage_bps is None
    shortfall = await desk.engine.transaction_cost_analysis(
        TCARequest(order_id=unfilled.order_id, benchmark=TCABenchmark.IMPLEMENTATION_SHORTFALL)
    )
    assert shortfall.total_cost_bps is not None and math.isfinite(shortfall.total_cost_bps)  # all opportunity


async def test_unknown_orders_are_404_and_a_foreign_execution_is_400(desk: Desk) -> None:
    with pytest.raises(NotFound):
        await desk.engine.transaction_cost_analysis(TCARequest(order_id="no-such-order"))
    request = order(price=desk.market.quote(SYMBOL).bid)
    response = await desk.engine.route_order(request)
    assert response.execution_id is not None
    with pytest.raises(NotFound):
        await desk.engine.transaction_cost_analysis(
            TCARequest(order_id=request.order_id, execution_id="nope")
        )
    with pytest.raises(InvalidRequest) as refused:
        await desk.engine.transaction_cost_analysis(
            TCARequest(order_id="another-order", execution_id=response.execution_id)
        )
    assert [e.field for e in refused.value.errors] == ["executionId"]
    live = await desk.engine.transaction_cost_analysis(TCARequest(order_id=request.order_id))
    assert live.execution_id == response.execution_id and live.average_execution_price is None
    assert msgspec.json.encode(live)  # a working order is analysed from the live tapes


async def test_reports_cut_short_by_a_stop_are_backfilled_at_start(desk: Desk) -> None:
    quote = desk.market.quote(SYMBOL)
    request = order(price=quote.ask)  # marketable: fills at once
    await desk.engine.route_order(request)
    await reported(desk, request.order_id)
    execution = await desk.store.load_latest_execution(request.order_id)
    assert execution is not None and await desk.store.load_report(execution.id) is not None

    def forget(conn: psycopg.Connection[object]) -> None:
        conn.execute("DELETE FROM execution_reports WHERE broker_order_id = %s", (execution.id,))
        conn.commit()

    await desk.store._read(forget)  # as if the daemon had stopped before writing it
    fresh = ExecutionReporter(desk.store, MarketBook({SYMBOL: AssetClass.EQUITY}), market_settle_s=0.0)
    since = execution.updated_at - timedelta(minutes=1)
    await fresh.backfill(since, execution.updated_at)  # it finished at `until`: left alone
    assert await desk.store.load_report(execution.id) is None
    assert await fresh.backfill(since) >= 1
    stored = await desk.store.load_report(execution.id)
    assert stored is not None and stored.arrival_price == (quote.bid + quote.ask) / 2
    assert await fresh.backfill(execution.updated_at - timedelta(minutes=1)) == 0  # once only


def test_fills_at_one_instant_are_measured_over_the_orders_own_window() -> None:
    base = TcaOrder(order_id="o", symbol=SYMBOL, side=Side.BUY, quantity=10.0, broker_id="b", arrival_ns=100)
    one = (TcaFill(150, 10.0, 1.0),)
    order_one, _ = _online(base, one, 200)
    assert (order_one.window_start_ns, order_one.window_end_ns) == (100, 200)
    two = (TcaFill(150, 5.0, 1.0), TcaFill(180, 5.0, 1.0))
    order_two, _ = _online(base, two, 200)
    assert order_two.window_start_ns is None  # first fill -> last fill, the TCA default
    failed_over, _ = _online(base, two, 200, received_ns=40)  # the filling attempt started late
    assert failed_over.arrival_ns == 40  # arrival is when the OMS sent the order


def test_a_market_window_survives_the_round_trip_and_garbage_is_refused() -> None:
    small = MarketData(
        trades=Trades.of(np.arange(0, 300, 10), np.linspace(10, 11, 30), np.full(30, 5.0)),
        quotes=Quotes.of(np.arange(0, 300, 10), np.full(30, 9.9), np.full(30, 10.1)),
    )
    big = MarketData(trades=Trades.of(np.arange(100_000), np.full(100_000, 1.0), np.ones(100_000)))
    for data in (small, big, MarketData(trades=Trades.empty())):
        back = windows.decode(windows.encode(data), close_price=1.5)
        assert np.array_equal(back.trades.ts_ns, data.trades.ts_ns)
        assert np.array_equal(back.trades.price, data.trades.price)
        assert (back.quotes is None) == (data.quotes is None) and back.close_price == 1.5
    blob = windows.encode(small)
    for bad in (b"", b"BISW", blob[:-3], blob + b"x", b"PK\x03\x04" + blob[4:]):
        with pytest.raises(ValueError):
            windows.decode(bad)


async def test_a_fill_that_arrives_after_the_cancel_rewrites_the_report(desk: Desk) -> None:
    quote = desk.market.quote(SYMBOL)
    request = order(price=quote.bid - Decimal(1))  # rests
    await desk.engine.route_order(request)
    await desk.engine.cancel_order(CancelOrderRequest(order_id=request.order_id, broker_id="tca-a"))
    await reported(desk, request.order_id)
    execution = await desk.store.load_latest_execution(request.order_id)
    assert execution is not None and execution.filled_quantity == 0
    assert await desk.store.load_report(execution.id) is None  # nothing filled: no report

    # The broker had filled part of it before the cancel reached it: the fill comes last.
    late = OrderFilled(
        client_order_id=execution.client_order_id,
        at=datetime.now(UTC),
        fill_id="late-fill-1",
        quantity=Decimal(30),
        price=quote.bid - Decimal(1),
        fee=Decimal("0.5"),
        venue="SIMX",
    )
    desk.engine._applier.enqueue(late)
    await wait_until(
        lambda: desk.store.load_report(execution.id), lambda r: r is not None, what="the report", timeout=5
    )
    await desk.engine.wait_settled()
    tca = await desk.engine.transaction_cost_analysis(TCARequest(order_id=request.order_id))
    assert tca.average_execution_price == pytest.approx(float(quote.bid - Decimal(1)))


async def test_a_report_waits_briefly_for_the_market_data_to_reach_the_end(desk: Desk) -> None:
    class Late:
        """A market source whose tapes reach the end only after a while."""

        def __init__(self, book: MarketBook, after: float) -> None:
            self.book, self.ready_at = book, trio.current_time() + after

        def __getattr__(self, name: str) -> object:
            return getattr(self.book, name)

        def latest_ns(self, symbol: str) -> int | None:
            return self.book.latest_ns(symbol) if trio.current_time() >= self.ready_at else 0

    reporter = ExecutionReporter(desk.store, Late(desk.book, 0.3), market_settle_s=2.0)  # type: ignore[arg-type]
    started = trio.current_time()
    await reporter._await_market(SYMBOL, 1)
    assert 0.25 <= trio.current_time() - started < 1.0  # waited for the data, not the full 2 s
    impatient = ExecutionReporter(desk.store, Late(desk.book, 10.0), market_settle_s=0.2)  # type: ignore[arg-type]
    started = trio.current_time()
    await impatient._await_market(SYMBOL, 1)
    assert trio.current_time() - started < 0.5  # at most market_settle_s
