"""The OMS-side CLI, run as a user would, against the running daemon."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

from tests.support.daemon import REPO, DaemonProcess
from tests.support.polling import poll_until


def cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--nats", daemon.nats_url, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_order_prints_the_response_and_watch_replays_its_updates(
    daemon: DaemonProcess, order_id: str
) -> None:
    done = cli(
        daemon, "order", "buy", "AAPL", "5", "--type", "LIMIT", "--price", "100000", "--order-id", order_id
    )
    assert done.returncode == 0, done.stderr
    response = json.loads(done.stdout)
    assert response["status"] == "ACCEPTED" and response["orderId"] == order_id

    watch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daemon.cli",
            "--nats",
            daemon.nats_url,
            "watch",
            "--replay",
            "--order",
            order_id,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert watch.stdout is not None
        lines.extend(watch.stdout)  # line by line, as the watcher prints them

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        poll_until(  # the replay reached the order's last update
            lambda: [line for line in lines if "COMPLETED" in line],
            what=f"watch --replay printing {order_id} COMPLETED",
            timeout=15,
        )
    finally:
        watch.send_signal(signal.SIGINT)
        watch.wait(timeout=10)
        reader.join(10)
    assert watch.stderr is not None
    err = watch.stderr.read()  # a few lines: the pipe never filled
    assert watch.returncode == 0, err
    out = "".join(lines)
    assert any("EXECUTING" in line for line in lines), out
    assert any("COMPLETED" in line and "filled 5" in line for line in lines), out


def test_order_with_bad_fields_exits_non_zero_naming_each_field(daemon: DaemonProcess) -> None:
    done = cli(daemon, "order", "buy", "AAPL", "-5", "--type", "LIMIT")
    assert done.returncode == 1
    assert "error 400" in done.stderr
    assert "quantity: must be greater than 0" in done.stderr
    assert "price: is required for LIMIT orders" in done.stderr


def test_brokers_and_status(daemon: DaemonProcess) -> None:
    done = cli(daemon, "--json", "brokers", "--asset-class", "FOREX")
    assert done.returncode == 0, done.stderr
    assert [b["id"] for b in json.loads(done.stdout)] == ["sim-fast"]
    status = cli(daemon, "status", "sim-cheap")
    assert json.loads(status.stdout)["status"] == "CONNECTED"
    missing = cli(daemon, "status", "nope")
    assert missing.returncode == 1 and "error 404" in missing.stderr


def test_client_without_a_daemon_says_what_to_do(tmp_path: object) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--state-dir", "/nonexistent", "brokers"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert "make run" in done.stderr


def test_options_work_after_the_subcommand_too(daemon: DaemonProcess) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon.cli",
            "brokers",
            "--asset-class",
            "FOREX",
            "--json",
            "--nats",
            daemon.nats_url,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert [b["id"] for b in json.loads(done.stdout)] == ["sim-fast"]


def test_unreachable_nats_is_one_clear_line_not_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--nats", "nats://127.0.0.1:1", "--timeout", "2", "brokers"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "cannot connect to NATS at nats://127.0.0.1:1" in done.stderr


def test_why_explains_the_routing_decision_of_an_order(daemon: DaemonProcess, order_id: str) -> None:
    done = cli(daemon, "order", "buy", "AAPL", "5", "--type", "MARKET", "--order-id", order_id)
    assert done.returncode == 0, done.stderr
    chosen = json.loads(done.stdout)["selectedBroker"]
    why = cli(daemon, "why", order_id)
    assert why.returncode == 0, why.stderr
    lines = why.stdout.splitlines()
    assert lines[0].startswith(f"order {order_id}: ") and f"at {chosen}" in lines[0]
    assert lines[1] == "safeguards: passed", lines  # the pre-trade checks come before the brokers
    del lines[1]
    assert lines[1].startswith("SMART at urgency MEDIUM, notional ")  # valued at the arrival mid
    assert lines[2].startswith(f"1. {chosen} (score ")
    brokers = [b["id"] for b in json.loads(cli(daemon, "--json", "brokers").stdout)]
    for broker in brokers:  # each is ranked, or listed as not eligible with its reason
        assert any(line.split(" ")[1] == broker for line in lines[2:] if " " in line), (broker, lines)
    assert cli(daemon, "why", "no-such-order").returncode == 1
