"""Scenario: the production shape of docs/deployment.md on loopback. A 3-node NATS cluster
(JetStream on each node, cluster routes), the execution stream replicated on all three (R3,
`nats.stream_replicas = 3`), two daemons in one queue group on one PostgreSQL, each given the
three URLs (one as a TOML list, one as a comma-separated string). In the middle of a flood the
node that holds a daemon's connection *and* leads the stream's replicas is killed (SIGKILL).

Promised, and asserted: every order answered (the OMS retries what got no answer with the same
orderId), every answer held by the database, none sent twice; every execution update committed
is in the stream (read from a surviving node); both daemons still the same processes, connected
and ready — no restart; the stream still has three replicas with a new leader."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.chaos.scenario import (
    CHAOS_BROKERS,
    CHAOS_SERVICE,
    ChaosDaemon,
    RecordFigures,
    assert_promises,
    chaos_orders,
    settle_and_count,
    start_flood,
)
from tests.support.nats_cluster import NatsCluster, running_cluster

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(150)]

STREAM = "BROKER_EXECUTIONS"
REPLICAS = 3
CONNECTION_PREFIX = "broker-integration-"
#: After the kill, the flood gets this long to have every order answered. A stream-leader
#: election takes a few seconds (JetStream publishes wait meanwhile, then the outbox resends).
ANSWER_WITHIN_S = 25.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with running_cluster(tmp_path / "nats", size=3) as running:
        yield running


def cluster_daemon(
    tmp_path: Path, instance: str, cluster: NatsCluster, database_url: str, *, as_list: bool
) -> ChaosDaemon:
    """A daemon of the chaos tests configured for the cluster: every node's URL and R3."""
    daemon = ChaosDaemon(
        tmp_path / instance,
        cluster.urls,
        database_url,
        instance=instance,
        brokers_toml=CHAOS_BROKERS,
        service_toml=CHAOS_SERVICE,
    )
    text = daemon.config.read_text()
    url_line = f'url = "{cluster.urls}"'
    assert url_line in text, "tests/support/daemon.py no longer writes [nats] url as expected"
    if as_list:
        listed = ", ".join(f'"{node.url}"' for node in cluster.nodes)
        text = text.replace(url_line, f"url = [{listed}]")
    text = text.replace("[nats]\n", f"[nats]\nstream_replicas = {REPLICAS}\n", 1)
    daemon.config.write_text(text)
    return daemon


def start_all(daemons: list[ChaosDaemon]) -> None:
    """Start the daemons side by side (each start waits for its runtime.json)."""
    errors: list[BaseException] = []

    def start(daemon: ChaosDaemon) -> None:
        try:
            daemon.start(env={"BIS_INSTANCE_ID": daemon.workdir.name})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(d,)) for d in daemons]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    if errors:
        raise errors[0]


def scrape(daemon: ChaosDaemon) -> dict[str, float]:
    """The daemon's unlabelled samples from GET /metrics (name -> value)."""
    response = httpx.get(f"{daemon.rest_url}/metrics", timeout=5)
    response.raise_for_status()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if not sample.labels
    }


def test_a_nats_node_killed_in_a_flood_loses_no_order_and_no_update(
    tmp_path: Path,
    cluster: NatsCluster,
    chaos_database: str,
    record_figures: RecordFigures,
) -> None:
    daemons = [
        cluster_daemon(tmp_path, "cluster-a", cluster, chaos_database, as_list=True),
        cluster_daemon(tmp_path, "cluster-b", cluster, chaos_database, as_list=False),
    ]
    try:
        start_all(daemons)
        pids = [d.proc.pid for d in daemons if d.proc is not None]
        info = cluster.stream_info(STREAM)
        assert info["config"]["num_replicas"] == REPLICAS, info["config"]

        # The victim: the node holding a daemon's connection, made the stream's leader too.
        held = cluster.connections(CONNECTION_PREFIX)
        victim = next(node for node in cluster.nodes if held.get(node.name))
        cluster.step_down(STREAM, victim.name)
        on_victim = [name.removeprefix(CONNECTION_PREFIX) for name in held[victim.name]]
        oms_node = next(node for node in cluster.nodes if node is not victim)

        flood = start_flood(oms_node.url, chaos_orders("cluster"))
        answered_at_kill = flood.answered
        killed_at = time.monotonic()
        victim.kill()
        flood.finish_by(killed_at + ANSWER_WITHIN_S)
        flood.join()

        figures = settle_and_count(
            "nats cluster node kill -9", [flood], chaos_database, oms_node.url, restored_at=killed_at
        )
        after = cluster.stream_info(STREAM)
        metrics = {d.workdir.name: scrape(d) for d in daemons}
        ready = {
            d.workdir.name: httpx.get(f"{d.rest_url}/health/ready", timeout=5).status_code for d in daemons
        }
        figures.extra.update(
            killed=victim.name,
            daemons_on_killed_node=on_victim,
            answered_before_kill=answered_at_kill,
            new_stream_leader=(after.get("cluster") or {}).get("leader"),
            reconnects={name: m.get("bis_nats_reconnects_total") for name, m in metrics.items()},
        )
        record_figures(figures)

        for daemon, pid in zip(daemons, pids, strict=True):
            tail = "\n".join(daemon.log().splitlines()[-25:])
            assert daemon.alive, f"{daemon.workdir.name} exited when a NATS node died:\n{tail}"
            assert daemon.proc is not None and daemon.proc.pid == pid, f"{daemon.workdir.name} was restarted"
        assert on_victim, "no daemon was connected to the killed node: the scenario tested nothing"
        for name in on_victim:
            assert metrics[name]["bis_nats_reconnects_total"] >= 1, metrics[name]
        assert all(m["bis_nats_connected"] == 1.0 for m in metrics.values()), metrics
        assert ready == {"cluster-a": 200, "cluster-b": 200}, ready
        survivors = {node.name for node in cluster.alive}
        now_held = cluster.connections(CONNECTION_PREFIX)
        assert sorted(n for names in now_held.values() for n in names) == [
            CONNECTION_PREFIX + "cluster-a",
            CONNECTION_PREFIX + "cluster-b",
        ], now_held
        assert after["config"]["num_replicas"] == REPLICAS
        assert (after.get("cluster") or {}).get("leader") in survivors, after.get("cluster")
        assert figures.sent == len(flood.traces)
        assert_promises(figures)
    finally:
        for daemon in daemons:
            if daemon.alive:
                try:
                    daemon.stop(timeout=15)
                except RuntimeError:
                    pass  # killed after the timeout; its log is in tmp_path
