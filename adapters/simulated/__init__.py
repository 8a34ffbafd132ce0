"""The simulated market and brokers of the embedded default (see `venue` for the contract)."""

from adapters.simulated.config import (
    InstrumentConfig,
    LatencyConfig,
    MarketConfig,
    SimulatedBrokerConfig,
    default_brokers,
    default_instruments,
)
from adapters.simulated.faults import (
    AdapterMethod,
    Fault,
    FaultPlan,
    FaultyBroker,
    InjectedFault,
    RecordedCall,
)
from adapters.simulated.market import (
    MarketEvent,
    MarketListener,
    Quote,
    QuoteEvent,
    SimulatedMarket,
    TradeEvent,
)
from adapters.simulated.matching import MatchingEngine, WorkingOrder, order_problem
from adapters.simulated.venue import VENUE_REJECT_REASONS, SimulatedBroker

__all__ = [
    "VENUE_REJECT_REASONS",
    "AdapterMethod",
    "Fault",
    "FaultPlan",
    "FaultyBroker",
    "InjectedFault",
    "InstrumentConfig",
    "LatencyConfig",
    "MarketConfig",
    "MarketEvent",
    "MarketListener",
    "MatchingEngine",
    "Quote",
    "QuoteEvent",
    "RecordedCall",
    "SimulatedBroker",
    "SimulatedBrokerConfig",
    "SimulatedMarket",
    "TradeEvent",
    "WorkingOrder",
    "default_brokers",
    "default_instruments",
    "order_problem",
]
