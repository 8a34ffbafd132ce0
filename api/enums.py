"""Enumerations of the wire contract, spelled exactly as the spec's OpenAPI schemas."""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        """+1 for a buy, -1 for a sell: the sign convention of every cost measure."""
        return 1 if self is Side.BUY else -1


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"
    STOP_LIMIT = "STOP_LIMIT"

    @property
    def needs_price(self) -> bool:
        return self in (OrderType.LIMIT, OrderType.STOP_LIMIT)

    @property
    def needs_stop_price(self) -> bool:
        return self in (OrderType.STOP, OrderType.STOP_LIMIT)

    @property
    def feature(self) -> BrokerFeature:
        """The broker feature a venue must declare to accept this order type."""
        return _TYPE_FEATURE[self]


class TimeInForce(StrEnum):
    DAY = "DAY"
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class ExecutionStrategy(StrEnum):
    LOWEST_COST = "LOWEST_COST"
    FASTEST_EXECUTION = "FASTEST_EXECUTION"
    HIGHEST_FILL_PROBABILITY = "HIGHEST_FILL_PROBABILITY"
    MINIMAL_MARKET_IMPACT = "MINIMAL_MARKET_IMPACT"
    SMART = "SMART"


class Urgency(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class RoutingStatus(StrEnum):
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    PENDING = "PENDING"


class ExecutionStatus(StrEnum):
    PENDING = "PENDING"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"


class CancellationStatus(StrEnum):
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    PENDING = "PENDING"


class ConnectionStatus(StrEnum):
    CONNECTED = "CONNECTED"
    DISCONNECTED = "DISCONNECTED"
    DEGRADED = "DEGRADED"
    MAINTENANCE = "MAINTENANCE"


class BrokerListStatus(StrEnum):
    """`BrokerInfo.status`: whether a broker takes new orders (ACTIVE) or not."""

    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    MAINTENANCE = "MAINTENANCE"


class IssueType(StrEnum):
    CONNECTIVITY = "CONNECTIVITY"
    AUTHENTICATION = "AUTHENTICATION"
    RATE_LIMIT = "RATE_LIMIT"
    API_ERROR = "API_ERROR"


class AssetClass(StrEnum):
    EQUITY = "EQUITY"
    FOREX = "FOREX"
    CRYPTO = "CRYPTO"
    FUTURES = "FUTURES"
    OPTIONS = "OPTIONS"


class BrokerFeature(StrEnum):
    MARKET_ORDERS = "MARKET_ORDERS"
    LIMIT_ORDERS = "LIMIT_ORDERS"
    STOP_ORDERS = "STOP_ORDERS"
    STOP_LIMIT_ORDERS = "STOP_LIMIT_ORDERS"
    TRAILING_STOPS = "TRAILING_STOPS"
    OCO_ORDERS = "OCO_ORDERS"
    ALGO_ORDERS = "ALGO_ORDERS"


class TCABenchmark(StrEnum):
    ARRIVAL_PRICE = "ARRIVAL_PRICE"
    VWAP = "VWAP"
    TWAP = "TWAP"
    CLOSE_PRICE = "CLOSE_PRICE"
    IMPLEMENTATION_SHORTFALL = "IMPLEMENTATION_SHORTFALL"


class RecommendationType(StrEnum):
    BROKER_SELECTION = "BROKER_SELECTION"
    EXECUTION_STRATEGY = "EXECUTION_STRATEGY"
    TIMING = "TIMING"
    ORDER_TYPE = "ORDER_TYPE"


class BrokerOrderStatus(StrEnum):
    """Status of one order at one broker, as stored in `broker_orders.status` (the spec's data model)."""

    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"

    @property
    def is_final(self) -> bool:
        return self in _FINAL

    @property
    def execution_status(self) -> ExecutionStatus:
        """The OMS-facing `ExecutionDetails.status` for this broker order status."""
        return _EXECUTION_STATUS[self]


_FINAL = frozenset(
    {
        BrokerOrderStatus.REJECTED,
        BrokerOrderStatus.FILLED,
        BrokerOrderStatus.CANCELED,
        BrokerOrderStatus.EXPIRED,
    }
)

_EXECUTION_STATUS = {
    BrokerOrderStatus.PENDING: ExecutionStatus.PENDING,
    BrokerOrderStatus.ACCEPTED: ExecutionStatus.EXECUTING,
    BrokerOrderStatus.PARTIALLY_FILLED: ExecutionStatus.PARTIALLY_FILLED,
    BrokerOrderStatus.FILLED: ExecutionStatus.COMPLETED,
    BrokerOrderStatus.CANCELED: ExecutionStatus.CANCELED,
    BrokerOrderStatus.EXPIRED: ExecutionStatus.CANCELED,
    BrokerOrderStatus.REJECTED: ExecutionStatus.REJECTED,
}

_TYPE_FEATURE = {
    OrderType.MARKET: BrokerFeature.MARKET_ORDERS,
    OrderType.LIMIT: BrokerFeature.LIMIT_ORDERS,
    OrderType.STOP: BrokerFeature.STOP_ORDERS,
    OrderType.STOP_LIMIT: BrokerFeature.STOP_LIMIT_ORDERS,
}
