"""The faulty simulated broker, driven through the BrokerAdapter interface and a real channel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest
import trio
import trio.testing

from adapters.base import (
    BrokerAdapter,
    BrokerRejected,
    ConnectionLost,
    DeniedLocally,
    OutcomeUnknown,
    RateLimited,
    ServerError,
    SubmitRequest,
)
from adapters.simulated import (
    InstrumentConfig,
    LatencyConfig,
    MarketConfig,
    SimulatedBroker,
    SimulatedBrokerConfig,
    SimulatedMarket,
)
from api.contracts import CommissionStructure
from api.enums import AssetClass, BrokerFeature, BrokerOrderStatus, OrderType, Side, TimeInForce
from api.events import AnyBrokerEvent, OrderAccepted, OrderCanceled, OrderFilled
from tests.support.faults import Fault, FaultyBroker, InjectedFault, RecordedCall

D = Decimal
T0 = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)
Events = trio.MemoryReceiveChannel[AnyBrokerEvent]


def make_market() -> SimulatedMarket:
    config = MarketConfig(
        seed=1,
        tick_interval_ms=None,
        instruments=(
            InstrumentConfig(
                symbol="AAPL",
                asset_class=AssetClass.EQUITY,
                price=D("100.00"),
                spread_bps=D(2),
                volatility_bps=D(1),
                top_size=D(100),
                tick_size=D("0.01"),
                trade_probability=0.0,
            ),
        ),
    )
    market = SimulatedMarket(config, clock=lambda: T0)
    market.set_quote("AAPL", D("100.00"), D("100.02"))
    return market


def make_broker(
    market: SimulatedMarket | None = None, broker_id: str = "sim-faulty", **changes: object
) -> FaultyBroker:
    config = SimulatedBrokerConfig(
        broker_id=broker_id,
        name="Simulated Faulty Broker",
        asset_classes=(AssetClass.EQUITY,),
        features=(BrokerFeature.MARKET_ORDERS, BrokerFeature.LIMIT_ORDERS),
        time_in_force=(TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC),
        commission=CommissionStructure(base_rate=D("0.0005"), min_commission=D("1")),
        venue="SIMX-F",
        seed=7,
    )
    return FaultyBroker(msgspec.structs.replace(config, **changes), market or make_market())


def order(client_order_id: str = "c1", *, resting: bool = False) -> SubmitRequest:
    """A market order (fills at once), or with `resting` a GTC limit far from the market."""
    return SubmitRequest(
        client_order_id=client_order_id,
        account_id="acct-1",
        symbol="AAPL",
        asset_class=AssetClass.EQUITY,
        side=Side.BUY,
        order_type=OrderType.LIMIT if resting else OrderType.MARKET,
        quantity=D(10),
        time_in_force=TimeInForce.GTC if resting else TimeInForce.DAY,
        price=D("90.00") if resting else None,
    )


@asynccontextmanager
async def connected(broker: FaultyBroker) -> AsyncIterator[Events]:
    send, receive = trio.open_memory_channel[AnyBrokerEvent](1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.run, send)
        yield receive
        nursery.cancel_scope.cancel()


async def connection(
    broker: FaultyBroker,
    events: trio.MemorySendChannel[AnyBrokerEvent],
    drops: list[ConnectionLost],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """One life of the connection, as a supervisor runs it: a drop ends it and is noted."""
    try:
        await broker.run(events, task_status=task_status)
    except ConnectionLost as exc:
        drops.append(exc)


async def received(events: Events) -> list[AnyBrokerEvent]:
    await trio.testing.wait_all_tasks_blocked()
    out = []
    while True:
        try:
            out.append(events.receive_nowait())
        except trio.WouldBlock:
            return out


def kinds(events: list[AnyBrokerEvent]) -> list[type]:
    return [type(e) for e in events]


def faults_met(calls: list[RecordedCall]) -> list[Fault | None]:
    return [call.fault for call in calls]


# --- without faults ----------------------------------------------------------------------


def test_is_a_simulated_broker_behind_the_adapter_protocol() -> None:
    broker = make_broker()
    adapter: BrokerAdapter = broker
    assert isinstance(adapter, BrokerAdapter)
    assert isinstance(broker, SimulatedBroker)
    assert adapter.broker_id == "sim-faulty"
    assert repr(broker) == "<FaultyBroker sim-faulty disconnected open=0 faults=[]>"


async def test_without_faults_it_behaves_as_the_simulated_broker() -> None:
    broker = make_broker()
    async with connected(broker) as events:
        ack = await broker.submit(order())
        await broker.submit(order("c2", resting=True))
        await broker.cancel("c2")
        filled = await broker.query("c1")
        got = await received(events)
    assert kinds(got) == [OrderAccepted, OrderFilled, OrderAccepted, OrderCanceled]
    assert filled is not None
    assert (filled.status, filled.broker_order_id) == (BrokerOrderStatus.FILLED, ack.broker_order_id)
    assert [c.client_order_id for c in broker.submits] == ["c1", "c2"]
    assert faults_met(broker.submits + broker.cancels + broker.queries) == [None] * 4


async def test_calls_before_run_are_denied_locally_and_leave_the_faults_armed() -> None:
    broker = make_broker()
    broker.inject(Fault.REJECT)
    broker.inject(Fault.QUERY_FAILS)
    with pytest.raises(DeniedLocally, match="not connected"):
        await broker.submit(order())
    with pytest.raises(DeniedLocally, match="not connected"):
        await broker.query("c1")
    assert [i.fault for i in broker.faults.pending()] == [Fault.REJECT, Fault.QUERY_FAILS]
    async with connected(broker):
        with pytest.raises(BrokerRejected):
            await broker.submit(order())
        with pytest.raises(OutcomeUnknown):
            await broker.query("c1")
    assert faults_met(broker.submits) == [None, Fault.REJECT]


# --- submit faults -----------------------------------------------------------------------


async def test_hang_on_submit_never_answers_and_nothing_reaches_the_venue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = make_broker()
    broker.inject(Fault.HANG_ON_SUBMIT)
    async with connected(broker) as events:
        with trio.move_on_after(3600) as scope:
            await broker.submit(order())
        assert scope.cancelled_caught
        await trio.sleep(3600)
        assert await broker.query("c1") is None
        assert await received(events) == []
        await broker.submit(order("c2"))  # the fault applied once: behaving again
        assert kinds(await received(events)) == [OrderAccepted, OrderFilled]
    assert faults_met(broker.submits) == [Fault.HANG_ON_SUBMIT, None]


async def test_timeout_raises_read_timeout_after_the_delay_and_nothing_reaches_the_venue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = make_broker()
    broker.inject(Fault.TIMEOUT, delay=3.0)
    async with connected(broker) as events:
        start = trio.current_time()
        with pytest.raises(OutcomeUnknown, match="read timeout") as raised:
            await broker.submit(order())
        assert trio.current_time() - start == pytest.approx(3.0)
        assert type(raised.value) is OutcomeUnknown
        await trio.sleep(60)
        assert await broker.query("c1") is None
        assert await received(events) == []
        assert broker.live_orders() == []


async def test_timeout_with_reached_loses_the_answer_of_an_order_the_venue_accepted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = make_broker()
    broker.inject(Fault.TIMEOUT, delay=3.0, reached=True)
    seen_while_waiting: list[object] = []

    async def look_meanwhile() -> None:
        await trio.sleep(1.0)
        seen_while_waiting.append(await broker.query("c1"))

    async with connected(broker) as events, trio.open_nursery() as nursery:
        nursery.start_soon(look_meanwhile)
        with pytest.raises(OutcomeUnknown, match="read timeout"):
            await broker.submit(order(resting=True))
        snapshot = await broker.query("c1")
        assert kinds(await received(events)) == [OrderAccepted]
        assert broker.live_orders() == ["c1"]
    assert seen_while_waiting == [snapshot]
    assert snapshot is not None
    assert snapshot.status is BrokerOrderStatus.ACCEPTED


async def test_disconnect_mid_submit_accepts_the_order_then_ends_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = make_broker(latency=LatencyConfig(connect_ms=100.0))
    broker.inject(Fault.DISCONNECT_MID_SUBMIT)
    send, _receive = trio.open_memory_channel[AnyBrokerEvent](1000)
    drops: list[ConnectionLost] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(connection, broker, send, drops)
        with pytest.raises(ConnectionLost, match="connection lost before the response arrived"):
            await broker.submit(order(resting=True))
        await trio.testing.wait_all_tasks_blocked()
        assert [d.reason for d in drops] == ["connection lost before the response arrived"]
        assert not broker.connected
        assert "dropped" in repr(broker)
        with pytest.raises(ConnectionLost):
            await broker.query("c1")
        with pytest.raises(ConnectionLost):
            await broker.cancel("c1")
        with pytest.raises(ConnectionLost):
            await broker.submit(order("c2"))

        nursery.start_soon(connection, broker, send, drops)  # the supervisor restarts it
        await trio.sleep(0.05)  # still connecting
        with pytest.raises(ConnectionLost):
            await broker.query("c1")
        await trio.sleep(0.06)
        assert broker.connected
        snapshot = await broker.query("c1")
        assert broker.live_orders() == ["c1"]
        nursery.cancel_scope.cancel()
    assert snapshot is not None
    assert snapshot.status is BrokerOrderStatus.ACCEPTED
    assert len(drops) == 1
    assert faults_met(broker.submits) == [Fault.DISCONNECT_MID_SUBMIT, None]
    assert [c.client_order_id for c in broker.queries] == ["c1", "c1", "c1"]


async def test_reject_raises_broker_rejected_and_leaves_no_trace() -> None:
    broker = make_broker()
    broker.inject(Fault.REJECT, reason="insufficient buying power")
    async with connected(broker) as events:
        with pytest.raises(BrokerRejected) as raised:
            await broker.submit(order())
        assert raised.value.reason == "insufficient buying power"
        assert await broker.query("c1") is None
        assert await received(events) == []
        await broker.submit(order())  # nothing was recorded: the same id is new to the venue
        assert kinds(await received(events)) == [OrderAccepted, OrderFilled]


async def test_rate_limited_raises_429_with_retry_after_and_creates_no_order() -> None:
    broker = make_broker()
    broker.inject(Fault.RATE_LIMITED, retry_after=2.5)
    async with connected(broker) as events:
        with pytest.raises(RateLimited, match="429 Too Many Requests") as raised:
            await broker.submit(order())
        assert isinstance(raised.value, OutcomeUnknown)
        assert raised.value.retry_after == 2.5
        assert await broker.query("c1") is None
        assert await received(events) == []


@pytest.mark.parametrize("created", [True, False])
async def test_server_error_may_or_may_not_have_created_the_order(created: bool) -> None:
    broker = make_broker()
    broker.inject(Fault.SERVER_ERROR, created=created)
    async with connected(broker) as events:
        with pytest.raises(ServerError, match="503 Service Unavailable"):
            await broker.submit(order(resting=True))
        snapshot = await broker.query("c1")
        got = await received(events)
    assert (snapshot is not None) is created
    assert kinds(got) == ([OrderAccepted] if created else [])
    assert broker.live_orders() == (["c1"] if created else [])


async def test_accept_after_deadline_arrives_after_the_caller_gave_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = make_broker()
    broker.inject(Fault.ACCEPT_AFTER_DEADLINE, delay=2.0)
    async with connected(broker) as events:
        with trio.move_on_after(0.5) as scope:
            await broker.submit(order())
        assert scope.cancelled_caught
        assert await broker.query("c1") is None
        assert broker.stuck_requests() == ["c1"]
        await trio.sleep(1.99)
        assert await broker.query("c1") is None
        assert await received(events) == []
        await trio.sleep(0.02)
        snapshot = await broker.query("c1")
        got = await received(events)
        assert broker.stuck_requests() == []
    assert snapshot is not None
    assert snapshot.status is BrokerOrderStatus.FILLED
    assert kinds(got) == [OrderAccepted, OrderFilled]
    assert got[0].client_order_id == "c1"
    assert [c.client_order_id for c in broker.submits] == ["c1"]  # the late arrival is no call


async def test_a_request_stuck_in_the_network_dies_with_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = make_broker()
    broker.inject(Fault.ACCEPT_AFTER_DEADLINE, delay=2.0)
    send, _receive = trio.open_memory_channel[AnyBrokerEvent](1000)
    drops: list[ConnectionLost] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(connection, broker, send, drops)
        with trio.move_on_after(0.5):
            await broker.submit(order())
        broker.drop_connection("connection reset by peer")
        await trio.testing.wait_all_tasks_blocked()  # the supervisor restarts once run has raised
        assert len(drops) == 1
        await nursery.start(connection, broker, send, drops)
        await trio.sleep(10)
        assert await broker.query("c1") is None
        assert broker.stuck_requests() == []
        nursery.cancel_scope.cancel()
    assert [d.reason for d in drops] == ["connection reset by peer"]


async def test_answers_that_do_not_involve_the_venue_still_take_a_round_trip(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = make_broker(latency=LatencyConfig(median_ms=20.0))
    broker.inject(Fault.REJECT)
    broker.inject(Fault.SERVER_ERROR, created=True)
    async with connected(broker):
        start = trio.current_time()
        with pytest.raises(BrokerRejected):
            await broker.submit(order())
        assert trio.current_time() - start == pytest.approx(0.020)
        start = trio.current_time()
        with pytest.raises(ServerError):
            await broker.submit(order())
        assert trio.current_time() - start == pytest.approx(0.020)
        assert await broker.query("c1") is not None


# --- query and cancel faults -------------------------------------------------------------


async def test_query_fails_for_the_next_n_calls_then_answers(autojump_clock: trio.testing.MockClock) -> None:
    broker = make_broker()
    broker.inject(Fault.QUERY_FAILS, times=3, delay=0.25)
    async with connected(broker):
        await broker.submit(order())
        failures: list[str] = []
        start = trio.current_time()
        while True:  # what reconciliation does: retry the idempotent query
            try:
                snapshot = await broker.query("c1")
            except OutcomeUnknown as exc:
                failures.append(exc.reason)
                continue
            break
        assert trio.current_time() - start == pytest.approx(0.75)
    assert failures == ["read timeout"] * 3
    assert snapshot is not None
    assert snapshot.status is BrokerOrderStatus.FILLED
    assert faults_met(broker.queries) == [Fault.QUERY_FAILS] * 3 + [None]


async def test_cancel_fails_for_the_next_n_calls_then_cancels() -> None:
    broker = make_broker()
    broker.inject(Fault.CANCEL_FAILS, times=2)
    async with connected(broker) as events:
        await broker.submit(order(resting=True))
        for _ in range(2):
            with pytest.raises(OutcomeUnknown, match="read timeout"):
                await broker.cancel("c1")
        still = await broker.query("c1")
        await broker.cancel("c1")
        canceled = await broker.query("c1")
        got = await received(events)
    assert still is not None
    assert still.status is BrokerOrderStatus.ACCEPTED
    assert canceled is not None
    assert canceled.status is BrokerOrderStatus.CANCELED
    assert kinds(got) == [OrderAccepted, OrderCanceled]
    assert faults_met(broker.cancels) == [Fault.CANCEL_FAILS, Fault.CANCEL_FAILS, None]


async def test_a_failed_cancel_that_reached_the_venue_still_cancels() -> None:
    broker = make_broker()
    broker.inject(Fault.CANCEL_FAILS, reached=True)
    async with connected(broker) as events:
        await broker.submit(order(resting=True))
        with pytest.raises(OutcomeUnknown):
            await broker.cancel("c1")
        snapshot = await broker.query("c1")
        got = await received(events)
    assert snapshot is not None
    assert snapshot.status is BrokerOrderStatus.CANCELED
    assert kinds(got) == [OrderAccepted, OrderCanceled]
    assert broker.live_orders() == []


# --- the plan ----------------------------------------------------------------------------


async def test_faults_queue_per_method_in_injection_order() -> None:
    broker = make_broker()
    broker.inject(Fault.REJECT, times=2)
    broker.inject(Fault.RATE_LIMITED)
    broker.inject(Fault.QUERY_FAILS)
    assert [(i.fault, i.times) for i in broker.faults.pending()] == [
        (Fault.REJECT, 2),
        (Fault.RATE_LIMITED, 1),
        (Fault.QUERY_FAILS, 1),
    ]
    async with connected(broker):
        with pytest.raises(BrokerRejected):
            await broker.submit(order("c1"))
        with pytest.raises(OutcomeUnknown):
            await broker.query("c1")
        assert [(i.fault, i.times) for i in broker.faults.pending()] == [
            (Fault.REJECT, 1),
            (Fault.RATE_LIMITED, 1),
        ]
        assert "faults=['REJECT x1', 'RATE_LIMITED x1']" in repr(broker)
        with pytest.raises(BrokerRejected):
            await broker.submit(order("c2"))
        with pytest.raises(RateLimited):
            await broker.submit(order("c3"))
        await broker.submit(order("c4"))
        assert await broker.query("c1") is None
    assert not broker.faults
    assert faults_met(broker.submits) == [Fault.REJECT, Fault.REJECT, Fault.RATE_LIMITED, None]


async def test_clear_disarms_every_fault() -> None:
    broker = make_broker()
    broker.inject(Fault.HANG_ON_SUBMIT, times=5)
    broker.faults.clear()
    async with connected(broker):
        await broker.submit(order())
    assert faults_met(broker.submits) == [None]


def test_inject_resolves_the_defaults() -> None:
    broker = make_broker()
    assert broker.inject(Fault.TIMEOUT) == InjectedFault(
        fault=Fault.TIMEOUT, times=1, delay=5.0, reached=False, reason="read timeout"
    )
    assert broker.inject(Fault.SERVER_ERROR, created=True, times=3) == InjectedFault(
        fault=Fault.SERVER_ERROR, times=3, reached=True, reason="503 Service Unavailable"
    )
    assert broker.inject(Fault.ACCEPT_AFTER_DEADLINE).delay == 1.0
    assert broker.inject(Fault.RATE_LIMITED).retry_after is None


@pytest.mark.parametrize(
    ("fault", "changes", "message"),
    [
        (Fault.SERVER_ERROR, {"reached": True}, "SERVER_ERROR takes no reached"),
        (Fault.TIMEOUT, {"created": True}, "TIMEOUT takes no created"),
        (Fault.HANG_ON_SUBMIT, {"delay": 1.0, "reason": "x"}, "HANG_ON_SUBMIT takes no delay, reason"),
        (Fault.REJECT, {"retry_after": 1.0}, "REJECT takes no retry_after"),
        (Fault.REJECT, {"times": 0}, "times must be at least 1"),
        (Fault.TIMEOUT, {"delay": -1.0}, "delay must not be negative"),
    ],
)
def test_inject_refuses_what_the_fault_does_not_take(
    fault: Fault, changes: dict[str, object], message: str
) -> None:
    broker = make_broker()
    with pytest.raises(ValueError, match=message):
        broker.inject(fault, **changes)  # type: ignore[arg-type]
    assert not broker.faults


# --- what tests assert with it -----------------------------------------------------------


async def test_calls_are_recorded_with_their_trio_time(autojump_clock: trio.testing.MockClock) -> None:
    broker = make_broker()
    broker.inject(Fault.TIMEOUT, delay=2.0)
    async with connected(broker):
        start = trio.current_time()
        with pytest.raises(OutcomeUnknown):
            await broker.submit(order())
        await broker.query("c1")
        await broker.submit(order("c2"))
    assert broker.submits == [
        RecordedCall("c1", start, Fault.TIMEOUT),
        RecordedCall("c2", start + 2.0),
    ]
    assert broker.queries == [RecordedCall("c1", start + 2.0)]


async def test_live_orders_are_the_orders_the_venue_holds_open() -> None:
    broker = make_broker()
    async with connected(broker):
        await broker.submit(order("filled"))
        await broker.submit(order("resting", resting=True))
        await broker.submit(order("canceled", resting=True))
        await broker.cancel("canceled")
        with pytest.raises(BrokerRejected):
            await broker.submit(order("resting", resting=True))  # a duplicate id
        assert broker.live_orders() == ["resting"]


async def test_failing_over_before_a_late_arrival_settles_duplicates_the_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The hazard these brokers exist to expose, told through `live_orders`: the second broker got
    the order while the first could still take it. Querying the first broker for longer than a
    request can stay in flight finds the order there instead."""
    market = make_market()
    brokers = first, second = make_broker(market, "sim-a"), make_broker(market, "sim-b")
    first.inject(Fault.ACCEPT_AFTER_DEADLINE, times=2, delay=1.0)

    def holders(client_order_id: str) -> list[str]:
        return [b.broker_id for b in brokers if client_order_id in b.live_orders()]

    async with connected(first), connected(second):
        with trio.move_on_after(0.5):
            await first.submit(order("naive", resting=True))
        await second.submit(order("naive", resting=True))  # failed over at once
        await trio.sleep(2.0)
        assert holders("naive") == ["sim-a", "sim-b"]

        with trio.move_on_after(0.5):
            await first.submit(order("careful", resting=True))
        for _ in range(40):  # 2 s: the first broker's in-flight horizon
            found = await first.query("careful")
            if found is not None:
                break
            await trio.sleep(0.05)
        assert found is not None  # adopt it: the second broker never sees it
        assert holders("careful") == ["sim-a"]


async def test_run_is_one_at_a_time() -> None:
    broker = make_broker()
    async with connected(broker):
        send, _ = trio.open_memory_channel[AnyBrokerEvent](1)
        with pytest.raises(RuntimeError, match="already active"):
            await broker.run(send)
        assert broker.connected
    assert not broker.connected
