"""Outputs of the TCA engine: the analysis of one order and its parts.

Every number that could not be computed is `None` and has an `Unavailable` entry saying why;
the engine never substitutes a made-up value. Costs are positive = cost; the quality score is
higher = better. `to_response` maps a result onto the wire contract (`api.contracts.TCAResponse`).
"""

from __future__ import annotations

import msgspec

from api.contracts import TCARecommendation, TCAResponse, TCAShortfall
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

    def bps_of(self, amount: float | None) -> float | None:
        """`amount` in bps of the paper value (S x P_d), the denominator of every component."""
        return None if amount is None else amount / self.paper_value * 10_000.0

    def to_wire(self, price_decimals: int | None = None) -> TCAShortfall:
        """The components with their bps of the paper value, rounded once (amounts and bps to
        1e-6, prices to `price_decimals`). Names follow the CFA curriculum: `explicitCost` (fees),
        `delayCost` (filled shares: Wagner's trading delay), `realizedCost` (Wagner's trading
        cost), `missedOpportunityCost` (Perold's opportunity cost, against the decision price);
        Wagner's `opportunityDelay` and `wagnerOpportunityCost` split the missed opportunity."""
        money, bps = tidy_bps, self.bps_of

        def price(value: float | None) -> float | None:
            return tidy_price(value, price_decimals)

        def both(amount: float | None) -> tuple[float | None, float | None]:
            return money(amount), money(bps(amount))

        total, total_bps = both(self.total)
        explicit, explicit_bps = both(self.fees)
        execution, execution_bps = both(self.execution_cost)
        missed, missed_bps = both(self.opportunity_cost)
        delay, delay_bps = both(self.trading_delay)
        o_delay, o_delay_bps = both(self.opportunity_delay)
        realized, realized_bps = both(self.trading_cost)
        w_opportunity, w_opportunity_bps = both(self.wagner_opportunity_cost)
        assert None not in (total, total_bps, explicit, explicit_bps, execution, execution_bps)
        assert missed is not None and missed_bps is not None
        return TCAShortfall(
            paper_value=money(self.paper_value) or 0.0,
            decision_price=price(self.decision_price) or 0.0,
            filled_quantity=self.filled_quantity,
            unfilled_quantity=self.unfilled_quantity,
            total=total or 0.0,
            total_bps=total_bps or 0.0,
            explicit_cost=explicit or 0.0,
            explicit_cost_bps=explicit_bps or 0.0,
            execution_cost=execution or 0.0,
            execution_cost_bps=execution_bps or 0.0,
            missed_opportunity_cost=missed,
            missed_opportunity_cost_bps=missed_bps,
            arrival_price=price(self.arrival_price),
            end_price=price(self.end_price),
            delay_cost=delay,
            delay_cost_bps=delay_bps,
            opportunity_delay=o_delay,
            opportunity_delay_bps=o_delay_bps,
            realized_cost=realized,
            realized_cost_bps=realized_bps,
            wagner_opportunity_cost=w_opportunity,
            wagner_opportunity_cost_bps=w_opportunity_bps,
        )


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
    ranked_by: str | None = None
    rank_tied_with: tuple[str, ...] = ()
    price_decimals: int | None = None

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
        """The spec's TCAResponse plus its extensions, rounded once here, at the edge: basis
        points, the score and currency amounts to 1e-6 (float noise such as -1.5e-12 bps reads
        as a cost that is not there), prices to the instrument's precision (`price_decimals`)
        plus `PRICE_EXTRA_DECIMALS`, else 6 places. Every absent figure is named in
        `unavailable` with its reason."""
        places = self.price_decimals
        return TCAResponse(
            order_id=self.order_id,
            execution_id=self.execution_id,
            benchmark=self.benchmark,
            benchmark_price=tidy_price(self.benchmark_price, places),
            average_execution_price=tidy_price(self.average_price, places),
            slippage_bps=tidy_bps(self.slippage_bps),
            market_impact_bps=tidy_bps(self.market_impact_bps),
            total_cost_bps=tidy_bps(self.total_cost_bps),
            savings_opportunity_bps=tidy_bps(self.savings_opportunity_bps),
            execution_quality_score=tidy_bps(self.execution_quality_score),
            broker_performance_rank=self.broker_performance_rank,
            recommendations=tuple(r.to_wire() for r in self.recommendations),
            fees_bps=tidy_bps(self.fees_bps),
            implementation_shortfall=None if self.shortfall is None else self.shortfall.to_wire(places),
            ranked_by=self.ranked_by,
            ranked_brokers=self.ranked_brokers if self.ranked_by is not None else None,
            rank_tied_with=self.rank_tied_with,
            unavailable=self.unavailable_fields(),
        )

    def unavailable_fields(self) -> dict[str, str]:
        """`unavailable` keyed by the response's field names: the engine's entries as they are
        (benchmark names such as "VWAP" included), plus "benchmarkPrice",
        "averageExecutionPrice", "feesBps" and "implementationShortfall" when those are absent."""
        out = {u.measure: u.reason for u in self.unavailable}
        aliases = {
            "benchmarkPrice": str(self.benchmark),
            "averageExecutionPrice": "averagePrice",
            "feesBps": "averagePrice",
            "implementationShortfall": str(TCABenchmark.IMPLEMENTATION_SHORTFALL),
        }
        present = {
            "benchmarkPrice": self.benchmark_price,
            "averageExecutionPrice": self.average_price,
            "feesBps": self.fees_bps,
            "implementationShortfall": self.shortfall,
        }
        for name, source in aliases.items():
            if present[name] is None and source in out:
                out[name] = out[source]
        out.pop("averagePrice", None)
        return out


def tidy_bps(value: float | None) -> float | None:
    """`value` rounded to 1e-6, with no negative zero (bps, scores, currency amounts)."""
    return None if value is None else round(value, 6) + 0.0


#: Derived prices (a mid, a VWAP, an average over fills) fall between ticks: they are shown to a
#: hundredth of a tick, so a mid half a tick away (189.935 with 0.01 ticks) is not rounded onto
#: the next tick and the shown prices reproduce the shown slippage.
PRICE_EXTRA_DECIMALS = 2


def tidy_price(value: float | None, places: int | None) -> float | None:
    """A price rounded to the instrument's precision (`places` decimals, the tick's) plus
    `PRICE_EXTRA_DECIMALS`; 6 decimals when the precision is unknown."""
    if value is None:
        return None
    return round(value, 6 if places is None else places + PRICE_EXTRA_DECIMALS) + 0.0
