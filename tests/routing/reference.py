"""The routing implementation as it was before the hot path was restructured (commit b051d93),
kept verbatim (but for names) as the reference the fast path must equal bit for bit: the same
ranking, the same components, the same decision record. Used only by the equivalence tests.

It has a profile cache of its own, so it shares no state with the code under test but the
statistics it reads (`RoutingStats` is read, never changed, by routing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from operator import attrgetter

import msgspec

from api.capabilities import Capabilities
from api.commission import commission
from api.contracts import (
    CommissionStructure,
    IneligibleBroker,
    OrderRoutingRequest,
    RoutingCandidate,
    RoutingDecision,
    SmartWeights,
)
from api.enums import AssetClass, ConnectionStatus, ExecutionStrategy, OrderType, TimeInForce
from routing.candidate import NO_HEADROOM, BrokerCandidate
from routing.config import DEFAULT_CONFIG, RoutingConfig
from routing.fees import DIVISOR, HALF, VOLUME_DIGITS, FeeSchedule, exact_units, scaled
from routing.impact import MarketStats, OrderImpact, SquareRootImpact
from routing.select import Selection
from routing.stats import SHAPE_CODES, URGENCY_INDEX, BrokerStats, RoutingStats, ShapeKey
from routing.strategies import CandidateScore

_ZERO = Decimal(0)
_RANK = attrgetter("score", "fee_units", "mean_latency_ms", "broker_id")
_CONNECTED = ConnectionStatus.CONNECTED
_DEGRADED = ConnectionStatus.DEGRADED


class BrokerProfile:
    """What routing derives from a broker's capabilities and commission structure, computed
    once per structure: the compiled fee schedule and the set of order shapes it accepts."""

    __slots__ = (
        "_volume_units",
        "capabilities",
        "commission",
        "flat_rate",
        "minimum",
        "schedule",
        "shapes",
        "tier_rate",
        "tier_room",
        "volume",
    )

    def __init__(self, capabilities: Capabilities, structure: CommissionStructure) -> None:
        self.capabilities = capabilities
        self.commission = structure
        self.schedule = FeeSchedule(structure)
        #: Copied from the schedule for the scoring loop (see `FeeSchedule`).
        self.flat_rate = self.schedule.flat_rate
        self.minimum = self.schedule.minimum
        self.shapes: frozenset[ShapeKey] = frozenset(
            (asset_class, order_type, tif)
            for asset_class in capabilities.asset_classes
            for order_type in OrderType
            if order_type.feature in capabilities.features
            for tif in capabilities.time_in_force
        )
        #: The running volume last seen, and (for a tiered schedule) the bracket it is in:
        #: an order of at most `tier_room` (-1: unbounded) costs `notional * tier_rate`. Read
        #: by the scoring loop when the candidate's running volume `is` this object.
        self.volume: Decimal | None = None
        self._volume_units: int | None = None
        self.tier_rate: int | None = None
        self.tier_room = 0

    def __repr__(self) -> str:
        return f"<BrokerProfile shapes={len(self.shapes)} {self.schedule!r}>"

    def accepts(self, asset_class: AssetClass, order_type: OrderType, tif: TimeInForce) -> bool:
        return (asset_class, order_type, tif) in self.shapes

    def fee_units(self, notional: Decimal, notional_units: int | None, running_volume: Decimal) -> int:
        """Expected commission in whole `FEE_QUANTUM`s: `api.commission`'s figure, computed by
        the compiled schedule whenever it is exact."""
        schedule = self.schedule
        if notional_units is not None and schedule.exact:
            if schedule.flat_rate is not None:
                return schedule.fee_units(notional_units, 0)
            if running_volume is not self.volume:
                self.volume, units = running_volume, scaled(running_volume, VOLUME_DIGITS)
                self._volume_units = units
                self.tier_rate, self.tier_room = (
                    schedule.bracket_at(units) if units is not None else (None, 0)
                )
                if self.tier_rate is not None and (self.tier_rate < 0 or schedule.minimum < 0):
                    self.tier_rate = None  # the inline path rounds non-negative fees only
            if self._volume_units is not None:
                return schedule.fee_units(notional_units, self._volume_units)
        return exact_units(commission(self.commission, notional, running_volume))


#: broker id -> its profile (also read directly by `select_broker`'s eligibility loop).
REFERENCE_PROFILES: dict[str, BrokerProfile] = {}
REFERENCE_PROFILES_MAX = 4096


def profile_of(candidate: BrokerCandidate) -> BrokerProfile:
    """The broker's profile, rebuilt when its capabilities or commission object changed.

    A memo of a pure function of immutable inputs (identity-checked: the profile holds the
    objects it was built from, so an identity match cannot be a recycled id)."""
    profile = REFERENCE_PROFILES.get(candidate.broker_id)
    if (
        profile is None
        or profile.capabilities is not candidate.capabilities
        or profile.commission is not candidate.commission
    ):
        if len(REFERENCE_PROFILES) >= REFERENCE_PROFILES_MAX:
            REFERENCE_PROFILES.clear()
        profile = BrokerProfile(candidate.capabilities, candidate.commission)
        REFERENCE_PROFILES[candidate.broker_id] = profile
    return profile


def select_broker(
    candidates: Sequence[BrokerCandidate],
    order: OrderRoutingRequest,
    asset_class: AssetClass,
    reference_price: Decimal | None,
    *,
    stats: RoutingStats | None = None,
    market: MarketStats | None = None,
    config: RoutingConfig = DEFAULT_CONFIG,
) -> Selection:
    """Rank the eligible brokers for `order` by its execution strategy and urgency.

    `reference_price` (limit price or arrival mid) values the notional for commissions and
    bps; without it brokers tie on commission. `stats` are the adaptive statistics (None:
    priors and the candidates' measured mean latency only); `market` the instrument's
    volatility, volume and spread (None: no spread or impact cost). Reads `stats` without
    changing it; no I/O, no clock."""
    order_type, tif = order.type, order.time_in_force
    shape = (asset_class, order_type, tif)
    eligible: list[BrokerCandidate] = []
    profiles: list[BrokerProfile] = []
    ineligible: list[tuple[str, str]] = []
    known_profiles = REFERENCE_PROFILES
    for candidate in candidates:
        status = candidate.status
        if status is not _CONNECTED and status is not _DEGRADED:
            ineligible.append((candidate.broker_id, f"status {status}"))
            continue
        if candidate.blocked:
            ineligible.append((candidate.broker_id, candidate.blocked))
            continue
        profile = known_profiles.get(candidate.broker_id)
        if (
            profile is None
            or profile.capabilities is not candidate.capabilities
            or profile.commission is not candidate.commission
        ):
            profile = profile_of(candidate)
        if shape not in profile.shapes:
            why = candidate.capabilities.supports(asset_class, order_type, tif)
            ineligible.append((candidate.broker_id, why or "cannot trade this order"))
            continue
        if candidate.rate_headroom <= 0.0:
            ineligible.append((candidate.broker_id, NO_HEADROOM))
            continue
        eligible.append(candidate)
        profiles.append(profile)
    preferred: tuple[str, ...] = ()
    if order.preferred_brokers:
        known = {c.broker_id for c in candidates}
        for broker in dict.fromkeys(order.preferred_brokers):
            if broker not in known:
                ineligible.append((broker, "unknown broker"))
    notional = order.quantity * reference_price if reference_price is not None else _ZERO
    scores = score_candidates(eligible, profiles, order, asset_class, notional, stats, market, config)
    if order.preferred_brokers and eligible:
        by_id = {s.broker_id: s for s in scores}
        first = [by_id[b] for b in dict.fromkeys(order.preferred_brokers) if b in by_id]
        rest = [s for s in scores if s.broker_id not in order.preferred_brokers]
        rest.sort(key=_RANK)
        ranked_scores = (*first, *rest)
        preferred = tuple(s.broker_id for s in first)
    else:
        scores.sort(key=_RANK)
        ranked_scores = tuple(scores)
    return Selection(
        tuple([s.broker_id for s in ranked_scores]),
        tuple(ineligible),
        ranked_scores,
        order.execution_strategy,
        order.urgency,
        preferred,
        stats is not None and bool(stats.brokers),
        notional,
        config.urgency[order.urgency],
    )


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


_ENCODER = msgspec.json.Encoder(decimal_format="number")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _number(value: float) -> float:
    """JSON has no infinity: an unbounded figure (no liquidity, no headroom) is written as the
    largest float, which still ranks last."""
    if math.isnan(value):  # unknown: as bad as it gets, never the best score
        return 1.7976931348623157e308
    return value if math.isfinite(value) else math.copysign(1.7976931348623157e308, value)


def decision_of(
    selection: Selection, decided_at: datetime, reference_price: Decimal | None
) -> RoutingDecision:
    candidates = tuple(
        RoutingCandidate(
            broker_id=s.broker_id,
            rank=rank,
            preferred=s.broker_id in selection.preferred,
            score=_number(s.score),
            expected_commission=s.commission,
            commission_bps=_number(s.commission_bps),
            spread_bps=_number(s.spread_bps),
            impact_bps=_number(s.impact_bps),
            participation=_number(s.participation),
            latency_p50_ms=_number(s.latency_p50_ms),
            latency_p95_ms=_number(s.latency_p95_ms),
            time_to_fill_ms=_number(s.time_to_fill_ms),
            fill_probability=_number(s.fill_probability),
            fill_rate=_number(s.fill_rate),
            reject_rate=_number(s.reject_rate),
            expected_execution_time_ms=_finite(s.expected_time_ms),
        )
        for rank, s in enumerate(selection.scores, 1)
    )
    weights = selection.weights
    return RoutingDecision(
        decided_at=decided_at,
        strategy=selection.strategy,
        urgency=selection.urgency,
        candidates=candidates,
        ineligible=tuple(IneligibleBroker(broker_id=b, reason=r) for b, r in selection.ineligible),
        measured=selection.measured,
        chosen=selection.chosen,
        notional=selection.notional if reference_price is not None else None,
        reference_price=reference_price,
        weights=None
        if weights is None
        else SmartWeights(
            cost=weights.cost,
            impact=weights.impact,
            speed=weights.speed,
            miss=weights.miss,
            tail=weights.tail,
            participation=weights.participation,
        ),
    )


def encode(decision: RoutingDecision) -> bytes:
    return _ENCODER.encode(decision)
