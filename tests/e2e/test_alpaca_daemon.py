"""The daemon routing real orders to Alpaca with configuration alone: an `[[alpaca_brokers]]` section
pointed at the loopback Alpaca emulator, credentials in the environment variables it names,
market data from an external publisher on NATS (no simulated market, no simulated brokers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from api import subjects
from daemon import credentials
from sql.migrate import apply_migrations
from tests.support.alpaca_emulator import AlpacaEmulator
from tests.support.daemon import DaemonProcess
from tests.support.oms import order, request, route, run, updates_for
from tests.support.quotes import QuotePublisher

INSTANCE = "e2e-alpaca"


@pytest.mark.parametrize("source", ["environment", "store"])
async def test_an_alpaca_account_configured_alone_routes_and_fills_orders(
    tmp_path: Path, own_nats: str, own_database: str, quotes: QuotePublisher, source: str
) -> None:
    emulator = AlpacaEmulator()
    async with trio.open_nursery() as nursery:
        await nursery.start(emulator.serve)
        alpaca_toml = f"""
[[alpaca_brokers]]
broker_id = "alpaca-paper"
name = "Alpaca (emulated)"
base_url = {json.dumps(emulator.url)}
key_env = "E2E_ALPACA_KEY"
secret_env = "E2E_ALPACA_SECRET"
"""
        daemon = DaemonProcess(tmp_path, own_nats, own_database, instance=INSTANCE, brokers_toml=alpaca_toml)
        values = {"E2E_ALPACA_KEY": emulator.key_id, "E2E_ALPACA_SECRET": emulator.secret}
        if source == "environment":
            env = values
        else:  # the encrypted store: only its key is in the daemon's environment
            key = credentials.generate_key()
            await trio.to_thread.run_sync(apply_migrations, own_database)
            await trio.to_thread.run_sync(credentials.save, own_database, "alpaca-paper", values, key)
            env = {credentials.KEY_VARIABLE: key}
        await trio.to_thread.run_sync(lambda: daemon.start(env=env))
        try:
            listed = await trio.to_thread.run_sync(
                lambda: run(request(daemon.nats_url, subjects.LIST_BROKERS, {}))
            )
            assert [b["id"] for b in listed.body] == ["alpaca-paper"]  # no simulated venue beside it

            reply = await trio.to_thread.run_sync(
                lambda: route(daemon.nats_url, order("alp-e2e-1", quantity=3))
            )
            assert reply.error_code is None and reply.body["status"] == "ACCEPTED", reply
            assert reply.body["selectedBroker"] == "alpaca-paper"
            updates = await trio.to_thread.run_sync(
                lambda: updates_for(daemon.nats_url, "alp-e2e-1", until_status="COMPLETED")
            )
            assert updates[-1][1]["status"] == "COMPLETED" and updates[-1][1]["filledQuantity"] == 3
            assert list(emulator.posts.values()) == [1]  # one POST /v2/orders, one order

            tca = await trio.to_thread.run_sync(
                lambda: run(request(daemon.nats_url, subjects.GET_TCA, {"orderId": "alp-e2e-1"}))
            )
            assert tca.body["benchmarkPrice"] == 100.0  # the arrival mid from the external quotes
        finally:
            code = await trio.to_thread.run_sync(daemon.stop)
            nursery.cancel_scope.cancel()
        log = daemon.log()
        assert code == 0, log
        assert emulator.secret not in log and emulator.key_id not in log
