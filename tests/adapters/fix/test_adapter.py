"""The FIX adapter through the BrokerAdapter interface, against the acceptor acting as a broker:
submit (fill, partials, reject), cancel (and its reject), query, reconnects during fills, the
local record (open orders, fills since), and the errors at the boundary."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import trio
import trio.testing

from adapters.base import (
    BrokerAdapter,
    BrokerRejected,
    CancelRejected,
    ConnectionLost,
    DeniedLocally,
    OutcomeUnknown,
    SubmitRequest,
)
from adapters.fix import CommissionReporting, FixBroker, build_fix_broker
from api.enums import AssetClass, BrokerFeature, BrokerOrderStatus, OrderType, Side, TimeInForce
from api.events import AnyBrokerEvent, OrderAccepted, OrderCanceled, OrderFilled, OrderRejected
from tests.support.fix_acceptor import FixAcceptor, fix_config_for, keep_running, open_fix_adapter, running

D = Decimal
Events = trio.MemoryReceiveChannel[AnyBrokerEvent]


def order(
    client_order_id: str,
    *,
    order_type: OrderType = OrderType.LIMIT,
    quantity: str = "10",
    price: str | None = "99.5",
    tif: TimeInForce = TimeInForce.DAY,
) -> SubmitRequest:
    return SubmitRequest(
        client_order_id=client_order_id,
        account_id="acct-1",
        symbol="MSFT",
        asset_class=AssetClass.EQUITY,
        side=Side.SELL,
        order_type=order_type,
        quantity=D(quantity),
        time_in_force=tif,
        price=D(price) if price is not None and order_type is not OrderType.MARKET else None,
    )


async def take(events: Events, n: int) -> list[AnyBrokerEvent]:
    with trio.fail_after(2):
        return [await events.receive() for _ in range(n)]


async def nothing_more(adapter: FixBroker, events: Events) -> None:
    """Everything the broker sent before now has been processed (a TestRequest round trip
    comes after it), and none of it was another event."""
    await adapter.heartbeat()
    await trio.testing.wait_all_tasks_blocked()
    assert events.statistics().current_buffer_used == 0


async def test_the_adapter_implements_the_protocol(adapter: FixBroker) -> None:
    assert isinstance(adapter, BrokerAdapter)


# --- submit -----------------------------------------------------------------------------------


async def test_market_order_is_acknowledged_then_filled(acceptor: FixAcceptor, adapter: FixBroker) -> None:
    async with running(adapter) as events:
        ack = await adapter.submit(order("mkt-1", order_type=OrderType.MARKET, quantity="10"))
        broker_order = acceptor.orders["mkt-1"]
        assert ack.broker_order_id == broker_order.order_id
        accepted, filled = await take(events, 2)
        assert accepted == OrderAccepted("mkt-1", accepted.at, broker_order_id=broker_order.order_id)
        assert isinstance(filled, OrderFilled)
        assert (filled.quantity, filled.price, filled.fee, filled.venue) == (D(10), D(100), D("1.00"), "XTST")
        assert filled.broker_order_id == broker_order.order_id
        assert filled.fill_id.startswith("X")
        new_order = acceptor.received_of("D")[0]
        assert [(t, new_order.get(t)) for t in (11, 1, 55, 54, 38, 40, 59)] == [
            (11, "mkt-1"),
            (1, "ACC-1"),
            (55, "MSFT"),
            (54, "2"),
            (38, "10"),
            (40, "1"),
            (59, "0"),
        ]
        assert new_order.get(44) is None and new_order.get(60)
        await nothing_more(adapter, events)


async def test_market_order_filled_in_partials(acceptor: FixAcceptor, adapter: FixBroker) -> None:
    acceptor.partials = 3
    async with running(adapter) as events:
        await adapter.submit(order("mkt-2", order_type=OrderType.MARKET, quantity="9"))
        fills = [e for e in await take(events, 4) if isinstance(e, OrderFilled)]
        assert [f.quantity for f in fills] == [D(3), D(3), D(3)]
        assert len({f.fill_id for f in fills}) == 3
        assert [f.fee for f in fills] == [D("0.30")] * 3
        snapshot = await adapter.query("mkt-2")
        assert snapshot is not None
        assert (snapshot.status, snapshot.filled_quantity, snapshot.average_price) == (
            BrokerOrderStatus.FILLED,
            D(9),
            D(100),
        )


async def test_cumulative_commission_is_reported_as_its_increase(
    acceptor: FixAcceptor, migrated_database_url: str
) -> None:
    acceptor.partials, acceptor.cumulative_commission = 2, True
    config = fix_config_for(acceptor, commission_reporting=CommissionReporting.CUMULATIVE)
    adapter = build_fix_broker(config, migrated_database_url)
    try:
        async with running(adapter) as events:
            await adapter.submit(order("cum-1", order_type=OrderType.MARKET, quantity="20"))
            fills = [e for e in await take(events, 3) if isinstance(e, OrderFilled)]
            assert [f.fee for f in fills] == [D("1.00"), D("1.00")]  # 12=1.00, then 12=2.00
    finally:
        await adapter.aclose()


async def test_order_over_the_size_limit_is_rejected(acceptor: FixAcceptor, adapter: FixBroker) -> None:
    async with running(adapter) as events:
        with pytest.raises(BrokerRejected, match="exceeds the limit"):
            await adapter.submit(order("big-1", quantity="5000"))
        [rejected] = await take(events, 1)
        assert isinstance(rejected, OrderRejected) and "exceeds the limit" in rejected.reason
        snapshot = await adapter.query("big-1")  # the broker knows it, as rejected
        assert snapshot is not None and snapshot.status is BrokerOrderStatus.REJECTED


async def test_business_message_reject_of_the_order_is_a_rejection(
    acceptor: FixAcceptor, adapter: FixBroker
) -> None:
    acceptor.business_reject_new_orders = "throttled"
    async with running(adapter):
        with pytest.raises(BrokerRejected, match="throttled"):
            await adapter.submit(order("biz-1"))


async def test_session_reject_of_the_order_is_a_rejection(acceptor: FixAcceptor, adapter: FixBroker) -> None:
    acceptor.session_reject_new_orders = "bad tag value"
    async with running(adapter):
        with pytest.raises(BrokerRejected, match="bad tag value"):
            await adapter.submit(order("rej-1"))


async def test_submit_when_not_logged_on_is_denied_locally(acceptor: FixAcceptor, adapter: FixBroker) -> None:
    with pytest.raises(DeniedLocally, match="not logged on"):
        await adapter.submit(order("idle-1"))
    assert acceptor.new_order_counts["idle-1"] == 0


async def test_unsupported_order_type_is_denied_locally(
    acceptor: FixAcceptor, migrated_database_url: str
) -> None:
    config = fix_config_for(acceptor, features=(BrokerFeature.MARKET_ORDERS,))
    adapter = build_fix_broker(config, migrated_database_url)
    try:
        async with running(adapter):
            with pytest.raises(DeniedLocally, match="LIMIT"):
                await adapter.submit(order("lim-1"))
        assert acceptor.new_order_counts["lim-1"] == 0
    finally:
        await adapter.aclose()


async def test_connection_lost_before_the_answer_is_an_unknown_outcome(
    acceptor: FixAcceptor, adapter: FixBroker, nursery: trio.Nursery
) -> None:
    acceptor.ignore_new_orders = True  # received, never answered
    send, _ = trio.open_memory_channel[AnyBrokerEvent](math.inf)
    await nursery.start(keep_running, adapter, send)

    async def drop_once_received() -> None:
        await acceptor.wait_for(lambda: acceptor.new_order_counts["lost-1"] == 1)
        await acceptor.disconnect()

    nursery.start_soon(drop_once_received)
    with pytest.raises(ConnectionLost):
        await adapter.submit(order("lost-1"))


async def test_a_second_submit_of_the_same_order_is_never_sent(
    acceptor: FixAcceptor, adapter: FixBroker
) -> None:
    async with running(adapter):
        await adapter.submit(order("once-1"))
        with pytest.raises(OutcomeUnknown, match="already sent"):
            await adapter.submit(order("once-1"))
    assert acceptor.new_order_counts["once-1"] == 1


# --- cancel -----------------------------------------------------------------------------------


async def test_cancel_is_confirmed_and_idempotent(acceptor: FixAcceptor, adapter: FixBroker) -> None:
    async with running(adapter) as events:
        await adapter.submit(order("cxl-1"))
        await adapter.cancel("cxl-1")
        accepted, canceled = await take(events, 2)
        assert isinstance(accepted, OrderAccepted)
        assert canceled == OrderCanceled("cxl-1", canceled.at)
        [request] = acceptor.received_of("F")
        assert request.get(41) == "cxl-1" and request.get(11) not in (None, "cxl-1")
        assert (request.get(55), request.get(54), request.get(37)) == (
            "MSFT",
            "2",
            acceptor.orders["cxl-1"].order_id,
        )
        await adapter.cancel("cxl-1")  # already canceled: nothing to do, nothing sent
        assert len(acceptor.received_of("F")) == 1


async def test_cancel_refused_by_the_broker(acceptor: FixAcceptor, adapter: FixBroker) -> None:
    acceptor.refuse_cancels = "order is locked for auction"
    async with running(adapter):
        await adapter.submit(order("cxl-2"))
        with pytest.raises(CancelRejected, match="locked for auction"):
            await adapter.cancel("cxl-2")
        assert acceptor.orders["cxl-2"].status == "0"


async def test_cancel_too_late_after_a_fill_we_have_not_seen_yet(
    acceptor: FixAcceptor, adapter: FixBroker
) -> None:
    async with running(adapter):
        await adapter.submit(order("cxl-3"))
        acceptor.drop_outgoing(1)  # the fill's report is lost on the way: we think it is open
        await acceptor.fill("cxl-3", D(10), D("99.5"))
        with pytest.raises(CancelRejected, match="too late"):
            await adapter.cancel("cxl-3")
        assert len(acceptor.received_of("F")) == 1


async def test_cancel_of_a_final_or_unknown_order_is_refused_locally(
    acceptor: FixAcceptor, adapter: FixBroker
) -> None:
    async with running(adapter) as events:
        await adapter.submit(order("cxl-4", order_type=OrderType.MARKET))
        await take(events, 2)
        with pytest.raises(CancelRejected, match="FILLED"):
            await adapter.cancel("cxl-4")
        with pytest.raises(CancelRejected, match="unknown order"):
            await adapter.cancel("never-sent")
    assert acceptor.received_of("F") == []


# --- query ------------------------------------------------------------------------------------


async def test_query_of_a_resting_order(acceptor: FixAcceptor, adapter: FixBroker) -> None:
    async with running(adapter):
        ack = await adapter.submit(order("q-1"))
        await acceptor.fill("q-1", D(4), D("99.5"))
        snapshot = await adapter.query("q-1")
        assert snapshot is not None
        assert snapshot.broker_order_id == ack.broker_order_id
        assert (snapshot.status, snapshot.filled_quantity, snapshot.average_price) == (
            BrokerOrderStatus.PARTIALLY_FILLED,
            D(4),
            D("99.5"),
        )
        [request] = acceptor.received_of("H")
        assert (request.get(11), request.get(55), request.get(54)) == ("q-1", "MSFT", "2") and request.get(
            790
        )


async def test_query_of_an_order_the_broker_never_took_is_none(
    acceptor: FixAcceptor, adapter: FixBroker
) -> None:
    acceptor.ignore_new_orders = True
    async with running(adapter):
        with trio.move_on_after(0.2):  # the caller gives up waiting: outcome unknown
            await adapter.submit(order("q-2"))
        assert await adapter.query("q-2") is None  # the broker answered "unknown order"
        [request] = acceptor.received_of("H")
        assert request.get(11) == "q-2"


async def test_query_of_an_order_never_sent_is_none_without_asking(
    acceptor: FixAcceptor, adapter: FixBroker
) -> None:
    async with running(adapter):
        assert await adapter.query("q-3") is None
    assert acceptor.received_of("H") == []


# --- reconnects and the local record --------------------------------------------------------


async def test_disconnect_during_fills_recovers_every_fill_once(
    acceptor: FixAcceptor, adapter: FixBroker, nursery: trio.Nursery
) -> None:
    send, events = trio.open_memory_channel[AnyBrokerEvent](math.inf)
    await nursery.start(keep_running, adapter, send)
    await adapter.submit(order("rc-1"))
    await acceptor.fill("rc-1", D(2), D(99))
    first = await take(events, 2)
    await acceptor.disconnect()
    await acceptor.fill("rc-1", D(3), D("98.5"))  # while we are away: numbered, kept
    await acceptor.fill("rc-1", D(1), D(98))
    await acceptor.wait_for(lambda: acceptor.logged_on)  # the supervisor reconnected
    later = await take(events, 2)  # recovered through the ResendRequest of the logon
    await acceptor.repeat_execution(next(e.fill_id for e in first if isinstance(e, OrderFilled)))
    await acceptor.fill("rc-1", D(4), D(97))
    [last] = await take(events, 1)
    await nothing_more(adapter, events)

    fills = [e for e in [*first, *later, last] if isinstance(e, OrderFilled)]
    assert [f.quantity for f in fills] == [D(2), D(3), D(1), D(4)]
    assert len({f.fill_id for f in fills}) == 4
    snapshot = await adapter.query("rc-1")
    assert snapshot is not None and snapshot.status is BrokerOrderStatus.FILLED
    assert snapshot.filled_quantity == sum(f.quantity for f in fills)
    assert acceptor.logons == 2 and acceptor.errors == []


async def test_open_orders_and_fills_since_come_from_the_record(
    acceptor: FixAcceptor, adapter: FixBroker
) -> None:
    async with running(adapter) as events:
        before = datetime.now(UTC)
        await adapter.submit(order("rec-1"))
        await adapter.submit(order("rec-2"))
        await adapter.submit(order("rec-3", order_type=OrderType.MARKET))
        await acceptor.fill("rec-1", D(1), D("99.5"))
        await adapter.cancel("rec-2")
        await take(events, 6)
        open_orders = await adapter.open_orders()
        assert [(o.client_order_id, o.status, o.filled_quantity) for o in open_orders] == [
            ("rec-1", BrokerOrderStatus.PARTIALLY_FILLED, D(1))
        ]
        assert open_orders[0].broker_order_id == acceptor.orders["rec-1"].order_id
        fills = await adapter.fills_since(before)
        assert [(f.client_order_id, f.quantity) for f in fills] == [("rec-3", D(10)), ("rec-1", D(1))]
        assert await adapter.fills_since(datetime.now(UTC)) == []
    with pytest.raises(DeniedLocally):
        await adapter.open_orders()


async def test_a_restarted_adapter_reconciles_from_the_record(
    acceptor: FixAcceptor, adapter: FixBroker, migrated_database_url: str
) -> None:
    async with running(adapter) as events:
        await adapter.submit(order("rec-4"))
        await acceptor.fill("rec-4", D(5), D(99))
        await take(events, 2)
    restarted = build_fix_broker(adapter.config, migrated_database_url)
    try:
        async with running(restarted):
            [snapshot] = await restarted.open_orders()
            assert (snapshot.client_order_id, snapshot.filled_quantity) == ("rec-4", D(5))
            await restarted.cancel("rec-4")  # symbol and side come back from the stored order
            assert acceptor.received_of("F")[-1].get(55) == "MSFT"
            assert await restarted.open_orders() == []
    finally:
        await restarted.aclose()


async def test_a_cancel_confirmed_after_a_restart_maps_back_to_the_order(
    acceptor: FixAcceptor, adapter: FixBroker, migrated_database_url: str
) -> None:
    async with running(adapter):
        await adapter.submit(order("rc-2"))
        acceptor.drop_outgoing(1)  # the cancel's confirmation is lost on the way
        with trio.move_on_after(0.2):
            await adapter.cancel("rc-2")
    restarted = build_fix_broker(adapter.config, migrated_database_url)
    try:
        async with running(restarted) as events:
            [canceled] = await take(events, 1)  # resent on logon: 11 is the old cancel's ClOrdID
            assert canceled == OrderCanceled("rc-2", canceled.at)
            assert await restarted.open_orders() == []
    finally:
        await restarted.aclose()


async def test_open_fix_adapter_for_the_contract_suite(migrated_database_url: str) -> None:
    async with open_fix_adapter(migrated_database_url) as (adapter, driver):
        assert adapter.session is not None and adapter.session.logged_on
        await adapter.submit(order("ct-1", quantity="5"))
        await driver.fill("ct-1", D(5), D("99.5"))
        accepted, filled = await take(driver.events, 2)
        assert isinstance(accepted, OrderAccepted)
        assert isinstance(filled, OrderFilled) and filled.quantity == D(5)
        with pytest.raises(BrokerRejected):
            await adapter.submit(order("ct-2", quantity=str(driver.reject_quantity + 1)))
        await adapter.submit(order("ct-3", order_type=OrderType.MARKET, quantity="2"))
        fills = [e for e in await take(driver.events, 3) if isinstance(e, OrderFilled)]
        assert [f.price for f in fills] == [driver.market_price]
        acceptor = driver.acceptor
    assert not acceptor.logged_on and acceptor.received_of("5")  # logged out on exit
