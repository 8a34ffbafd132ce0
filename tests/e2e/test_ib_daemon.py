"""The daemon routing real orders to Interactive Brokers with configuration alone: an
`[[ib_brokers]]` section pointed at the loopback TWS API peer (the daemon's ib_async speaks the
TWS wire protocol to it over TCP), market data from an external publisher on NATS."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import trio

from api import subjects
from tests.support.daemon import DaemonProcess
from tests.support.oms import order, request, route, run, updates_for
from tests.support.quotes import QuotePublisher
from tests.support.tws_peer import TwsPeer

INSTANCE = "e2e-ib"


async def test_an_ib_client_configured_alone_routes_fills_and_cancels(
    tmp_path: Path, own_nats: str, own_database: str, quotes: QuotePublisher
) -> None:
    peer = TwsPeer(market_price=Decimal("100.01"))
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.serve)
        ib_toml = f"""
[[ib_brokers]]
broker_id = "ib-paper"
name = "Interactive Brokers (loopback TWS)"
port = {peer.port}
client_id = 31
account = "DU1234567"
"""
        daemon = DaemonProcess(tmp_path, own_nats, own_database, instance=INSTANCE, brokers_toml=ib_toml)
        await trio.to_thread.run_sync(lambda: daemon.start(env={}))
        try:
            listed = await trio.to_thread.run_sync(
                lambda: run(request(daemon.nats_url, subjects.LIST_BROKERS, {}))
            )
            assert [b["id"] for b in listed.body] == ["ib-paper"]  # no simulated venue beside it

            reply = await trio.to_thread.run_sync(
                lambda: route(daemon.nats_url, order("ib-e2e-1", quantity=3))
            )
            assert reply.error_code is None and reply.body["status"] == "ACCEPTED", reply
            assert reply.body["selectedBroker"] == "ib-paper"
            updates = await trio.to_thread.run_sync(
                lambda: updates_for(daemon.nats_url, "ib-e2e-1", until_status="COMPLETED")
            )
            assert updates[-1][1]["status"] == "COMPLETED" and updates[-1][1]["filledQuantity"] == 3
            (placed,) = peer.orders.values()  # one order, carrying the daemon's client order id
            assert placed.client_id == 31 and placed.order_ref and placed.status == "Filled"

            resting = order("ib-e2e-2", type="LIMIT", price=99.0, quantity=5)
            reply = await trio.to_thread.run_sync(lambda: route(daemon.nats_url, resting))
            assert reply.error_code is None and reply.body["status"] == "ACCEPTED", reply
            cancel = {"orderId": "ib-e2e-2", "brokerId": "ib-paper"}
            answer = await trio.to_thread.run_sync(
                lambda: run(request(daemon.nats_url, subjects.CANCEL_ORDER, cancel))
            )
            assert answer.error_code is None and answer.body["status"] == "ACCEPTED", answer
            updates = await trio.to_thread.run_sync(
                lambda: updates_for(daemon.nats_url, "ib-e2e-2", until_status="CANCELED")
            )
            assert updates[-1][1]["status"] == "CANCELED"
            assert [o.status for o in peer.orders.values()] == ["Filled", "Cancelled"]
            assert len(peer.messages(3)) == 2 and peer.pacing_violations == 0
        finally:
            code = await trio.to_thread.run_sync(daemon.stop)
            nursery.cancel_scope.cancel()
        log = daemon.log()
        assert code == 0, log
        assert "Traceback" not in log, log
