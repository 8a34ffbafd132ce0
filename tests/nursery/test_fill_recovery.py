"""Fills a broker reported while the daemon was not listening are recovered when the
connection comes back (`fills_since`), and applied once."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import trio

from adapters.simulated import SimulatedMarket
from adapters.simulated.config import MarketConfig, default_instruments
from adapters.simulated.faults import FaultyBroker
from api.contracts import OrderRoutingRequest
from api.enums import BrokerOrderStatus, OrderType, RoutingStatus, Side, TimeInForce
from api.events import AnyBrokerEvent, OrderFilled
from market.simulated import DirectView
from nursery.brokers import BrokerHandle, supervise_brokers
from nursery.engine import ExecutionEngine
from sql.records import OutboxEvent
from sql.store import Store
from tests.nursery.test_failover import venue


class LossyBroker(FaultyBroker):
    """A venue whose stream loses fills while `losing` (as a dropped websocket would)."""

    losing = False

    def _deliver(self, produced: list[AnyBrokerEvent]) -> None:
        if self.losing:
            produced = [e for e in produced if not isinstance(e, OrderFilled)]
        super()._deliver(produced)


class Stack:
    def __init__(
        self, engine: ExecutionEngine, broker: LossyBroker, market: SimulatedMarket, store: Store
    ) -> None:
        self.engine, self.broker, self.market, self.store = engine, broker, market, store


@pytest.fixture
async def stack(migrated_database_url: str) -> AsyncIterator[Stack]:
    market = SimulatedMarket(MarketConfig(seed=4, tick_interval_ms=None, instruments=default_instruments()))
    broker = LossyBroker(venue("rec-a", "0.0001"), market)
    publish_send, publish_receive = trio.open_memory_channel[OutboxEvent](10_000)
    events_send, events_receive = trio.open_memory_channel[AnyBrokerEvent](10_000)
    async with Store.open(migrated_database_url) as store, trio.open_nursery() as nursery:
        handle = BrokerHandle(broker, "A", settle=0.2)
        await store.upsert_brokers([handle.record()])
        engine = ExecutionEngine(
            store, [handle], DirectView(market), publish_send, attempt_deadline=lambda u: 1.0
        )
        await nursery.start(engine.run, events_receive)
        await nursery.start(
            functools.partial(
                supervise_brokers, [handle], events_send, backoff_initial=0.05, recover_from=engine.open_since
            )
        )
        yield Stack(engine, broker, market, store)
        nursery.cancel_scope.cancel()
    publish_receive.close()


async def test_fills_lost_by_the_stream_are_recovered_after_the_reconnect(stack: Stack) -> None:
    quote = stack.market.quote("AAPL")
    request = OrderRoutingRequest(
        order_id="rec-1",
        account_id="ACC",
        symbol="AAPL",
        side=Side.BUY,
        type=OrderType.LIMIT,
        quantity=Decimal(10),
        price=quote.bid,
        time_in_force=TimeInForce.GTC,
    )
    response = await stack.engine.route_order(request)
    assert response.status is RoutingStatus.ACCEPTED
    stack.broker.losing = True
    stack.market.set_quote("AAPL", quote.bid - Decimal("0.01"), quote.bid)  # fills at the venue...
    await trio.sleep(0.1)
    execution = await stack.store.load_latest_execution("rec-1")
    assert execution is not None and execution.status is BrokerOrderStatus.ACCEPTED  # ...unheard
    assert stack.broker.engine.fills  # the venue knows it filled

    stack.broker.losing = False
    stack.broker.drop_connection()
    with trio.fail_after(5):
        while True:
            execution = await stack.store.load_latest_execution("rec-1")
            assert execution is not None
            if execution.status is BrokerOrderStatus.FILLED:
                break
            await trio.sleep(0.02)
    assert execution.filled_quantity == Decimal(10) and len(execution.fills) == 1
