"""The simulated broker, driven only through the BrokerAdapter interface and a real channel."""

from __future__ import annotations

import statistics
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
    CancelRejected,
    DeniedLocally,
    OutcomeUnknown,
    SubmitRequest,
)
from adapters.simulated.config import (
    InstrumentConfig,
    LatencyConfig,
    MarketConfig,
    SimulatedBrokerConfig,
    default_brokers,
)
from adapters.simulated.market import SimulatedMarket
from adapters.simulated.venue import VENUE_REJECT_REASONS, SimulatedBroker
from api.contracts import CommissionStructure
from api.enums import (
    AssetClass,
    BrokerFeature,
    BrokerOrderStatus,
    ExecutionStrategy,
    OrderType,
    Side,
    TimeInForce,
    Urgency,
)
from api.events import AnyBrokerEvent, OrderAccepted, OrderCanceled, OrderExpired, OrderFilled
from api.lifecycle import apply_event
from api.orders import BrokerOrder

D = Decimal
T0 = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)
Events = trio.MemoryReceiveChannel[AnyBrokerEvent]


def make_market() -> SimulatedMarket:
    def instrument(symbol: str, asset_class: AssetClass, price: str, tick: str) -> InstrumentConfig:
        return InstrumentConfig(
            symbol=symbol,
            asset_class=asset_class,
            price=D(price),
            spread_bps=D(2),
            volatility_bps=D(1),
            top_size=D(100),
            tick_size=D(tick),
            trade_probability=0.0,
        )

    config = MarketConfig(
        seed=1,
        tick_interval_ms=None,
        instruments=(
            instrument("AAPL", AssetClass.EQUITY, "100.00", "0.01"),
            instrument("EUR/USD", AssetClass.FOREX, "1.08000", "0.00001"),
            instrument("BTC-USD", AssetClass.CRYPTO, "65000.00", "0.01"),
        ),
    )
    market = SimulatedMarket(config, clock=lambda: T0)
    market.set_quote("AAPL", D("100.00"), D("100.02"))
    return market


def make_config(**changes: object) -> SimulatedBrokerConfig:
    config = SimulatedBrokerConfig(
        broker_id="sim-test",
        name="Simulated Test Broker",
        asset_classes=(AssetClass.EQUITY, AssetClass.CRYPTO),
        features=(BrokerFeature.MARKET_ORDERS, BrokerFeature.LIMIT_ORDERS, BrokerFeature.STOP_ORDERS),
        time_in_force=(TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC),
        commission=CommissionStructure(base_rate=D("0.0005"), min_commission=D("1")),
        venue="SIMX-T",
        seed=5,
    )
    return msgspec.structs.replace(config, **changes)


def make_broker(market: SimulatedMarket | None = None, **changes: object) -> SimulatedBroker:
    return SimulatedBroker(make_config(**changes), market or make_market())


def order(
    client_order_id: str = "c1",
    *,
    side: Side = Side.BUY,
    order_type: OrderType = OrderType.MARKET,
    quantity: str = "10",
    tif: TimeInForce = TimeInForce.DAY,
    symbol: str = "AAPL",
    asset_class: AssetClass = AssetClass.EQUITY,
    price: str | None = None,
    stop: str | None = None,
) -> SubmitRequest:
    return SubmitRequest(
        client_order_id=client_order_id,
        account_id="acct-1",
        symbol=symbol,
        asset_class=asset_class,
        side=side,
        order_type=order_type,
        quantity=D(quantity),
        time_in_force=tif,
        price=None if price is None else D(price),
        stop_price=None if stop is None else D(stop),
    )


@asynccontextmanager
async def connected(broker: SimulatedBroker, buffer: float = 10_000) -> AsyncIterator[Events]:
    send, receive = trio.open_memory_channel[AnyBrokerEvent](buffer)
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.run, send)
        yield receive
        nursery.cancel_scope.cancel()


async def received(events: Events) -> list[AnyBrokerEvent]:
    """Everything delivered so far (after the forwarding task has run)."""
    await trio.testing.wait_all_tasks_blocked()
    out = []
    while True:
        try:
            out.append(events.receive_nowait())
        except trio.WouldBlock:
            return out


def kinds(events: list[AnyBrokerEvent]) -> list[type]:
    return [type(e) for e in events]


