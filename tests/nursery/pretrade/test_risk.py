"""The Risk Analysis Service interface against a real nats-server and a small responder
(tests/support/risk_responder.py): approve, refuse, slow, absent, garbage; fail-closed and
fail-open per account; the verdict stored with the order and explained; the request carries the
order, the broker's estimates and the account's exposure."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_asyncio

from api.enums import RoutingStatus
from daemon.bus import NatsBus
from nursery.pretrade.config import AccountSafeguards, RiskConfig, SafeguardsConfig
from nursery.pretrade.explain import ExplainOrderRequest, OrderExplainer
from nursery.pretrade.gate import PreTradeGate
from nursery.pretrade.risk import RiskAssessor
from tests.nursery.pretrade.test_routing_refusals import FreshQuotes, RecordingBroker
from tests.support.engine_stack import AaplMarket, aapl_order, engine_stack
from tests.support.risk_responder import RiskResponder

SUBJECT_PREFIX = "risk.test"


def new_id() -> str:
    return f"r-{uuid.uuid4().hex[:20]}"


@pytest.fixture
def responder(nats_url: str, tmp_path: Path) -> Any:
    subject = f"{SUBJECT_PREFIX}.{uuid.uuid4().hex[:8]}"
    with RiskResponder(nats_url, tmp_path / "risk", subject, delay=0.6) as running:
        yield running


@pytest.fixture
async def stack(migrated_database_url: str, nats_url: str, responder: RiskResponder) -> AsyncIterator[Any]:
    broker = RecordingBroker()
    safeguards = SafeguardsConfig(accounts=(AccountSafeguards("OPEN", risk_failure_policy="open"),))
    config = RiskConfig(enabled=True, subject=responder.subject, timeout_ms=250.0)
    async with (
        trio_asyncio.open_loop(),
        NatsBus.connect(nats_url, name="risk-test") as bus,
        engine_stack(
            migrated_database_url, [broker], AaplMarket(), deadline=2.0, recover=False, drain=True
        ) as built,
    ):

        async def ask(subject: str, payload: bytes, timeout: float) -> tuple[bytes, dict[str, str]]:
            return await bus.request(subject, payload, timeout=timeout)

        gate = PreTradeGate(safeguards, FreshQuotes())
        risk = RiskAssessor(config, ask, safeguards=safeguards, ledger=gate.ledger)
        router = built.engine._router
        router.pre_trade, router.risk = gate, risk
        explainer = OrderExplainer(built.store, built.engine.get_execution)
        yield built.engine, broker, risk, explainer, responder


async def test_approved_orders_are_routed_with_the_verdict_stored(stack: Any) -> None:
    engine, broker, risk, explainer, responder = stack
    order_id = new_id()
    response = await engine.route_order(aapl_order(order_id))
    assert response.status is RoutingStatus.ACCEPTED
    assert len(broker.submits) == 1
    (asked,) = responder.requests
    assert asked["order"]["orderId"] == order_id
    assert asked["broker"]["brokerId"] == "rec" and "expectedCommission" in asked["broker"]
    assert asked["exposure"]["accountId"] == "ACC"
    assert Decimal(str(asked["notional"])) == Decimal("19050")
    explained = await explainer.explain(ExplainOrderRequest(order_id))
    assert explained.pre_trade.risk.verdict == "APPROVED"
    assert explained.pre_trade.risk.reason == "within limits"
    assert explained.pre_trade.safeguards.passed
    assert risk.verdicts["APPROVED"] == 1


async def test_a_refusal_is_rejected_stored_and_never_sent(stack: Any) -> None:
    engine, broker, _, explainer, responder = stack
    responder.mode = "refuse"
    order_id = new_id()
    response = await engine.route_order(aapl_order(order_id))
    assert response.status is RoutingStatus.REJECTED
    assert response.rejection_reason == (
        "risk service: the Risk Analysis Service refused the order: exposure limit of the desk reached"
    )
    assert broker.submits == []
    explained = await explainer.explain(ExplainOrderRequest(order_id))
    assert explained.pre_trade.risk.verdict == "REFUSED"
    assert not explained.pre_trade.risk.routed
    assert explained.routing_decision.chosen == "rec"  # the broker it would have gone to
    assert await engine.route_order(aapl_order(order_id)) == response  # a repeat: the same answer


@pytest.mark.parametrize("mode", ["slow", "garbage", "absent"])
async def test_no_answer_fails_closed_by_default_and_open_where_configured(stack: Any, mode: str) -> None:
    engine, broker, risk, explainer, responder = stack
    if mode == "absent":
        responder.stop()
    else:
        responder.mode = mode
    closed_id, open_id = new_id(), new_id()
    started = trio.current_time()
    closed = await engine.route_order(aapl_order(closed_id))
    assert trio.current_time() - started < 1.0  # the deadline (250 ms), not the slow answer
    assert closed.status is RoutingStatus.REJECTED
    assert closed.rejection_reason is not None
    assert closed.rejection_reason.startswith("risk service: the Risk Analysis Service is unavailable")
    opened = await engine.route_order(aapl_order(open_id, account_id="OPEN"))
    assert opened.status is RoutingStatus.ACCEPTED
    assert len(broker.submits) == 1
    for order_id, policy, routed in ((closed_id, "closed", False), (open_id, "open", True)):
        verdict = (await explainer.explain(ExplainOrderRequest(order_id))).pre_trade.risk
        assert (verdict.verdict, verdict.policy, verdict.routed) == ("UNAVAILABLE", policy, routed)
    assert risk.verdicts["UNAVAILABLE"] == 2


async def test_the_exposure_counts_the_accounts_open_orders(stack: Any) -> None:
    engine, _, risk, _, responder = stack
    for _ in range(3):
        await engine.route_order(aapl_order(new_id(), account_id="EXPO"))
    risk.refresh_exposure(engine._router.open_executions())
    await engine.route_order(aapl_order(new_id(), account_id="EXPO"))
    exposure = responder.requests[-1]["exposure"]
    assert exposure["openOrders"] == 3
    assert Decimal(str(exposure["openBuyNotional"])) == Decimal("57150")
    assert exposure["ordersToday"] == 4  # this one included: admitted by the safeguards
