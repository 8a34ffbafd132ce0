"""`analyse`: the transaction cost analysis of one order (the online path); `analyse_many`: the
same for many orders at once, each on its own market window, its measures computed by the
vectorised engine of the offline tool (`tca.batch`).

Pure: the caller gathers the order, its fills, the market data around it and the peer
statistics (from PostgreSQL and the market-data intake) and gets numbers back; nothing here
reads a clock, a socket or a table. Both functions turn their measures into a `TcaResult` with
the same code (`_assemble`: benchmarks, costs, peers, what is unavailable and why), so they
differ only by float rounding of the window sums (numpy sums in another order; the tests hold
them to 1e-9 relative). The offline tool computes the same numbers over a desk's files.

What is unavailable is said so (`TcaResult.unavailable`), never filled in:
- no fills: no average price, slippage, fees bps, impact or quality score; implementation
  shortfall is still defined (all opportunity cost) when the end price is known;
- no market prints in the window: no VWAP, TWAP, quality score or best-price savings;
- no quote or print at or before arrival (and no stored arrival price): no arrival price, so no
  arrival slippage, impact, Wagner split or peer comparison;
- no official close given: no CLOSE_PRICE benchmark.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence

import msgspec
import numpy as np

from api.enums import TCABenchmark
from tca import measures
from tca.batch import NO_TIME, FillBatch, Measures, OrderBatch, Status, Windows, compute
from tca.model import DEFAULT_CONFIG, MarketData, TcaConfig, TcaFill, TcaOrder
from tca.peers import (
    RANKED_BY,
    BrokerRank,
    CostStats,
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


class _Figures:
    """The measures of one order, before they become a `TcaResult` (`_assemble`). None:
    unavailable. `window_reason`: why the window carries no market benchmark (None when it
    does); `best_print` only when the window does and the order has fills."""

    __slots__ = (
        "arrival",
        "average",
        "best_print",
        "bucket",
        "close",
        "decision",
        "fee_bps",
        "fees",
        "filled",
        "impact",
        "notional",
        "quality",
        "shortfall",
        "twap",
        "vwap",
        "window",
        "window_reason",
    )

    def __init__(
        self,
        *,
        filled: float,
        notional: float,
        fees: float,
        average: float | None,
        window: tuple[int, int] | None,
        window_reason: str | None,
        arrival: float | None,
        vwap: float | None,
        twap: float | None,
        close: float | None,
        decision: float | None,
        shortfall: Shortfall | None,
        fee_bps: float | None,
        impact: float | None,
        quality: float | None,
        best_print: float | None,
        bucket: int,
    ) -> None:
        self.filled, self.notional, self.fees, self.average = filled, notional, fees, average
        self.window, self.window_reason = window, window_reason
        self.arrival, self.vwap, self.twap, self.close, self.decision = arrival, vwap, twap, close, decision
        self.shortfall, self.fee_bps, self.impact, self.quality = shortfall, fee_bps, impact, quality
        self.best_print, self.bucket = best_print, bucket


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
    figures = _figures(order, fills, market, config)
    return _assemble(order, benchmark, figures, _Peers(peers, config), config)


def analyse_many(
    orders: Sequence[TcaOrder],
    fills: Sequence[Sequence[TcaFill]],
    windows: Windows,
    benchmark: TCABenchmark = TCABenchmark.ARRIVAL_PRICE,
    *,
    peers: PeerStats | None = None,
    config: TcaConfig = DEFAULT_CONFIG,
) -> list[TcaResult]:
    """`analyse` of each order (`fills[i]` and window `i` of `windows` are order `i`'s), its
    measures computed for all at once by `tca.batch.compute` on the calling thread; the peer
    rankings and recommendations are worked out once per peer group, not once per order."""
    n = len(orders)
    if len(fills) != n or len(windows) != n:
        raise ValueError("one list of fills and one window per order")
    if n == 0:
        return []
    m = compute(
        _order_batch(orders, windows),
        _fill_batch(fills),
        windows.trades,
        windows.quotes,
        close_from_tape=False,
        config=config,
        workers=1,
    )
    shared = _Peers(peers, config)
    return [
        _assemble(order, benchmark, figures, shared, config)
        for order, figures in zip(orders, _figures_of(m, orders), strict=True)
    ]


def _figures(order: TcaOrder, fills: Sequence[TcaFill], market: MarketData, config: TcaConfig) -> _Figures:
    """The measures of one order, in pure Python (`tca.measures`)."""
    sign = order.side.sign
    ordered = sorted(fills, key=lambda f: f.ts_ns)
    quantities = [f.quantity for f in ordered]
    prices = [f.price for f in ordered]
    fees = sum(f.fees for f in ordered) + order.commission
    filled = sum(quantities)
    notional = sum(q * p for q, p in zip(quantities, prices, strict=True))
    average = measures.average_price(quantities, prices)
    series = _Series(market)

    # The benchmark window: the requested one, else first fill -> last fill (end exclusive).
    window: tuple[int, int] | None = None
    if order.window_start_ns is not None and order.window_end_ns is not None:
        window = (order.window_start_ns, order.window_end_ns)
    elif ordered:
        window = (ordered[0].ts_ns, ordered[-1].ts_ns)
    window_reason = _window_problem(window, series.trade_times)

    arrival = order.arrival_price if order.arrival_price is not None else series.reference(order.arrival_ns)
    vwap = twap = None
    if window is not None and window_reason is None:
        vwap = measures.interval_vwap(series.trade_times, series.prices, series.sizes, *window)
        twap = measures.interval_twap(series.trade_times, series.prices, *window)
        if vwap is None:
            window_reason = Status.NO_VOLUME.reason
    decision = order.decision_price if order.decision_price is not None else arrival

    # The order's end: completion/cancellation if known, else the last fill.
    end_ns = order.end_ns if order.end_ns is not None else (ordered[-1].ts_ns if ordered else None)
    end_price = order.end_price
    if end_price is None and end_ns is not None:
        end_price = series.reference(end_ns)
    shortfall = None
    if decision is not None:
        shortfall = measures.implementation_shortfall(
            sign, order.quantity, quantities, prices, fees, decision, end_price, arrival
        )

    impact = None
    if average is not None and arrival is not None and end_ns is not None:
        later = series.reference(end_ns + config.impact_horizon_ns)
        impact = None if later is None else measures.market_impact_bps(sign, arrival, later)

    quality = best_print = None
    if average is not None and window is not None and window_reason is None:
        rpm = measures.relative_performance(
            series.trade_times, series.prices, series.sizes, *window, sign, average, config.tie_tolerance
        )
        quality = None if rpm is None else 100.0 * rpm
        best_print = measures.best_price(series.trade_times, series.prices, *window, sign)

    reference = arrival if arrival is not None else (decision if decision is not None else average)
    bucket = -1 if reference is None else size_bucket(order.quantity * reference, config.size_bucket_edges)
    return _Figures(
        filled=filled,
        notional=notional,
        fees=fees,
        average=average,
        window=window,
        window_reason=window_reason,
        arrival=arrival,
        vwap=vwap,
        twap=twap,
        close=market.close_price,
        decision=decision,
        shortfall=shortfall,
        fee_bps=measures.fees_bps(fees, notional),
        impact=impact,
        quality=quality,
        best_print=best_print,
        bucket=bucket,
    )


def _order_batch(orders: Sequence[TcaOrder], windows: Windows) -> OrderBatch:
    def floats(values: list[float | None]) -> np.ndarray:  # type: ignore[type-arg]
        return np.array([math.nan if v is None else v for v in values], dtype=np.float64)

    def times(values: list[int | None]) -> np.ndarray:  # type: ignore[type-arg]
        return np.array([NO_TIME if v is None else v for v in values], dtype=np.int64)

    return OrderBatch(
        symbol_code=np.arange(len(orders), dtype=np.int64),
        sign=np.array([o.side.sign for o in orders], dtype=np.int64),
        quantity=np.array([o.quantity for o in orders], dtype=np.float64),
        arrival_ns=np.array([o.arrival_ns for o in orders], dtype=np.int64),
        arrival_price=floats([o.arrival_price for o in orders]),
        decision_price=floats([o.decision_price for o in orders]),
        end_ns=times([o.end_ns for o in orders]),
        end_price=floats([o.end_price for o in orders]),
        window_start_ns=times([o.window_start_ns for o in orders]),
        window_end_ns=times([o.window_end_ns for o in orders]),
        close_price=windows.close,
        commission=np.array([o.commission for o in orders], dtype=np.float64),
    )


def _fill_batch(fills: Sequence[Sequence[TcaFill]]) -> FillBatch:
    """Each order's fills in time order (stable, as `analyse` sorts them)."""
    rows = [(i, f) for i, own in enumerate(fills) for f in sorted(own, key=lambda f: f.ts_ns)]
    return FillBatch(
        order=np.array([i for i, _ in rows], dtype=np.int64),
        ts_ns=np.array([f.ts_ns for _, f in rows], dtype=np.int64),
        quantity=np.array([f.quantity for _, f in rows], dtype=np.float64),
        price=np.array([f.price for _, f in rows], dtype=np.float64),
        fees=np.array([f.fees for _, f in rows], dtype=np.float64),
    )


def _figures_of(m: Measures, orders: Sequence[TcaOrder]) -> list[_Figures]:
    """Each order's measures out of the vectorised columns."""

    def column(values: np.ndarray) -> list[float | None]:  # type: ignore[type-arg]
        return [None if math.isnan(v) else v for v in values.tolist()]

    filled, notional, fees = m.filled.tolist(), m.notional.tolist(), m.fees.tolist()
    average, arrival, vwap, twap = column(m.average), column(m.arrival), column(m.vwap), column(m.twap)
    close, decision, end_price = column(m.close), column(m.decision), column(m.end_price)
    impact, quality, best = column(m.market_impact_bps), column(m.quality_score), column(m.best_print)
    starts, ends, status = m.window_start_ns.tolist(), m.window_end_ns.tolist(), m.window_status.tolist()
    is_total = m.is_total.tolist()
    parts = (
        m.is_execution.tolist(),
        m.is_opportunity.tolist(),
        m.is_bps.tolist(),
        m.wagner_delay.tolist(),
        m.wagner_trading_delay.tolist(),
        m.wagner_opportunity_delay.tolist(),
        m.wagner_trading.tolist(),
        m.wagner_opportunity.tolist(),
    )
    buckets = m.size_bucket.tolist()
    out = []
    for i, order in enumerate(orders):
        shortfall = None
        if not math.isnan(is_total[i]):
            execution, opportunity, bps, delay, t_delay, o_delay, trading, w_opportunity = (
                p[i] for p in parts
            )
            d = decision[i]
            assert d is not None  # a shortfall needs a decision price
            wagner = arrival[i] is not None
            shortfall = Shortfall(
                paper_value=order.quantity * d,
                decision_price=d,
                filled_quantity=filled[i],
                unfilled_quantity=max(order.quantity - filled[i], 0.0),
                execution_cost=execution,
                opportunity_cost=opportunity,
                fees=fees[i],
                total=is_total[i],
                bps=bps,
                end_price=end_price[i],
                arrival_price=arrival[i],
                delay_cost=delay if wagner else None,
                trading_delay=t_delay if wagner else None,
                opportunity_delay=o_delay if wagner else None,
                trading_cost=trading if wagner else None,
                wagner_opportunity_cost=w_opportunity if wagner else None,
            )
        out.append(
            _Figures(
                filled=filled[i],
                notional=notional[i],
                fees=fees[i],
                average=average[i],
                window=None if status[i] == Status.NO_WINDOW else (starts[i], ends[i]),
                window_reason=None if status[i] == Status.OK else Status(status[i]).reason,
                arrival=arrival[i],
                vwap=vwap[i],
                twap=twap[i],
                close=close[i],
                decision=decision[i],
                shortfall=shortfall,
                fee_bps=measures.fees_bps(fees[i], notional[i]),
                impact=impact[i],
                quality=quality[i],
                best_print=best[i],
                bucket=buckets[i],
            )
        )
    return out


class _Peers:
    """What the peer statistics say, worked out once per asset class (ranking), size bucket
    (best broker) and set of peer keys (recommendations) and kept for the next order."""

    def __init__(self, peers: PeerStats | None, config: TcaConfig) -> None:
        self.stats = peers
        self._config = config
        self._ranking: dict[str, tuple[tuple[BrokerRank, ...], int]] = {}
        self._best: dict[tuple[str, int], CostStats | None] = {}
        self._advice: dict[tuple[str, int, str, str, str, str], tuple[Recommendation, ...]] = {}

    def ranking(self, asset_class: str) -> tuple[tuple[BrokerRank, ...], int]:
        """The brokers of the asset class, and how many are ranked."""
        found = self._ranking.get(asset_class)
        if found is None:
            assert self.stats is not None
            ranks = rank_brokers(self.stats, asset_class, self._config.min_samples, self._config.confidence)
            found = self._ranking[asset_class] = (ranks, sum(1 for r in ranks if r.rank is not None))
        return found

    def best(self, asset_class: str, bucket: int) -> CostStats | None:
        key = (asset_class, bucket)
        if key not in self._best:
            assert self.stats is not None
            self._best[key] = best_broker(self.stats, asset_class, bucket, self._config.min_samples)
        return self._best[key]

    def advice(self, order: TcaOrder, bucket: int) -> tuple[Recommendation, ...]:
        hour = hour_key(order.arrival_ns)
        key = (order.asset_class, bucket, order.broker_id, order.strategy, order.order_type, hour)
        found = self._advice.get(key)
        if found is None:
            assert self.stats is not None
            found = self._advice[key] = recommend(
                self.stats,
                asset_class=order.asset_class,
                bucket=bucket,
                keys={
                    Dimension.BROKER: order.broker_id,
                    Dimension.STRATEGY: order.strategy,
                    Dimension.ORDER_TYPE: order.order_type,
                    Dimension.HOUR: hour,
                },
                config=self._config,
            )
        return found


class _Costs(msgspec.Struct, frozen=True):
    """The cost figures of one order against its benchmark (None: unavailable)."""

    prices: BenchmarkPrices
    benchmark_price: float | None
    slippage: float | None
    total: float | None
    arrival_slippage: float | None
    arrival_cost: float | None


class _Standing(msgspec.Struct, frozen=True):
    """What the peers say about one order: rank, savings and their basis, recommendations."""

    rank: int | None = None
    ranked_count: int = 0
    tied_with: tuple[str, ...] = ()
    savings: float | None = None
    basis: str | None = None
    recommendations: tuple[Recommendation, ...] = ()


def _assemble(
    order: TcaOrder, benchmark: TCABenchmark, f: _Figures, peers: _Peers, config: TcaConfig
) -> TcaResult:
    """The result of one order from its measures, in steps: the benchmark prices and what of
    them is missing, the costs, the peers' view, then every other missing measure with its
    reason (in a fixed order)."""
    missing: list[Unavailable] = _missing_prices(f)
    costs = _costs(order, benchmark, f)
    standing = _standing(order, f, costs, peers, config, missing)
    missing += _missing_costs(benchmark, f, costs, standing)
    window = f.window
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
        filled_quantity=f.filled,
        average_price=f.average,
        executed_notional=f.notional,
        fees=f.fees,
        window_start_ns=None if window is None else window[0],
        window_end_ns=None if window is None else window[1],
        benchmarks=costs.prices,
        benchmark_price=costs.benchmark_price,
        slippage_bps=costs.slippage,
        fees_bps=f.fee_bps,
        total_cost_bps=costs.total,
        arrival_slippage_bps=costs.arrival_slippage,
        arrival_cost_bps=costs.arrival_cost,
        market_impact_bps=f.impact,
        execution_quality_score=f.quality,
        shortfall=f.shortfall,
        size_bucket=f.bucket,
        broker_performance_rank=standing.rank,
        ranked_brokers=standing.ranked_count,
        savings_opportunity_bps=standing.savings,
        savings_basis=standing.basis,
        recommendations=standing.recommendations,
        unavailable=tuple(missing),
        ranked_by=None if peers.stats is None else RANKED_BY,
        rank_tied_with=standing.tied_with,
        price_decimals=order.price_decimals,
    )


