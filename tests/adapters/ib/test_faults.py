"""What IB really does, against the loopback TWS peer: lost acknowledgements, restarts in the
middle of fills, connectivity codes, corrections, late commissions, pacing, refused client ids."""

from __future__ import annotations

from decimal import Decimal

import pytest
import trio
import trio_asyncio

from adapters.base import (
    AuthenticationFailed,
    BrokerRejected,
    CancelRejected,
    ConnectionLost,
    DeniedLocally,
    OutcomeUnknown,
)
from adapters.ib.broker import IbBroker
from api.enums import BrokerOrderStatus, ConnectionStatus, OrderType
from api.events import AnyBrokerEvent, OrderAccepted, OrderCanceled, OrderFilled, OrderRejected
from tests.adapters.ib.test_broker import coid, order
from tests.support.ib_harness import IbDriver, open_ib_adapter, peer_config
from tests.support.tws_peer import TwsPeer

RESTING = dict(order_type=OrderType.LIMIT, price=Decimal("99.00"))


def fills_of(events: list[AnyBrokerEvent], client_order_id: str) -> list[OrderFilled]:
    return [e for e in events if isinstance(e, OrderFilled) and e.client_order_id == client_order_id]


async def events_until(driver: IbDriver, done: object, timeout: float = 5.0) -> list[AnyBrokerEvent]:
    seen: list[AnyBrokerEvent] = []
    assert callable(done)
    with trio.fail_after(timeout):
        while not done(seen):
            seen.append(await driver.events.receive())
    return seen


async def reconnected(driver: IbDriver, connections: int) -> None:
    await driver.until(lambda: driver.connections >= connections and driver.connected.is_set())


def last_status(driver: IbDriver) -> ConnectionStatus | None:
    return driver.statuses[-1][0] if driver.statuses else None


# --- submission -------------------------------------------------------------------------------


async def test_an_order_whose_ack_is_lost_is_adopted_by_its_order_ref_never_sent_twice() -> None:
    async with open_ib_adapter() as (adapter, driver):
        request = order(coid(), **RESTING)
        driver.peer.lose_next_ack()
        ack = await adapter.submit(request)  # no openOrder/orderStatus: found by orderRef
        assert ack.broker_order_id == str(driver.peer.order(request.client_order_id).perm_id)
        assert await adapter.submit(request) == ack  # the same order again, not a second one
        assert len(driver.peer.orders_with_ref(request.client_order_id)) == 1
        assert len(driver.peer.messages(3)) == 1  # one placeOrder on the wire


async def test_a_restarted_adapter_recognises_its_orders_and_does_not_send_them_again() -> None:
    peer = TwsPeer()
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        await nursery.start(peer.serve)
        send, _receive = trio.open_memory_channel[AnyBrokerEvent](1000)
        request = order(coid(), **RESTING)
        acks = []
        for _ in range(2):  # the daemon crashed and came back: a fresh adapter, same client id
            adapter = IbBroker(peer_config(peer))
            async with trio.open_nursery() as connection:
                await connection.start(adapter.run, send)
                acks.append(await adapter.submit(request))
                connection.cancel_scope.cancel()
        assert acks[0].broker_order_id == acks[1].broker_order_id
        assert len(peer.orders_with_ref(request.client_order_id)) == 1
        assert len(peer.messages(3)) == 1
        nursery.cancel_scope.cancel()


async def test_a_refused_order_is_rejected_with_ibs_message() -> None:
    async with open_ib_adapter(reject_quantity=Decimal(100)) as (adapter, driver):
        request = order(coid(), quantity=Decimal(500))
        with pytest.raises(BrokerRejected, match="IB 201"):
            await adapter.submit(request)
        seen = await events_until(driver, lambda s: any(isinstance(e, OrderRejected) for e in s))
        rejected = [e for e in seen if isinstance(e, OrderRejected)]
        assert len(rejected) == 1 and "201" in rejected[0].reason
        assert not any(isinstance(e, OrderAccepted) for e in seen)
        snapshot = await adapter.query(request.client_order_id)
        assert snapshot is not None and snapshot.status is BrokerOrderStatus.REJECTED
        with pytest.raises(BrokerRejected):
            await adapter.submit(request)  # the same id again: the same answer, nothing sent
        assert len(driver.peer.messages(3)) == 1


