"""Adaptive routing end to end through the engine: a broker that degrades loses its traffic,
and gets it back once it recovers; every decision is recorded and retrievable.

Two simulated venues trade the same instrument; A is cheaper, so SMART sends it the orders.
Then A starts rejecting every order (a halted venue): each rejection fails over to B, and the
statistics move the first choice to B. When A is healthy again its bad evidence goes stale
(`stale_after_s` is short here, 300 s in production) and its probes are fine: A is tried again,
fills, and keeps the traffic."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import msgspec
import pytest
import trio

from adapters.simulated import SimulatedMarket
from adapters.simulated.config import MarketConfig, default_instruments
from adapters.simulated.view import DirectView
from api.contracts import GetExecutionRequest, OrderRoutingRequest
from api.enums import ExecutionStrategy, OrderType, RoutingStatus, Side, Urgency
from nursery.engine import ExecutionEngine
from routing.stats import RoutingStats, StatsConfig
from tests.nursery.test_failover import venue
from tests.support.engine_stack import engine_stack
from tests.support.faults import FaultyBroker

STALE_AFTER_S = 1.0


class Venues:
    def __init__(self, engine: ExecutionEngine, a: FaultyBroker, b: FaultyBroker) -> None:
        self.engine, self.a, self.b = engine, a, b


@pytest.fixture
async def venues(migrated_database_url: str) -> AsyncIterator[Venues]:
    market = SimulatedMarket(MarketConfig(seed=5, tick_interval_ms=None, instruments=default_instruments()))
    a = FaultyBroker(venue("ad-a", "0.0001"), market)  # cheaper: SMART's choice while healthy
    b = FaultyBroker(venue("ad-b", "0.0004"), market)
    async with engine_stack(
        migrated_database_url,
        [a, b],
        DirectView(market),
        supervisor_options={"heartbeat_every": 0.2},
        drain=True,
        stats=RoutingStats(StatsConfig(stale_after_s=STALE_AFTER_S)),
    ) as stack:
        yield Venues(stack.engine, a, b)


def market_order() -> OrderRoutingRequest:
    return OrderRoutingRequest(
        order_id=f"ad-{uuid.uuid4().hex[:16]}",
        account_id="ACC",
        symbol="AAPL",
        side=Side.BUY,
        type=OrderType.MARKET,
        quantity=Decimal(5),
        execution_strategy=ExecutionStrategy.SMART,
        urgency=Urgency.HIGH,
    )


async def first_choices(engine: ExecutionEngine, orders: int) -> list[str]:
    """Route `orders` market orders; return the broker each decision ranked first."""
    chosen = []
    for _ in range(orders):
        request = market_order()
        response = await engine.route_order(request)
        assert response.status is RoutingStatus.ACCEPTED, response
        details = await engine.get_execution(GetExecutionRequest(order_id=request.order_id))
        decision = details.routing_decision
        assert decision is not None and decision.chosen is not None
        chosen.append(decision.chosen)
    return chosen


async def test_a_degrading_broker_loses_its_traffic_and_wins_it_back_when_it_recovers(
    venues: Venues,
) -> None:
    healthy = await first_choices(venues.engine, 20)
    assert healthy.count("ad-a") >= 18, healthy

    venues.a.config = msgspec.structs.replace(venues.a.config, reject_rate=1.0)  # A halts
    degraded = await first_choices(venues.engine, 40)
    # A is tried until its rejections outweigh its lower cost, then B goes first; A is
    # re-tried now and then as its evidence goes stale, and rejects again.
    assert "ad-b" in degraded[:10], degraded  # the move takes a handful of rejections
    assert degraded[-20:].count("ad-a") <= 3, degraded

    venues.a.config = msgspec.structs.replace(venues.a.config, reject_rate=0.0)  # A recovers
    # Time passing is what is tested: the evidence fades on the engine's Trio clock, which its
    # deadlines and heartbeats also run on (a jumped clock would time them out), so real time.
    await trio.sleep(6 * STALE_AFTER_S)  # its refusals fade; its heartbeats stay fine
    recovered = await first_choices(venues.engine, 30)
    assert recovered[-15:].count("ad-a") >= 13, recovered


async def test_the_decision_lists_every_broker_with_its_components_and_the_estimate_is_the_models(
    venues: Venues,
) -> None:
    request = market_order()
    response = await venues.engine.route_order(request)
    details = await venues.engine.get_execution(GetExecutionRequest(order_id=request.order_id))
    decision = details.routing_decision
    assert decision is not None
    assert [c.broker_id for c in decision.candidates] == ["ad-a", "ad-b"]
    assert [c.rank for c in decision.candidates] == [1, 2]
    first = decision.candidates[0]
    assert first.expected_commission < decision.candidates[1].expected_commission
    assert decision.strategy is ExecutionStrategy.SMART and decision.urgency is Urgency.HIGH
    assert decision.weights is not None and decision.reference_price is not None
    assert response.estimated_execution_time == pytest.approx(first.expected_execution_time_ms, abs=1e-3)


async def test_an_ineligible_preferred_broker_is_skipped_with_its_reason_recorded(venues: Venues) -> None:
    handle = venues.engine.brokers["ad-a"]
    handle.set_maintenance(True, "exchange upgrade")
    request = msgspec.structs.replace(market_order(), preferred_brokers=("ad-a", "ad-b"))
    response = await venues.engine.route_order(request)
    assert response.selected_broker == "ad-b"
    details = await venues.engine.get_execution(GetExecutionRequest(order_id=request.order_id))
    decision = details.routing_decision
    assert decision is not None
    assert [(i.broker_id, i.reason) for i in decision.ineligible] == [("ad-a", "status MAINTENANCE")]
    assert [c.broker_id for c in decision.candidates] == ["ad-b"] and decision.candidates[0].preferred
