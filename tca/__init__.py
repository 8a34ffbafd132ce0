"""Transaction cost analysis: benchmarks, slippage, impact, cost, quality score, ranking,
recommendations (docs/tca.md). Pure: it takes snapshots and returns numbers."""

from tca.engine import analyse, analyse_many
from tca.model import (
    DEFAULT_CONFIG,
    MarketData,
    Quotes,
    TcaConfig,
    TcaFill,
    TcaOrder,
    Trades,
    fill_of,
    from_broker_order,
    ns_of,
)
from tca.peers import (
    BrokerRank,
    CostStats,
    Dimension,
    PeerStats,
    peer_stats,
    peer_stats_of,
    rank_brokers,
    recommend,
    size_bucket,
)
from tca.result import BenchmarkPrices, Recommendation, Shortfall, TcaResult, Unavailable

__all__ = [
    "DEFAULT_CONFIG",
    "BenchmarkPrices",
    "BrokerRank",
    "CostStats",
    "Dimension",
    "MarketData",
    "PeerStats",
    "Quotes",
    "Recommendation",
    "Shortfall",
    "TcaConfig",
    "TcaFill",
    "TcaOrder",
    "TcaResult",
    "Trades",
    "Unavailable",
    "analyse",
    "analyse_many",
    "fill_of",
    "from_broker_order",
    "ns_of",
    "peer_stats",
    "peer_stats_of",
    "rank_brokers",
    "recommend",
    "size_bucket",
]