def broker_order(request: SubmitRequest) -> BrokerOrder:
    return BrokerOrder(
        id="exec-1",
        order_id="ord-1",
        broker_id="sim-test",
        client_order_id=request.client_order_id,
        account_id=request.account_id,
        symbol=request.symbol,
        side=request.side,
        order_type=request.order_type,
        quantity=request.quantity,
        time_in_force=request.time_in_force,
        execution_strategy=ExecutionStrategy.SMART,
        urgency=Urgency.MEDIUM,
        created_at=T0,
        updated_at=T0,
        price=request.price,
        stop_price=request.stop_price,
    )


def replay(request: SubmitRequest, events: list[AnyBrokerEvent]) -> BrokerOrder:
    state = broker_order(request)
    for event in events:
        state = apply_event(state, event).order
    return state


# --- the interface ---------------------------------------------------------------------


def test_implements_the_adapter_protocol_with_its_configured_capabilities() -> None:
    broker = make_broker()
    adapter: BrokerAdapter = broker
    assert isinstance(adapter, BrokerAdapter)
    assert adapter.broker_id == "sim-test"
    assert adapter.capabilities.asset_classes == {AssetClass.EQUITY, AssetClass.CRYPTO}
    assert adapter.capabilities.supports(AssetClass.EQUITY, OrderType.STOP_LIMIT, TimeInForce.DAY)
    assert adapter.commission.base_rate == D("0.0005")
    assert "sim-test disconnected" in repr(broker)


async def test_submit_market_order_acks_and_streams_accept_then_fill() -> None:
    broker = make_broker()
    async with connected(broker) as events:
        assert broker.connected
        ack = await broker.submit(order())
        assert ack.at == T0
        got = await received(events)
    assert kinds(got) == [OrderAccepted, OrderFilled]
    accepted, fill = got
    assert isinstance(accepted, OrderAccepted)
    assert isinstance(fill, OrderFilled)
    assert accepted.broker_order_id == ack.broker_order_id == fill.broker_order_id
    assert (fill.quantity, fill.price, fill.venue) == (D(10), D("100.02"), "SIMX-T")
    assert fill.fee == D("1.00000000")  # 1,000.20 at 5 bps is below the minimum
    assert fill.fill_id.startswith("sim-test-")
    assert not broker.connected


async def test_submit_before_run_is_denied_locally() -> None:
    broker = make_broker()
    with pytest.raises(DeniedLocally, match="not connected"):
        await broker.submit(order())
    with pytest.raises(DeniedLocally, match="not connected"):
        await broker.cancel("c1")
    with pytest.raises(DeniedLocally, match="not connected"):
        await broker.query("c1")


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (order(symbol="EUR/USD", asset_class=AssetClass.FOREX), "does not trade FOREX"),
        (order(order_type=OrderType.STOP_LIMIT, price="1", stop="1"), "does not support STOP_LIMIT orders"),
        (order(tif=TimeInForce.FOK), "does not support time in force FOK"),
        (order(symbol="TSLA"), "unknown symbol TSLA"),
        (order(symbol="BTC-USD"), "BTC-USD is CRYPTO, not EQUITY"),
        (order(order_type=OrderType.LIMIT), "LIMIT order needs a limit price"),
        (order(quantity="0"), "quantity must be positive"),
    ],
)
async def test_refused_orders_raise_broker_rejected_and_leave_no_trace(
    request_: SubmitRequest, reason: str
) -> None:
    broker = make_broker()
    async with connected(broker) as events:
        with pytest.raises(BrokerRejected) as raised:
            await broker.submit(request_)
        assert raised.value.reason == reason
        assert await broker.query(request_.client_order_id) is None
        assert await received(events) == []


async def test_a_reused_client_order_id_is_rejected_even_after_the_first_order_filled() -> None:
    broker = make_broker()
    async with connected(broker) as events:
        await broker.submit(order("dup"))
        with pytest.raises(BrokerRejected, match="duplicate client order id dup"):
            await broker.submit(order("dup", side=Side.SELL))
        assert kinds(await received(events)) == [OrderAccepted, OrderFilled]


async def test_reject_rate_refuses_valid_orders_with_a_venue_reason() -> None:
    broker = make_broker(reject_rate=1.0)
    async with connected(broker):
        with pytest.raises(BrokerRejected) as raised:
            await broker.submit(order())
        assert raised.value.reason in VENUE_REJECT_REASONS
        assert await broker.query("c1") is None


