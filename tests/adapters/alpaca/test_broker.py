"""AlpacaBroker through the BrokerAdapter interface, against the emulator via alpaca-py."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import trio

from adapters.alpaca.broker import AlpacaBroker, build_alpaca_broker
from adapters.alpaca.config import AlpacaConfig, AlpacaCredentials
from adapters.base import (
    AuthenticationFailed,
    BrokerAdapter,
    BrokerRejected,
    CancelRejected,
    ConnectionLost,
    DeniedLocally,
    OutcomeUnknown,
    RateLimited,
    ServerError,
    SubmitRequest,
)
from api.contracts import CommissionStructure
from api.enums import AssetClass, BrokerFeature, BrokerOrderStatus, OrderType, Side, TimeInForce
from api.events import AnyBrokerEvent, OrderAccepted, OrderCanceled, OrderExpired, OrderFilled, OrderRejected
from tests.support.alpaca_emulator import AlpacaDriver, AlpacaEmulator, open_alpaca_adapter

D = Decimal


def order(
    client_order_id: str,
    *,
    order_type: OrderType = OrderType.LIMIT,
    quantity: str = "10",
    price: str | None = "99.00",
    symbol: str = "AAPL",
    asset_class: AssetClass = AssetClass.EQUITY,
    tif: TimeInForce = TimeInForce.DAY,
    side: Side = Side.BUY,
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
        price=D(price) if price is not None and order_type.needs_price else None,
        stop_price=D("98.00") if order_type.needs_stop_price else None,
    )


def market(client_order_id: str, quantity: str = "10", **kw: object) -> SubmitRequest:
    return order(client_order_id, order_type=OrderType.MARKET, quantity=quantity, price=None, **kw)  # type: ignore[arg-type]


async def events_until(
    driver: AlpacaDriver, done: Callable[[AnyBrokerEvent], bool], timeout: float = 1.5
) -> list[AnyBrokerEvent]:
    seen: list[AnyBrokerEvent] = []
    with trio.fail_after(timeout):
        while not seen or not done(seen[-1]):
            seen.append(await driver.events.receive())
    return seen


# --- interface and configuration -------------------------------------------------------------


async def test_is_a_broker_adapter_with_alpacas_capabilities() -> None:
    async with open_alpaca_adapter() as (adapter, _driver):
        assert isinstance(adapter, BrokerAdapter)
        caps = adapter.capabilities
        assert caps.asset_classes == {AssetClass.EQUITY, AssetClass.CRYPTO}
        assert caps.features == {
            BrokerFeature.MARKET_ORDERS,
            BrokerFeature.LIMIT_ORDERS,
            BrokerFeature.STOP_ORDERS,
            BrokerFeature.STOP_LIMIT_ORDERS,
        }
        assert caps.time_in_force == set(TimeInForce)
        assert caps.rate_limits.requests_per_minute == 200
        assert adapter.commission == CommissionStructure(base_rate=D(0))
        assert "connected connections=1" in repr(adapter)


async def test_factory_reads_the_credentials_from_the_named_variables() -> None:
    emu = AlpacaEmulator()
    async with trio.open_nursery() as nursery:
        await nursery.start(emu.serve)
        config = emu.config(key_env="MY_KEY", secret_env="MY_SECRET")
        adapter = build_alpaca_broker(config, {"MY_KEY": emu.key_id, "MY_SECRET": emu.secret})
        await nursery.start(adapter.run, trio.open_memory_channel[AnyBrokerEvent](math.inf)[0])
        await adapter.heartbeat()
        with pytest.raises(ValueError, match="MY_SECRET"):
            build_alpaca_broker(config, {"MY_KEY": emu.key_id})
        nursery.cancel_scope.cancel()


# --- orders ----------------------------------------------------------------------------------


async def test_market_order_fills_at_once() -> None:
    async with open_alpaca_adapter(market_price=D("101.25")) as (adapter, driver):
        ack = await adapter.submit(market("m-1", "10"))
        events = await events_until(driver, lambda e: isinstance(e, OrderFilled))
        accepted, filled = events
        assert isinstance(accepted, OrderAccepted) and accepted.broker_order_id == ack.broker_order_id
        assert isinstance(filled, OrderFilled)
        assert (filled.quantity, filled.price, filled.fee, filled.venue) == (
            D(10),
            D("101.25"),
            D(0),
            "ALPACA",
        )
        assert filled.fill_id == f"{ack.broker_order_id}:10"
        snapshot = await adapter.query("m-1")
        assert snapshot is not None
        assert (snapshot.status, snapshot.filled_quantity, snapshot.average_price) == (
            BrokerOrderStatus.FILLED,
            D(10),
            D("101.25"),
        )
        assert driver.emulator.posts["m-1"] == 1


async def test_partial_fills_each_arrive_once_with_their_own_quantity() -> None:
    async with open_alpaca_adapter(partial_fills=3) as (adapter, driver):
        ack = await adapter.submit(market("m-1", "10"))
        events = await events_until(
            driver, lambda e: isinstance(e, OrderFilled) and e.fill_id.endswith(":10")
        )
        fills = [e for e in events if isinstance(e, OrderFilled)]
        assert [f.quantity for f in fills] == [D(3), D(3), D(4)]
        assert [f.fill_id for f in fills] == [f"{ack.broker_order_id}:{n}" for n in (3, 6, 10)]


async def test_resting_limit_order_fills_when_the_market_reaches_it() -> None:
    async with open_alpaca_adapter() as (adapter, driver):
        await adapter.submit(order("l-1", quantity="5", price="99.00"))
        assert isinstance(await driver.next_event(), OrderAccepted)
        driver.fill("l-1", D(2), D("98.90"))
        first = await driver.next_event()
        assert isinstance(first, OrderFilled) and (first.quantity, first.price) == (D(2), D("98.90"))
        partial = await adapter.query("l-1")
        assert partial is not None and partial.status is BrokerOrderStatus.PARTIALLY_FILLED
        driver.fill("l-1", D(3), D("99.00"))
        second = await driver.next_event()
        assert isinstance(second, OrderFilled) and second.quantity == D(3)
        done = await adapter.query("l-1")
        assert done is not None and done.status is BrokerOrderStatus.FILLED
        assert done.average_price == D("98.96")


async def test_fractional_crypto_quantities_are_exact() -> None:
    async with open_alpaca_adapter(market_price=D("65000.01")) as (adapter, driver):
        request = market(
            "btc-1", "0.123456789", symbol="BTC-USD", asset_class=AssetClass.CRYPTO, tif=TimeInForce.GTC
        )
        await adapter.submit(request)
        events = await events_until(driver, lambda e: isinstance(e, OrderFilled))
        fill = events[-1]
        assert isinstance(fill, OrderFilled) and fill.quantity == D("0.123456789")
        placed = driver.emulator.order("btc-1")
        assert (placed.symbol, placed.qty) == ("BTC/USD", D("0.123456789"))


async def test_commission_from_config_is_charged_on_fills() -> None:
    fee = CommissionStructure(base_rate=D("0.001"), min_commission=D("1"))
    async with open_alpaca_adapter(commission=fee) as (adapter, driver):
        await adapter.submit(market("m-1", "10"))
        fill = (await events_until(driver, lambda e: isinstance(e, OrderFilled)))[-1]
        assert isinstance(fill, OrderFilled) and fill.fee == D("1.00000000")  # 1000 notional * 10 bps


async def test_order_above_buying_power_is_rejected_and_nothing_exists() -> None:
    async with open_alpaca_adapter(reject_quantity=D(100)) as (adapter, driver):
        with pytest.raises(BrokerRejected, match="insufficient buying power"):
            await adapter.submit(market("big", "101"))
        assert await adapter.query("big") is None
        assert driver.emulator.posts["big"] == 1


async def test_invalid_order_is_rejected() -> None:
    async with open_alpaca_adapter() as (adapter, _driver):
        with pytest.raises(BrokerRejected, match="422"):
            await adapter.submit(market("x-1", symbol="NOSUCH"))


async def test_orders_alpaca_cannot_take_are_denied_before_sending() -> None:
    async with open_alpaca_adapter() as (adapter, driver):
        crypto_day = market("c-1", "1", symbol="BTC-USD", asset_class=AssetClass.CRYPTO)
        with pytest.raises(DeniedLocally, match="GTC and IOC"):
            await adapter.submit(crypto_day)
        assert driver.emulator.posts["c-1"] == 0


async def test_not_connected_denies_orders_but_still_answers_queries() -> None:
    emu = AlpacaEmulator()
    async with trio.open_nursery() as nursery:
        await nursery.start(emu.serve)
        adapter = AlpacaBroker(emu.config(), emu.credentials)
        with pytest.raises(DeniedLocally, match="not connected"):
            await adapter.submit(market("m-1"))
        with pytest.raises(ConnectionLost):
            await adapter.heartbeat()
        assert await adapter.query("m-1") is None
        assert emu.posts["m-1"] == 0
        nursery.cancel_scope.cancel()


async def test_stream_events_for_expiry_and_late_rejection() -> None:
    async with open_alpaca_adapter() as (adapter, driver):
        await adapter.submit(order("day-1"))
        await adapter.submit(order("rej-1"))
        await events_until(driver, lambda e: e.client_order_id == "rej-1")
        driver.emulator.expire("day-1")
        driver.emulator.reject("rej-1")
        expired, rejected = await driver.next_event(), await driver.next_event()
        assert isinstance(expired, OrderExpired) and expired.client_order_id == "day-1"
        assert isinstance(rejected, OrderRejected) and rejected.client_order_id == "rej-1"
        snapshot = await adapter.query("day-1")
        assert snapshot is not None and snapshot.status is BrokerOrderStatus.EXPIRED


async def test_unfilled_ioc_limit_is_canceled() -> None:
    async with open_alpaca_adapter() as (adapter, driver):
        await adapter.submit(order("ioc-1", tif=TimeInForce.IOC))
        events = await events_until(driver, lambda e: isinstance(e, OrderCanceled))
        assert [type(e) for e in events] == [OrderAccepted, OrderCanceled]
        snapshot = await adapter.query("ioc-1")
        assert snapshot is not None and snapshot.status is BrokerOrderStatus.CANCELED


# --- cancel and query ------------------------------------------------------------------------


async def test_cancel_a_resting_order_and_again() -> None:
    async with open_alpaca_adapter() as (adapter, driver):
        await adapter.submit(order("l-1"))
        await adapter.cancel("l-1")
        events = await events_until(driver, lambda e: isinstance(e, OrderCanceled))
        assert isinstance(events[-1], OrderCanceled) and events[-1].client_order_id == "l-1"
        await adapter.cancel("l-1")  # idempotent: already canceled is not an error
        snapshot = await adapter.query("l-1")
        assert snapshot is not None and snapshot.status is BrokerOrderStatus.CANCELED
        assert driver.pending_events() == []  # and no second OrderCanceled


async def test_cancel_of_a_filled_or_unknown_order_is_rejected() -> None:
    async with open_alpaca_adapter() as (adapter, driver):
        await adapter.submit(market("m-1"))
        await events_until(driver, lambda e: isinstance(e, OrderFilled))
        with pytest.raises(CancelRejected, match="filled"):
            await adapter.cancel("m-1")
        with pytest.raises(CancelRejected, match="unknown order"):
            await adapter.cancel("never-sent")


async def test_query_of_an_unknown_order_is_none() -> None:
    async with open_alpaca_adapter() as (adapter, _driver):
        assert await adapter.query("never-sent") is None


async def test_query_that_times_out_is_unknown_not_none() -> None:
    async with open_alpaca_adapter(request_timeout=0.2) as (adapter, driver):
        driver.emulator.delay_next("GET", "/v2/orders:by_client_order_id", 0.6)
        with pytest.raises(OutcomeUnknown):
            await adapter.query("maybe")


async def test_open_orders_and_fills_since() -> None:
    async with open_alpaca_adapter() as (adapter, driver):
        for client_order_id in ("a", "b", "c"):
            await adapter.submit(order(client_order_id))
        await adapter.submit(market("m"))
        driver.fill("b", D(4), D("98.50"))
        streamed = await events_until(
            driver, lambda e: isinstance(e, OrderFilled) and e.client_order_id == "b"
        )
        open_now = {s.client_order_id: s for s in await adapter.open_orders()}
        assert set(open_now) == {"a", "b", "c"}
        assert open_now["a"].status is BrokerOrderStatus.ACCEPTED
        assert (open_now["b"].status, open_now["b"].filled_quantity) == (
            BrokerOrderStatus.PARTIALLY_FILLED,
            D(4),
        )
        recovered = await adapter.fills_since(datetime.now(UTC) - timedelta(minutes=1))
        stream_fills = [e for e in streamed if isinstance(e, OrderFilled)]
        assert [f.fill_id for f in recovered] == [f.fill_id for f in stream_fills]
        assert [(f.client_order_id, f.quantity, f.price) for f in recovered] == [
            ("m", D(10), D("100.00")),
            ("b", D(4), D("98.50")),
        ]
        later = await adapter.fills_since(recovered[-1].at)
        assert [f.fill_id for f in later] == [recovered[-1].fill_id]  # "at or after"


# --- ambiguous submissions -------------------------------------------------------------------


async def test_429_on_submit_not_created() -> None:
    async with open_alpaca_adapter() as (adapter, driver):
        driver.emulator.fail_next_post(429)
        with pytest.raises(RateLimited) as limited:
            await adapter.submit(market("r-1"))
        assert limited.value.retry_after is not None and 0 <= limited.value.retry_after <= 2
        assert driver.emulator.posts["r-1"] == 1
        assert await adapter.query("r-1") is None


async def test_429_on_submit_after_the_order_was_created_is_found_by_query() -> None:
    async with open_alpaca_adapter() as (adapter, driver):
        driver.emulator.fail_next_post(429, create_anyway=True)
        with pytest.raises(RateLimited):
            await adapter.submit(market("r-1"))
        assert driver.emulator.posts["r-1"] == 1
        snapshot = await adapter.query("r-1")
        assert snapshot is not None and snapshot.status is BrokerOrderStatus.FILLED
        assert len(driver.emulator.orders) == 1


async def test_504_after_the_order_was_created_is_adopted_not_duplicated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.alpaca")
    async with open_alpaca_adapter() as (adapter, driver):
        driver.emulator.fail_next_post(504, create_anyway=True)
        ack = await adapter.submit(order("g-1"))
        assert ack.broker_order_id == driver.emulator.order("g-1").id
        assert driver.emulator.posts["g-1"] == 1
        assert len(driver.emulator.orders) == 1
        assert "adopted" in caplog.text


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_without_an_order_is_server_error(status: int) -> None:
    async with open_alpaca_adapter() as (adapter, driver):
        driver.emulator.fail_next_post(status)
        with pytest.raises(ServerError, match=str(status)):
            await adapter.submit(order("g-1"))
        assert driver.emulator.posts["g-1"] == 1
        assert await adapter.query("g-1") is None


async def test_answer_lost_to_a_timeout_is_adopted() -> None:
    async with open_alpaca_adapter(request_timeout=0.2) as (adapter, driver):
        driver.emulator.delay_next("POST", "/v2/orders", 0.5)
        ack = await adapter.submit(order("slow-1"))
        assert ack.broker_order_id == driver.emulator.order("slow-1").id
        assert driver.emulator.posts["slow-1"] == 1


async def test_resubmitting_the_same_client_order_id_adopts_the_existing_order() -> None:
    async with open_alpaca_adapter() as (adapter, driver):
        first = await adapter.submit(order("dup-1"))
        again = await adapter.submit(order("dup-1"))
        assert again.broker_order_id == first.broker_order_id
        assert driver.emulator.posts["dup-1"] == 2
        assert len(driver.emulator.orders) == 1


async def test_client_order_id_held_by_a_different_order_is_unknown() -> None:
    async with open_alpaca_adapter() as (adapter, _driver):
        await adapter.submit(order("dup-1", quantity="10"))
        with pytest.raises(OutcomeUnknown, match="held by an order"):
            await adapter.submit(order("dup-1", quantity="11"))


# --- connection and authentication -----------------------------------------------------------


async def test_wrong_keys_fail_the_connection() -> None:
    emu = AlpacaEmulator()
    async with trio.open_nursery() as nursery:
        await nursery.start(emu.serve)
        adapter = AlpacaBroker(emu.config(), AlpacaCredentials(emu.key_id, "wrong-secret"))
        send, _ = trio.open_memory_channel[AnyBrokerEvent](math.inf)
        with pytest.raises(AuthenticationFailed, match="401"):
            await adapter.run(send)
        emu.reject_stream_auth = True
        adapter = AlpacaBroker(emu.config(), emu.credentials)
        with pytest.raises(AuthenticationFailed, match="verification failed"):
            await adapter.run(send)
        assert not adapter.connected
        nursery.cancel_scope.cancel()


async def test_revoked_keys() -> None:
    async with open_alpaca_adapter() as (adapter, driver):
        await adapter.heartbeat()
        driver.emulator.revoke_keys()
        with pytest.raises(AuthenticationFailed):
            await adapter.heartbeat()
        with pytest.raises(BrokerRejected, match="401"):
            await adapter.submit(order("x"))


async def test_unreachable_alpaca_is_connection_lost() -> None:
    with trio.socket.socket() as sock:  # a port nothing listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = AlpacaConfig(base_url=f"http://127.0.0.1:{port}", connect_timeout=0.5, request_timeout=0.5)
    adapter = AlpacaBroker(config, AlpacaCredentials("k", "s"))
    send, _ = trio.open_memory_channel[AnyBrokerEvent](math.inf)
    with pytest.raises(ConnectionLost):
        await adapter.run(send)


async def test_run_twice_at_once_is_a_bug() -> None:
    async with open_alpaca_adapter() as (adapter, _driver):
        send, _ = trio.open_memory_channel[AnyBrokerEvent](math.inf)
        with pytest.raises(RuntimeError, match="already active"):
            await adapter.run(send)
