"""An in-memory `BrokerService` for testing the HTTP layer.

It keeps the facade's contract where the REST app can observe it: `route_order` is idempotent by
`orderId`, unknown executions and brokers raise `NotFound`, and every call is recorded in
`calls` so a test can assert that a rejected request never reached the service. Setting
`fail_with` makes the next calls raise that exception (503s, 500s).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from api.contracts import (
    BrokerInfo,
    BrokerStatus,
    CancelOrderRequest,
    CancelOrderResponse,
    CommissionStructure,
    ExecutionDetails,
    GetExecutionRequest,
    LatencyStats,
    ListBrokersRequest,
    OrderRoutingRequest,
    OrderRoutingResponse,
    TCARequest,
    TCAResponse,
)
from api.enums import (
    AssetClass,
    BrokerFeature,
    BrokerListStatus,
    CancellationStatus,
    ConnectionStatus,
    ExecutionStatus,
    RoutingStatus,
)
from api.errors import NotFound

NOW = datetime(2025, 1, 2, 14, 30, tzinfo=UTC)


def broker_info(
    broker_id: str,
    status: BrokerListStatus = BrokerListStatus.ACTIVE,
    asset_classes: tuple[AssetClass, ...] = (AssetClass.EQUITY,),
) -> BrokerInfo:
    return BrokerInfo(
        id=broker_id,
        name=f"Broker {broker_id}",
        status=status,
        supported_asset_classes=asset_classes,
        features=(BrokerFeature.MARKET_ORDERS, BrokerFeature.LIMIT_ORDERS),
        commission_structure=CommissionStructure(base_rate=Decimal("0.0005")),
        latency_stats=LatencyStats(average_ms=1.5, p95_ms=3.0, p99_ms=5.0),
    )


def default_brokers() -> dict[str, BrokerInfo]:
    brokers = (
        broker_info("sim-a", asset_classes=(AssetClass.EQUITY, AssetClass.OPTIONS)),
        broker_info("sim-b", asset_classes=(AssetClass.CRYPTO,)),
        broker_info("sim-c", BrokerListStatus.MAINTENANCE),
    )
    return {b.id: b for b in brokers}


@dataclass
class FakeBrokerService:
    brokers: dict[str, BrokerInfo] = field(default_factory=default_brokers)
    calls: list[tuple[str, object]] = field(default_factory=list)
    fail_with: Exception | None = None
    _routed: dict[str, OrderRoutingResponse] = field(default_factory=dict)
    _executions: dict[str, ExecutionDetails] = field(default_factory=dict)

    def _record(self, method: str, argument: object) -> None:
        self.calls.append((method, argument))
        if self.fail_with is not None:
            raise self.fail_with

    async def route_order(self, request: OrderRoutingRequest) -> OrderRoutingResponse:
        self._record("route_order", request)
        if request.order_id in self._routed:
            return self._routed[request.order_id]
        broker = request.preferred_brokers[0] if request.preferred_brokers else "sim-a"
        n = len(self._routed) + 1
        response = OrderRoutingResponse(
            routing_id=f"r-{n}",
            order_id=request.order_id,
            status=RoutingStatus.ACCEPTED,
            timestamp=NOW,
            selected_broker=broker,
            execution_id=f"x-{n}",
        )
        self._routed[request.order_id] = response
        self._executions[f"x-{n}"] = ExecutionDetails(
            execution_id=f"x-{n}",
            order_id=request.order_id,
            broker_id=broker,
            status=ExecutionStatus.PENDING,
            total_quantity=request.quantity,
            filled_quantity=Decimal(0),
            fees=Decimal(0),
            start_time=NOW,
            fills=(),
            symbol=request.symbol,
            side=request.side,
        )
        return response

    async def get_execution(self, request: GetExecutionRequest) -> ExecutionDetails:
        self._record("get_execution", request)
        for execution in self._executions.values():
            if request.execution_id in (None, execution.execution_id) and request.order_id in (
                None,
                execution.order_id,
            ):
                return execution
        raise NotFound(f"execution {request.execution_id or request.order_id!r} not found")

    async def cancel_order(self, request: CancelOrderRequest) -> CancelOrderResponse:
        self._record("cancel_order", request)
        if request.order_id not in self._routed:
            raise NotFound(f"order {request.order_id!r} not found")
        return CancelOrderResponse(
            request_id=f"c-{len(self.calls)}",
            order_id=request.order_id,
            status=CancellationStatus.PENDING,
            timestamp=NOW,
        )

    async def transaction_cost_analysis(self, request: TCARequest) -> TCAResponse:
        self._record("transaction_cost_analysis", request)
        for execution in self._executions.values():
            if execution.order_id == request.order_id:
                return TCAResponse(
                    order_id=request.order_id,
                    execution_id=execution.execution_id,
                    benchmark=request.benchmark,
                )
        raise NotFound(f"no execution for order {request.order_id!r}")

    async def get_broker_status(self, broker_id: str) -> BrokerStatus:
        self._record("get_broker_status", broker_id)
        if broker_id not in self.brokers:
            raise NotFound(f"broker {broker_id!r} not found")
        return BrokerStatus(
            broker_id=broker_id,
            status=ConnectionStatus.CONNECTED,
            uptime=99.9,
            current_load=12.5,
            last_connected=NOW,
        )

    async def list_brokers(self, request: ListBrokersRequest) -> list[BrokerInfo]:
        self._record("list_brokers", request)
        return [
            b
            for b in self.brokers.values()
            if request.status in (None, b.status)
            and (request.asset_class is None or request.asset_class in b.supported_asset_classes)
        ]
