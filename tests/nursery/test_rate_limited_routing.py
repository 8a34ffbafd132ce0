"""A broker whose rate-limit windows are full is not thrown out of routing while it can still
take the order before the attempt's deadline: the order waits in its limiter's queue."""

from __future__ import annotations

import uuid
from decimal import Decimal

import msgspec

from adapters.simulated import SimulatedMarket
from adapters.simulated.config import MarketConfig, default_instruments
from adapters.simulated.venue import SimulatedBroker
from api.capabilities import RateLimits
from api.contracts import OrderRoutingRequest
from api.enums import OrderType, RoutingStatus, Side
from market.simulated import DirectView
from tests.nursery.test_failover import venue
from tests.support.engine_stack import engine_stack


async def routed(migrated_database_url: str, deadline: float, orders: int) -> list[RoutingStatus]:
    market = SimulatedMarket(MarketConfig(seed=2, tick_interval_ms=None, instruments=default_instruments()))
    broker_id = f"rl-{uuid.uuid4().hex[:8]}"  # its own: no other test's open orders to recover
    config = msgspec.structs.replace(
        venue(broker_id, "0.0001"), rate_limits=RateLimits(requests_per_second=3)
    )
    broker = SimulatedBroker(config, market)
    statuses = []
    async with engine_stack(
        migrated_database_url, [broker], DirectView(market), deadline=deadline, drain=True
    ) as stack:
        for n in range(orders):
            request = OrderRoutingRequest(
                order_id=f"{broker_id}-{n}",
                account_id="ACC",
                symbol="AAPL",
                side=Side.BUY,
                type=OrderType.MARKET,
                quantity=Decimal(1),
            )
            statuses.append((await stack.engine.route_order(request)).status)
    return statuses


async def test_full_windows_queue_the_order_when_the_deadline_allows(migrated_database_url: str) -> None:
    assert await routed(migrated_database_url, 5.0, 5) == [RoutingStatus.ACCEPTED] * 5


async def test_full_windows_make_the_broker_ineligible_when_the_deadline_does_not(
    migrated_database_url: str,
) -> None:
    statuses = await routed(migrated_database_url, 0.2, 4)
    assert statuses[:3] == [RoutingStatus.ACCEPTED] * 3
    assert statuses[3] is RoutingStatus.REJECTED  # no capacity within 0.2 s: said at once
