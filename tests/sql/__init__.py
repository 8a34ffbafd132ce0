"""Builders shared by the sql tests: valid domain objects with fresh ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import trio

from api.contracts import CommissionStructure, LatencyStats, OrderRoutingRequest, TieredRate
from api.enums import AssetClass, BrokerFeature, OrderType, Side
from api.orders import BrokerOrder
from sql.records import BrokerRecord, OrderClaim, OutboxEvent

T0 = datetime(2024, 3, 1, 14, 30, 0, 123456, tzinfo=UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def broker_record(broker_id: str | None = None, *, name: str = "Test broker") -> BrokerRecord:
    return BrokerRecord(
        broker_id=broker_id or f"brk-{uuid.uuid4().hex[:12]}",
        name=name,
        status="CONNECTED",
        supported_asset_classes=(AssetClass.EQUITY, AssetClass.CRYPTO),
        features=(BrokerFeature.MARKET_ORDERS, BrokerFeature.LIMIT_ORDERS),
        commission_structure=CommissionStructure(
            base_rate=Decimal("0.00050"),
            min_commission=Decimal("1.00"),
            tiered_rates=(TieredRate(Decimal("1000000"), Decimal("0.0003")),),
        ),
        connection_params={"host": "sim.local", "port": "4001"},
        rate_limits={"requestsPerSecond": 50, "requestsPerMinute": 200},
        latency_stats=LatencyStats(average_ms=1.5, p95_ms=3.25, p99_ms=7.0),
    )


def routing_request(order_id: str, **changes: object) -> OrderRoutingRequest:
    fields: dict[str, object] = {
        "order_id": order_id,
        "account_id": "acct-1",
        "symbol": "AAPL",
        "side": Side.BUY,
        "type": OrderType.LIMIT,
        "quantity": Decimal("100.5"),
        "price": Decimal("187.12345678"),
    }
    fields.update(changes)
    return OrderRoutingRequest(**fields)  # type: ignore[arg-type]


def execution(order_id: str, broker_id: str, *, at: datetime = T0, attempt: int = 1) -> BrokerOrder:
    execution_id = new_id()
    request = routing_request(order_id)
    return BrokerOrder(
        id=execution_id,
        order_id=order_id,
        broker_id=broker_id,
        client_order_id=f"bis-{execution_id}",
        account_id=request.account_id,
        symbol=request.symbol,
        side=request.side,
        order_type=request.type,
        quantity=request.quantity,
        price=request.price,
        time_in_force=request.time_in_force,
        execution_strategy=request.execution_strategy,
        urgency=request.urgency,
        created_at=at,
        updated_at=at,
        sequence=1,
        attempt=attempt,
    )


def outbox_event(order: BrokerOrder, sequence: int, *, at: datetime | None = None) -> OutboxEvent:
    return OutboxEvent(
        execution_id=order.id,
        sequence=sequence,
        subject=f"trading.broker.v1.executions.{order.broker_id}.{order.status}.{order.order_id}",
        payload=f'{{"executionId":"{order.id}","sequence":{sequence},"filledQuantity":1.10}}'.encode(),
        created_at=at or T0 + timedelta(microseconds=sequence),
    )


def order_claim(
    order_id: str,
    broker_id: str | None,
    *,
    routing_id: str | None = None,
    with_event: bool = True,
    at: datetime = T0,
) -> OrderClaim:
    """A claim with a PENDING attempt at `broker_id` (none if None) and its first event."""
    order = execution(order_id, broker_id, at=at) if broker_id is not None else None
    return OrderClaim(
        order_id=order_id,
        routing_id=routing_id or new_id(),
        request_hash=f"sha256:{order_id}",
        request=routing_request(order_id),
        received_at=T0,
        arrival_price=Decimal("187.10"),
        execution=order,
        asset_class="EQUITY" if order is not None else None,
        event=outbox_event(order, 1) if order is not None and with_event else None,
    )


async def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of `sql` read through a separate connection (what another session sees)."""

    def run() -> list[tuple[Any, ...]]:
        with psycopg.connect(url) as conn:
            return conn.execute(sql.encode(), params).fetchall()

    return await trio.to_thread.run_sync(run)