def _missing_prices(f: _Figures) -> list[Unavailable]:
    """The average price and the benchmark prices that are unavailable, and why."""
    missing: list[Unavailable] = []
    if f.average is None:
        missing.append(Unavailable("averagePrice", "no fills"))
    if f.arrival is None:
        missing.append(
            Unavailable("ARRIVAL_PRICE", "no stored arrival price and no quote or trade at or before arrival")
        )
    for name in ("VWAP", "TWAP"):
        if f.window_reason is not None and not (name == "TWAP" and f.twap is not None):
            missing.append(Unavailable(name, f.window_reason))
    if f.close is None:
        missing.append(Unavailable("CLOSE_PRICE", "no official close for the trade date"))
    if f.decision is None:
        missing.append(Unavailable("IMPLEMENTATION_SHORTFALL", "no decision price and no arrival price"))
    elif f.shortfall is None:
        missing.append(
            Unavailable(
                "IMPLEMENTATION_SHORTFALL", "part of the order is unfilled and its end price is unknown"
            )
        )
    return missing


def _costs(order: TcaOrder, benchmark: TCABenchmark, f: _Figures) -> _Costs:
    """Slippage and total cost against the benchmark; slippage and cost against arrival."""
    sign, average, arrival = order.side.sign, f.average, f.arrival
    prices = BenchmarkPrices(arrival=arrival, vwap=f.vwap, twap=f.twap, close=f.close, decision=f.decision)
    benchmark_price = prices.of(benchmark)
    slippage = (
        None
        if average is None or benchmark_price is None
        else measures.slippage_bps(sign, average, benchmark_price)
    )
    if benchmark is TCABenchmark.IMPLEMENTATION_SHORTFALL:
        total = None if f.shortfall is None else f.shortfall.bps
    else:
        total = None if slippage is None or f.fee_bps is None else slippage + f.fee_bps
    arrival_slippage = (
        None if average is None or arrival is None else measures.slippage_bps(sign, average, arrival)
    )
    arrival_cost = None if arrival_slippage is None or f.fee_bps is None else arrival_slippage + f.fee_bps
    return _Costs(prices, benchmark_price, slippage, total, arrival_slippage, arrival_cost)


