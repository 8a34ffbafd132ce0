"""Properties every measure must have, whatever the data: mirror symmetry and scale invariance."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.enums import Side, TCABenchmark
from tca import MarketData, Quotes, TcaFill, TcaOrder, TcaResult, Trades, analyse

S = 1_000_000_000

prices = st.floats(min_value=1.0, max_value=1_000.0, allow_nan=False, allow_infinity=False)
quantities = st.floats(min_value=1.0, max_value=10_000.0, allow_nan=False, allow_infinity=False)


@st.composite
def cases(draw: st.DrawFn) -> tuple[TcaOrder, list[TcaFill], MarketData]:
    n_trades = draw(st.integers(min_value=1, max_value=30))
    times = sorted(draw(st.lists(st.integers(0, 100), min_size=n_trades, max_size=n_trades)))
    trades = Trades.of(
        [t * S for t in times],
        draw(st.lists(prices, min_size=n_trades, max_size=n_trades)),
        draw(st.lists(st.floats(0.0, 1_000.0), min_size=n_trades, max_size=n_trades)),
    )
    mids = draw(st.lists(prices, min_size=1, max_size=5))
    quotes = Quotes.of([i * 25 * S for i in range(len(mids))], mids, [m * 1.001 for m in mids])
    n_fills = draw(st.integers(min_value=1, max_value=8))
    fill_times = sorted(draw(st.lists(st.integers(0, 100), min_size=n_fills, max_size=n_fills)))
    fills = [TcaFill(t * S, draw(quantities), draw(prices), draw(st.floats(0.0, 50.0))) for t in fill_times]
    filled = sum(f.quantity for f in fills)
    order = TcaOrder(
        order_id="p",
        symbol="X",
        side=Side.BUY,
        quantity=filled + draw(st.floats(0.0, 5_000.0)),
        broker_id="b",
        arrival_ns=draw(st.integers(0, 10)) * S,
        decision_price=draw(st.none() | prices),
        end_ns=(fill_times[-1] + draw(st.integers(0, 10))) * S,
    )
    return order, fills, MarketData(trades, quotes, close_price=draw(st.none() | prices))


BPS_FIELDS = ("slippage_bps", "total_cost_bps", "arrival_cost_bps", "market_impact_bps", "fees_bps")


def close(a: float | None, b: float | None, rel: float = 1e-9, abs_: float = 1e-6) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


@settings(max_examples=150, deadline=None)
@given(cases(), st.sampled_from(list(TCABenchmark)))
def test_a_buy_and_the_mirror_sell_have_opposite_slippage(
    case: tuple[TcaOrder, list[TcaFill], MarketData], benchmark: TCABenchmark
) -> None:
    order, fills, market = case
    buy = analyse(order, fills, market, benchmark)
    sell = analyse(msgspec.structs.replace(order, side=Side.SELL), fills, market, benchmark)
    assert buy.benchmark_price == sell.benchmark_price
    if buy.slippage_bps is None:
        assert sell.slippage_bps is None
    else:
        assert sell.slippage_bps == pytest.approx(-buy.slippage_bps, rel=1e-12, abs=1e-9)
    if buy.market_impact_bps is not None:
        assert sell.market_impact_bps == pytest.approx(-buy.market_impact_bps, rel=1e-12, abs=1e-9)
    if buy.execution_quality_score is not None and sell.execution_quality_score is not None:
        # What is worse for a buy is better for a sell; prints at our price count half for both.
        assert buy.execution_quality_score + sell.execution_quality_score == pytest.approx(100.0)


def scaled(
    case: tuple[TcaOrder, list[TcaFill], MarketData], k: float
) -> tuple[TcaOrder, list[TcaFill], MarketData]:
    order, fills, market = case
    trades = Trades.of(market.trades.ts_ns, market.trades.price * k, market.trades.size)
    assert market.quotes is not None
    quotes = Quotes.of(market.quotes.ts_ns, market.quotes.bid * k, market.quotes.ask * k)
    close_price = None if market.close_price is None else market.close_price * k
    order = msgspec.structs.replace(
        order, decision_price=None if order.decision_price is None else order.decision_price * k
    )
    fills = [msgspec.structs.replace(f, price=f.price * k, fees=f.fees * k) for f in fills]
    return order, fills, MarketData(trades, quotes, close_price)


@settings(max_examples=150, deadline=None)
@given(
    cases(),
    st.sampled_from(list(TCABenchmark)),
    st.sampled_from([0.01, 0.37, 3.0, 1_000.0]),
    st.sampled_from([Side.BUY, Side.SELL]),
)
def test_scaling_every_price_leaves_every_bps_unchanged(
    case: tuple[TcaOrder, list[TcaFill], MarketData], benchmark: TCABenchmark, k: float, side: Side
) -> None:
    case = (msgspec.structs.replace(case[0], side=side), case[1], case[2])
    base: TcaResult = analyse(*case, benchmark)
    big: TcaResult = analyse(*scaled(case, k), benchmark)
    for field in BPS_FIELDS:
        assert close(getattr(base, field), getattr(big, field)), field
    assert close(base.execution_quality_score, big.execution_quality_score, abs_=1e-6)
    assert close(
        None if base.shortfall is None else base.shortfall.bps,
        None if big.shortfall is None else big.shortfall.bps,
    )
    assert (base.benchmark_price is None) == (big.benchmark_price is None)
