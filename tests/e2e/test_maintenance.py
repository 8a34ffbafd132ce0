"""Operator maintenance end to end: set over REST, avoided by routing, kept across a restart,
lifted from the CLI; broker status history (uptime) survives the restart too."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psycopg

from daemon.servers import NatsServer
from tests.support import oms
from tests.support.daemon import REPO, TEST_TOKEN, DaemonProcess


def test_maintenance_is_avoided_kept_across_a_restart_and_lifted(
    tmp_path: Path, private_nats_server: NatsServer, database_url: str
) -> None:
    daemon = DaemonProcess(tmp_path / "d", private_nats_server.url, database_url, instance="maint")
    headers = {"Authorization": f"Bearer {TEST_TOKEN}"}
    daemon.start()
    try:
        put = httpx.put(
            f"{daemon.rest_url}/brokers/sim-cheap/maintenance",
            json={"enabled": True, "reason": "broker upgrade"},
            headers=headers,
            timeout=10,
        )
        assert put.status_code == 200, put.text
        assert put.json()["status"] == "MAINTENANCE"
        bad = httpx.put(
            f"{daemon.rest_url}/brokers/sim-cheap/maintenance",
            json={"enabled": "yes"},
            headers=headers,
            timeout=10,
        )
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "enabled"
        missing = httpx.put(
            f"{daemon.rest_url}/brokers/nope/maintenance", json={"enabled": True}, headers=headers, timeout=10
        )
        assert missing.status_code == 404

        order_id = f"mt-{uuid.uuid4().hex[:16]}"
        reply = oms.route(daemon.nats_url, oms.order(order_id))
        assert reply.body["selectedBroker"] == "sim-fast"  # the cheaper one is in maintenance
        listed = {
            b["id"]: b["status"] for b in httpx.get(f"{daemon.rest_url}/brokers", headers=headers).json()
        }
        assert listed["sim-cheap"] == "MAINTENANCE"
    finally:
        assert daemon.stop() == 0

    daemon.start()
    try:
        status = oms.run(
            oms.request(daemon.nats_url, "trading.broker.v1.GetBrokerStatus", {"brokerId": "sim-cheap"})
        )
        assert status.body["status"] == "MAINTENANCE"  # kept across the restart
        fast = oms.run(
            oms.request(daemon.nats_url, "trading.broker.v1.GetBrokerStatus", {"brokerId": "sim-fast"})
        )
        # the previous run's history counts: connected, then down while the daemon was stopped
        assert 0.0 < fast.body["uptime"] < 100.0

        lifted = subprocess.run(
            [
                sys.executable,
                "-m",
                "daemon.cli",
                "--nats",
                daemon.nats_url,
                "maintenance",
                "sim-cheap",
                "off",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert lifted.returncode == 0, lifted.stderr
        assert '"status": "CONNECTED"' in lifted.stdout
        reply = oms.route(daemon.nats_url, oms.order(f"mt-{uuid.uuid4().hex[:16]}"))
        assert reply.body["selectedBroker"] == "sim-cheap"
    finally:
        assert daemon.stop() == 0
        with psycopg.connect(database_url) as conn:  # whatever happened: later daemons start clean
            conn.execute(
                "UPDATE broker_connections SET maintenance = false, maintenance_reason = NULL,"
                " maintenance_since = NULL WHERE broker_id = 'sim-cheap'"
            )
    assert "Traceback" not in daemon.log()
