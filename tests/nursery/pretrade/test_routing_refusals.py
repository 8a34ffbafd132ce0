"""Orders through the engine with the pre-trade gate on its router, against real PostgreSQL: a
refused order is answered REJECTED naming the safeguard, is stored (a repeat gets the same
answer and is not counted again), reaches no broker, and ExplainOrder says why; the kill switch
is stored, read back by another daemon, and cancels an account's open orders when asked."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import trio

from adapters.base import BrokerAck, BrokerOrderSnapshot, SubmitRequest
from api.capabilities import Capabilities
from api.contracts import CommissionStructure
from api.enums import AssetClass, BrokerFeature, OrderType, RoutingStatus
from api.errors import InvalidRequest, NotFound
from api.events import AnyBrokerEvent, OrderFilled
from nursery.pretrade.admin import KillSwitchAdmin, decode_set_kill_switch
from nursery.pretrade.config import SafeguardsConfig
from nursery.pretrade.explain import ExplainOrderRequest, OrderExplainer
from nursery.pretrade.gate import PreTradeGate
from nursery.pretrade.killswitch import KillSwitchBoard, Scope
from sql import pretrade as rows
from tests.support.engine_stack import AaplMarket, aapl_order, engine_stack

NOW = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


class RecordingBroker:
    """Accepts every order and keeps it open; records submits and cancels."""

    broker_id = "rec"
    capabilities = Capabilities(frozenset({AssetClass.EQUITY}), frozenset(BrokerFeature))
    commission = CommissionStructure(base_rate=Decimal("0.0001"))
    outlives_daemon = True  # a broker outside the daemon

    def __init__(self) -> None:
        self.submits: list[SubmitRequest] = []
        self.cancels: list[str] = []

    async def run(
        self, events: trio.MemorySendChannel[AnyBrokerEvent], *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def heartbeat(self) -> None:
        await trio.lowlevel.checkpoint()

    async def submit(self, request: SubmitRequest) -> BrokerAck:
        self.submits.append(request)
        return BrokerAck(f"R-{len(self.submits)}", NOW)

    async def cancel(self, client_order_id: str) -> None:
        self.cancels.append(client_order_id)

    async def query(self, client_order_id: str) -> BrokerOrderSnapshot | None:
        return None

    async def open_orders(self) -> list[BrokerOrderSnapshot]:
        return []

    async def fills_since(self, since: datetime) -> list[OrderFilled]:
        return []


class FreshQuotes(AaplMarket):
    def quote_ns(self, symbol: str) -> int | None:
        return trio_wall_ns()


def trio_wall_ns() -> int:
    return int(datetime.now(UTC).timestamp() * 1e9)


def new_id() -> str:
    return f"g-{uuid.uuid4().hex[:20]}"


@pytest.fixture
async def stack(migrated_database_url: str) -> AsyncIterator[Any]:
    broker = RecordingBroker()
    async with engine_stack(
        migrated_database_url, [broker], AaplMarket(), deadline=2.0, recover=False, drain=True
    ) as built:
        gate = PreTradeGate(SafeguardsConfig(max_daily_notional=Decimal(100_000)), FreshQuotes())
        built.engine._router.pre_trade = gate
        yield built, broker, gate


async def test_a_fat_finger_is_rejected_stored_never_sent_and_explained(stack: Any) -> None:
    built, broker, gate = stack
    engine = built.engine
    order_id = new_id()
    fat = aapl_order(order_id, type=OrderType.MARKET, price=None, quantity=Decimal(50_000_000))
    response = await engine.route_order(fat)
    assert response.status is RoutingStatus.REJECTED
    assert (
        response.rejection_reason
        == "safeguard max_order_quantity: quantity 50000000 exceeds the limit 1000000"
    )
    assert broker.submits == []
    # Stored: a repeat gets the first answer (even once the limit would let it through) and is
    # counted once.
    claim = await built.store.get_claim(order_id)
    assert claim is not None and claim.response == response
    assert await engine.route_order(fat) == response
    assert gate.rejections["max_order_quantity"] == 1
    explained = await OrderExplainer(built.store, engine.get_execution).explain(ExplainOrderRequest(order_id))
    assert explained.response == response
    assert explained.pre_trade is not None and explained.pre_trade.safeguards is not None
    outcome = explained.pre_trade.safeguards
    assert (outcome.passed, outcome.safeguard, outcome.limit, outcome.value) == (
        False,
        "max_order_quantity",
        "1000000",
        "50000000",
    )
    assert explained.routing_decision is not None and explained.routing_decision.candidates == ()
    assert explained.execution is None
    with pytest.raises(NotFound):
        await OrderExplainer(built.store, engine.get_execution).explain(ExplainOrderRequest(new_id()))


async def test_an_admitted_order_is_routed_and_counts_towards_the_day(
    stack: Any, migrated_database_url: str
) -> None:
    built, broker, gate = stack
    order_id = new_id()
    response = await built.engine.route_order(aapl_order(order_id))
    assert response.status is RoutingStatus.ACCEPTED
    assert len(broker.submits) == 1
    assert gate.ledger.today("ACC", datetime.now(UTC).date()) == (Decimal("19050.00"), 1)
    explained = await OrderExplainer(built.store, built.engine.get_execution).explain(
        ExplainOrderRequest(order_id)
    )
    assert explained.pre_trade is not None and explained.pre_trade.safeguards is not None
    assert explained.pre_trade.safeguards.passed
    assert explained.execution is not None and explained.execution.broker_id == "rec"
    assert explained.routing_decision is not None and explained.routing_decision.chosen == "rec"
    # A repeat is not counted again; the day's total rebuilt from the database agrees.
    await built.engine.route_order(aapl_order(order_id))
    assert gate.ledger.today("ACC", datetime.now(UTC).date()) == (Decimal("19050.00"), 1)
    start = datetime.combine(datetime.now(UTC).date(), datetime.min.time(), tzinfo=UTC)
    totals = await trio.to_thread.run_sync(rows.daily_totals, migrated_database_url, start)
    assert totals["ACC"][1] >= 1


async def test_daily_notional_refuses_once_the_day_is_full(stack: Any) -> None:
    built, _, _ = stack
    accepted = 0
    for _ in range(6):  # 19,050 each against 100,000
        response = await built.engine.route_order(aapl_order(new_id(), account_id="DAY"))
        accepted += response.status is RoutingStatus.ACCEPTED
    assert accepted == 5
    assert response.rejection_reason is not None
    assert response.rejection_reason.startswith("safeguard max_daily_notional: account DAY would reach")


async def test_the_kill_switch_stops_an_account_survives_a_restart_and_cancels_its_open_orders(
    stack: Any, migrated_database_url: str
) -> None:
    built, broker, gate = stack
    engine = built.engine
    account = f"KS-{uuid.uuid4().hex[:8]}"
    open_ids = [new_id(), new_id()]
    for order_id in open_ids:
        assert (
            await engine.route_order(aapl_order(order_id, account_id=account))
        ).status is RoutingStatus.ACCEPTED
    announced: list[tuple[str, bytes]] = []

    async def announce(subject: str, payload: bytes) -> None:
        announced.append((subject, payload))

    admin = KillSwitchAdmin(
        gate.kill_switches, migrated_database_url, cancel=engine.cancel_order, announce=announce
    )
    request = decode_set_kill_switch(
        f'{{"scope": "ACCOUNT", "accountId": "{account}", "engaged": true, "reason": "runaway",'
        ' "cancelOpenOrders": true, "changedBy": "test"}'
    )
    result = await admin.set(request)
    assert result.persisted
    assert sorted(result.cancel_requested) == sorted(open_ids)
    assert result.cancel_failed == ()
    assert len(broker.cancels) == 2
    assert len(announced) == 1
    refused = await engine.route_order(aapl_order(new_id(), account_id=account))
    assert refused.status is RoutingStatus.REJECTED
    assert refused.rejection_reason is not None and "kill_switch" in refused.rejection_reason
    assert "runaway" in refused.rejection_reason
    assert (
        await engine.route_order(aapl_order(new_id(), account_id="OTHER"))
    ).status is RoutingStatus.ACCEPTED
    # Another daemon (or this one after a restart) reads it back.
    other = KillSwitchAdmin(KillSwitchBoard(), migrated_database_url, cancel=engine.cancel_order)
    await other.load()
    switch = other.board.get(Scope.ACCOUNT, account)
    assert switch is not None and switch.engaged and switch.reason == "runaway"
    # Released: orders flow again.
    release = decode_set_kill_switch(f'{{"scope": "ACCOUNT", "accountId": "{account}", "engaged": false}}')
    assert (await admin.set(release)).persisted
    assert (
        await engine.route_order(aapl_order(new_id(), account_id=account))
    ).status is RoutingStatus.ACCEPTED
    await other.reload()
    assert other.board.refusal(account) is None


def test_bad_kill_switch_requests_name_each_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_set_kill_switch('{"scope": "ACCOUNT", "engaged": false, "cancelOpenOrders": true}')
    assert {e.field for e in caught.value.errors} == {"accountId", "cancelOpenOrders"}
    with pytest.raises(InvalidRequest) as caught:
        decode_set_kill_switch('{"scope": "EVERYTHING", "engaged": true}')
    assert [e.field for e in caught.value.errors] == ["scope"]
    with pytest.raises(InvalidRequest):
        decode_set_kill_switch('{"scope": "GLOBAL", "accountId": "A", "engaged": true}')
