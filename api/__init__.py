"""Wire contracts and the shared domain types (orders, fills, events, enums).

Everything may import this package; it imports nothing of ours outside it. It holds no driver:
the REST app (`daemon.rest`) and the NATS endpoints (`daemon.endpoints`) live in the daemon.
"""

from api.codec import encode, to_builtins
from api.contracts import (
    BrokerInfo,
    BrokerIssue,
    BrokerStatus,
    CancelOrderRequest,
    CancelOrderResponse,
    CommissionStructure,
    ErrorBody,
    ExecutionDetails,
    ExecutionUpdate,
    FieldError,
    Fill,
    GetBrokerStatusRequest,
    GetExecutionRequest,
    LatencyStats,
    ListBrokersRequest,
    OrderRoutingRequest,
    OrderRoutingResponse,
    TCARequest,
    TCAResponse,
    TieredRate,
)
from api.errors import InvalidRequest, NotFound, ServiceError, Unavailable

__all__ = [
    "BrokerInfo",
    "BrokerIssue",
    "BrokerStatus",
    "CancelOrderRequest",
    "CancelOrderResponse",
    "CommissionStructure",
    "ErrorBody",
    "ExecutionDetails",
    "ExecutionUpdate",
    "FieldError",
    "Fill",
    "GetBrokerStatusRequest",
    "GetExecutionRequest",
    "InvalidRequest",
    "LatencyStats",
    "ListBrokersRequest",
    "NotFound",
    "OrderRoutingRequest",
    "OrderRoutingResponse",
    "ServiceError",
    "TCARequest",
    "TCAResponse",
    "TieredRate",
    "Unavailable",
    "encode",
    "to_builtins",
]