async def test_a_small_reject_rate_rejects_about_that_share() -> None:
    broker = make_broker(reject_rate=0.1)
    rejected = 0
    async with connected(broker):
        for n in range(1000):
            try:
                await broker.submit(
                    order(f"c{n}", order_type=OrderType.LIMIT, price="1.00", tif=TimeInForce.GTC)
                )
            except BrokerRejected:
                rejected += 1
    assert 60 < rejected < 140


# --- cancel and query ------------------------------------------------------------------


async def test_cancel_open_order_streams_canceled_and_is_idempotent() -> None:
    broker = make_broker()
    async with connected(broker) as events:
        await broker.submit(order(order_type=OrderType.LIMIT, price="99.00", tif=TimeInForce.GTC))
        await broker.cancel("c1")
        await broker.cancel("c1")
        got = await received(events)
        snapshot = await broker.query("c1")
    assert kinds(got) == [OrderAccepted, OrderCanceled]
    assert snapshot is not None
    assert snapshot.status is BrokerOrderStatus.CANCELED


async def test_cancel_filled_or_unknown_order_is_rejected() -> None:
    broker = make_broker()
    async with connected(broker):
        await broker.submit(order())
        with pytest.raises(CancelRejected, match="order already filled"):
            await broker.cancel("c1")
        with pytest.raises(CancelRejected, match="unknown order"):
            await broker.cancel("never-sent")


async def test_query_reports_the_venues_view() -> None:
    market = make_market()
    broker = SimulatedBroker(make_config(liquidity_share=D("0.5")), market)
    async with connected(broker):
        ack = await broker.submit(order(quantity="80"))
        partial = await broker.query("c1")
        market.set_quote("AAPL", D("100.00"), D("100.04"))
        filled = await broker.query("c1")
        assert await broker.query("unknown") is None
    assert partial is not None
    assert filled is not None
    assert (partial.status, partial.filled_quantity, partial.average_price) == (
        BrokerOrderStatus.PARTIALLY_FILLED,
        D(50),
        D("100.02"),
    )
    assert (filled.status, filled.filled_quantity, filled.average_price) == (
        BrokerOrderStatus.FILLED,
        D(80),
        D("100.0275"),
    )
    assert filled.broker_order_id == ack.broker_order_id


# --- the market drives resting orders --------------------------------------------------


async def test_resting_limit_fills_when_the_market_comes_to_it() -> None:
    market = make_market()
    broker = SimulatedBroker(make_config(), market)
    async with connected(broker) as events:
        await broker.submit(order(order_type=OrderType.LIMIT, price="99.50", tif=TimeInForce.GTC))
        market.tick()  # a small random step: still far from 99.50
        assert kinds(await received(events)) == [OrderAccepted]
        market.set_quote("AAPL", D("99.45"), D("99.48"))
        (fill,) = await received(events)
    assert isinstance(fill, OrderFilled)
    assert (fill.quantity, fill.price) == (D(10), D("99.48"))


async def test_stop_triggered_by_a_trade_print() -> None:
    market = make_market()
    broker = SimulatedBroker(make_config(), market)
    async with connected(broker) as events:
        await broker.submit(
            order(side=Side.SELL, order_type=OrderType.STOP, stop="99.00", tif=TimeInForce.GTC)
        )
        market.print_trade("AAPL", D("99.00"), D("5"))
        got = await received(events)
    assert kinds(got) == [OrderAccepted, OrderFilled]
    assert isinstance(got[1], OrderFilled)
    assert got[1].price == D("100.00")


async def test_end_of_day_expires_day_orders_and_keeps_gtc() -> None:
    broker = make_broker()
    async with connected(broker) as events:
        await broker.submit(order("day", order_type=OrderType.LIMIT, price="90.00", tif=TimeInForce.DAY))
        await broker.submit(order("gtc", order_type=OrderType.LIMIT, price="90.00", tif=TimeInForce.GTC))
        broker.end_of_day()
        got = await received(events)
        gtc = await broker.query("gtc")
    assert [(type(e), e.client_order_id) for e in got[2:]] == [(OrderExpired, "day")]
    assert gtc is not None
    assert gtc.status is BrokerOrderStatus.ACCEPTED