@pytest.mark.parametrize("symbol", ["NOPE", "AMBIG"])
async def test_an_unknown_or_ambiguous_contract_is_a_refusal(symbol: str) -> None:
    async with open_ib_adapter() as (adapter, driver):
        with pytest.raises(BrokerRejected, match=r"200|ambiguous"):
            await adapter.submit(order(coid(), symbol=symbol))
        assert not driver.peer.messages(3)  # no order was placed


async def test_contracts_are_qualified_once_and_fx_and_crypto_map_to_idealpro_and_paxos() -> None:
    from api.enums import AssetClass, TimeInForce

    async with open_ib_adapter() as (adapter, driver):
        await adapter.submit(order(coid()))
        await adapter.submit(order(coid()))
        await adapter.submit(order(coid(), symbol="EUR/USD", asset_class=AssetClass.FOREX))
        await adapter.submit(
            order(coid(), symbol="BTC-USD", asset_class=AssetClass.CRYPTO, time_in_force=TimeInForce.IOC)
        )
        details = driver.peer.messages(9)
        assert [(m[4], m[5], m[10], m[12]) for m in details] == [
            ("AAPL", "STK", "SMART", "USD"),
            ("EUR", "CASH", "IDEALPRO", "USD"),
            ("BTC", "CRYPTO", "PAXOS", "USD"),
        ]
        with pytest.raises(DeniedLocally, match="FOK"):
            await adapter.submit(order(coid(), time_in_force=TimeInForce.FOK))


# --- cancels ----------------------------------------------------------------------------------


async def test_cancel_codes_202_10147_10148() -> None:
    async with open_ib_adapter() as (adapter, driver):
        peer = driver.peer
        resting = order(coid(), **RESTING)
        await adapter.submit(resting)
        await adapter.cancel(resting.client_order_id)  # orderStatus Cancelled + 202
        seen = await events_until(driver, lambda s: any(isinstance(e, OrderCanceled) for e in s))
        assert [e.client_order_id for e in seen if isinstance(e, OrderCanceled)] == [resting.client_order_id]

        filled = order(coid(), **RESTING)
        await adapter.submit(filled)
        peer.deliver = False  # the fill happens, its messages are lost
        peer.fill(filled.client_order_id, Decimal(10), Decimal("99.00"))
        peer.deliver = True
        with pytest.raises(CancelRejected, match="10148"):
            await adapter.cancel(filled.client_order_id)
        snapshot = await adapter.query(filled.client_order_id)
        assert snapshot is not None and snapshot.status is BrokerOrderStatus.FILLED

        with pytest.raises(CancelRejected, match="unknown"):
            await adapter.cancel(coid())
        assert peer.messages(4) and len(peer.messages(4)) == 2  # the unknown one is never sent


async def test_a_cancel_of_an_order_tws_does_not_know_is_refused_with_10147() -> None:
    async with open_ib_adapter() as (adapter, driver):
        peer = driver.peer
        request = order(coid(), **RESTING)
        await adapter.submit(request)
        placed = peer.order(request.client_order_id)
        del peer.orders[(placed.client_id, placed.order_id)]  # TWS lost it (a reset)
        with pytest.raises(CancelRejected, match="10147"):
            await adapter.cancel(request.client_order_id)


# --- fills ------------------------------------------------------------------------------------