def _standing(
    order: TcaOrder,
    f: _Figures,
    costs: _Costs,
    peers: _Peers,
    config: TcaConfig,
    missing: list[Unavailable],
) -> _Standing:
    """Rank (shared when the peers' intervals overlap), savings against the best broker of the
    size bucket (else the best print of the window) and the recommendations. An unranked
    broker's reason goes to `missing`."""
    standing = _Standing()
    if peers.stats is not None:
        ranking, ranked_count = peers.ranking(order.asset_class)
        mine = next((r for r in ranking if r.broker_id == order.broker_id), None)
        rank = None if mine is None else mine.rank
        if rank is None:
            missing.append(
                Unavailable("brokerPerformanceRank", _unranked_reason(mine, order, config.min_samples))
            )
        best = None if f.bucket < 0 else peers.best(order.asset_class, f.bucket)
        savings = basis = None
        if best is not None and costs.arrival_cost is not None:
            savings, basis = max(costs.arrival_cost - best.mean, 0.0), "BEST_BROKER"
        standing = _Standing(
            rank=rank,
            ranked_count=ranked_count,
            tied_with=() if mine is None or rank is None else mine.tied_with,
            savings=savings,
            basis=basis,
            recommendations=peers.advice(order, f.bucket),
        )
    else:
        missing.append(Unavailable("brokerPerformanceRank", "no peer statistics given"))
    if standing.savings is None and f.average is not None and f.best_print is not None:
        savings = max(measures.slippage_bps(order.side.sign, f.average, f.best_print), 0.0)
        standing = msgspec.structs.replace(standing, savings=savings, basis="BEST_PRICE_IN_WINDOW")
    return standing


def _missing_costs(
    benchmark: TCABenchmark, f: _Figures, costs: _Costs, standing: _Standing
) -> list[Unavailable]:
    """Impact, quality score, savings, slippage and total cost that are unavailable, and why."""
    missing: list[Unavailable] = []
    no_fills = f.average is None
    if f.impact is None:
        missing.append(
            Unavailable(
                "marketImpactBps", "no fills" if no_fills else "no arrival mid or no mid after the end"
            )
        )
    if f.quality is None:
        reason = "no fills" if no_fills else (f.window_reason or "no volume in the window")
        missing.append(Unavailable("executionQualityScore", reason))
    if standing.savings is None:
        reason = "no fills" if no_fills else "no ranked broker for this size and no prints in the window"
        missing.append(Unavailable("savingsOpportunityBps", reason))
    unpriced = f"benchmark {benchmark} unavailable"
    if costs.slippage is None:
        missing.append(Unavailable("slippageBps", "no fills" if no_fills else unpriced))
    if costs.total is None:
        if benchmark is TCABenchmark.IMPLEMENTATION_SHORTFALL:
            reason = unpriced
        else:
            reason = "no fills" if no_fills else unpriced
        missing.append(Unavailable("totalCostBps", reason))
    return missing


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
