"""`analyse`: the transaction cost analysis of one order (the online path).

Pure: the caller gathers the order, its fills, the market data around it and the peer
statistics (from PostgreSQL and the market-data intake) and gets numbers back; nothing here
reads a clock, a socket or a table. The offline tool computes the same numbers for many orders
at once (`tca.batch`); the tests hold the two to each other.

What is unavailable is said so (`TcaResult.unavailable`), never filled in:
- no fills: no average price, slippage, fees bps, impact or quality score; implementation
  shortfall is still defined (all opportunity cost) when the end price is known;
- no market prints in the window: no VWAP, TWAP, quality score or best-price savings;
- no quote or print at or before arrival (and no stored arrival price): no arrival price, so no
  arrival slippage, impact, Wagner split or peer comparison;
- no official close given: no CLOSE_PRICE benchmark.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from api.enums import TCABenchmark
from tca import measures
from tca.model import DEFAULT_CONFIG, MarketData, TcaConfig, TcaFill, TcaOrder
from tca.peers import (
    BrokerRank,
    Dimension,
    PeerStats,
    best_broker,
    hour_key,
    rank_brokers,
    recommend,
    size_bucket,
)
from tca.result import BenchmarkPrices, Recommendation, Shortfall, TcaResult, Unavailable


class _Series:
    """The market data one order needs, as Python lists (the measures are pure Python)."""

    def __init__(self, market: MarketData) -> None:
        trades = market.trades
        self.trade_times: list[int] = trades.ts_ns.tolist()
        self.prices: list[float] = trades.price.tolist()
        self.sizes: list[float] = trades.size.tolist()
        quotes = market.quotes
        self.quote_times: list[int] = [] if quotes is None else quotes.ts_ns.tolist()
        self.mids: list[float] = [] if quotes is None else ((quotes.bid + quotes.ask) / 2).tolist()

    def reference(self, t: int) -> float | None:
        return measures.reference_price(t, self.trade_times, self.prices, self.quote_times, self.mids)


def analyse(
    order: TcaOrder,
    fills: Sequence[TcaFill],
    market: MarketData,
    benchmark: TCABenchmark = TCABenchmark.ARRIVAL_PRICE,
    *,
    peers: PeerStats | None = None,
    config: TcaConfig = DEFAULT_CONFIG,
) -> TcaResult:
    """Analyse one order against `benchmark` (every benchmark price is computed and returned in
    `benchmarks`; `benchmark` picks the one behind slippage and total cost).

    `market` must cover the order's window and, for the TWAP, the last print before it; for
    impact, up to the end plus `config.impact_horizon_ns`. `peers` (optional) gives the broker
    rank, the savings against the best broker and the recommendations.
    """
    sign = order.side.sign
    ordered = sorted(fills, key=lambda f: f.ts_ns)
    quantities = [f.quantity for f in ordered]
    prices = [f.price for f in ordered]
    fees = sum(f.fees for f in ordered)
    filled = sum(quantities)
    notional = sum(q * p for q, p in zip(quantities, prices, strict=True))
    average = measures.average_price(quantities, prices)
    series = _Series(market)
    missing: list[Unavailable] = []

    def gone(measure: str, reason: str) -> None:
        missing.append(Unavailable(measure, reason))

    if average is None:
        gone("averagePrice", "no fills")

    # The benchmark window: the requested one, else first fill -> last fill (end exclusive).
    window: tuple[int, int] | None = None
    if order.window_start_ns is not None and order.window_end_ns is not None:
        window = (order.window_start_ns, order.window_end_ns)
    elif ordered:
        window = (ordered[0].ts_ns, ordered[-1].ts_ns)
    window_reason = _window_problem(window, series.trade_times)

    arrival = order.arrival_price if order.arrival_price is not None else series.reference(order.arrival_ns)
    if arrival is None:
        gone("ARRIVAL_PRICE", "no stored arrival price and no quote or trade at or before arrival")
    vwap = twap = None
    if window is not None and window_reason is None:
        vwap = measures.interval_vwap(series.trade_times, series.prices, series.sizes, *window)
        twap = measures.interval_twap(series.trade_times, series.prices, *window)
        if vwap is None:
            window_reason = "the prints in the window have no volume"
    for name in ("VWAP", "TWAP"):
        if window_reason is not None and not (name == "TWAP" and twap is not None):
            gone(name, window_reason)
    close = market.close_price
    if close is None:
        gone("CLOSE_PRICE", "no official close for the trade date")
    decision = order.decision_price if order.decision_price is not None else arrival
    if decision is None:
        gone("IMPLEMENTATION_SHORTFALL", "no decision price and no arrival price")
    prices_of = BenchmarkPrices(arrival=arrival, vwap=vwap, twap=twap, close=close, decision=decision)

    # The order's end: completion/cancellation if known, else the last fill.
    end_ns = order.end_ns if order.end_ns is not None else (ordered[-1].ts_ns if ordered else None)
    end_price = order.end_price
    if end_price is None and end_ns is not None:
        end_price = series.reference(end_ns)

    shortfall: Shortfall | None = None
    if decision is not None:
        shortfall = measures.implementation_shortfall(
            sign, order.quantity, quantities, prices, fees, decision, end_price, arrival
        )
        if shortfall is None:
            gone("IMPLEMENTATION_SHORTFALL", "part of the order is unfilled and its end price is unknown")

    benchmark_price = prices_of.of(benchmark)
    slippage = (
        None
        if average is None or benchmark_price is None
        else measures.slippage_bps(sign, average, benchmark_price)
    )
    fee_bps = measures.fees_bps(fees, notional)
    if benchmark is TCABenchmark.IMPLEMENTATION_SHORTFALL:
        total = None if shortfall is None else shortfall.bps
    else:
        total = None if slippage is None or fee_bps is None else slippage + fee_bps
    arrival_slippage = (
        None if average is None or arrival is None else measures.slippage_bps(sign, average, arrival)
    )
    arrival_cost = None if arrival_slippage is None or fee_bps is None else arrival_slippage + fee_bps

    impact = None
    if average is not None and arrival is not None and end_ns is not None:
        later = series.reference(end_ns + config.impact_horizon_ns)
        impact = None if later is None else measures.market_impact_bps(sign, arrival, later)
    if impact is None:
        gone("marketImpactBps", "no fills" if average is None else "no arrival mid or no mid after the end")

    quality = None
    if average is not None and window is not None and window_reason is None:
        rpm = measures.relative_performance(
            series.trade_times, series.prices, series.sizes, *window, sign, average, config.tie_tolerance
        )
        quality = None if rpm is None else 100.0 * rpm
    if quality is None:
        gone(
            "executionQualityScore",
            "no fills" if average is None else (window_reason or "no volume in the window"),
        )

    reference = arrival if arrival is not None else (decision if decision is not None else average)
    bucket = -1 if reference is None else size_bucket(order.quantity * reference, config.size_bucket_edges)

    rank: int | None = None
    ranked_count = 0
    savings: float | None = None
    basis: str | None = None
    recommendations: tuple[Recommendation, ...] = ()
    if peers is not None:
        ranking = rank_brokers(peers, order.asset_class, config.min_samples)
        ranked_count = sum(1 for r in ranking if r.rank is not None)
        mine = next((r for r in ranking if r.broker_id == order.broker_id), None)
        rank = None if mine is None else mine.rank
        if rank is None:
            gone("brokerPerformanceRank", _unranked_reason(mine, order, config.min_samples))
        best = None if bucket < 0 else best_broker(peers, order.asset_class, bucket, config.min_samples)
        if best is not None and arrival_cost is not None:
            savings, basis = max(arrival_cost - best.mean, 0.0), "BEST_BROKER"
        recommendations = recommend(
            peers,
            asset_class=order.asset_class,
            bucket=bucket,
            keys={
                Dimension.BROKER: order.broker_id,
                Dimension.STRATEGY: order.strategy,
                Dimension.ORDER_TYPE: order.order_type,
                Dimension.HOUR: hour_key(order.arrival_ns),
            },
            config=config,
        )
    else:
        gone("brokerPerformanceRank", "no peer statistics given")
    if savings is None and average is not None and window is not None and window_reason is None:
        best_print = measures.best_price(series.trade_times, series.prices, *window, sign)
        if best_print is not None:
            savings, basis = (
                max(measures.slippage_bps(sign, average, best_print), 0.0),
                "BEST_PRICE_IN_WINDOW",
            )
    if savings is None:
        gone("savingsOpportunityBps", "no ranked broker for this size and no prints in the window")
    if slippage is None:
        gone("slippageBps", "no fills" if average is None else f"benchmark {benchmark} unavailable")
    if total is None:
        gone(
            "totalCostBps",
            "no fills" if shortfall is None and average is None else f"benchmark {benchmark} unavailable",
        )

    return TcaResult(
        order_id=order.order_id,
        execution_id=order.execution_id,
        broker_id=order.broker_id,
        symbol=order.symbol,
        side=order.side,
        benchmark=benchmark,
        asset_class=order.asset_class,
        order_type=order.order_type,
        strategy=order.strategy,
        arrival_ns=order.arrival_ns,
        quantity=order.quantity,
        filled_quantity=filled,
        average_price=average,
        executed_notional=notional,
        fees=fees,
        window_start_ns=None if window is None else window[0],
        window_end_ns=None if window is None else window[1],
        benchmarks=prices_of,
        benchmark_price=benchmark_price,
        slippage_bps=slippage,
        fees_bps=fee_bps,
        total_cost_bps=total,
        arrival_slippage_bps=arrival_slippage,
        arrival_cost_bps=arrival_cost,
        market_impact_bps=impact,
        execution_quality_score=quality,
        shortfall=shortfall,
        size_bucket=bucket,
        broker_performance_rank=rank,
        ranked_brokers=ranked_count,
        savings_opportunity_bps=savings,
        savings_basis=basis,
        recommendations=recommendations,
        unavailable=tuple(missing),
    )


def _window_problem(window: tuple[int, int] | None, times: Sequence[int]) -> str | None:
    """Why the window cannot carry a market benchmark, or None when it can."""
    if window is None:
        return "no fills and no requested window"
    start, end = window
    if end <= start:
        return "zero-length window (every fill at one time; request a window)"
    if bisect_left(times, start) == bisect_left(times, end):
        return "no market trades in the window"
    return None


def _unranked_reason(mine: BrokerRank | None, order: TcaOrder, min_samples: int) -> str:
    if mine is not None and mine.reason:
        return mine.reason
    return (
        f"unranked: no {order.asset_class} orders of {order.broker_id} in the peer statistics"
        f" (minimum {min_samples})"
    )
