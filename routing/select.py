"""Broker selection: eligibility, then `preferredBrokers`, then the order's execution strategy.

Pure: takes a snapshot of the brokers, the order and (optionally) the routing statistics and
the instrument's market statistics, and returns a decision. Eligibility first — connection
status, circuit breaker (`blocked`), asset class, order type, time in force, rate-limit
headroom — then the eligible `preferredBrokers` in the order given, then the other eligible
brokers by their score under the order's `executionStrategy` (`routing.strategies`), ties
broken by the expected commission, then the measured mean latency, then the broker id (so the
choice is deterministic). Every broker that is not eligible is listed with its reason, and
every eligible one with its score and its components, because a desk will ask why.

Cost. One pass over the candidates computes everything (`select_broker`). What a broker's
figures are besides the order's size is kept while its inputs do not change, so that the
next order does not work it out again:

- per candidate object (`routing.candidate.FACTS_CACHE`): its profile (compiled fee schedule,
  the order shapes it trades), whether its status or a block excludes it, its rate-limit
  headroom, the square root of its venue access. The nursery hands routing the same candidate
  object while nothing in it changed;
- per statistics snapshot (`RoutingStats.derived`: one `version` of the statistics, one
  config), per order class (shape, urgency, modelled spread) and candidate object: the
  smoothed latencies, reject and fill rates, time to fill and realised spread, the
  participation, and the parts of the score they make. Orders routed on one snapshot (a
  burst) work these out once; when the statistics change between any two orders (the clock
  advanced, an event), nothing is kept and every decision computes them afresh.

Either way the decision is the same, to the last bit of every figure
(`tests/routing/test_equivalence.py` holds it against the implementation before these caches,
`tests/routing/reference.py`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import msgspec

from api.contracts import OrderRoutingRequest
from api.enums import AssetClass, ExecutionStrategy, OrderType, Urgency
from routing.candidate import FACTS_CACHE, NO_HEADROOM, BrokerCandidate, facts_of, ineligibility
from routing.config import DEFAULT_CONFIG, RoutingConfig, UrgencyProfile
from routing.fees import VOLUME_DIGITS, scaled
from routing.impact import MarketStats, OrderImpact, SquareRootImpact
from routing.stats import SHAPE_CODES, URGENCY_INDEX, BrokerStats, RoutingStats
from routing.strategies import CandidateScore

__all__ = ["BrokerCandidate", "Selection", "ineligibility", "select_broker"]

_ZERO = Decimal(0)


class Selection(msgspec.Struct, frozen=True):
    """The ranked eligible brokers (best first), why each other broker was excluded, and the
    scores behind the ranking (`scores[i]` is `ranked[i]`'s). The daemon records it, and `why`
    explains it, as `routing.decision.RoutingDecision` (`decision_of`, `explain`)."""

    ranked: tuple[str, ...]
    ineligible: tuple[tuple[str, str], ...]
    scores: tuple[CandidateScore, ...] = ()
    strategy: ExecutionStrategy = ExecutionStrategy.SMART
    urgency: Urgency = Urgency.MEDIUM
    #: The eligible preferred brokers, ranked first in the order the request gave.
    preferred: tuple[str, ...] = ()
    #: Whether the routing statistics held evidence of any broker (else priors only).
    measured: bool = False
    notional: Decimal = Decimal(0)
    weights: UrgencyProfile | None = None

    @property
    def chosen(self) -> str | None:
        return self.ranked[0] if self.ranked else None

    @property
    def expected_fees(self) -> tuple[tuple[str, Decimal], ...]:
        """(broker, expected commission) in ranked order — exactly `api.commission`'s figures."""
        return tuple((s.broker_id, s.commission) for s in self.scores)

    @property
    def estimated_execution_time_ms(self) -> float | None:
        """The model's expected time to fill at the chosen broker (None if there is none)."""
        return self.scores[0].expected_time_ms if self.scores else None

    def score_of(self, broker_id: str) -> CandidateScore | None:
        """The score of an eligible broker (e.g. the one an order failed over to)."""
        for score in self.scores:
            if score.broker_id == broker_id:
                return score
        return None

    def rejection_reason(self) -> str:
        if not self.ineligible:
            return "no broker is configured"
        reasons = "; ".join(f"{broker}: {why}" for broker, why in self.ineligible)
        return f"no eligible broker ({reasons})"


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
    changing them (it keeps what it worked out in their memo, `RoutingStats.derived`); no I/O,
    no clock.

    The hot path of routing, one pass over the candidates: eligibility, then the components
    and the score (`routing.strategies.CandidateScore`). Everything that does not depend on the
    broker is computed once per call; the per-broker formulas of `routing.stats` (posterior
    means, staleness), `routing.fees` (flat and in-bracket schedules) and `routing.impact`
    are inlined here, each float operation in the order of its definition (so a figure kept
    from an earlier order, see the module, is the very float this order would compute).
    `tests/routing` holds them equal to their definitions.

    Why one long function: its steps are marked `# --- ... ---` below instead of being functions
    because a call costs more than this path can spare. Split into `_fee_terms`,
    `_market_terms`, `_score_candidates` (the loop) and `_rank`, each called once per decision,
    it decided the same to the bit but took 0.26-0.41 µs more per decision: +6.6 % at 2 brokers
    (4.05 -> 4.31 µs), +1.8-2.5 % at 20 (16.48 -> 16.78-16.89 µs), lost in the noise at 100
    (same-process A/B of the two versions on bench/routing.py's smart scenario, 15 alternating
    blocks of 20,000 decisions, medians; 2026-12-07, 2 vCPUs). bench/routing.py alone could not
    tell them apart (smart at 20 brokers 18.9 and 19.7 µs split, 19.2, 18.7 and 17.8 µs
    inlined, alternate runs), but the cost is real and fixed per decision. A function per
    broker step (eligibility and figures, commission, impact, score) would pay such a call per
    broker and step (not measured)."""
    # --- the order: its class, weights and notional ---
    order_type, tif, urgency = order.type, order.time_in_force, order.urgency
    strategy = order.execution_strategy
    code_shape = SHAPE_CODES[asset_class, order_type, tif]
    weights = config.urgency[urgency]
    notional = order.quantity * reference_price if reference_price is not None else _ZERO

    # Commission: the notional in 1e-10 units (None: too precise for the compiled schedules).
    notional_units = scaled(notional, VOLUME_DIGITS)
    notional_f = notional_units / 1e10 if notional_units is not None else float(notional)
    # commission_bps = fee_units * 1e-8 / notional * 1e4
    bps_per_fee_unit = 1e-4 / notional_f if notional_f > 0.0 else 0.0
    free = notional_units == 0 or (notional_units is None and notional_f == 0.0)
    inline_fees = notional_units is not None and not free
    notional_units_abs = abs(notional_units) if notional_units is not None else 0

    urgency_index = URGENCY_INDEX[urgency]
    tail = weights.tail
    worked_out = False  # the priors (`_priors`): computed at the first broker that needs them

    # --- the market: spread for everyone; impact and schedule by (venue access, participation) ---
    spread_model = 0.0
    curve: OrderImpact | None = None
    sqrt_impact = -1.0  # the square-root law's impact at full venue access (< 0: not that model)
    immediate = adv = session_ms = quantity = 0.0
    if market is not None:
        spread_model = config.crossing[order_type] * market.spread_bps / 2.0
        quantity = float(order.quantity)
        if isinstance(config.impact, SquareRootImpact) and quantity > 0.0:
            sqrt_impact = config.impact.y * market.daily_volatility * math.sqrt(quantity / market.adv) * 1e4
        else:
            curve = OrderImpact(config.impact, market, quantity, config.immediate_fraction)
        immediate = config.immediate_fraction * market.adv
        adv, session_ms = market.adv, market.session_seconds * 1000.0
    impacts: dict[tuple[float, float], tuple[float, float]] = {}
    participation_target = weights.participation
    w_cost, w_impact, w_speed, w_miss = weights.cost, weights.impact, weights.speed / 1000.0, weights.miss
    code = _CODE[strategy] if stats is not None or strategy is not _SMART else _COST_ONLY

    # What a broker's figures for this order class are, besides the order's size: kept in the
    # statistics' memo while they do not change (several orders routed on one snapshot).
    memo: dict[str, _Entry] | None = None
    if stats is not None:
        memo = stats.derived(config, (code_shape, urgency_index, spread_model))
    ineligible: list[tuple[str, str]] = []
    rows: list[tuple[float, int, float, str, int, CandidateScore]] = []
    append = rows.append
    known_facts = FACTS_CACHE
    exp = math.exp
    # --- one pass over the candidates ---
    for n, candidate in enumerate(candidates):
        broker_id = candidate.broker_id
        entry = memo.get(broker_id) if memo is not None else None
        if entry is not None and entry[0] is candidate:
            (
                _,
                why,
                profile,
                p50,
                p95,
                reject_rate,
                fill_rate,
                ttf,
                spread,
                fill_probability,
                speed_base,
                miss,
                participation,
                root_access,
            ) = entry
            if why is not None:
                ineligible.append((broker_id, why))
                continue
        else:
            # --- eligibility: status, block, what it trades, rate-limit headroom ---
            facts = known_facts.get(broker_id)
            if facts is None or facts[0] is not candidate:
                facts = facts_of(candidate)
            _, profile, why, headroom, root_access = facts
            if why is None:
                if code_shape not in profile.shape_codes:
                    why = candidate.capabilities.supports(asset_class, order_type, tif) or _CANNOT
                elif not headroom:
                    why = NO_HEADROOM
            if why is not None:
                ineligible.append((broker_id, why))
                if memo is not None:
                    memo[broker_id] = (candidate, why, *_NOTHING)
                continue

            # --- statistics: latency, reject and fill rates, time to fill, realised spread ---
            if not worked_out:
                (
                    brokers,
                    now,
                    stale_rate,
                    min_urgency_samples,
                    tail_ratio,
                    default_p50,
                    default_p95,
                    k_latency,
                    fill_prior,
                    fill_pseudo,
                    k_fill,
                    reject_prior,
                    reject_pseudo,
                    k_reject,
                    ttf_prior,
                    k_ttf,
                    k_tca,
                ) = _priors(stats, config, code_shape, order_type)
                worked_out = True
            broker_stats = brokers.get(broker_id)
            p50 = candidate.latency_ms
            if p50:
                p95 = p50 * tail_ratio
            else:
                p50, p95 = default_p50, default_p95
            fill_rate, reject_rate, ttf, spread = fill_prior, reject_prior, ttf_prior, spread_model
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
            fill_probability = (1.0 - reject_rate) * fill_rate
            # speed_ms = p50 + tail·(p95 - p50) + time_to_fill_ms, added up left to right.
            speed_base = p50 + tail * (p95 - p50)
            miss = w_miss * (1.0 - fill_probability)  # SMART's last term
            cap = candidate.max_participation
            participation = participation_target if participation_target < cap else cap
            if memo is not None:
                memo[broker_id] = (
                    candidate,
                    None,
                    profile,
                    p50,
                    p95,
                    reject_rate,
                    fill_rate,
                    ttf,
                    spread,
                    fill_probability,
                    speed_base,
                    miss,
                    participation,
                    root_access,
                )

        # --- commission (exact, in FEE_QUANTUMs): inline for a flat schedule or an order
        # within the current bracket of a tiered one, else by the profile ---
        if free:
            fee_units = 0
        else:
            inline = profile.flat
            if inline is None and candidate.running_volume is profile.volume:
                inline = profile.tier  # a tiered schedule, the order within the current bracket?
                if inline is not None and 0 <= profile.tier_room < notional_units_abs:
                    inline = None
            if inline is not None and inline_fees:
                rate, minimum, half, divisor = inline  # routing.fees.inline_rate
                fee = notional_units_abs * rate
                if fee < minimum:
                    fee = minimum
                fee_units = (fee + half) // divisor
            else:
                fee_units = profile.fee_units(notional, notional_units, candidate.running_volume)
        commission_bps = fee_units * bps_per_fee_unit

        # --- market: impact and the schedule at the broker's access and participation ---
        if sqrt_impact >= 0.0:  # impact_bps for the square-root law: Y·sigma·sqrt(Q/(access·ADV))
            access = candidate.venue_access
            impact = sqrt_impact if access == 1.0 else sqrt_impact / root_access
            rest = quantity - immediate * access  # schedule_ms, inlined
            if rest > 0.0:
                schedule = rest / (participation * adv * access) * session_ms
                if schedule > ttf:
                    ttf = schedule
        elif curve is not None:
            caps = (candidate.venue_access, participation)
            modelled = impacts.get(caps)
            if modelled is None:
                modelled = impacts[caps] = curve.at(*caps)
            impact, schedule = modelled
            if schedule > ttf:
                ttf = schedule
        else:
            impact = 0.0

        # --- the score ---
        speed = speed_base + ttf
        if code == 4:  # SMART: smart_terms(...).total
            score = w_cost * (commission_bps + spread) + w_impact * impact + w_speed * speed + miss
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
        mean_latency = candidate.latency_ms
        # Sorted as tuples: score, commission, measured latency, broker id (the ranking), then
        # the input position (equal keys keep their order, as a stable sort by the key would).
        append(
            (
                score,
                fee_units,
                mean_latency,
                broker_id,
                n,
                CandidateScore(
                    broker_id,
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
                    mean_latency,
                ),
            )
        )

    # --- the ranking: the eligible preferred brokers first, in the order given, then by score ---
    preferred: tuple[str, ...] = ()
    if order.preferred_brokers:
        known = {c.broker_id for c in candidates}
        for broker in dict.fromkeys(order.preferred_brokers):
            if broker not in known:
                ineligible.append((broker, "unknown broker"))
    if order.preferred_brokers and rows:
        wanted = order.preferred_brokers
        by_id = {row[3]: row[5] for row in rows}
        first = [by_id[b] for b in dict.fromkeys(wanted) if b in by_id]
        rest_rows = [row for row in rows if row[3] not in wanted]
        rest_rows.sort()
        ranked_scores = (*first, *[row[5] for row in rest_rows])
        preferred = tuple([s.broker_id for s in first])
        ranked = tuple([s.broker_id for s in ranked_scores])
    else:
        rows.sort()
        ranked_scores = tuple([row[5] for row in rows])
        ranked = tuple([row[3] for row in rows])
    return Selection(
        ranked,
        tuple(ineligible),
        ranked_scores,
        strategy,
        urgency,
        preferred,
        stats is not None and bool(stats.brokers),
        notional,
        weights,
    )


def _priors(
    stats: RoutingStats | None, config: RoutingConfig, code_shape: int, order_type: OrderType
) -> tuple[
    dict[str, BrokerStats],
    float,
    float,
    int,
    float,
    float,
    float,
    float,
    float,
    float,
    float,
    float,
    float,
    float,
    float,
    float,
    float,
]:
    """What `select_broker` needs to work out a broker's figures from the statistics: the
    statistics' brokers, clock, staleness rate and urgency-window minimum; the latency prior
    (p95 as a multiple of p50, p50, p95, strength); the fill, reject and time-to-fill priors
    (with the fill and reject priors times their strengths); the TCA strength. The configured
    priors, else (with statistics) the brokers' pooled figures."""
    tail_ratio = config.latency_prior_tail
    default_p50 = config.latency_prior_ms
    default_p95 = default_p50 * tail_ratio
    k_latency = config.latency_prior_strength
    fill_prior = config.fill_prior
    k_fill = config.fill_prior_strength
    reject_prior = config.reject_prior
    k_reject = config.reject_prior_strength
    ttf_prior = config.time_to_fill_prior_ms[order_type]
    k_ttf = config.time_to_fill_prior_strength
    brokers: dict[str, BrokerStats] = _NO_STATS
    now = stale_rate = 0.0
    min_urgency_samples = 0
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
    return (
        brokers,
        now,
        stale_rate,
        min_urgency_samples,
        tail_ratio,
        default_p50,
        default_p95,
        k_latency,
        fill_prior,
        fill_prior * k_fill,
        k_fill,
        reject_prior,
        reject_prior * k_reject,
        k_reject,
        ttf_prior,
        k_ttf,
        config.tca_prior_strength,
    )


_CODE = {
    ExecutionStrategy.LOWEST_COST: 0,
    ExecutionStrategy.FASTEST_EXECUTION: 1,
    ExecutionStrategy.HIGHEST_FILL_PROBABILITY: 2,
    ExecutionStrategy.MINIMAL_MARKET_IMPACT: 3,
    ExecutionStrategy.SMART: 4,
}
_COST_ONLY = 5
_SMART = ExecutionStrategy.SMART
_NO_STATS: dict[str, BrokerStats] = {}
_CANNOT = "cannot trade this order"
#: A broker's memo entry (`RoutingStats.derived`): the candidate it was computed for (valid for
#: that very object), why it is not eligible (None: it is), then its profile and the figures
#: that do not depend on the order's size.
_Entry = tuple[Any, ...]
_NOTHING = (None,) * 12