async def test_commissions_are_joined_to_their_own_fills() -> None:
    async with open_ib_adapter() as (adapter, driver):
        small, large = order(coid(), **RESTING), order(coid(), quantity=Decimal(1000), **RESTING)
        await adapter.submit(small)
        await adapter.submit(large)
        driver.peer.fill(large.client_order_id, Decimal(1000), Decimal("99.00"))
        driver.peer.fill(small.client_order_id, Decimal(10), Decimal("99.00"))
        seen = await events_until(driver, lambda s: len([e for e in s if isinstance(e, OrderFilled)]) == 2)
        fees = {e.client_order_id: e.fee for e in seen if isinstance(e, OrderFilled)}
        assert fees == {large.client_order_id: Decimal(5), small.client_order_id: Decimal(1)}


async def test_a_missing_commission_report_falls_back_to_the_configured_commission() -> None:
    async with open_ib_adapter(commission_wait=0.2) as (adapter, driver):
        request = order(coid(), **RESTING)
        await adapter.submit(request)
        driver.peer.withhold_commissions = True
        driver.peer.fill(request.client_order_id, Decimal(10), Decimal("99.00"))
        seen = await events_until(driver, lambda s: bool(fills_of(s, request.client_order_id)))
        (fill,) = fills_of(seen, request.client_order_id)
        assert fill.fee == Decimal(1)  # max(min 1.00, 990 x 0.00005)


async def test_a_corrected_execution_is_one_fill() -> None:
    async with open_ib_adapter() as (adapter, driver):
        request = order(coid(), **RESTING)
        await adapter.submit(request)
        execution = driver.peer.fill(request.client_order_id, Decimal(10), Decimal("99.00"))
        seen = await events_until(driver, lambda s: bool(fills_of(s, request.client_order_id)))
        driver.peer.correct(execution.exec_id, Decimal("98.95"))  # ....01.02
        await driver.settled(adapter)
        assert not fills_of(driver.pending_events(), request.client_order_id)
        recovered = await adapter.fills_since(execution.at.replace(microsecond=0))
        assert [f.fill_id for f in recovered] == [f.fill_id for f in fills_of(seen, request.client_order_id)]


async def test_a_tws_restart_in_the_middle_of_fills_loses_nothing_and_repeats_nothing() -> None:
    async with open_ib_adapter() as (adapter, driver):
        peer = driver.peer
        request = order(coid(), quantity=Decimal(30), **RESTING)
        await adapter.submit(request)
        peer.fill(request.client_order_id, Decimal(10), Decimal("99.00"))
        first = await events_until(driver, lambda s: bool(fills_of(s, request.client_order_id)))
        with peer.outage():
            await driver.until(lambda: not adapter.connected)
            peer.fill(request.client_order_id, Decimal(15), Decimal("98.90"))  # nobody listens
        await reconnected(driver, 2)
        peer.fill(request.client_order_id, Decimal(5), Decimal("98.80"))
        later = await events_until(
            driver, lambda s: sum(f.quantity for f in fills_of(s, request.client_order_id)) >= 20
        )
        fills = fills_of(first + later, request.client_order_id)
        assert [f.quantity for f in fills] == [10, 15, 5]
        assert len({f.fill_id for f in fills}) == 3
        assert any(isinstance(e, ConnectionLost) for e in driver.run_failures)
        await driver.settled(adapter)
        assert not fills_of(driver.pending_events(), request.client_order_id)


async def test_executions_that_never_end_are_recovery_incomplete_not_no_fills() -> None:
    async with open_ib_adapter() as (adapter, driver):
        peer = driver.peer
        request = order(coid(), **RESTING)
        await adapter.submit(request)
        peer.hang_executions = True
        with peer.outage():
            await driver.until(lambda: not adapter.connected)
            peer.fill(request.client_order_id, Decimal(10), Decimal("99.00"))
        await driver.until(lambda: any("reqExecutions" in e.reason for e in driver.run_failures))
        assert not adapter.connected  # never reported connected with a gap behind it
        assert all(isinstance(e, OutcomeUnknown) for e in driver.run_failures)
        peer.hang_executions = False
        seen = await events_until(driver, lambda s: bool(fills_of(s, request.client_order_id)))
        assert [f.quantity for f in fills_of(seen, request.client_order_id)] == [10]


