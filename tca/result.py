"""Outputs of the TCA engine: the analysis of one order and its parts.

Every number that could not be computed is `None` and has an `Unavailable` entry saying why;
the engine never substitutes a made-up value. Costs are positive = cost; the quality score is
higher = better. `to_response` maps a result onto the wire contract (`api.contracts.TCAResponse`).
"""

from __future__ import annotations

import msgspec

from api.contracts import TCARecommendation, TCAResponse
from api.enums import RecommendationType, Side, TCABenchmark


class Unavailable(msgspec.Struct, frozen=True):
    """A measure that could not be computed, and why (e.g. "no market trades in the window")."""

    measure: str
    reason: str


class Shortfall(msgspec.Struct, frozen=True):
    """Implementation shortfall of one order in price-currency amounts (positive = cost).

    Perold (1988): paper portfolio (S at the decision price P_d) vs the real one:
    `total = execution_cost + opportunity_cost + fees`, with
    `execution_cost = s·Σq_j(p_j - P_d)`, `opportunity_cost = s·(S - Σq_j)(P_end - P_d)`,
    and `bps = total / (S·P_d) · 10⁴`.

    Wagner's split (as Kissell's expanded IS and blotter's `impShortfall(method="Wagner")`),
    with the arrival price P_0: `delay_cost = s·S(P_0 - P_d)` (= `trading_delay` on the filled
    part + `opportunity_delay` on the rest), `trading_cost = s·Σq_j(p_j - P_0)`,
    `wagner_opportunity_cost = s·(S - Σq_j)(P_end - P_0)`; the four parts with `fees` add up to
    `total`. The Wagner fields are `None` when the arrival price is unknown.
    """

    paper_value: float
    decision_price: float
    filled_quantity: float
    unfilled_quantity: float
    execution_cost: float
    opportunity_cost: float
    fees: float
    total: float
    bps: float
    end_price: float | None = None
    arrival_price: float | None = None
    delay_cost: float | None = None
    trading_delay: float | None = None
    opportunity_delay: float | None = None
    trading_cost: float | None = None
    wagner_opportunity_cost: float | None = None


class Recommendation(msgspec.Struct, frozen=True):
    """A change the data says would have cost less, by `estimated_improvement_bps` (the peer
    difference in notional-weighted mean cost), with the evidence behind it."""

    type: RecommendationType
    description: str
    estimated_improvement_bps: float
    current: str
    alternative: str
    samples: int
    alternative_samples: int

    def to_wire(self) -> TCARecommendation:
        return TCARecommendation(
            type=self.type,
            description=self.description,
            estimated_improvement_bps=self.estimated_improvement_bps,
        )


class BenchmarkPrices(msgspec.Struct, frozen=True):
    """Every benchmark price of the order (None = unavailable, see `TcaResult.unavailable`)."""

    arrival: float | None = None
    vwap: float | None = None
    twap: float | None = None
    close: float | None = None
    decision: float | None = None

    def of(self, benchmark: TCABenchmark) -> float | None:
        return {
            TCABenchmark.ARRIVAL_PRICE: self.arrival,
            TCABenchmark.VWAP: self.vwap,
            TCABenchmark.TWAP: self.twap,
            TCABenchmark.CLOSE_PRICE: self.close,
            TCABenchmark.IMPLEMENTATION_SHORTFALL: self.decision,
        }[benchmark]


class TcaResult(msgspec.Struct, frozen=True, kw_only=True):
    """The transaction cost analysis of one order against one benchmark.

    - `slippage_bps = s·(average_price - benchmark_price)/benchmark_price·10⁴`;
    - `fees_bps = fees / executed_notional·10⁴`;
    - `total_cost_bps = slippage_bps + fees_bps`, except for IMPLEMENTATION_SHORTFALL, where it
      is Perold's shortfall over the paper value (`shortfall.bps`, which also counts the
      opportunity cost of the unfilled remainder);
    - `arrival_slippage_bps`: slippage vs the arrival price, whatever the benchmark (what the
      routing statistics take as a broker's realised implicit cost: `routing.TcaObservation`);
    - `arrival_cost_bps`: slippage vs arrival plus fees — the cost the peer statistics, the
      broker rank and the savings use, whatever benchmark was asked for;
    - `market_impact_bps = s·(mid(end + horizon) - mid(arrival))/mid(arrival)·10⁴`;
    - `execution_quality_score = 100·RPM`, Kissell's relative performance measure over the
      window: the share of market volume that traded at a worse price than ours (ties count
      half); 50 is average, higher is better;
    - `broker_performance_rank`: 1 = cheapest broker of the asset class among brokers with at
      least `min_samples` orders; None (with a reason) below that;
    - `savings_opportunity_bps` and its `savings_basis`: "BEST_BROKER" (this order's arrival
      cost minus the best-ranked broker's mean for the asset class and size bucket, floored at
      0) or "BEST_PRICE_IN_WINDOW" (s·(average - best print)/best print·10⁴) when no broker
      is ranked.
    """

    order_id: str
    execution_id: str
    broker_id: str
    symbol: str
    side: Side
    benchmark: TCABenchmark
    asset_class: str
    order_type: str
    strategy: str
    arrival_ns: int
    quantity: float
    filled_quantity: float
    average_price: float | None
    executed_notional: float
    fees: float
    window_start_ns: int | None
    window_end_ns: int | None
    benchmarks: BenchmarkPrices
    benchmark_price: float | None
    slippage_bps: float | None
    fees_bps: float | None
    total_cost_bps: float | None
    arrival_slippage_bps: float | None
    arrival_cost_bps: float | None
    market_impact_bps: float | None
    execution_quality_score: float | None
    shortfall: Shortfall | None
    size_bucket: int
    broker_performance_rank: int | None = None
    ranked_brokers: int = 0
    savings_opportunity_bps: float | None = None
    savings_basis: str | None = None
    recommendations: tuple[Recommendation, ...] = ()
    unavailable: tuple[Unavailable, ...] = ()

    @property
    def fill_rate(self) -> float:
        return self.filled_quantity / self.quantity

    def __repr__(self) -> str:
        return (
            f"<TcaResult {self.order_id} {self.side} {self.benchmark} at={self.broker_id}"
            f" filled={self.filled_quantity:g}/{self.quantity:g} slippage={self.slippage_bps}"
            f" total={self.total_cost_bps}>"
        )

    def to_response(self) -> TCAResponse:
        """The spec's TCAResponse (unavailable numbers are omitted from the JSON). Basis points
        and the score are rounded to 1e-6 (float noise such as -1.5e-12 bps reads as a cost
        that is not there); prices are given as computed."""
        return TCAResponse(
            order_id=self.order_id,
            execution_id=self.execution_id,
            benchmark=self.benchmark,
            benchmark_price=self.benchmark_price,
            average_execution_price=self.average_price,
            slippage_bps=_tidy(self.slippage_bps),
            market_impact_bps=_tidy(self.market_impact_bps),
            total_cost_bps=_tidy(self.total_cost_bps),
            savings_opportunity_bps=_tidy(self.savings_opportunity_bps),
            execution_quality_score=_tidy(self.execution_quality_score),
            broker_performance_rank=self.broker_performance_rank,
            recommendations=tuple(r.to_wire() for r in self.recommendations),
        )


def _tidy(value: float | None) -> float | None:
    """`value` rounded to 1e-6, with no negative zero."""
    return None if value is None else round(value, 6) + 0.0
