"""The IB adapter end to end against the loopback TWS peer, driven by ib_async itself."""

from __future__ import annotations

import uuid
from decimal import Decimal

import trio
import trio.lowlevel

from adapters.base import SubmitRequest
from api.enums import AssetClass, BrokerOrderStatus, OrderType, Side, TimeInForce
from api.events import OrderAccepted, OrderFilled
from tests.support.ib_harness import CLIENT_ID, open_ib_adapter


def coid() -> str:
    return f"ib-{uuid.uuid4().hex[:16]}"


def order(client_order_id: str, **fields: object) -> SubmitRequest:
    base: dict[str, object] = dict(
        client_order_id=client_order_id,
        account_id="ACC-1",
        symbol="AAPL",
        asset_class=AssetClass.EQUITY,
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(10),
        time_in_force=TimeInForce.DAY,
    )
    base.update(fields)
    return SubmitRequest(**base)  # type: ignore[arg-type]


async def test_connects_through_the_handshake_and_start_up_synchronisation() -> None:
    async with open_ib_adapter() as (adapter, driver):
        peer = driver.peer
        assert adapter.connected and adapter.account == "DU1234567"
        assert peer.connects == 1 and peer.connections[0].client_id == CLIENT_ID
        assert peer.connections[0].version == 178  # the highest both speak
        sent = {m[0] for m in peer.received}
        assert {"71", "61", "5", "99"} <= sent  # startApi, positions, open and completed orders
        assert "7" in sent  # the adapter's own, filtered reqExecutions
        executions = peer.messages(7)[0]
        assert executions[3] == str(CLIENT_ID) and executions[4] == "DU1234567" and executions[5]
        await adapter.heartbeat()


async def test_a_market_order_carries_our_id_as_order_ref_and_fills_with_its_commission() -> None:
    async with open_ib_adapter(market_price=Decimal("187.25")) as (adapter, driver):
        request = order(coid(), quantity=Decimal(300))
        ack = await adapter.submit(request)
        placed = driver.peer.order(request.client_order_id)
        assert placed.order_ref == request.client_order_id and ack.broker_order_id == str(placed.perm_id)
        accepted = await driver.next_event()
        assert isinstance(accepted, OrderAccepted) and accepted.broker_order_id == ack.broker_order_id
        fill = await driver.next_event()
        assert isinstance(fill, OrderFilled)
        assert fill.quantity == 300 and fill.price == Decimal("187.25")
        assert fill.fee == Decimal("1.5")  # IB's report (0.005 x 300), not our estimate
        assert fill.fill_id == driver.peer.executions[0].exec_id.rpartition(".")[0]
        snapshot = await adapter.query(request.client_order_id)
        assert snapshot is not None and snapshot.status is BrokerOrderStatus.FILLED
        await trio.lowlevel.checkpoint()
