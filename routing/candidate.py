"""A broker as routing sees it at one instant (`BrokerCandidate`), whether it may take an order
(`ineligibility`), and its per-broker constants compiled once (`BrokerProfile`)."""

from __future__ import annotations

import math
from decimal import Decimal

import msgspec

from api.capabilities import Capabilities
from api.commission import commission
from api.contracts import CommissionStructure, OrderRoutingRequest
from api.enums import AssetClass, ConnectionStatus, OrderType, TimeInForce
from routing.fees import VOLUME_DIGITS, FeeSchedule, InlineRate, exact_units, inline_rate, scaled
from routing.stats import SHAPE_CODES, ShapeKey

_ROUTABLE = frozenset({ConnectionStatus.CONNECTED, ConnectionStatus.DEGRADED})
NO_HEADROOM = "rate limit exhausted (no headroom)"


class BrokerCandidate(msgspec.Struct, frozen=True):
    """Snapshot of one broker for one routing decision (built by the nursery's BrokerHandle).

    `venue_access` (the share of the market's volume the broker's venues reach) and
    `max_participation` (the largest share of the volume it will take) are per-broker
    configuration for the impact model; `rate_headroom` is the limiter's 0-100 headroom (0: no
    request can be sent now)."""

    broker_id: str
    status: ConnectionStatus
    capabilities: Capabilities
    commission: CommissionStructure
    latency_ms: float = 0.0
    running_volume: Decimal = Decimal(0)
    #: Why the broker cannot take an order right now although connected (e.g. circuit open).
    blocked: str | None = None
    rate_headroom: float = 100.0
    venue_access: float = 1.0
    max_participation: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 < self.venue_access <= 1.0 and 0.0 < self.max_participation <= 1.0):
            raise ValueError("venue_access and max_participation must be in (0, 1]")
        if not (math.isfinite(self.latency_ms) and self.latency_ms >= 0.0):
            raise ValueError("latency_ms must be finite and non-negative")
        if not self.rate_headroom >= 0.0:  # also rejects NaN
            raise ValueError("rate_headroom must be non-negative")


def ineligibility(
    candidate: BrokerCandidate, order: OrderRoutingRequest, asset_class: AssetClass
) -> str | None:
    """None when `candidate` may take `order`, else why not — status first, then a block (circuit
    breaker), then what it can trade, then rate-limit headroom."""
    if candidate.status not in _ROUTABLE:
        return f"status {candidate.status}"
    if candidate.blocked:
        return candidate.blocked
    why = candidate.capabilities.supports(asset_class, order.type, order.time_in_force)
    if why is not None:
        return why
    if candidate.rate_headroom <= 0.0:
        return NO_HEADROOM
    return None


class BrokerProfile:
    """What routing derives from a broker's capabilities and commission structure, computed
    once per structure: the compiled fee schedule and the set of order shapes it accepts."""

    __slots__ = (
        "_volume_units",
        "capabilities",
        "commission",
        "flat",
        "schedule",
        "shape_codes",
        "shapes",
        "tier",
        "tier_room",
        "volume",
    )

    def __init__(self, capabilities: Capabilities, structure: CommissionStructure) -> None:
        self.capabilities = capabilities
        self.commission = structure
        self.schedule = FeeSchedule(structure)
        #: A schedule without tiers (`FeeSchedule.flat_rate`) as the scoring loop computes it.
        flat, minimum = self.schedule.flat_rate, self.schedule.minimum
        self.flat: InlineRate | None = None if flat is None else inline_rate(flat, minimum)
        self.shapes: frozenset[ShapeKey] = frozenset(
            (asset_class, order_type, tif)
            for asset_class in capabilities.asset_classes
            for order_type in OrderType
            if order_type.feature in capabilities.features
            for tif in capabilities.time_in_force
        )
        #: The same shapes as `routing.stats.SHAPE_CODES` (ints: a cheaper hash than the tuple).
        self.shape_codes: frozenset[int] = frozenset(SHAPE_CODES[shape] for shape in self.shapes)
        #: The running volume last seen, and (for a tiered schedule) the bracket it is in:
        #: an order of at most `tier_room` (-1: unbounded) costs `notional * rate` of `tier`
        #: (None: not computed inline). Read by the scoring loop when the candidate's running
        #: volume `is` this object.
        self.volume: Decimal | None = None
        self._volume_units: int | None = None
        self.tier: InlineRate | None = None
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
                rate, self.tier_room = schedule.bracket_at(units) if units is not None else (None, 0)
                # The inline path rounds non-negative fees only.
                self.tier = (
                    inline_rate(rate, schedule.minimum)
                    if rate is not None and rate >= 0 and schedule.minimum >= 0
                    else None
                )
            if self._volume_units is not None:
                return schedule.fee_units(notional_units, self._volume_units)
        return exact_units(commission(self.commission, notional, running_volume))


#: broker id -> its profile (also read directly by `select_broker`'s loop).
PROFILE_CACHE: dict[str, BrokerProfile] = {}
PROFILE_CACHE_MAX = 4096


def profile_of(candidate: BrokerCandidate) -> BrokerProfile:
    """The broker's profile, rebuilt when its capabilities or commission object changed.

    A memo of a pure function of immutable inputs (identity-checked: the profile holds the
    objects it was built from, so an identity match cannot be a recycled id)."""
    profile = PROFILE_CACHE.get(candidate.broker_id)
    if (
        profile is None
        or profile.capabilities is not candidate.capabilities
        or profile.commission is not candidate.commission
    ):
        if len(PROFILE_CACHE) >= PROFILE_CACHE_MAX:
            PROFILE_CACHE.clear()
        profile = BrokerProfile(candidate.capabilities, candidate.commission)
        PROFILE_CACHE[candidate.broker_id] = profile
    return profile


#: What routing derives from one `BrokerCandidate` whatever the order (`facts_of`).
CandidateFacts = tuple[BrokerCandidate, BrokerProfile, str | None, bool, float]
#: broker id -> the facts of its last candidate (read directly by `select_broker`'s loop,
#: valid while the broker's candidate is that very object).
FACTS_CACHE: dict[str, CandidateFacts] = {}


def facts_of(candidate: BrokerCandidate) -> CandidateFacts:
    """(the candidate, its profile, why it may take no order at all — its status, else its
    block — or None, whether it has rate-limit headroom, the square root of its venue access):
    everything eligibility and the impact model need of it but the order's shape. Kept in
    `FACTS_CACHE` (a candidate is frozen: the facts hold while it is the same object)."""
    status = candidate.status
    why = None
    if status not in _ROUTABLE:
        why = f"status {status}"
    elif candidate.blocked:
        why = candidate.blocked
    facts = (
        candidate,
        profile_of(candidate),
        why,
        not candidate.rate_headroom <= 0.0,
        math.sqrt(candidate.venue_access),
    )
    if len(FACTS_CACHE) >= PROFILE_CACHE_MAX:
        FACTS_CACHE.clear()
    FACTS_CACHE[candidate.broker_id] = facts
    return facts
