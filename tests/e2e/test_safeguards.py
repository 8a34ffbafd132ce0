"""Safeguards, kill switch and the CLI against a real daemon with the default safeguards: the
fat fingers of issue 13 are REJECTED naming the safeguard and never reach a broker; `why`
explains them from another directory (found through the user's state directory); the kill
switch is engaged and released from the CLI; `cancel` finds the broker; unknown symbols list
the closest instruments; every REJECTED answer exits 1; the ready banner is a JSON record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from daemon.servers import NatsServer
from tests.support import oms
from tests.support.daemon import REPO, DaemonProcess


def new_id() -> str:
    return f"sg-{uuid.uuid4().hex[:16]}"


class Cli:
    """The CLI as a user runs it: another directory, no NATS_URL, the daemon found through the
    user's state directory (the daemon's XDG_STATE_HOME)."""

    def __init__(self, cwd: Path, xdg_state: Path) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        self.cwd = cwd
        self.env = {
            k: v for k, v in os.environ.items() if k not in ("NATS_URL", "BIS_STATE_DIR", "DATABASE_URL")
        }
        self.env["XDG_STATE_HOME"] = str(xdg_state)
        self.env["PYTHONPATH"] = str(REPO)

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "daemon.cli", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Any:
    workdir = tmp_path_factory.mktemp("safeguards")
    nats = NatsServer(workdir / "nats")
    nats.start()
    # The default safeguards, but a per-account rate that a test can reach quickly.
    process = DaemonProcess(
        workdir / "d",
        nats.url,
        database_url,
        instance="safeguards",
        safeguards_toml="[safeguards]\nmax_orders_per_second = 20\n",
    )
    process.start()
    try:
        yield process, Cli(workdir / "elsewhere", workdir / "d" / "xdg-state")
    finally:
        process.stop()
        nats.stop()


def test_fat_fingers_are_rejected_naming_the_safeguard_and_why_explains_them(daemon: Any) -> None:
    process, cli = daemon
    cases = {
        "max_order_quantity": {"type": "MARKET", "quantity": 50_000_000},
        "price_collar": {"type": "LIMIT", "price": 1900, "quantity": 10},
        "quantity_increment": {"type": "MARKET", "quantity": 10.5},
    }
    for safeguard, fields in cases.items():
        order_id = new_id()
        reply = oms.route(process.nats_url, oms.order(order_id, accountId="ACC-FAT", **fields))
        assert reply.error_code is None, reply
        body = reply.body
        assert body["status"] == "REJECTED"
        assert body["rejectionReason"].startswith(f"safeguard {safeguard}: ")
        assert "selectedBroker" not in body and "executionId" not in body  # nothing was sent
        why = cli("why", order_id)
        assert why.returncode == 0, why.stderr
        assert f"safeguards: refused by {safeguard}" in why.stdout
        assert "no broker was considered: refused before routing" in why.stdout
    # The CLI's own order: REJECTED exits 1 and says why on stderr.
    fat = cli("order", "buy", "AAPL", "50000000", "--account", "ACC-FAT")
    assert fat.returncode == 1
    assert "REJECTED: safeguard max_order_quantity" in fat.stderr


def test_an_ordinary_order_passes_and_why_shows_the_brokers(daemon: Any) -> None:
    _, cli = daemon
    order_id = new_id()
    placed = cli("order", "buy", "AAPL", "10", "--order-id", order_id, "--type", "LIMIT", "--price", "1")
    assert placed.returncode == 0, placed.stderr
    assert json.loads(placed.stdout)["status"] == "ACCEPTED"
    why = cli("why", order_id)
    assert "safeguards: passed" in why.stdout
    assert "sim-" in why.stdout
    cancel = cli("cancel", order_id)  # no --broker: the daemon's answer tells the CLI where it is
    assert cancel.returncode == 0, cancel.stderr
    assert json.loads(cancel.stdout)["status"] in ("ACCEPTED", "PENDING")


def test_the_kill_switch_from_the_cli(daemon: Any) -> None:
    process, cli = daemon
    account = f"KS-{uuid.uuid4().hex[:6]}"
    engaged = cli("kill-switch", "engage", "--account", account, "--reason", "fat finger drill")
    assert engaged.returncode == 0, engaged.stderr
    assert f"account {account}: ENGAGED" in engaged.stdout
    assert account in cli("kill-switch", "list").stdout
    refused = oms.route(process.nats_url, oms.order(new_id(), accountId=account))
    assert refused.body["status"] == "REJECTED"
    assert "safeguard kill_switch" in refused.body["rejectionReason"]
    assert "fat finger drill" in refused.body["rejectionReason"]
    released = cli("kill-switch", "release", "--account", account)
    assert released.returncode == 0, released.stderr
    assert oms.route(process.nats_url, oms.order(new_id(), accountId=account)).body["status"] == "ACCEPTED"
    usage = cli("kill-switch", "release", "--cancel-open-orders")
    assert usage.returncode == 2


def test_the_rate_limit_refuses_a_burst_from_one_account(daemon: Any) -> None:
    process, _ = daemon
    account = f"RATE-{uuid.uuid4().hex[:6]}"
    orders = [oms.order(new_id(), accountId=account, quantity=1) for _ in range(40)]
    replies = oms.run(oms.request_many(process.nats_url, "trading.broker.v1.RouteOrder", orders))
    reasons = [r.body.get("rejectionReason") or "" for r in replies]
    assert sum(r.body["status"] == "ACCEPTED" for r in replies) <= 20
    assert any(reason.startswith("safeguard max_order_rate") for reason in reasons)


def test_unknown_symbols_list_the_closest_and_errors_exit_1(daemon: Any) -> None:
    _, cli = daemon
    unknown = cli("order", "buy", "BTC/USD", "1")
    assert unknown.returncode == 1
    assert "closest known: BTC-USD" in unknown.stderr
    missing = cli("why", new_id())
    assert missing.returncode == 1 and "404" in missing.stderr


def test_the_ready_banner_is_a_json_record_off_a_terminal(daemon: Any) -> None:
    process, _ = daemon
    records = [json.loads(line) for line in process.log().splitlines() if line.startswith("{")]
    ready = [r for r in records if r.get("message") == "Broker Integration Service is ready"]
    assert len(ready) == 1
    assert ready[0]["nats"] == process.nats_url and ready[0]["brokers"]


def test_the_kill_switch_over_rest(daemon: Any) -> None:
    import httpx

    from tests.support.daemon import TEST_TOKEN

    process, _ = daemon
    url = f"{process.rest_url}/admin/kill-switches"
    auth = {"Authorization": f"Bearer {TEST_TOKEN}"}
    account = f"RS-{uuid.uuid4().hex[:6]}"
    body = {"scope": "ACCOUNT", "accountId": account, "engaged": True, "reason": "desk halt"}
    assert httpx.put(url, json=body, timeout=10).status_code == 401
    bad = httpx.put(url, json={"scope": "ACCOUNT", "engaged": "yes"}, headers=auth, timeout=10)
    assert bad.status_code == 400
    assert {e["field"] for e in bad.json()["errors"]} >= {"engaged"}
    put = httpx.put(url, json=body, headers=auth, timeout=10)
    assert put.status_code == 200, put.text
    assert put.json()["switch"]["engaged"] is True and put.json()["persisted"] is True
    listed = httpx.get(url, headers=auth, timeout=10).json()
    assert account in [s.get("accountId") for s in listed["engaged"]]
    order_id = new_id()
    refused = oms.route(process.nats_url, oms.order(order_id, accountId=account))
    assert "safeguard kill_switch" in refused.body["rejectionReason"]
    explained = httpx.get(f"{process.rest_url}/admin/orders/{order_id}/explanation", headers=auth, timeout=10)
    assert explained.status_code == 200
    assert explained.json()["preTrade"]["safeguards"]["safeguard"] == "kill_switch"
    missing = httpx.get(f"{process.rest_url}/admin/orders/{new_id()}/explanation", headers=auth, timeout=10)
    assert missing.status_code == 404
    body["engaged"] = False
    del body["reason"]
    assert httpx.put(url, json=body, headers=auth, timeout=10).status_code == 200


def scrape(process: DaemonProcess) -> dict[tuple[str, str], float]:
    """The pre-trade series of the daemon's /metrics: (sample name, its one label) -> value."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{process.rest_url}/metrics", timeout=10).text
    wanted = ("bis_safeguard_rejections", "bis_kill_switch_engaged", "bis_risk_verdicts")
    return {
        (sample.name, next(iter(sample.labels.values()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.name in wanted
        for sample in family.samples
    }


def test_refusals_and_kill_switches_show_in_metrics(daemon: Any) -> None:
    process, cli = daemon
    before = scrape(process)
    reply = oms.route(process.nats_url, oms.order(new_id(), type="LIMIT", price=1900, quantity=10))
    assert reply.body is not None and reply.body["status"] == "REJECTED"
    account = f"KM-{uuid.uuid4().hex[:6]}"
    assert cli("kill-switch", "engage", "--account", account).returncode == 0
    try:
        during = scrape(process)
    finally:
        assert cli("kill-switch", "release", "--account", account).returncode == 0
    collar = ("bis_safeguard_rejections_total", "price_collar")
    assert during[collar] == before[collar] + 1, (before, during)
    engaged = ("bis_kill_switch_engaged", "account")
    assert during[engaged] == before[engaged] + 1
    assert scrape(process)[engaged] == before[engaged]
    assert during[("bis_kill_switch_engaged", "global")] == 0
    assert during[("bis_risk_verdicts_total", "unavailable")] == 0  # [risk] off: nothing asked
