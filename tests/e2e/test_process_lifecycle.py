"""The daemon as systemd sees it: READY only once it serves, watchdog pings, STOPPING and a clean
exit on SIGTERM — also in the middle of a burst of orders."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import psycopg
import pytest

from daemon.servers import NatsServer
from tests.support import oms
from tests.support.daemon import DaemonProcess
from tests.support.polling import poll_until


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(30)
    try:
        yield sock
    finally:
        sock.close()


def receive_until(sock: socket.socket, prefix: str, timeout: float = 30.0) -> list[str]:
    """Datagrams up to and including the first starting with `prefix`."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        message = sock.recv(4096).decode()
        seen.append(message)
        if message.startswith(prefix):
            return seen
    raise AssertionError(f"no {prefix!r} within {timeout}s; got {seen}")


def test_ready_only_once_serving_then_watchdog_then_stopping_on_sigterm(
    tmp_path: Path, private_nats_server: NatsServer, database_url: str, notify_socket: socket.socket
) -> None:
    daemon = DaemonProcess(tmp_path / "d", private_nats_server.url, database_url, instance="notify")
    env = {"NOTIFY_SOCKET": notify_socket.getsockname(), "WATCHDOG_USEC": "1000000"}
    ready_seen: dict[str, Any] = {}

    def wait_ready() -> None:
        messages = receive_until(notify_socket, "READY=1")
        # At the moment READY=1 arrives, both NATS and REST must already answer.
        health = httpx.get(f"{daemon.rest_url}/health", timeout=5)
        brokers = oms.run(oms.request(private_nats_server.url, "trading.broker.v1.ListBrokers", {}))
        ready_seen.update(messages=messages, health=health.status_code, brokers=brokers.body)

    waiter = threading.Thread(target=wait_ready)
    waiter.start()
    daemon.start(env=env)
    waiter.join(60)
    try:
        assert ready_seen["health"] == 200
        assert {b["id"] for b in ready_seen["brokers"]} == {"sim-cheap", "sim-fast", "sim-reject"}
        ready = ready_seen["messages"][-1]
        assert "STATUS=serving 3 brokers" in ready
        pings = receive_until(notify_socket, "WATCHDOG=1", timeout=5)
        assert pings[-1] == "WATCHDOG=1"
        readiness = wait_for_readiness(daemon.rest_url)
        assert readiness == {
            "ready": True,
            "checks": {
                "database": "ok",
                "nats": "ok",
                "subscriptions": "ok",
                "brokers": "ok",
                "intake": "ok",
            },
        }
    finally:
        code = daemon.stop(signal.SIGTERM)
    assert code == 0
    assert "STOPPING=1" in receive_until(notify_socket, "STOPPING=1", timeout=10)[-1]
    assert "Traceback" not in daemon.log()
    assert not (daemon.state_dir / "runtime.json").exists()


def wait_for_readiness(rest_url: str, timeout: float = 10.0) -> Any:
    """GET /ready until it says 200 (the brokers connect just after READY=1); its body."""

    def ready() -> tuple[int, str]:
        reply = httpx.get(f"{rest_url}/ready", timeout=5)
        return reply.status_code, reply.text

    _, body = poll_until(ready, lambda r: r[0] == 200, what="GET /ready 200", timeout=timeout, interval=0.1)
    return json.loads(body)


async def _burst(url: str, orders: list[dict[str, Any]], fire: threading.Event) -> list[Any]:
    nc = await nats.connect(servers=[url], max_reconnect_attempts=0)

    async def one(order: dict[str, Any]) -> Any:
        try:
            msg = await nc.request("trading.broker.v1.RouteOrder", json.dumps(order).encode(), timeout=15)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
            return exc
        return oms.Reply(msg.data, msg.headers)

    try:
        tasks = []
        for i, order in enumerate(orders):
            tasks.append(asyncio.ensure_future(one(order)))
            if i == len(orders) // 3:
                fire.set()  # SIGTERM goes out while the rest are still being sent
            await asyncio.sleep(0.002)
        return list(await asyncio.gather(*tasks))
    finally:
        await nc.close()


def test_a_second_signal_while_stopping_is_ignored(
    tmp_path: Path, private_nats_server: NatsServer, database_url: str
) -> None:
    daemon = DaemonProcess(tmp_path / "d", private_nats_server.url, database_url, instance="twice")
    daemon.start()
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGINT)
    poll_until(  # the second signal lands while it is stopping, not before the first was seen
        daemon.log, lambda log: '"message":"stopping' in log, what="the daemon logging that it is stopping"
    )
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.wait() == 0
    log = daemon.log()
    assert "Traceback" not in log, log
    assert '"message":"stopped"' in log


def test_sigterm_during_a_burst_answers_every_request_and_loses_nothing(
    tmp_path: Path, private_nats_server: NatsServer, database_url: str
) -> None:
    daemon = DaemonProcess(tmp_path / "d", private_nats_server.url, database_url, instance="burst")
    daemon.start()
    prefix = uuid.uuid4().hex[:8]
    orders = [oms.order(f"burst-{prefix}-{i}", quantity=1) for i in range(300)]
    fire = threading.Event()
    stopper = threading.Thread(
        target=lambda: (fire.wait(30), daemon.proc and daemon.proc.send_signal(signal.SIGTERM))
    )
    stopper.start()
    results = oms.run(_burst(private_nats_server.url, orders, fire))
    stopper.join(30)
    code = daemon.wait()
    log = daemon.log()
    assert code == 0, log
    assert "Traceback" not in log, log

    accepted = [r.body["orderId"] for r in results if isinstance(r, oms.Reply) and r.error_code is None]
    refused = [r for r in results if isinstance(r, oms.Reply) and r.error_code is not None]
    unanswered = [r for r in results if not isinstance(r, oms.Reply)]
    assert accepted, "the burst should have routed some orders before the stop"
    assert refused or unanswered, "the stop should have come in the middle of the burst"
    assert all(r.error_code == 503 and "stopping" in r.body["message"] for r in refused), refused
    # after the endpoints are gone NATS says so at once ("no responders"); nothing hangs
    assert all(isinstance(r, nats.errors.NoRespondersError) for r in unanswered), unanswered

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT bo.order_id, bo.status, ro.response->>'status',"
            " (SELECT count(*) FROM unpublished_events u WHERE u.execution_id = bo.id)"
            " FROM broker_orders bo JOIN routed_orders ro USING (order_id) WHERE bo.order_id LIKE %s",
            (f"burst-{prefix}-%",),
        ).fetchall()
    by_order = {row[0]: row for row in rows}
    for order_id in accepted:
        _, status, answered, unpublished = by_order[order_id]
        assert answered == "ACCEPTED"
        assert status == "FILLED", (order_id, status)  # zero-latency market orders fill on arrival
        assert unpublished == 0, f"{order_id} has updates that were never published"
    assert set(by_order) == set(accepted), "an order was written but its requester got no answer"


def test_rest_port_in_use_fails_the_start_with_what_to_change(
    tmp_path: Path, private_nats_server: NatsServer, database_url: str
) -> None:
    daemon = DaemonProcess(tmp_path / "d", private_nats_server.url, database_url, instance="busy")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", daemon.rest_port))
        squatter.listen()
        with pytest.raises(RuntimeError, match="daemon exited with 1"):
            daemon.start()
    log = daemon.log()
    assert f"REST cannot listen on 127.0.0.1:{daemon.rest_port}" in log
    assert "set rest.port (or BIS_REST_PORT)" in log
