"""Per-strategy scores of the eligible brokers: pure functions over a snapshot.

A snapshot is the eligible `BrokerCandidate`s, the order, its notional, the `RoutingStats`
(or None), the instrument's `MarketStats` (or None) and a `RoutingConfig`. Every broker gets a
`CandidateScore`: the strategy's score (lower is better) and the components it was computed
from, so a decision can be explained and recorded.

Components (per broker):

- `commission_bps`: the expected commission (`api.commission`'s figure, exact, kept as
  `fee_units`) over the notional; running volume counts for tiers.
- `spread_bps`: expected spread cost, `crossing[order type] · spread / 2`, shrunk toward the
  broker's realised TCA cost in the asset class when it has some.
- `impact_bps`: the impact model at the broker's venue access and participation cap
  (`routing.impact`); 0 without market statistics.
- `latency_p50_ms` / `latency_p95_ms`: the broker's ack latencies for the order's urgency
  (its pooled ones below `min_urgency_samples`), shrunk toward its prior: its probe round
  trips, else the candidate's measured mean latency, else all brokers' acks, else the config.
- `time_to_fill_ms`: the longer of the measured time from ack to fill (shrunk toward the
  brokers' pooled figure) and the schedule the order's size needs at the broker's participation.
- `fill_rate` (posterior mean fill rate of this shape: Beta prior = the pooled rate of all
  brokers, shrunk toward the configured prior), `reject_rate` (the same for refusals),
  `fill_probability = (1 - reject_rate) · fill_rate`. All evidence is discounted by staleness.
- `speed_ms = p50 + tail · (p95 - p50) + time_to_fill_ms`; `expected_time_ms = p50 + time_to_fill_ms`
  (the response's `estimatedExecutionTime`).

Scores (lower is better):

| strategy | score |
|---|---|
| LOWEST_COST | `commission_bps + spread_bps` |
| FASTEST_EXECUTION | `speed_ms` |
| HIGHEST_FILL_PROBABILITY | `1 - fill_probability` |
| MINIMAL_MARKET_IMPACT | `impact_bps` |
| SMART | the blend of `routing.config`; without statistics only its cost and impact terms |

SMART without a statistics snapshot has no measured speed or fill information, so it ranks on
its cost terms alone (with the measured mean latency as a tie-break): the foundation's rule.

These are the definitions. `routing.select.select_broker` computes the components and the
score of every candidate in one inlined loop (the hot path of routing); `tests/routing` holds
that loop equal to them.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from api.enums import ExecutionStrategy
from routing.config import UrgencyProfile
from routing.fees import fee_decimal


class CandidateScore(msgspec.Struct, frozen=True, gc=False):
    """One broker's score under the order's strategy (lower is better) and its components."""

    broker_id: str
    score: float
    #: Expected commission in whole FEE_QUANTUMs (1e-8 of the quote currency), exact.
    fee_units: int
    commission_bps: float
    spread_bps: float
    impact_bps: float
    participation: float
    latency_p50_ms: float
    latency_p95_ms: float
    time_to_fill_ms: float
    speed_ms: float
    fill_rate: float
    reject_rate: float
    fill_probability: float
    #: The candidate's measured mean latency (the nursery's figure): a tie-break.
    mean_latency_ms: float = 0.0

    @property
    def commission(self) -> Decimal:
        """The expected commission, exactly `api.commission`'s figure."""
        return fee_decimal(self.fee_units)

    @property
    def expected_time_ms(self) -> float:
        """Expected time from sending the order to its fill: ack latency p50 + time to fill."""
        return self.latency_p50_ms + self.time_to_fill_ms


class SmartTerms(msgspec.Struct, frozen=True):
    """SMART's score split into its four weighted terms (bps-equivalent)."""

    cost: float
    impact: float
    speed: float
    miss: float

    @property
    def total(self) -> float:
        return self.cost + self.impact + self.speed + self.miss


# --- the scores: the definitions (the hot loop below inlines them; a test holds them equal) ---


def lowest_cost(c: CandidateScore) -> float:
    return c.commission_bps + c.spread_bps


def fastest_execution(c: CandidateScore) -> float:
    return c.speed_ms


def highest_fill_probability(c: CandidateScore) -> float:
    return 1.0 - c.fill_probability


def minimal_market_impact(c: CandidateScore) -> float:
    return c.impact_bps


def smart_terms(c: CandidateScore, weights: UrgencyProfile, measured: bool = True) -> SmartTerms:
    if not measured:
        return SmartTerms(
            cost=weights.cost * (c.commission_bps + c.spread_bps),
            impact=weights.impact * c.impact_bps,
            speed=0.0,
            miss=0.0,
        )
    return SmartTerms(
        cost=weights.cost * (c.commission_bps + c.spread_bps),
        impact=weights.impact * c.impact_bps,
        speed=weights.speed / 1000.0 * c.speed_ms,
        miss=weights.miss * (1.0 - c.fill_probability),
    )


def smart(c: CandidateScore, weights: UrgencyProfile, measured: bool = True) -> float:
    return smart_terms(c, weights, measured).total


def strategy_score(
    strategy: ExecutionStrategy, c: CandidateScore, weights: UrgencyProfile, measured: bool = True
) -> float:
    """The score of `c` under `strategy` (what `routing.select.select_broker` puts in `c.score`)."""
    if strategy is ExecutionStrategy.LOWEST_COST:
        return lowest_cost(c)
    if strategy is ExecutionStrategy.FASTEST_EXECUTION:
        return fastest_execution(c)
    if strategy is ExecutionStrategy.HIGHEST_FILL_PROBABILITY:
        return highest_fill_probability(c)
    if strategy is ExecutionStrategy.MINIMAL_MARKET_IMPACT:
        return minimal_market_impact(c)
    return smart(c, weights, measured)
