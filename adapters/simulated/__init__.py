"""Simulation, in one place: the simulated market and brokers of the embedded default.

    config     instruments, the market's and each broker's configuration (and the defaults)
    market     the random-walk market: quotes and trades, with listeners
    matching   a venue's order book and matching rules (pure)
    venue      `SimulatedBroker`: a `BrokerAdapter` over the market and matching (see its contract)
    feed       `SimulatedFeed`: the market published on the market-data subjects (the embedded
               Market Data Service)
    view       `DirectView`: the engine's market view straight from the market (tests, benchmarks)

Fault injection (`FaultyBroker`) is a test double: it lives in `tests/support/faults.py`, not
here, so no configuration can build it as a production broker.
"""

from adapters.simulated.config import (
    InstrumentConfig,
    LatencyConfig,
    MarketConfig,
    SimulatedBrokerConfig,
    default_brokers,
    default_instruments,
)
from adapters.simulated.feed import SimulatedFeed
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
from adapters.simulated.view import DirectView

__all__ = [
    "VENUE_REJECT_REASONS",
    "DirectView",
    "InstrumentConfig",
    "LatencyConfig",
    "MarketConfig",
    "MarketEvent",
    "MarketListener",
    "MatchingEngine",
    "Quote",
    "QuoteEvent",
    "SimulatedBroker",
    "SimulatedBrokerConfig",
    "SimulatedFeed",
    "SimulatedMarket",
    "TradeEvent",
    "WorkingOrder",
    "default_brokers",
    "default_instruments",
    "order_problem",
]
