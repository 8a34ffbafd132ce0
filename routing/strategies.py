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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal

import msgspec

from api.contracts import OrderRoutingRequest
from api.enums import AssetClass, ExecutionStrategy
from routing.candidate import BrokerCandidate, BrokerProfile
from routing.config import RoutingConfig, UrgencyProfile
from routing.fees import DIVISOR, HALF, VOLUME_DIGITS, fee_decimal, scaled
from routing.impact import MarketStats, OrderImpact, SquareRootImpact
from routing.stats import SHAPE_CODES, URGENCY_INDEX, BrokerStats, RoutingStats


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
    """The score of `c` under `strategy` (what `score_candidates` puts in `c.score`)."""
    if strategy is ExecutionStrategy.LOWEST_COST:
        return lowest_cost(c)
    if strategy is ExecutionStrategy.FASTEST_EXECUTION:
        return fastest_execution(c)
    if strategy is ExecutionStrategy.HIGHEST_FILL_PROBABILITY:
        return highest_fill_probability(c)
    if strategy is ExecutionStrategy.MINIMAL_MARKET_IMPACT:
        return minimal_market_impact(c)
    return smart(c, weights, measured)


# --- the snapshot -> scores -----------------------------------------------------------------


def score_candidates(
    candidates: Sequence[BrokerCandidate],
    profiles: Sequence[BrokerProfile],
    order: OrderRoutingRequest,
    asset_class: AssetClass,
    notional: Decimal,
    stats: RoutingStats | None,
    market: MarketStats | None,
    config: RoutingConfig,
) -> list[CandidateScore]:
    """Score every (eligible) candidate, in the order given. `profiles[i]` is candidates[i]'s.

    The hot path of routing: everything that does not depend on the broker is computed once
    per call, and the per-broker formulas of `routing.stats` (posterior means, staleness),
    `routing.fees` (flat schedules) and `routing.impact` are inlined here. `tests/routing`
    holds them equal to their definitions."""
    weights = config.urgency[order.urgency]
    strategy = order.execution_strategy
    measured = stats is not None
    notional_units = scaled(notional, VOLUME_DIGITS)
    notional_f = notional_units / 1e10 if notional_units is not None else float(notional)
    # commission_bps = fee_units * 1e-8 / notional * 1e4
    bps_per_fee_unit = 1e-4 / notional_f if notional_f > 0.0 else 0.0
    free = notional_units == 0 or (notional_units is None and notional_f == 0.0)
    notional_units_abs = abs(notional_units) if notional_units is not None else 0
    code_shape = SHAPE_CODES[asset_class, order.type, order.time_in_force]

    tail = weights.tail
    tail_ratio = config.latency_prior_tail
    default_p50 = config.latency_prior_ms
    default_p95 = default_p50 * tail_ratio
    k_latency = config.latency_prior_strength
    fill_prior = config.fill_prior
    k_fill = config.fill_prior_strength
    reject_prior = config.reject_prior
    k_reject = config.reject_prior_strength
    ttf_prior = config.time_to_fill_prior_ms[order.type]
    k_ttf = config.time_to_fill_prior_strength
    k_tca = config.tca_prior_strength
    brokers: dict[str, BrokerStats] = {}
    now = 0.0
    stale_rate = 0.0
    min_urgency_samples = 0
    urgency_index = URGENCY_INDEX[order.urgency]
    if stats is not None:
        brokers = stats.brokers
        now = stats.now
        stale_rate = stats.stale_rate
        min_urgency_samples = stats.config.min_urgency_samples
        reject_prior = stats.pooled_rejects.mean(config.reject_prior, k_reject)
        peers = stats.pooled_latency
        if peers.count:  # a broker without any latency figure is taken to be like its peers
            default_p50, default_p95 = peers.quantiles()
        pooled = stats.pooled.get(code_shape)
        if pooled is not None:  # empirical Bayes: a broker's prior is its peers' pooled figure
            fill_prior = pooled.fill.mean(config.fill_prior, k_fill)
            if pooled.time_to_fill.count:
                ttf_prior = pooled.time_to_fill.mean(ttf_prior, k_ttf)
    fill_pseudo = fill_prior * k_fill
    reject_pseudo = reject_prior * k_reject

    # Market: spread for everyone; impact and schedule by (venue access, participation).
    spread_model = 0.0
    curve: OrderImpact | None = None
    sqrt_impact = -1.0  # the square-root law's impact at full venue access (< 0: not that model)
    immediate = adv = session_ms = quantity = 0.0
    if market is not None:
        spread_model = config.crossing[order.type] * market.spread_bps / 2.0
        quantity = float(order.quantity)
        curve = OrderImpact(config.impact, market, quantity, config.immediate_fraction)
        if isinstance(config.impact, SquareRootImpact) and quantity > 0.0:
            sqrt_impact = config.impact.y * market.daily_volatility * math.sqrt(quantity / market.adv) * 1e4
        immediate = config.immediate_fraction * market.adv
        adv, session_ms = market.adv, market.session_seconds * 1000.0
    impacts: dict[tuple[float, float], tuple[float, float]] = {}
    participation_target = weights.participation
    w_cost, w_impact, w_speed, w_miss = weights.cost, weights.impact, weights.speed / 1000.0, weights.miss
    code = _CODE[strategy] if measured or strategy is not ExecutionStrategy.SMART else _COST_ONLY
    exp, sqrt = math.exp, math.sqrt
    scores: list[CandidateScore] = []
    append = scores.append
    for candidate, profile in zip(candidates, profiles, strict=True):
        # Commission (exact, in FEE_QUANTUMs): inline for a flat schedule, else the profile.
        rate = profile.flat_rate
        if rate is None and candidate.running_volume is profile.volume:
            rate = profile.tier_rate  # a tiered schedule, the order within the current bracket?
            if rate is not None and 0 <= profile.tier_room < notional_units_abs:
                rate = None
        if free:
            fee_units = 0
        elif rate is not None and notional_units is not None:
            fee = notional_units_abs * rate
            if fee < profile.minimum:
                fee = profile.minimum
            fee_units = (fee + HALF) // DIVISOR
        else:
            fee_units = profile.fee_units(notional, notional_units, candidate.running_volume)
        commission_bps = fee_units * bps_per_fee_unit

        p50 = candidate.latency_ms
        if p50:
            p95 = p50 * tail_ratio
        else:
            p50, p95 = default_p50, default_p95
        fill_rate, reject_rate, ttf, spread = fill_prior, reject_prior, ttf_prior, spread_model
        broker_stats = brokers.get(candidate.broker_id)
        if broker_stats is not None:
            silence = now - broker_stats.last_seen
            discount = exp(silence * stale_rate) if silence > 0.0 else 1.0  # RoutingStats.discount
            probes = broker_stats.probes
            if probes.count:
                if probes.dirty:
                    probes.refresh()
                p50, p95 = probes.p50, probes.p95
            window = broker_stats.latency[urgency_index]
            if window.count < min_urgency_samples:
                window = broker_stats.latency_all
            if window.count or window.stale_weight:
                if window.dirty:
                    window.refresh()
                evidence = discount * window.weight
                stale = discount * window.stale_weight
                total = evidence + stale + k_latency
                p50 = (evidence * window.p50 + stale * window.stale_p50 + k_latency * p50) / total
                p95 = (evidence * window.p95 + stale * window.stale_p95 + k_latency * p95) / total
            rejects = broker_stats.rejects  # DecayedRate.mean, inlined
            reject_rate = (discount * rejects.successes + reject_pseudo) / (
                discount * (rejects.successes + rejects.failures) + k_reject
            )
            shape = broker_stats.shapes.get(code_shape)
            if shape is not None:
                fills = shape.fill
                fill_rate = (discount * fills.successes + fill_pseudo) / (
                    discount * (fills.successes + fills.failures) + k_fill
                )
                mean = shape.time_to_fill
                if mean.count:  # DecayedMean.mean, inlined
                    evidence = discount * mean.count
                    ttf = (evidence * mean.value + k_ttf * ttf_prior) / (evidence + k_ttf)
            tca = broker_stats.tca.get(asset_class)
            if tca is not None:
                evidence = discount * tca.count
                spread = (evidence * tca.value + k_tca * spread_model) / (evidence + k_tca)

        cap = candidate.max_participation
        participation = participation_target if participation_target < cap else cap
        if curve is None:
            impact = 0.0
        else:
            access = candidate.venue_access
            if sqrt_impact >= 0.0:  # impact_bps for the square-root law: Y·sigma·sqrt(Q/(access·ADV))
                impact = sqrt_impact if access == 1.0 else sqrt_impact / sqrt(access)
                rest = quantity - immediate * access  # schedule_ms, inlined
                if rest > 0.0:
                    schedule = rest / (participation * adv * access) * session_ms
                    if schedule > ttf:
                        ttf = schedule
            else:
                caps = (access, participation)
                modelled = impacts.get(caps)
                if modelled is None:
                    modelled = impacts[caps] = curve.at(access, participation)
                impact, schedule = modelled
                if schedule > ttf:
                    ttf = schedule

        speed = p50 + tail * (p95 - p50) + ttf
        fill_probability = (1.0 - reject_rate) * fill_rate
        if code == 4:  # SMART: smart_terms(...).total
            score = (
                w_cost * (commission_bps + spread)
                + w_impact * impact
                + w_speed * speed
                + w_miss * (1.0 - fill_probability)
            )
        elif code == 0:
            score = commission_bps + spread
        elif code == 1:
            score = speed
        elif code == 2:
            score = 1.0 - fill_probability
        elif code == 3:
            score = impact
        else:  # SMART without statistics: its cost terms
            score = w_cost * (commission_bps + spread) + w_impact * impact
        append(
            CandidateScore(
                candidate.broker_id,
                score,
                fee_units,
                commission_bps,
                spread,
                impact,
                participation,
                p50,
                p95,
                ttf,
                speed,
                fill_rate,
                reject_rate,
                fill_probability,
                candidate.latency_ms,
            )
        )
    return scores


_CODE = {
    ExecutionStrategy.LOWEST_COST: 0,
    ExecutionStrategy.FASTEST_EXECUTION: 1,
    ExecutionStrategy.HIGHEST_FILL_PROBABILITY: 2,
    ExecutionStrategy.MINIMAL_MARKET_IMPACT: 3,
    ExecutionStrategy.SMART: 4,
}
_COST_ONLY = 5


def _fresh(_: BrokerStats) -> float:
    return 1.0