# --- connectivity codes -----------------------------------------------------------------------


async def test_1100_stops_orders_and_1101_recovers_the_fills_it_hid() -> None:
    async with open_ib_adapter() as (adapter, driver):
        peer = driver.peer
        request = order(coid(), **RESTING)
        await adapter.submit(request)
        peer.connectivity_lost()
        await driver.until(lambda: last_status(driver) is ConnectionStatus.DISCONNECTED)
        with pytest.raises(DeniedLocally, match="1100"):
            await adapter.submit(order(coid()))
        peer.fill(request.client_order_id, Decimal(10), Decimal("99.00"))  # dropped on the way
        await driver.settled(adapter)
        assert not fills_of(driver.pending_events(), request.client_order_id)
        peer.connectivity_restored(data_lost=True)
        seen = await events_until(driver, lambda s: bool(fills_of(s, request.client_order_id)))
        assert [f.quantity for f in fills_of(seen, request.client_order_id)] == [10]
        assert last_status(driver) is ConnectionStatus.CONNECTED
        await adapter.submit(order(coid()))  # orders flow again


async def test_farm_codes_degrade_and_restore_the_status() -> None:
    async with open_ib_adapter() as (adapter, driver):
        driver.peer.farm_status(2103, "Market data farm connection is broken:usfarm")
        await driver.until(lambda: last_status(driver) is ConnectionStatus.DEGRADED)
        assert "2103" in driver.statuses[-1][1]
        driver.peer.farm_status(2104, "Market data farm connection is OK:usfarm")
        await driver.until(lambda: last_status(driver) is ConnectionStatus.CONNECTED)
        await adapter.submit(order(coid()))  # degraded data never blocked orders


# --- connection -------------------------------------------------------------------------------


async def test_a_client_id_in_use_is_a_configuration_error_not_a_reconnect_loop() -> None:
    async with open_ib_adapter() as (_adapter, driver):
        peer = driver.peer
        twin = IbBroker(peer_config(peer, broker_id="ib-twin", connect_timeout=5.0))
        send, _receive = trio.open_memory_channel[AnyBrokerEvent](10)
        with trio.fail_after(2):  # refused at once, not after the 5 s handshake timeout
            with pytest.raises(AuthenticationFailed, match="326"):
                await twin.run(send)
        connects = len(peer.messages(71))
        with pytest.raises(AuthenticationFailed, match="326"):
            await twin.run(send)  # within client_id_retry: not even tried
        assert len(peer.messages(71)) == connects


@pytest.mark.parametrize("version", [160, 170, 176, 178])
async def test_every_server_version_ib_async_speaks_works(version: int) -> None:
    async with open_ib_adapter(max_version=version) as (adapter, driver):
        assert driver.peer.connections[0].version == version
        request = order(coid())
        await adapter.submit(request)
        seen = await events_until(driver, lambda s: bool(fills_of(s, request.client_order_id)))
        assert fills_of(seen, request.client_order_id)[0].fee == Decimal(1)
        resting = order(coid(), **RESTING)
        await adapter.submit(resting)
        assert resting.client_order_id in {o.client_order_id for o in await adapter.open_orders()}
        snapshot = await adapter.query(request.client_order_id)
        assert snapshot is not None and snapshot.status is BrokerOrderStatus.FILLED


async def test_pacing_is_never_exceeded() -> None:
    async with open_ib_adapter() as (adapter, driver):
        async with trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(adapter.submit, order(coid(), **RESTING))
        assert len(driver.peer.messages(3)) == 100
        assert driver.peer.pacing_violations == 0 and driver.peer.max_rate <= 50
