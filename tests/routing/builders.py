"""Small builders shared by the routing tests: brokers, orders, statistics fed with history."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from api.capabilities import Capabilities
from api.contracts import CommissionStructure, OrderRoutingRequest
from api.enums import (
    AssetClass,
    BrokerFeature,
    ConnectionStatus,
    ExecutionStrategy,
    OrderType,
    Side,
    TimeInForce,
    Urgency,
)
from routing import BrokerCandidate, RoutingStats

D = Decimal
EQUITY = AssetClass.EQUITY
EVERYTHING = Capabilities(asset_classes=frozenset(AssetClass), features=frozenset(BrokerFeature))
FLAT_10_BPS = CommissionStructure(base_rate=D("0.001"))


def bps(rate_bps: str, minimum: str = "0") -> CommissionStructure:
    return CommissionStructure(base_rate=D(rate_bps) / 10_000, min_commission=D(minimum))


def broker(broker_id: str, **changes: Any) -> BrokerCandidate:
    candidate = BrokerCandidate(
        broker_id=broker_id,
        status=ConnectionStatus.CONNECTED,
        capabilities=EVERYTHING,
        commission=FLAT_10_BPS,
    )
    return msgspec.structs.replace(candidate, **changes) if changes else candidate


def order(
    strategy: ExecutionStrategy = ExecutionStrategy.SMART,
    urgency: Urgency = Urgency.MEDIUM,
    **changes: Any,
) -> OrderRoutingRequest:
    request = OrderRoutingRequest(
        order_id="ord-1",
        account_id="acc-1",
        symbol="AAPL",
        side=Side.BUY,
        type=OrderType.MARKET,
        quantity=D("100"),
        execution_strategy=strategy,
        urgency=urgency,
    )
    return msgspec.structs.replace(request, **changes) if changes else request


def history(
    stats: RoutingStats,
    broker_id: str,
    *,
    events: int = 40,
    latency_ms: float = 5.0,
    tail_ms: float | None = None,
    fill: float = 1.0,
    reject_every: int = 0,
    time_to_fill_ms: float = 20.0,
    urgency: Urgency | None = None,
    order_type: OrderType = OrderType.MARKET,
    time_in_force: TimeInForce = TimeInForce.DAY,
) -> None:
    """`events` orders at `broker_id`: acks (every 10th at `tail_ms` when given) for every
    urgency in turn (or only `urgency`), fills of `fill`, a reject every `reject_every`."""
    urgencies = [urgency] if urgency is not None else list(Urgency)
    for n in range(events):
        if reject_every and n % reject_every == reject_every - 1:
            stats.on_reject(broker_id)
            continue
        slow = tail_ms is not None and n % 10 == 9
        stats.on_ack(
            broker_id, tail_ms if slow and tail_ms is not None else latency_ms, urgencies[n % len(urgencies)]
        )
        stats.on_fill(
            broker_id, EQUITY, order_type, time_in_force, fill, time_to_fill_ms if fill > 0 else None
        )