async def test_a_reconnected_venue_catches_up_with_the_market() -> None:
    market = make_market()
    broker = SimulatedBroker(make_config(), market)
    async with connected(broker) as events:
        await broker.submit(order(order_type=OrderType.LIMIT, price="99.50", tif=TimeInForce.GTC))
        assert kinds(await received(events)) == [OrderAccepted]
    market.set_quote("AAPL", D("99.40"), D("99.45"))  # while disconnected: unseen
    snapshot = broker.engine.snapshot("c1")
    assert snapshot is not None
    assert snapshot.status is BrokerOrderStatus.ACCEPTED
    async with connected(broker) as events:
        got = await received(events)
    assert kinds(got) == [OrderFilled]


async def test_run_is_one_at_a_time() -> None:
    broker = make_broker()
    async with connected(broker):
        send, _ = trio.open_memory_channel[AnyBrokerEvent](1)
        with pytest.raises(RuntimeError, match="already active"):
            await broker.run(send)
        assert broker.connected


async def test_a_slow_consumer_loses_no_events() -> None:
    broker = make_broker()
    async with connected(broker, buffer=0) as events:
        for n in range(200):
            await broker.submit(order(f"c{n}"))
        got: list[AnyBrokerEvent] = []
        with trio.move_on_after(5):
            while len(got) < 400:
                got.append(await events.receive())
    assert len(got) == 400
    assert [e.client_order_id for e in got[:2]] == ["c0", "c0"]


async def test_fill_ids_of_two_lives_of_the_same_broker_never_collide() -> None:
    market = make_market()
    first, second = SimulatedBroker(make_config(), market), SimulatedBroker(make_config(), market)
    fill_ids = []
    for broker in (first, second):
        async with connected(broker) as events:
            await broker.submit(order())
            fill_ids += [e.fill_id for e in await received(events) if isinstance(e, OrderFilled)]
    assert len(fill_ids) == len(set(fill_ids)) == 2


# --- latency ---------------------------------------------------------------------------


async def test_zero_latency_requests_complete_without_a_checkpoint() -> None:
    broker = make_broker()
    async with connected(broker):
        with trio.testing.assert_no_checkpoints():
            await broker.submit(order())
            await broker.submit(order("c2", order_type=OrderType.LIMIT, price="90.00", tif=TimeInForce.GTC))
            await broker.cancel("c2")
            await broker.query("c1")


async def test_latency_and_connect_time_are_honoured(autojump_clock: trio.testing.MockClock) -> None:
    broker = make_broker(latency=LatencyConfig(median_ms=20.0, connect_ms=150.0))
    start = trio.current_time()
    async with connected(broker):
        assert trio.current_time() - start == pytest.approx(0.150)
        before = trio.current_time()
        await broker.submit(order())
        assert trio.current_time() - before == pytest.approx(0.020)
        before = trio.current_time()
        await broker.query("c1")
        assert trio.current_time() - before == pytest.approx(0.020)


async def test_a_deadline_on_the_way_back_leaves_an_order_the_venue_accepted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = make_broker(latency=LatencyConfig(median_ms=20.0))
    async with connected(broker) as events:
        with trio.move_on_after(0.015) as scope:
            await broker.submit(order())
        assert scope.cancelled_caught
        snapshot = await broker.query("c1")
        assert kinds(await received(events)) == [OrderAccepted, OrderFilled]
    assert snapshot is not None
    assert snapshot.status is BrokerOrderStatus.FILLED


async def test_a_deadline_on_the_way_there_leaves_nothing_at_the_venue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = make_broker(latency=LatencyConfig(median_ms=20.0))
    async with connected(broker) as events:
        with trio.move_on_after(0.005):
            await broker.submit(order())
        assert await broker.query("c1") is None
        assert await received(events) == []


@pytest.mark.parametrize(("drop_after", "reached_venue"), [(0.005, False), (0.015, True)])
async def test_a_disconnect_in_flight_makes_the_outcome_unknown(
    autojump_clock: trio.testing.MockClock, drop_after: float, reached_venue: bool
) -> None:
    broker = make_broker(latency=LatencyConfig(median_ms=20.0))
    send, _receive = trio.open_memory_channel[AnyBrokerEvent](100)
    outcome: list[BaseException] = []

    async def submit() -> None:
        try:
            await broker.submit(order())
        except OutcomeUnknown as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        connection = trio.CancelScope()

        async def run() -> None:
            with connection:
                await broker.run(send)

        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(submit)
        await trio.sleep(drop_after)
        connection.cancel()
    assert len(outcome) == 1
    async with connected(broker):
        snapshot = await broker.query("c1")
    assert (snapshot is not None) is reached_venue


