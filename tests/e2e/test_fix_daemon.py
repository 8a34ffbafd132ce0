"""The daemon routing orders to a FIX 4.4 broker with configuration alone: a `[[fix_brokers]]`
section pointed at the loopback acceptor, the password in the environment variable it names,
the session's sequence numbers in the daemon's own database."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import trio

from api import subjects
from tests.support.daemon import DaemonProcess
from tests.support.fix_acceptor import fresh_acceptor
from tests.support.oms import order, request, route, run, updates_for
from tests.support.quotes import QuotePublisher

INSTANCE = "e2e-fix"


async def test_a_fix_session_configured_alone_routes_fills_and_keeps_its_sequence_numbers(
    tmp_path: Path, own_nats: str, own_database: str, quotes: QuotePublisher
) -> None:
    acceptor = fresh_acceptor()
    async with trio.open_nursery() as nursery:
        await nursery.start(acceptor.serve)
        fix_toml = f"""
[[fix_brokers]]
broker_id = "fix-broker"
name = "FIX broker (loopback acceptor)"
host = "127.0.0.1"
port = {acceptor.port}
sender_comp_id = {json.dumps(acceptor.client_comp_id)}
target_comp_id = {json.dumps(acceptor.comp_id)}
account = "DESK-1"
password_env = "E2E_FIX_PASSWORD"
heartbeat_interval = 1
commission = {{ baseRate = "0.0002" }}
"""
        daemon = DaemonProcess(tmp_path, own_nats, own_database, instance=INSTANCE, brokers_toml=fix_toml)
        password = "fix-secret-pw-42"
        await trio.to_thread.run_sync(lambda: daemon.start(env={"E2E_FIX_PASSWORD": password}))
        try:
            listed = await trio.to_thread.run_sync(
                lambda: run(request(daemon.nats_url, subjects.LIST_BROKERS, {}))
            )
            assert [b["id"] for b in listed.body] == ["fix-broker"]
            new_order = order("fix-e2e-1", quantity=5)
            reply = await trio.to_thread.run_sync(lambda: route(daemon.nats_url, new_order))
            assert reply.error_code is None and reply.body["status"] == "ACCEPTED", reply
            updates = await trio.to_thread.run_sync(
                lambda: updates_for(daemon.nats_url, "fix-e2e-1", until_status="COMPLETED")
            )
            assert updates[-1][1]["status"] == "COMPLETED" and updates[-1][1]["filledQuantity"] == 5
        finally:
            code = await trio.to_thread.run_sync(daemon.stop)
            nursery.cancel_scope.cancel()
    log = daemon.log()
    assert code == 0, log
    assert password not in log
    with psycopg.connect(own_database) as conn:
        row = conn.execute(
            "SELECT next_out_seq FROM fix_sessions WHERE sender_comp_id = %s", (acceptor.client_comp_id,)
        ).fetchone()
    assert row is not None and row[0] > 2  # logon, the order, ..., logout: persisted
