"""A broker whose rate-limit windows are full is not thrown out of routing while it can still
take the order before the attempt's deadline: the order waits in its limiter's queue."""

from __future__ import annotations

import uuid
from decimal import Decimal

import msgspec

from adapters.simulated import SimulatedMarket
from adapters.simulated.config import MarketConfig, default_instruments
from adapters.simulated.venue import SimulatedBroker
from adapters.simulated.view import DirectView
from api.capabilities import RateLimits
from api.contracts import OrderRoutingRequest
from api.enums import OrderType, RoutingStatus, Side
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


async def test_recovery_lookups_after_a_restart_leave_the_rate_limit_to_new_orders(
    migrated_database_url: str,
) -> None:
    market = SimulatedMarket(MarketConfig(seed=2, tick_interval_ms=None, instruments=default_instruments()))
    broker_id = f"rl-{uuid.uuid4().hex[:8]}"
    config = msgspec.structs.replace(
        venue(broker_id, "0.0001"), rate_limits=RateLimits(requests_per_second=4)
    )
    resting = [
        OrderRoutingRequest(
            order_id=f"{broker_id}-rest-{n}",
            account_id="ACC",
            symbol="AAPL",
            side=Side.BUY,
            type=OrderType.LIMIT,
            quantity=Decimal(1),
            price=Decimal(1),
        )
        for n in range(6)
    ]
    first_life = SimulatedBroker(config, market)
    async with engine_stack(
        migrated_database_url, [first_life], DirectView(market), deadline=5.0, drain=True
    ) as s:
        for request in resting:  # six orders left open at the broker when the daemon stops
            assert (await s.engine.route_order(request)).status is RoutingStatus.ACCEPTED

    # The daemon starts again: recovery looks each open execution up (six requests) while the
    # OMS sends new orders that must go within 0.3 s at 4 requests a second.
    second_life = SimulatedBroker(config, market)
    async with engine_stack(
        migrated_database_url, [second_life], DirectView(market), deadline=0.3, drain=True
    ) as s:
        statuses = []
        for n in range(2):
            request = msgspec.structs.replace(
                resting[0], order_id=f"{broker_id}-new-{n}", type=OrderType.MARKET, price=None
            )
            statuses.append((await s.engine.route_order(request)).status)
    assert statuses == [RoutingStatus.ACCEPTED] * 2
