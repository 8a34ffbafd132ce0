"""Fills a broker reported while the daemon was not listening are recovered when the
connection comes back (`fills_since`), and applied once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal

import pytest

from adapters.base import ServerError
from adapters.simulated import SimulatedMarket
from adapters.simulated.config import MarketConfig, default_instruments
from adapters.simulated.view import DirectView
from api.contracts import OrderRoutingRequest
from api.enums import BrokerOrderStatus, OrderType, RoutingStatus, Side, TimeInForce
from api.events import AnyBrokerEvent, OrderCanceled, OrderFilled
from api.orders import BrokerOrder
from nursery.engine import ExecutionEngine
from sql.store import Store
from tests.nursery.test_failover import venue
from tests.support.engine_stack import engine_stack
from tests.support.faults import FaultyBroker
from tests.support.polling import condition, wait_until


class LossyBroker(FaultyBroker):
    """A venue whose stream loses fills and cancels while `losing` (as a dropped websocket
    would), and whose `fills_since` fails the next `failing_recoveries` times."""

    losing = False
    failing_recoveries = 0

    def _deliver(self, produced: list[AnyBrokerEvent]) -> None:
        if self.losing:
            produced = [e for e in produced if not isinstance(e, OrderFilled | OrderCanceled)]
        super()._deliver(produced)

    async def fills_since(self, since: datetime) -> list[OrderFilled]:
        if self.failing_recoveries:
            self.failing_recoveries -= 1
            raise ServerError("503 Service Unavailable")
        return await super().fills_since(since)


class Stack:
    def __init__(
        self, engine: ExecutionEngine, broker: LossyBroker, market: SimulatedMarket, store: Store
    ) -> None:
        self.engine, self.broker, self.market, self.store = engine, broker, market, store


@pytest.fixture
async def stack(migrated_database_url: str) -> AsyncIterator[Stack]:
    market = SimulatedMarket(MarketConfig(seed=4, tick_interval_ms=None, instruments=default_instruments()))
    broker = LossyBroker(venue("rec-a", "0.0001"), market)
    async with engine_stack(
        migrated_database_url,
        [broker],
        DirectView(market),
        supervisor_options={"backoff_initial": 0.05},
        drain=True,
    ) as built:
        yield Stack(built.engine, broker, market, built.store)


def resting(order_id: str, price: Decimal) -> OrderRoutingRequest:
    return OrderRoutingRequest(
        order_id=order_id,
        account_id="ACC",
        symbol="AAPL",
        side=Side.BUY,
        type=OrderType.LIMIT,
        quantity=Decimal(10),
        price=price,
        time_in_force=TimeInForce.GTC,
    )


async def status_becomes(stack: Stack, order_id: str, status: BrokerOrderStatus) -> BrokerOrder:
    execution = await wait_until(
        lambda: stack.store.load_latest_execution(order_id),
        lambda e: e is not None and e.status is status,
        what=f"execution of {order_id} {status}",
        timeout=8,
    )
    assert execution is not None
    return execution


async def test_fills_lost_by_the_stream_are_recovered_after_the_reconnect(stack: Stack) -> None:
    quote = stack.market.quote("AAPL")
    request = resting(f"rec-{uuid.uuid4().hex[:8]}", quote.bid)
    response = await stack.engine.route_order(request)
    assert response.status is RoutingStatus.ACCEPTED
    stack.broker.losing = True
    stack.market.set_quote("AAPL", quote.bid - Decimal("0.01"), quote.bid)  # fills at the venue...
    await wait_until(lambda: condition(lambda: list(stack.broker.engine.fills)), what="the venue's fill")
    await stack.engine.wait_settled()  # whatever reached the engine is applied
    execution = await stack.store.load_latest_execution(request.order_id)
    assert execution is not None and execution.status is BrokerOrderStatus.ACCEPTED  # ...unheard
    assert stack.broker.engine.fills  # the venue knows it filled

    stack.broker.losing = False
    stack.broker.failing_recoveries = 1  # the first recovery fails: it is retried, not skipped
    stack.broker.drop_connection()
    execution = await status_becomes(stack, request.order_id, BrokerOrderStatus.FILLED)
    assert execution.filled_quantity == Decimal(10) and len(execution.fills) == 1


async def test_an_order_the_broker_cancelled_unheard_is_found_cancelled_after_the_reconnect(
    stack: Stack,
) -> None:
    request = resting(f"rec-{uuid.uuid4().hex[:8]}", stack.market.quote("AAPL").bid - Decimal(1))
    await stack.engine.route_order(request)
    execution = await status_becomes(stack, request.order_id, BrokerOrderStatus.ACCEPTED)
    # The broker cancels it (its own risk desk, say) and the event is lost on the way.
    stack.broker.engine.cancel(execution.client_order_id, stack.market.now())
    await stack.engine.wait_settled()  # whatever reached the engine is applied
    unheard = await stack.store.load_latest_execution(request.order_id)
    assert unheard is not None and unheard.status is BrokerOrderStatus.ACCEPTED
    stack.broker.drop_connection()
    ended = await status_becomes(stack, request.order_id, BrokerOrderStatus.CANCELED)
    assert ended.filled_quantity == 0
