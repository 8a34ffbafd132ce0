"""daemon.metrics and daemon.feed: what each execution update and RouteOrder answer counts, and
that the feed passes every update on unchanged while the console's listeners only watch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import trio
from prometheus_client.parser import text_string_to_metric_families

from api.codec import encode
from api.contracts import ExecutionUpdate, Fill, OrderRoutingRequest, OrderRoutingResponse
from api.enums import AssetClass, ExecutionStatus, OrderType, RoutingStatus, Side
from api.subjects import execution_subject
from daemon.feed import UpdatesFeed
from daemon.metrics import DaemonMetrics, reason_class
from nursery.pretrade.checks import SAFEGUARDS, Refusal
from nursery.pretrade.config import RiskConfig, SafeguardsConfig
from nursery.pretrade.gate import PreTradeGate
from nursery.pretrade.killswitch import KillSwitch, Scope
from nursery.pretrade.risk import RiskAssessor
from sql.records import OutboxEvent

NOW = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


def update(
    sequence: int,
    status: ExecutionStatus,
    *,
    broker: str = "sim.a",  # a dot: escaped in the subject
    fill: bool = False,
    reconstructed: bool = False,
    reason: str | None = None,
) -> OutboxEvent:
    body = ExecutionUpdate(
        execution_id="x-1",
        order_id="o-1",
        broker_id=broker,
        status=status,
        filled_quantity=Decimal(10 if fill else 0),
        timestamp=NOW,
        sequence=sequence,
        latest_fill=Fill(
            fill_id=f"f-{sequence}",
            quantity=Decimal(10),
            price=Decimal("1.5"),
            timestamp=NOW,
            venue="V",
            reconstructed=reconstructed,
        )
        if fill
        else None,
        reason=reason,
    )
    return OutboxEvent(
        "x-1", sequence, execution_subject(broker, status.value, "o-1"), encode(body), NOW
    )


def test_updates_count_fills_cancels_rejects_and_reconstructions_per_broker() -> None:
    metrics = DaemonMetrics()
    for event in (
        update(1, ExecutionStatus.EXECUTING),
        update(2, ExecutionStatus.PARTIALLY_FILLED, fill=True),
        update(3, ExecutionStatus.COMPLETED, fill=True, reconstructed=True),
        update(4, ExecutionStatus.CANCELED),
        update(5, ExecutionStatus.REJECTED, broker="b", reason="risk limit breached"),
        update(6, ExecutionStatus.REJECTED, broker="b", reason="insufficient buying power"),
    ):
        metrics.observe_update(event.subject, event.payload)
    assert metrics.fills.get("sim.a") == 2
    assert metrics.reconstructed == 1
    assert metrics.cancels.get("sim.a") == 1
    assert metrics.rejects.counts == {("b", "risk"): 1, ("b", "broker"): 1}
    text = metrics.render().decode()
    assert 'bis_broker_fills_total{broker="sim.a"} 2.0' in text
    assert "bis_orders_reconstructed_total 1.0" in text
    labels = {
        key
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for key in sample.labels
    }
    bounded = {"broker", "reason_class", "outcome", "le", "safeguard", "scope", "verdict"}
    assert labels <= bounded  # never an order id


def test_route_answers_by_outcome_and_gateway_refusals_as_broker_none() -> None:
    metrics = DaemonMetrics()
    accepted = OrderRoutingResponse("r", "o", RoutingStatus.ACCEPTED, NOW, selected_broker="a")
    pending = OrderRoutingResponse("r", "o", RoutingStatus.PENDING, NOW, selected_broker="a")
    refused = OrderRoutingResponse(
        "r", "o", RoutingStatus.REJECTED, NOW, rejection_reason="safeguard max_notional: 9.5e9 > 1e6"
    )
    by_broker = OrderRoutingResponse("r", "o", RoutingStatus.REJECTED, NOW, selected_broker="a")
    for response in (accepted, pending, refused, by_broker):
        metrics.observe_route(response, 0.002)
    metrics.observe_route_error(0.0001)
    assert [metrics.route[o].count for o in ("accepted", "rejected", "error")] == [2, 2, 1]
    # the broker's own refusal is counted from its REJECTED update, not twice
    assert metrics.rejects.counts == {("none", "safeguard"): 1}


def test_ack_latency_in_seconds_and_recent_samples_for_the_console() -> None:
    metrics = DaemonMetrics()
    metrics.observe_ack("a", 3.0)
    metrics.observe_ack("a", 700.0)
    assert metrics.ack[("a",)].count == 2
    assert metrics.ack[("a",)].sum == 0.703
    assert list(metrics.recent_acks["a"]) == [3.0, 700.0]
    assert 'bis_broker_ack_duration_seconds_bucket{broker="a",le="0.005"} 1.0' in metrics.render().decode()


def test_reason_classes_are_a_small_fixed_set() -> None:
    assert reason_class(None) == "broker"
    assert reason_class("kill switch engaged for ACC-1") == "safeguard"
    assert reason_class("no broker eligible: sim-a: in maintenance") == "no_eligible_broker"
    assert reason_class("sim-a did not answer within 2.0 s") == "timeout"


async def test_the_feed_forwards_everything_in_order_and_closes_downstream() -> None:
    metrics = DaemonMetrics()
    feed = UpdatesFeed(metrics, keep=2, listener_buffer=1)
    upstream_send, upstream = trio.open_memory_channel[OutboxEvent](10)
    downstream, downstream_receive = trio.open_memory_channel[OutboxEvent](1)  # forces waiting
    events = [update(i, ExecutionStatus.PARTIALLY_FILLED, fill=True) for i in range(1, 5)]
    received: list[OutboxEvent] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run, upstream, downstream)
        with feed.listen() as slow:  # never reads past its one-slot buffer: misses, never blocks
            async with upstream_send:
                for event in events:
                    await upstream_send.send(event)
            async with downstream_receive:
                async for event in downstream_receive:  # ends: the feed closed its side
                    received.append(event)
            assert slow.receive_nowait() == events[0].payload
        assert feed.listeners == 0
    assert received == events
    assert metrics.fills.get("sim.a") == 4
    assert [subject for subject, _ in feed.recent] == [e.subject for e in events[-2:]]
    assert feed.missed == 3 and feed.passed == 4


class RouterHooks:
    """The two router attributes the scrape reads (`daemon.metrics.PreTradeHooks`), set after
    binding as the daemon does."""

    def __init__(self) -> None:
        self.pre_trade: PreTradeGate | None = None
        self.risk: RiskAssessor | None = None


def pretrade_samples(metrics: DaemonMetrics) -> dict[tuple[str, str], float]:
    families = text_string_to_metric_families(metrics.render().decode())
    wanted = {"bis_safeguard_rejections", "bis_kill_switch_engaged", "bis_risk_verdicts"}
    return {
        (sample.name, next(iter(sample.labels.values()))): sample.value
        for family in families
        if family.name in wanted
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


async def test_safeguard_refusals_kill_switches_and_risk_verdicts_read_at_scrape() -> None:
    metrics = DaemonMetrics()
    hooks = RouterHooks()
    metrics.bind_pretrade(hooks)
    before = pretrade_samples(metrics)  # nothing set yet: every series at 0, none missing
    assert before[("bis_safeguard_rejections_total", "price_collar")] == 0
    assert before[("bis_kill_switch_engaged", "global")] == 0
    assert before[("bis_risk_verdicts_total", "unavailable")] == 0
    assert len(before) == len(SAFEGUARDS) + 2 + 3

    gate = PreTradeGate(SafeguardsConfig(), NoQuotes())
    hooks.pre_trade = gate
    market = OrderRoutingRequest(
        order_id="o-1",
        account_id="ACC-1",
        symbol="AAPL",
        side=Side.BUY,
        type=OrderType.MARKET,
        quantity=Decimal(1),
    )
    for _ in range(2):
        refusal = gate.check(market, AssetClass.EQUITY, 1.0)
        assert isinstance(refusal, Refusal)
        gate.count(refusal)
    for account in ("ACC-1", "ACC-2"):
        gate.kill_switches.apply(KillSwitch(Scope.ACCOUNT, True, NOW, account_id=account))
    gate.kill_switches.apply(KillSwitch(Scope.GLOBAL, True, NOW))

    async def answer(subject: str, payload: bytes, timeout: float) -> tuple[bytes, dict[str, str]]:
        return b'{"verdict":"REFUSE","reason":"too big"}', {}

    risk = RiskAssessor(RiskConfig(enabled=True), answer)
    hooks.risk = risk
    verdict = await risk.assess(market, AssetClass.EQUITY, None, "sim-a", Decimal(190))
    assert verdict.verdict == "REFUSED"

    after = pretrade_samples(metrics)
    assert after[("bis_safeguard_rejections_total", "market_without_quote")] == 2
    assert after[("bis_safeguard_rejections_total", "price_collar")] == 0
    assert after[("bis_kill_switch_engaged", "global")] == 1
    assert after[("bis_kill_switch_engaged", "account")] == 2
    assert after[("bis_risk_verdicts_total", "refused")] == 1
    assert after[("bis_risk_verdicts_total", "approved")] == 0
    gate.kill_switches.apply(KillSwitch(Scope.GLOBAL, False, NOW + timedelta(seconds=1)))
    assert pretrade_samples(metrics)[("bis_kill_switch_engaged", "global")] == 0


class NoQuotes:
    def mid(self, symbol: str) -> Decimal | None:
        return None

    def quote_ns(self, symbol: str) -> int | None:
        return None
