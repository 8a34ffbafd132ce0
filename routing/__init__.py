"""Broker scoring and selection: pure functions over snapshots (never imports daemon, nursery,
adapters or sql)."""

from routing.candidate import BrokerCandidate, ineligibility
from routing.config import DEFAULT_CONFIG, RoutingConfig, UrgencyProfile
from routing.impact import (
    ImpactModel,
    IStarImpact,
    MarketStats,
    MarketStatsEstimator,
    SquareRootImpact,
    impact_bps,
)
from routing.select import Selection, select_broker
from routing.stats import RoutingStats, StatsConfig, TcaObservation
from routing.strategies import CandidateScore, SmartTerms, smart_terms, strategy_score

__all__ = [
    "DEFAULT_CONFIG",
    "BrokerCandidate",
    "CandidateScore",
    "IStarImpact",
    "ImpactModel",
    "MarketStats",
    "MarketStatsEstimator",
    "RoutingConfig",
    "RoutingStats",
    "Selection",
    "SmartTerms",
    "SquareRootImpact",
    "StatsConfig",
    "TcaObservation",
    "UrgencyProfile",
    "impact_bps",
    "ineligibility",
    "select_broker",
    "smart_terms",
    "strategy_score",
]
