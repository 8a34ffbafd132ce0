"""The service facade: what the NATS endpoints and the REST app both call.

Every method either returns its response Struct or raises an `api.errors.ServiceError`
(InvalidRequest 400, NotFound 404, Unavailable 503). Requests arrive already decoded and
validated by `api.validation`; the facade adds the checks that need state (unknown broker ids).
"""

from __future__ import annotations

from typing import Protocol

from api.contracts import (
    BrokerInfo,
    BrokerStatus,
    CancelOrderRequest,
    CancelOrderResponse,
    ExecutionDetails,
    GetExecutionRequest,
    ListBrokersRequest,
    MaintenanceRequest,
    OrderRoutingRequest,
    OrderRoutingResponse,
    TCARequest,
    TCAResponse,
)


class BrokerService(Protocol):
    async def route_order(self, request: OrderRoutingRequest) -> OrderRoutingResponse:
        """Idempotent by `orderId`: a repeat returns the first answer and sends nothing."""
        ...

    async def get_execution(self, request: GetExecutionRequest) -> ExecutionDetails: ...

    async def cancel_order(self, request: CancelOrderRequest) -> CancelOrderResponse: ...

    async def get_broker_status(self, broker_id: str) -> BrokerStatus: ...

    async def list_brokers(self, request: ListBrokersRequest) -> list[BrokerInfo]: ...

    async def transaction_cost_analysis(self, request: TCARequest) -> TCAResponse:
        """NotFound for an unknown order or execution."""
        ...

    async def set_maintenance(self, broker_id: str, request: MaintenanceRequest) -> BrokerStatus:
        """Operator: MAINTENANCE on or off (persisted); NotFound for an unknown broker."""
        ...