def test_latency_samples_are_lognormal_around_the_median() -> None:
    broker = make_broker(latency=LatencyConfig(median_ms=10.0, sigma=0.5))
    samples = [broker.sample_latency() for _ in range(4000)]
    assert statistics.median(samples) == pytest.approx(0.010, rel=0.05)
    assert min(samples) > 0
    assert statistics.quantiles(samples, n=100)[94] == pytest.approx(0.010 * 2.276, rel=0.1)  # e^(1.645*0.5)


# --- the events drive the order state machine ------------------------------------------


async def test_events_drive_the_state_machine_to_filled_through_partial_fills() -> None:
    market = make_market()
    broker = SimulatedBroker(make_config(liquidity_share=D("0.4")), market)
    request = order(quantity="100")
    async with connected(broker) as events:
        await broker.submit(request)
        market.set_quote("AAPL", D("100.01"), D("100.03"))
        market.set_quote("AAPL", D("100.02"), D("100.04"))
        got = await received(events)
    assert [e.quantity for e in got if isinstance(e, OrderFilled)] == [D(40), D(40), D(20)]
    final = replay(request, got)
    assert final.status is BrokerOrderStatus.FILLED
    assert final.filled_quantity == D(100)
    assert final.average_price == D("100.028")
    assert final.fees == sum((e.fee for e in got if isinstance(e, OrderFilled)), D(0))
    assert final.broker_order_id is not None


async def test_events_drive_the_state_machine_to_canceled() -> None:
    broker = make_broker()
    ioc = order("ioc", quantity="150", tif=TimeInForce.IOC)
    resting = order("gtc", order_type=OrderType.LIMIT, price="95.00", tif=TimeInForce.GTC)
    async with connected(broker) as events:
        await broker.submit(ioc)
        await broker.submit(resting)
        await broker.cancel("gtc")
        got = await received(events)
    ioc_final = replay(ioc, [e for e in got if e.client_order_id == "ioc"])
    gtc_final = replay(resting, [e for e in got if e.client_order_id == "gtc"])
    assert (ioc_final.status, ioc_final.filled_quantity) == (BrokerOrderStatus.CANCELED, D(100))
    assert (gtc_final.status, gtc_final.filled_quantity) == (BrokerOrderStatus.CANCELED, D(0))


# --- the embedded default --------------------------------------------------------------


def test_default_brokers_are_three_distinct_venues() -> None:
    brokers = default_brokers()
    assert len({b.broker_id for b in brokers}) == len({b.venue for b in brokers}) == 3
    assert len({b.commission for b in brokers}) == 3
    lowcost, fast, fx = brokers
    assert BrokerFeature.STOP_LIMIT_ORDERS not in lowcost.features
    assert lowcost.liquidity_share < 1
    assert fast.latency.median_ms < lowcost.latency.median_ms
    assert fx.commission.tiered_rates
    assert 0 < fx.reject_rate < 0.1
    assert set(fx.asset_classes) == {AssetClass.FOREX, AssetClass.EQUITY}


async def test_every_default_broker_trades_on_the_default_market(
    autojump_clock: trio.testing.MockClock,
) -> None:
    market = SimulatedMarket(MarketConfig(tick_interval_ms=None))
    for config in default_brokers():
        broker = SimulatedBroker(config, market)
        async with connected(broker) as events:
            for n in range(20):  # sim-fx rejects a few
                try:
                    await broker.submit(order(f"{config.broker_id}-{n}", quantity="1"))
                    break
                except BrokerRejected:
                    continue
            got = await received(events)
        assert kinds(got) == [OrderAccepted, OrderFilled], config.broker_id
        fill = got[1]
        assert isinstance(fill, OrderFilled)
        assert fill.venue == config.venue
        assert fill.fee >= config.commission.min_commission


async def test_sim_lowcost_refuses_stop_limit_orders(autojump_clock: trio.testing.MockClock) -> None:
    lowcost = default_brokers()[0]
    broker = SimulatedBroker(lowcost, SimulatedMarket(MarketConfig(tick_interval_ms=None)))
    async with connected(broker):
        with pytest.raises(BrokerRejected, match="STOP_LIMIT"):
            await broker.submit(order(order_type=OrderType.STOP_LIMIT, price="200", stop="199"))
