"""Broker selection: eligibility, then `preferredBrokers`, then the order's execution strategy.

Pure: takes a snapshot of the brokers, the order and (optionally) the routing statistics and
the instrument's market statistics, and returns a decision. Eligibility first — connection
status, circuit breaker (`blocked`), asset class, order type, time in force, rate-limit
headroom — then the eligible `preferredBrokers` in the order given, then the other eligible
brokers by their score under the order's `executionStrategy` (`routing.strategies`), ties
broken by the expected commission, then the measured mean latency, then the broker id (so the
choice is deterministic). Every broker that is not eligible is listed with its reason, and
every eligible one with its score and its components, because a desk will ask why.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from operator import attrgetter

import msgspec

from api.contracts import OrderRoutingRequest
from api.enums import AssetClass, ConnectionStatus, ExecutionStrategy, Urgency
from routing.candidate import (
    NO_HEADROOM,
    PROFILE_CACHE,
    BrokerCandidate,
    BrokerProfile,
    ineligibility,
    profile_of,
)
from routing.config import DEFAULT_CONFIG, RoutingConfig, UrgencyProfile
from routing.impact import MarketStats
from routing.stats import RoutingStats
from routing.strategies import CandidateScore, score_candidates

__all__ = ["BrokerCandidate", "Selection", "ineligibility", "select_broker"]

_ZERO = Decimal(0)
#: Ranking within the non-preferred brokers: score, then commission, then measured latency, then id.
_RANK = attrgetter("score", "fee_units", "mean_latency_ms", "broker_id")
_CONNECTED = ConnectionStatus.CONNECTED
_DEGRADED = ConnectionStatus.DEGRADED


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
    changing it; no I/O, no clock."""
    order_type, tif = order.type, order.time_in_force
    shape = (asset_class, order_type, tif)
    eligible: list[BrokerCandidate] = []
    profiles: list[BrokerProfile] = []
    ineligible: list[tuple[str, str]] = []
    known_profiles = PROFILE_CACHE
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
