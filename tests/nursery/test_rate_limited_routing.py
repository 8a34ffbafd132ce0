"""A broker whose rate-limit windows are full is not thrown out of routing while it can still
take the order before the attempt's deadline: the order waits in its limiter's queue."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import trio

from adapters.simulated import SimulatedMarket
from adapters.simulated.config import MarketConfig, default_instruments
from adapters.simulated.venue import SimulatedBroker
from api.capabilities import RateLimits
from api.contracts import OrderRoutingRequest
from api.enums import OrderType, RoutingStatus, Side
from api.events import AnyBrokerEvent
from market.simulated import DirectView
from nursery.brokers import BrokerHandle, supervise_brokers
from nursery.engine import ExecutionEngine
from sql.records import OutboxEvent
from sql.store import Store
from tests.nursery.test_failover import venue


async def routed(migrated_database_url: str, deadline: float, orders: int) -> list[RoutingStatus]:
    market = SimulatedMarket(MarketConfig(seed=2, tick_interval_ms=None, instruments=default_instruments()))
    config = msgspec.structs.replace(venue("rl-a", "0.0001"), rate_limits=RateLimits(requests_per_second=3))
    broker = SimulatedBroker(config, market)
    publish_send, publish_receive = trio.open_memory_channel[OutboxEvent](10_000)
    events_send, events_receive = trio.open_memory_channel[AnyBrokerEvent](10_000)
    statuses = []
    async with Store.open(migrated_database_url) as store, trio.open_nursery() as nursery:
        handle = BrokerHandle(broker, "A", settle=0.2)
        await store.upsert_brokers([handle.record()])
        view = DirectView(market)
        engine = ExecutionEngine(store, [handle], view, publish_send, attempt_deadline=lambda u: deadline)
        await nursery.start(engine.run, events_receive)
        await nursery.start(supervise_brokers, [handle], events_send)
        for n in range(orders):
            request = OrderRoutingRequest(
                order_id=f"rl-{deadline}-{n}-{trio.current_time()}",
                account_id="ACC",
                symbol="AAPL",
                side=Side.BUY,
                type=OrderType.MARKET,
                quantity=Decimal(1),
            )
            statuses.append((await engine.route_order(request)).status)
        nursery.cancel_scope.cancel()
    publish_receive.close()
    return statuses


async def test_full_windows_queue_the_order_when_the_deadline_allows(migrated_database_url: str) -> None:
    assert await routed(migrated_database_url, 5.0, 5) == [RoutingStatus.ACCEPTED] * 5


async def test_full_windows_make_the_broker_ineligible_when_the_deadline_does_not(
    migrated_database_url: str,
) -> None:
    statuses = await routed(migrated_database_url, 0.2, 4)
    assert statuses[:3] == [RoutingStatus.ACCEPTED] * 3
    assert statuses[3] is RoutingStatus.REJECTED  # no capacity within 0.2 s: said at once
