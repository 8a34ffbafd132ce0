"""Routing parameters: priors, the SMART weights per urgency, the impact model.

SMART ranks by one number in bps-equivalent (lower is better), a weighted blend of the other
strategies' measures, with weights per urgency:

    SMART = cost   · (commission_bps + spread_bps)
          + impact · impact_bps
          + speed  · speed_ms / 1000          (speed: bps per second of expected time)
          + miss   · (1 - fill_probability)   (miss: bps per unit of probability of no fill)

    speed_ms = p50 + tail · (p95 - p50) + time_to_fill_ms

| urgency | cost | impact | speed (bps/s) | miss (bps) | tail | participation |
|---|---:|---:|---:|---:|---:|---:|
| LOW | 1.0 | 1.0 | 0.5 | 10 | 0.0 | 5 % |
| MEDIUM | 1.0 | 1.0 | 5 | 25 | 0.25 | 10 % |
| HIGH | 0.5 | 0.5 | 50 | 60 | 0.5 | 20 % |
| CRITICAL | 0.25 | 0.25 | 500 | 200 | 1.0 | 40 % |

Read: a LOW order gives up 0.5 bps to finish a second sooner, a CRITICAL one 500 bps (a
10 ms faster ack is worth 5 bps to it, 0.005 bps to a LOW order); one percentage point of fill
probability is worth 0.1 bps at LOW and 2 bps at CRITICAL; a CRITICAL order weighs explicit
costs and impact at a quarter. `tail` is how much of the latency tail counts (an urgent order
cares about the bad case), `participation` the share of the market's volume the order is
worked at when it is larger than what executes at once (capped by each broker).
"""

from __future__ import annotations

import math

import msgspec

from api.enums import OrderType, Urgency
from routing.impact import ImpactModel, SquareRootImpact


class UrgencyProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    cost: float
    impact: float
    speed: float
    miss: float
    tail: float
    participation: float

    def __post_init__(self) -> None:
        weights = (self.cost, self.impact, self.speed, self.miss, self.tail)
        if not all(math.isfinite(w) and w >= 0.0 for w in weights):
            raise ValueError("SMART weights must be finite and non-negative")
        if not 0.0 < self.participation <= 1.0:
            raise ValueError("participation must be in (0, 1]")


def _default_urgency() -> dict[Urgency, UrgencyProfile]:
    return {
        Urgency.LOW: UrgencyProfile(1.0, 1.0, speed=0.5, miss=10.0, tail=0.0, participation=0.05),
        Urgency.MEDIUM: UrgencyProfile(1.0, 1.0, speed=5.0, miss=25.0, tail=0.25, participation=0.10),
        Urgency.HIGH: UrgencyProfile(0.5, 0.5, speed=50.0, miss=60.0, tail=0.5, participation=0.20),
        Urgency.CRITICAL: UrgencyProfile(0.25, 0.25, speed=500.0, miss=200.0, tail=1.0, participation=0.40),
    }


def _default_time_to_fill() -> dict[OrderType, float]:
    # A market order fills on arrival; a resting order takes its time (a minute, say).
    minute = 60_000.0
    return {
        OrderType.MARKET: 50.0,
        OrderType.LIMIT: minute,
        OrderType.STOP: minute,
        OrderType.STOP_LIMIT: minute,
    }


def _default_crossing() -> dict[OrderType, float]:
    # The share of the half spread an order is expected to pay: a market order (and a stop,
    # once triggered) crosses; a limit order crosses about half the time.
    return {OrderType.MARKET: 1.0, OrderType.STOP: 1.0, OrderType.LIMIT: 0.5, OrderType.STOP_LIMIT: 0.5}


class RoutingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything the scoring needs besides the snapshot. Prior strengths are in observations:
    a prior of strength k weighs as much as k events of the broker's own history."""

    urgency: dict[Urgency, UrgencyProfile] = msgspec.field(default_factory=_default_urgency)
    impact: ImpactModel = SquareRootImpact()
    #: Ack latency of a broker without samples (unless its candidate has a measured mean).
    latency_prior_ms: float = 50.0
    latency_prior_strength: float = 4.0
    #: Prior p95 as a multiple of the prior p50.
    latency_prior_tail: float = 2.0
    #: Fill rate of a shape nobody has traded yet (else the brokers' pooled rate is the prior).
    fill_prior: float = 0.9
    fill_prior_strength: float = 5.0
    reject_prior: float = 0.02
    reject_prior_strength: float = 20.0
    time_to_fill_prior_ms: dict[OrderType, float] = msgspec.field(default_factory=_default_time_to_fill)
    time_to_fill_prior_strength: float = 3.0
    #: Weight of the modelled spread against a broker's realised TCA cost.
    tca_prior_strength: float = 10.0
    crossing: dict[OrderType, float] = msgspec.field(default_factory=_default_crossing)
    #: Share of the accessible ADV that executes at once (no schedule needed below it).
    immediate_fraction: float = 0.001

    def __post_init__(self) -> None:
        if set(self.urgency) != set(Urgency):
            raise ValueError("the SMART weights need a profile for every urgency")
        if set(self.time_to_fill_prior_ms) != set(OrderType) or set(self.crossing) != set(OrderType):
            raise ValueError("time-to-fill priors and crossing shares need every order type")
        numbers = (
            self.latency_prior_ms,
            self.latency_prior_tail,
            self.time_to_fill_prior_strength,
            self.immediate_fraction,
            *self.time_to_fill_prior_ms.values(),
            *self.crossing.values(),
        )
        if not all(math.isfinite(x) and x >= 0.0 for x in numbers):
            raise ValueError("priors must be finite and non-negative")
        strengths = (
            self.latency_prior_strength,
            self.fill_prior_strength,
            self.reject_prior_strength,
            self.time_to_fill_prior_strength,
            self.tca_prior_strength,
        )
        if not all(math.isfinite(x) and x > 0.0 for x in strengths):
            raise ValueError("prior strengths must be positive")
        if not (0.0 <= self.fill_prior <= 1.0 and 0.0 <= self.reject_prior < 1.0):
            raise ValueError("fill and reject priors are probabilities")


DEFAULT_CONFIG = RoutingConfig()
