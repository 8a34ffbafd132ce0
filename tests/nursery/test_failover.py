"""Failover by cancellation scope, against misbehaving simulated brokers.

For every fault: exactly one live order across all brokers, the requester gets a correct answer,
and every attempt is persisted (the failed-over one quietly, the live one published)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from adapters.simulated import SimulatedMarket
from adapters.simulated.config import MarketConfig, SimulatedBrokerConfig, default_instruments
from adapters.simulated.view import DirectView
from api.contracts import CommissionStructure, GetExecutionRequest, OrderRoutingRequest
from api.enums import AssetClass, BrokerFeature, OrderType, RoutingStatus, Side, Urgency
from sql.records import OutboxEvent
from tests.support.engine_stack import EngineStack, engine_stack
from tests.support.faults import Fault, FaultyBroker
from tests.support.polling import condition, wait_until

DEADLINE = 0.3  # per attempt
SETTLE = 0.4  # how long an order may still arrive at a broker after we stopped waiting


def venue(broker_id: str, rate: str) -> SimulatedBrokerConfig:
    return SimulatedBrokerConfig(
        broker_id=broker_id,
        name=broker_id,
        asset_classes=(AssetClass.EQUITY,),
        features=tuple(BrokerFeature),
        commission=CommissionStructure(base_rate=Decimal(rate)),
        venue=broker_id.upper(),
        seed=7,
    )


class Stack:
    def __init__(self, built: EngineStack, a: FaultyBroker, b: FaultyBroker) -> None:
        self.built, self.engine, self.a, self.b = built, built.engine, a, b

    def live_orders(self) -> list[tuple[str, str]]:
        return [("a", c) for c in self.a.live_orders()] + [("b", c) for c in self.b.live_orders()]

    def drain_published(self) -> list[OutboxEvent]:
        return self.built.drain_published()


async def make_stack(database_url: str, policy: str) -> AsyncIterator[Stack]:
    market = SimulatedMarket(MarketConfig(seed=3, tick_interval_ms=None, instruments=default_instruments()))
    a = FaultyBroker(venue("fo-a", "0.0001"), market)  # cheaper: tried first
    b = FaultyBroker(venue("fo-b", "0.0009"), market)
    async with engine_stack(
        database_url,
        [a, b],
        DirectView(market),
        deadline=DEADLINE,
        settle=SETTLE,
        recover=False,  # the scenarios here are about routing, not reconnects
        unknown_policy=policy,
        reconcile_budget=3.0,
    ) as stack:
        yield Stack(stack, a, b)


@pytest.fixture
async def stack(migrated_database_url: str) -> AsyncIterator[Stack]:
    async for s in make_stack(migrated_database_url, "adopt"):
        yield s


@pytest.fixture
async def failover_stack(migrated_database_url: str) -> AsyncIterator[Stack]:
    async for s in make_stack(migrated_database_url, "failover"):
        yield s


def resting_order(**changes: Any) -> OrderRoutingRequest:
    """A buy far below the market: it rests, so a live order stays live and countable."""
    fields: dict[str, Any] = dict(
        order_id=f"fo-{uuid.uuid4().hex[:16]}",
        account_id="ACC",
        symbol="AAPL",
        side=Side.BUY,
        type=OrderType.LIMIT,
        quantity=Decimal(10),
        price=Decimal("1.00"),
        urgency=Urgency.HIGH,
    )
    fields.update(changes)
    return OrderRoutingRequest(**fields)


async def settled(stack: Stack) -> None:
    """Until the requests left in the network have reached their venue (the fault double says
    which are still on their way), no routing or cancel request is in progress, and the events
    all that caused are applied and persisted (`ExecutionEngine.wait_settled`)."""
    await wait_until(
        lambda: condition(lambda: [*stack.a.stuck_requests(), *stack.b.stuck_requests()]),
        lambda stuck: not stuck,
        what="the late requests arriving at their venue",
    )
    await stack.engine.wait_idle()
    await stack.engine.wait_settled()


async def attempts(stack: Stack, order_id: str) -> list[tuple[str, str]]:
    details = await stack.engine.get_execution(GetExecutionRequest(order_id=order_id))
    return [(a.broker_id, a.status.value) for a in details.attempts]


async def test_hang_on_submit_fails_over_once_the_first_broker_provably_has_nothing(stack: Stack) -> None:
    stack.a.inject(Fault.HANG_ON_SUBMIT)
    order = resting_order()
    response = await stack.engine.route_order(order)
    assert response.status is RoutingStatus.ACCEPTED
    assert response.selected_broker == "fo-b"
    await settled(stack)
    assert stack.live_orders() == [("b", stack.b.submits[0].client_order_id)]
    assert await attempts(stack, order.order_id) == [("fo-a", "REJECTED"), ("fo-b", "EXECUTING")]
    published = stack.drain_published()
    assert [p.subject.split(".")[4] for p in published] == ["fo-b"]  # the failed-over attempt is quiet


async def test_rejection_moves_to_the_next_broker_at_once(stack: Stack) -> None:
    stack.a.inject(Fault.REJECT)
    response = await stack.engine.route_order(resting_order())
    assert (response.status, response.selected_broker) == (RoutingStatus.ACCEPTED, "fo-b")
    assert len(stack.a.queries) == 0  # a rejection is a fact: nothing to reconcile


async def test_timeout_after_the_broker_took_the_order_adopts_it(stack: Stack) -> None:
    stack.a.inject(Fault.TIMEOUT, reached=True)
    response = await stack.engine.route_order(resting_order())
    assert (response.status, response.selected_broker) == (RoutingStatus.ACCEPTED, "fo-a")
    await settled(stack)
    assert len(stack.live_orders()) == 1
    assert stack.b.submits == []


async def test_failover_policy_cancels_the_found_order_before_the_next_broker_gets_it(
    failover_stack: Stack,
) -> None:
    stack = failover_stack
    stack.a.inject(Fault.TIMEOUT, reached=True)
    order = resting_order()
    response = await stack.engine.route_order(order)
    assert (response.status, response.selected_broker) == (RoutingStatus.ACCEPTED, "fo-b")
    await settled(stack)
    assert stack.live_orders() == [("b", stack.b.submits[0].client_order_id)]
    a_cancels = [c.client_order_id for c in stack.a.cancels]
    assert a_cancels and all(c == stack.a.submits[0].client_order_id for c in a_cancels)
    assert await attempts(stack, order.order_id) == [("fo-a", "CANCELED"), ("fo-b", "EXECUTING")]


async def test_disconnect_mid_submit_is_reconciled_after_the_reconnect(stack: Stack) -> None:
    stack.a.inject(Fault.DISCONNECT_MID_SUBMIT)
    response = await stack.engine.route_order(resting_order())
    # the venue took it before the line dropped: found once the connection is back, adopted
    assert (response.status, response.selected_broker) == (RoutingStatus.ACCEPTED, "fo-a")
    await settled(stack)
    assert len(stack.live_orders()) == 1
    assert stack.b.submits == []
    status = await stack.engine.get_broker_status("fo-a")
    assert any(i.type.value == "CONNECTIVITY" for i in status.issues)


async def test_429_on_submit_never_resends_and_backs_off(stack: Stack) -> None:
    stack.a.inject(Fault.RATE_LIMITED, retry_after=0.05)
    response = await stack.engine.route_order(resting_order())
    assert (response.status, response.selected_broker) == (RoutingStatus.ACCEPTED, "fo-b")
    assert len(stack.a.submits) == 1
    status = await stack.engine.get_broker_status("fo-a")
    assert any(i.type.value == "RATE_LIMIT" for i in status.issues)
    await settled(stack)
    assert len(stack.live_orders()) == 1


@pytest.mark.parametrize(("created", "broker"), [(False, "fo-b"), (True, "fo-a")])
async def test_5xx_adopts_or_fails_over_by_what_the_broker_holds(
    stack: Stack, created: bool, broker: str
) -> None:
    stack.a.inject(Fault.SERVER_ERROR, created=created)
    response = await stack.engine.route_order(resting_order())
    assert (response.status, response.selected_broker) == (RoutingStatus.ACCEPTED, broker)
    await settled(stack)
    assert len(stack.live_orders()) == 1


async def test_accept_after_the_deadline_within_the_settle_window_is_adopted(stack: Stack) -> None:
    stack.a.inject(Fault.ACCEPT_AFTER_DEADLINE, delay=SETTLE / 4)
    response = await stack.engine.route_order(resting_order())
    assert (response.status, response.selected_broker) == (RoutingStatus.ACCEPTED, "fo-a")
    await settled(stack)
    assert len(stack.live_orders()) == 1
    assert stack.b.submits == []


async def test_accept_after_the_settle_window_leaves_no_second_live_order(stack: Stack) -> None:
    """The nastiest case: the first broker takes the order after we declared it absent and the
    second broker has it too. The late one is a zombie: cancelled at once."""
    stack.a.inject(Fault.ACCEPT_AFTER_DEADLINE, delay=SETTLE + 0.5)
    order = resting_order()
    response = await stack.engine.route_order(order)
    assert (response.status, response.selected_broker) == (RoutingStatus.ACCEPTED, "fo-b")
    await settled(stack)
    cancels = await wait_until(  # the zombie is cancelled as soon as its acknowledgement is seen
        lambda: condition(lambda: [c.client_order_id for c in stack.a.cancels]),
        what="the zombie at fo-a cancelled",
    )
    await stack.engine.wait_settled()
    assert stack.live_orders() == [("b", stack.b.submits[0].client_order_id)]
    assert cancels == [stack.a.submits[0].client_order_id]
    assert [c.client_order_id for c in stack.a.cancels] == cancels  # once


async def test_every_attempt_is_persisted_with_its_own_client_order_id(
    stack: Stack, migrated_database_url: str
) -> None:
    stack.a.inject(Fault.REJECT)
    order = resting_order()
    await stack.engine.route_order(order)
    await stack.engine.wait_settled()  # the ack is written just after the reply
    with psycopg.connect(migrated_database_url) as conn:
        rows = conn.execute(
            "SELECT attempt, broker_id, status, client_order_id, rejection_reason FROM broker_orders"
            " WHERE order_id = %s ORDER BY attempt",
            (order.order_id,),
        ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [(1, "fo-a", "REJECTED"), (2, "fo-b", "ACCEPTED")]
    assert rows[0][3] != rows[1][3]
    assert rows[0][4].startswith("fo-a:")


async def test_every_broker_failing_is_one_rejection_naming_each(stack: Stack) -> None:
    stack.a.inject(Fault.REJECT, reason="insufficient buying power")
    stack.b.inject(Fault.REJECT, reason="symbol halted")
    response = await stack.engine.route_order(resting_order())
    assert response.status is RoutingStatus.REJECTED
    assert response.rejection_reason == "fo-a: insufficient buying power; fo-b: symbol halted"
    assert stack.live_orders() == []
