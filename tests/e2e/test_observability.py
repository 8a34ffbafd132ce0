"""What an operator sees of a running daemon, end to end: Prometheus metrics that move with the
orders, health that tells live from ready, and one JSON access-log line per REST request."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import oms
from tests.support.daemon import TEST_TOKEN, DaemonProcess
from tests.support.polling import poll_until

#: The names the runbook and the alert rules use (daemon/metrics.py's contract).
EXPECTED = {
    "bis_route_order_duration_seconds",
    "bis_broker_ack_duration_seconds",
    "bis_broker_orders",
    "bis_broker_fills",
    "bis_broker_cancels",
    "bis_broker_rejects",
    "bis_broker_connected",
    "bis_broker_circuit_state",
    "bis_broker_rate_limit_waits",
    "bis_outbox_depth",
    "bis_outbox_oldest_unpublished_age_seconds",
    "bis_jetstream_publish_failures",
    "bis_db_available",
    "bis_db_writer_batch_ops",
    "bis_db_writer_commit_duration_seconds",
    "bis_market_data_age_seconds",
    "bis_market_data_dropped",
    "bis_nats_connected",
    "bis_nats_reconnects",
    "bis_reconciliations",
    "bis_orders_stranded",
    "bis_orders_reconstructed",
}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(daemon: DaemonProcess) -> tuple[set[str], Samples]:
    reply = httpx.get(f"{daemon.rest_url}/metrics", timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    names: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        names.add(family.name)
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return names, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    poll_until(check, what=getattr(check, "__name__", "condition"), timeout=timeout, interval=0.1)


def test_metrics_are_public_named_as_documented_and_move_with_orders(daemon: DaemonProcess) -> None:
    names, before = scrape(daemon)
    assert names >= EXPECTED, EXPECTED - names
    assert value(before, "bis_nats_connected") == 1.0
    assert value(before, "bis_db_available") == 1.0
    assert value(before, "bis_broker_connected", broker="sim-cheap") == 1.0
    assert value(before, "bis_broker_circuit_state", broker="sim-cheap") == 0.0
    assert all("order" not in key for _, labels in before for key, _ in labels)  # bounded labels

    accepted = oms.route(daemon.nats_url, oms.order(f"obs-{uuid.uuid4().hex[:12]}"))
    assert accepted.body["status"] == "ACCEPTED", accepted.body
    broker = accepted.body["selectedBroker"]
    refused = oms.route(daemon.nats_url, oms.order(f"obs-{uuid.uuid4().hex[:12]}", symbol="NOPE"))
    assert refused.error_code == 400 or refused.body.get("status") == "REJECTED"
    rejected = oms.route(
        daemon.nats_url, oms.order(f"obs-{uuid.uuid4().hex[:12]}", preferredBrokers=["sim-reject"])
    )

    def moved() -> bool:
        _, after = scrape(daemon)
        return value(after, "bis_broker_fills_total", broker=broker) > value(
            before, "bis_broker_fills_total", broker=broker
        )

    eventually(moved)
    _, after = scrape(daemon)
    count = "bis_route_order_duration_seconds_count"
    answered = sum(
        value(after, count, outcome=o) - value(before, count, outcome=o)
        for o in ("accepted", "rejected", "error")
    )
    assert answered == 3
    assert value(after, count, outcome="accepted") - value(before, count, outcome="accepted") >= 1
    assert value(after, "bis_broker_orders_total", broker=broker) > value(
        before, "bis_broker_orders_total", broker=broker
    )
    ack = "bis_broker_ack_duration_seconds_count"
    assert value(after, ack, broker=broker) > value(before, ack, broker=broker)
    if rejected.body.get("status") == "REJECTED":
        rejects = sum(v for (name, _), v in after.items() if name == "bis_broker_rejects_total")
        assert rejects > sum(v for (name, _), v in before.items() if name == "bis_broker_rejects_total")
    assert value(after, "bis_db_writer_batch_ops_count") > value(before, "bis_db_writer_batch_ops_count")


def test_health_says_live_and_ready_with_each_check(daemon: DaemonProcess) -> None:
    live = httpx.get(f"{daemon.rest_url}/health/live", timeout=10)
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    for path in ("/health/ready", "/health", "/ready"):
        ready = httpx.get(f"{daemon.rest_url}{path}", timeout=10)
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["ready"] is True
        assert set(body["checks"]) >= {"database", "nats", "subscriptions", "brokers", "intake"}
        assert set(body["checks"].values()) == {"ok"}


def test_every_rest_request_is_one_json_access_line_without_secrets(daemon: DaemonProcess) -> None:
    marker = f"/brokers/access-{uuid.uuid4().hex[:8]}/status"
    reply = httpx.get(
        f"{daemon.rest_url}{marker}", headers={"Authorization": f"Bearer {TEST_TOKEN}"}, timeout=10
    )
    assert reply.status_code == 404

    def logged() -> list[dict[str, object]]:
        records = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
        return [r for r in records if r.get("logger") == "daemon.access" and r.get("path") == marker]

    eventually(lambda: bool(logged()))
    (record,) = logged()
    assert record["method"] == "GET" and record["status"] == 404
    assert isinstance(record["duration_ms"], float) and str(record["remote"]).startswith("127.0.0.1:")
    assert TEST_TOKEN not in daemon.log()
    lines = daemon.log().splitlines()
    assert lines and all(line.startswith("{") for line in lines), [x for x in lines if not x.startswith("{")][
        :5
    ]


def test_each_order_milestone_is_one_json_info_line(daemon: DaemonProcess) -> None:
    routed_id = f"ms-{uuid.uuid4().hex[:8]}"
    reply = oms.route(daemon.nats_url, oms.order(routed_id))
    assert isinstance(reply.body, dict) and reply.body["status"] == "ACCEPTED", reply

    def milestones(order_id: str) -> list[dict[str, object]]:
        records = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
        return [r for r in records if r.get("logger") == "orders" and r.get("order_id") == order_id]

    eventually(lambda: any(r["milestone"] == "final" for r in milestones(routed_id)))
    lines = milestones(routed_id)
    kinds = [r["milestone"] for r in lines]
    assert kinds[:3] == ["received", "routed", "acked"], kinds
    assert "fill" in kinds and kinds[-1] == "final", kinds
    assert all(r["level"] == "INFO" for r in lines)
    for record in lines[1:]:  # once routed: the broker, our client order id, the time since receipt
        assert record["broker_id"] and record["client_order_id"], record
        assert isinstance(record["latency_ms"], float) and record["latency_ms"] >= 0, record
    assert lines[-1]["status"] == "FILLED"
    assert isinstance(lines[1]["score"], float)
