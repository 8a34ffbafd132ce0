"""MARKET orders through the daemon to a FIX 4.4 broker, next to a bare FIX client on the same
acceptor in the same run.

    .venv/bin/python bench/fix.py              # default: 2,000 orders per target, ~1 minute
    .venv/bin/python bench/fix.py --quick      # 500 orders per target: a smoke run, ~30 s
    make bench BENCH_ARGS=--quick

Starts everything itself, in a temporary directory removed at the end: a nats-server, PostgreSQL
(a fresh `bis_bench_<random>` database on DATABASE_URL's server, else an embedded pgserver), the
loopback FIX acceptor of the tests (`tests/support/fix_acceptor.py`: real FIX 4.4 framing,
sequence numbers, ExecutionReport New then Fill at once for every market order) in a process of
its own with two sessions, and the daemon (`python -m daemon.cli run`) with one `[[fix_brokers]]`
session on that acceptor and no simulated broker.

- **bare**: a FIX client in this process (asyncio, simplefix framing, nothing persisted): logs on
  to its own session of the acceptor, sends NewOrderSingles pipelined with at most `--concurrent`
  (64) in flight, one `write` per order as QuickFIX does, and counts an order done when both its
  ExecutionReports (New and Fill) are in.
- **FIX adapter alone**: `adapters.fix.FixBroker` with its PostgreSQL store, in a process of
  its own (`python bench/fix.py adapter ...`), logged on to a third session of the acceptor:
  `--concurrent` tasks call `submit` (ack: it returned) and wait for the order's `OrderFilled`
  event. The FIX session layer and its store, without the daemon's order path.
- **daemon**: `--concurrent` requesters send RouteOrder over NATS (nats-py, as an OMS does); an
  order is answered (ACCEPTED) once the broker's New is in; its fill is seen when the execution
  update `COMPLETED` is published (a core subscription to the execution subjects).

The three alternate in `--rounds` blocks each (bare, adapter, daemon, bare, ...) after a warm-up
of each, so a change of load on the shared cores hits them alike. Figures: orders/s, p50/p99 of
order -> ack and order -> fill, adapter and daemon as % of bare; per order: CPU of each process,
PostgreSQL write transactions and WAL. Every reply is checked (exit status 1 otherwise).

Internal: `python bench/fix.py acceptor SENDER:TARGET ...` is the acceptor's process,
`python bench/fix.py adapter DATABASE_URL PORT` the adapter's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    REPO,
    BenchStack,
    cpu_seconds,
    daemon_base,
    exit_with,
    interrupt_on_signals,
    percentile,
    print_table,
    serve_until_told,
    start_profiler,
    stop_profiler,
)

BROKER_ID = "fix-bench"
ROUTE_SUBJECT = "trading.broker.v1.RouteOrder"
COMPLETED_SUBJECT = f"trading.broker.v1.executions.{BROKER_ID}.COMPLETED.*"
SYMBOLS = ("AAPL", "MSFT", "SPY")
BARE_SESSION = ("BAREBENCH", "BROKERA")  # SenderCompID, TargetCompID of the bare client
DAEMON_SESSION = ("BISBENCH", "BROKERB")  # ... of the daemon
ADAPTER_SESSION = ("ADAPTERBENCH", "BROKERC")  # ... of the FIX adapter on its own
ADAPTER_READY = "adapter-ready"
SCRIPT = str(Path(__file__).resolve())
REQUEST_TIMEOUT = 10.0  # one RouteOrder / one logon
BLOCK_TIMEOUT_PER_ORDER = 0.05  # a block fails after max(60 s, this x orders)
ACCEPTOR_READY = "acceptor-ready "


# --- the acceptor's process --------------------------------------------------------------------


def _acceptor_main(sessions: Sequence[str]) -> None:
    """One FixAcceptor per SENDER:TARGET pair, each on a port of its own; prints the ports as JSON
    once listening, and stops when stdin closes (the benchmark exited) or on SIGTERM."""
    from decimal import Decimal

    import trio

    from tests.support.fix_acceptor import FixAcceptor

    async def main() -> None:
        acceptors = []
        for pair in sessions:
            client, broker = pair.split(":")
            acceptors.append(
                FixAcceptor(
                    comp_id=broker,
                    client_comp_id=client,
                    market_price=Decimal("100"),
                    reject_quantity=Decimal("1000000"),
                )
            )
        async with trio.open_nursery() as nursery:
            for acceptor in acceptors:
                await nursery.start(acceptor.serve)
            ports = {f"{a.client_comp_id}:{a.comp_id}": a.port for a in acceptors}
            print(ACCEPTOR_READY + json.dumps(ports), flush=True)

            async def forget() -> None:
                # The acceptor keeps every message (a test oracle); a benchmark only needs the
                # numbered ones a resend could ask for, and none is asked for here.
                while True:
                    await trio.sleep(1.0)
                    for acceptor in acceptors:
                        acceptor.received.clear()

            nursery.start_soon(forget)
            await serve_until_told(nursery)

    trio.run(main)


def start_acceptor(stack: BenchStack, timeout: float = 30.0) -> tuple[int, dict[str, int]]:
    """The acceptor's process (stopped by `stack.close()`); (pid, ports by session)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sessions = [f"{s}:{t}" for s, t in (BARE_SESSION, DAEMON_SESSION, ADAPTER_SESSION)]
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "acceptor", *sessions],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,  # closed when we exit, however we exit: the acceptor stops
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    stack.responders.append(proc)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(ACCEPTOR_READY):
            return proc.pid, dict(json.loads(line[len(ACCEPTOR_READY) :]))
        if not line and proc.poll() is not None:
            break
    raise RuntimeError("the FIX acceptor did not start")


# --- the FIX adapter on its own (its process) ---------------------------------------------------


def _adapter_main(database_url: str, port: int) -> None:
    """`adapters.fix.FixBroker` with its PostgreSQL store, logged on to the acceptor, and nothing
    else of the daemon. Prints ADAPTER_READY, then for every line on stdin (JSON: order ids and
    orders in flight) submits those MARKET orders and prints one JSON line: per order the
    seconds to the ack (submit returned) and to the fill (its OrderFilled event), and the
    block's times. Ends (Logout) when stdin closes."""
    import math
    from decimal import Decimal

    import trio

    from adapters.base import SubmitRequest
    from adapters.fix import FixConfig, build_fix_broker
    from api.contracts import CommissionStructure
    from api.enums import AssetClass, BrokerFeature, OrderType, Side, TimeInForce
    from api.events import AnyBrokerEvent, OrderFilled

    sender, target = ADAPTER_SESSION
    config = FixConfig(
        broker_id="fix-adapter",
        name="FIX adapter alone",
        host="127.0.0.1",
        port=port,
        sender_comp_id=sender,
        target_comp_id=target,
        commission=CommissionStructure(base_rate=Decimal("0.0002")),
        account="ACC-BENCH",
        heartbeat_interval=30,
        asset_classes=(AssetClass.EQUITY,),
        features=(BrokerFeature.MARKET_ORDERS, BrokerFeature.LIMIT_ORDERS),
    )
    broker = build_fix_broker(config, database_url)
    filled: dict[str, float] = {}
    fill_waiters: dict[str, trio.Event] = {}

    async def watch(events: trio.MemoryReceiveChannel[AnyBrokerEvent]) -> None:
        async for event in events:
            if isinstance(event, OrderFilled):
                filled.setdefault(event.client_order_id, time.perf_counter())
                waiter = fill_waiters.pop(event.client_order_id, None)
                if waiter is not None:
                    waiter.set()

    async def block(order_ids: list[str], in_flight: int) -> dict[str, Any]:
        slots = trio.Semaphore(in_flight)
        times: dict[str, list[float]] = {}
        failures: Counter[str] = Counter()

        async def one(i: int, order_id: str) -> None:
            try:
                request = SubmitRequest(
                    client_order_id=order_id,
                    account_id="ACC-BENCH",
                    symbol=SYMBOLS[i % len(SYMBOLS)],
                    asset_class=AssetClass.EQUITY,
                    side=Side.BUY if i % 2 == 0 else Side.SELL,
                    order_type=OrderType.MARKET,
                    quantity=Decimal(10),
                    time_in_force=TimeInForce.DAY,
                )
                fill_waiters[order_id] = trio.Event()
                sent = time.perf_counter()
                await broker.submit(request)
                acked = time.perf_counter()
                if order_id not in filled:
                    with trio.fail_after(REQUEST_TIMEOUT):
                        await fill_waiters[order_id].wait()
                times[order_id] = [sent, acked, filled.pop(order_id)]
            except Exception as exc:
                failures[type(exc).__name__] += 1
            finally:
                fill_waiters.pop(order_id, None)
                slots.release()

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i, order_id in enumerate(order_ids):
                await slots.acquire()
                nursery.start_soon(one, i, order_id)
        done = list(times.values())
        return {
            "acks": [ack - sent for sent, ack, _ in done],
            "fills": [fill - sent for sent, _, fill in done],
            "elapsed_ack": max((ack for _, ack, _ in done), default=started) - started,
            "elapsed_fill": max((fill for _, _, fill in done), default=started) - started,
            "failures": dict(failures),
        }

    async def main() -> None:
        send, receive = trio.open_memory_channel[AnyBrokerEvent](math.inf)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, receive)
                await nursery.start(broker.run, send)
                print(ADAPTER_READY, flush=True)
                stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
                buffer = b""
                while chunk := await stdin.receive_some():
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        command = json.loads(line)
                        result = await block(command["ids"], command["in_flight"])
                        print(json.dumps(result), flush=True)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await broker.aclose()

    trio.run(main)


class AdapterClient:
    """Drives `_adapter_main` in its own process: one JSON line per block each way."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, database_url: str, port: int, timeout: float = 30.0) -> AdapterClient:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            "adapter",
            database_url,
            str(port),
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=1 << 24,  # a block's result is one JSON line: ~25 B per order's latencies
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if line.decode().strip() != ADAPTER_READY:
            proc.kill()
            raise RuntimeError(f"the FIX adapter process did not log on: {line!r}")
        return cls(proc)

    async def block(self, order_ids: Sequence[str], in_flight: int) -> Block:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"ids": list(order_ids), "in_flight": in_flight}).encode() + b"\n")
        await self.proc.stdin.drain()
        timeout = max(60.0, BLOCK_TIMEOUT_PER_ORDER * len(order_ids))
        result = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), timeout))
        block = Block("adapter", count=len(order_ids), acks=result["acks"], fills=result["fills"])
        block.elapsed_ack, block.elapsed_fill = result["elapsed_ack"], result["elapsed_fill"]
        block.failures.update(result["failures"])
        missing = len(order_ids) - len(block.acks) - sum(block.failures.values())
        if missing:
            block.failures["no answer"] += missing
        return block

    async def close(self, timeout: float = 10.0) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # the process logs out and ends
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# --- the daemon ---------------------------------------------------------------------------------


def daemon_config(*, state_dir: Path, nats_url: str, database_url: str, fix_port: int) -> str:
    """Like `_common.daemon_config`, but one FIX session instead of the simulated brokers; the
    simulated market still publishes quotes (arrival prices, TCA) as it does there."""
    sender, target = DAEMON_SESSION
    base = daemon_base(
        state_dir=state_dir, nats_url=nats_url, database_url=database_url, instance_id="bench-fix"
    )
    return (
        base
        + f"""
[market_data]
publish_simulated = true

[market]
seed = 11
tick_interval_ms = 100.0

[[fix_brokers]]
broker_id = "{BROKER_ID}"
name = "FIX bench broker (loopback acceptor)"
host = "127.0.0.1"
port = {fix_port}
sender_comp_id = "{sender}"
target_comp_id = "{target}"
account = "ACC-BENCH"
heartbeat_interval = 30
asset_classes = ["EQUITY"]
features = ["MARKET_ORDERS", "LIMIT_ORDERS"]
commission = {{ baseRate = "0.0002" }}
"""
    )


def start_daemon(stack: BenchStack, fix_port: int, timeout: float = 90.0) -> int:
    """`python -m daemon.cli run` with `daemon_config` (stopped by `stack.close()`); its pid
    once runtime.json exists (the FIX session logs on in the background: see `wait_logged_on`)."""
    import subprocess as sp

    state_dir = stack.tmp / "state"
    config = stack.tmp / "daemon.toml"
    config.write_text(
        daemon_config(
            state_dir=state_dir, nats_url=stack.nats_url, database_url=stack.database_url, fix_port=fix_port
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "DATABASE_URL", "BIS_LOG_LEVEL")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    runtime = state_dir / "runtime.json"
    with open(stack.daemon_log, "ab") as log:
        stack.daemon = sp.Popen(
            [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=sp.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.daemon.poll() is not None:
            raise RuntimeError(f"daemon exited with {stack.daemon.returncode}:\n{stack.daemon_log_tail()}")
        if runtime.exists():
            return stack.daemon.pid
        time.sleep(0.05)
    raise RuntimeError(f"daemon not ready after {timeout}s:\n{stack.daemon_log_tail()}")


# --- measuring ------------------------------------------------------------------------------------


@dataclass
class Block:
    """One measured block of one target."""

    target: str
    count: int = 0
    elapsed_ack: float = 0.0  # first order sent -> last ack (daemon: last RouteOrder reply)
    elapsed_fill: float = 0.0  # first order sent -> last fill (daemon: last COMPLETED update)
    acks: list[float] = field(default_factory=list)  # seconds per order
    fills: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)
    xids: int = 0  # PostgreSQL write transactions in the block
    wal: int = 0  # WAL bytes in the block


class Meter:
    """CPU of each process, PostgreSQL's write transactions and WAL, over one block."""

    def __init__(self, pids: dict[str, int], probe: Any) -> None:
        self.pids, self.probe = pids, probe
        self._cpu: dict[str, float] = {}
        self._pg: Any = None
        self._counters: dict[str, Any] = {}

    def _sample(self) -> dict[str, float]:
        sample = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        sample["client"] = time.process_time()
        return sample

    def start(self) -> None:
        self._counters = self.probe.counters()
        self._pg = self.probe.cpu()
        self._cpu = self._sample()

    def stop(self, block: Block) -> None:
        after = self._sample()
        pg = self.probe.cpu()
        counters = self.probe.counters()
        block.cpu = {name: after[name] - self._cpu[name] for name in after}
        server, backends = self.probe.cpu_diff(self._pg, pg)
        if server is not None or backends is not None:
            block.cpu["postgres"] = server if server is not None else backends or 0.0
        block.xids = counters["next_xid"] - self._counters["next_xid"] - 1  # the probe's own
        block.wal = counters["wal_bytes"] - self._counters["wal_bytes"]


class BareClient:
    """A FIX 4.4 initiator with nothing but framing (simplefix): the baseline. Sequence numbers
    in memory, reset at logon (141=Y); no store, no resend."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.sender, self.target = BARE_SESSION
        self.seq = 1
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._waiting: dict[str, list[float]] = {}  # ClOrdID -> [sent, ack, fill]
        self._done: Callable[[str], None] = lambda _: None
        self._logged_on = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.errors: Counter[str] = Counter()

    def _encode(self, msg_type: str, body: Sequence[tuple[int, str]]) -> bytes:
        import simplefix

        message = simplefix.FixMessage()
        message.append_pair(8, "FIX.4.4", header=True)
        message.append_pair(35, msg_type, header=True)
        message.append_pair(49, self.sender, header=True)
        message.append_pair(56, self.target, header=True)
        message.append_pair(34, self.seq, header=True)
        message.append_utc_timestamp(52, precision=3, header=True)
        for tag, value in body:
            message.append_pair(tag, value)
        self.seq += 1
        return bytes(message.encode())

    async def connect(self) -> None:
        self.reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), REQUEST_TIMEOUT
        )
        self.writer = writer
        self._task = asyncio.create_task(self._read())
        writer.write(self._encode("A", [(98, "0"), (108, "30"), (141, "Y")]))
        await asyncio.wait_for(self._logged_on.wait(), REQUEST_TIMEOUT)

    async def close(self) -> None:
        writer = self.writer
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.write(self._encode("5", []))
                await asyncio.wait_for(writer.drain(), 2.0)
            writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _read(self) -> None:
        import simplefix

        assert self.reader is not None
        parser = simplefix.FixParser()
        perf = time.perf_counter
        while True:
            data = await self.reader.read(65536)
            if not data:
                return
            parser.append_buffer(data)
            while (message := parser.get_message()) is not None:
                msg_type = message.get(35)
                if msg_type == b"8":
                    times = self._waiting.get(message.get(11).decode())
                    if times is None:
                        self.errors["report for an unknown order"] += 1
                        continue
                    status = message.get(39)
                    if status == b"0":
                        times[1] = perf()
                    elif status == b"2":
                        times[2] = perf()
                        self._done(message.get(11).decode())
                    else:
                        self.errors[f"OrdStatus {status!r}"] += 1
                elif msg_type == b"A":
                    self._logged_on.set()
                elif msg_type == b"1":  # TestRequest: answer it, as any client must
                    assert self.writer is not None
                    self.writer.write(self._encode("0", [(112, message.get(112).decode())]))

    async def block(self, order_ids: Sequence[str], in_flight: int) -> Block:
        """Send every order (at most `in_flight` unanswered), wait for each one's New and Fill."""
        assert self.writer is not None
        block = Block("bare", count=len(order_ids))
        slots = asyncio.Semaphore(in_flight)
        finished = asyncio.Event()
        remaining = len(order_ids)

        def done(order_id: str) -> None:
            nonlocal remaining
            slots.release()
            remaining -= 1
            if remaining == 0:
                finished.set()

        self._done = done
        perf, writer = time.perf_counter, self.writer
        started = perf()
        for i, order_id in enumerate(order_ids):
            await slots.acquire()
            self._waiting[order_id] = [perf(), 0.0, 0.0]
            writer.write(
                self._encode(
                    "D",
                    [
                        (11, order_id),
                        (1, "ACC-BENCH"),
                        (55, SYMBOLS[i % len(SYMBOLS)]),
                        (54, "1" if i % 2 == 0 else "2"),
                        (60, _fix_time()),
                        (38, "10"),
                        (40, "1"),
                        (59, "0"),
                    ],
                )
            )
            if writer.transport.get_write_buffer_size() > 1 << 16:
                await writer.drain()
        try:
            await asyncio.wait_for(finished.wait(), max(60.0, BLOCK_TIMEOUT_PER_ORDER * len(order_ids)))
        except TimeoutError:
            block.failures["timeout waiting for fills"] += remaining
        last_ack = last_fill = started
        for order_id in order_ids:
            sent, ack, fill = self._waiting.pop(order_id)
            if not (ack and fill):
                block.failures["no ack or no fill"] += 1
                continue
            block.acks.append(ack - sent)
            block.fills.append(fill - sent)
            last_ack, last_fill = max(last_ack, ack), max(last_fill, fill)
        block.elapsed_ack, block.elapsed_fill = last_ack - started, last_fill - started
        block.failures.update(self.errors)
        self.errors.clear()
        return block


def _fix_time() -> str:
    now = time.time()
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}"


def route_payload(order_id: str, i: int) -> bytes:
    import msgspec

    return msgspec.json.encode(
        {
            "orderId": order_id,
            "accountId": "ACC-BENCH",
            "symbol": SYMBOLS[i % len(SYMBOLS)],
            "side": "BUY" if i % 2 == 0 else "SELL",
            "type": "MARKET",
            "quantity": 10,
            "timeInForce": "DAY",
            "urgency": "MEDIUM",
            "preferredBrokers": [BROKER_ID],
        }
    )


class DaemonClient:
    """RouteOrder requests over NATS, and the COMPLETED updates of the same orders."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self._completed: dict[str, float] = {}
        self._watch: Callable[[], None] = lambda: None

    async def subscribe(self) -> None:
        async def on_update(msg: Any) -> None:
            order_id = msg.subject.rsplit(".", 1)[1]
            self._completed.setdefault(order_id, time.perf_counter())
            self._watch()

        await self.nc.subscribe(COMPLETED_SUBJECT, cb=on_update)
        await self.nc.flush()

    async def block(self, order_ids: Sequence[str], in_flight: int) -> Block:
        import msgspec

        block = Block("daemon", count=len(order_ids))
        decoder = msgspec.json.Decoder()
        sent: dict[str, float] = {}
        replied: dict[str, float] = {}
        feed = iter(enumerate(order_ids))
        perf, request = time.perf_counter, self.nc.request

        async def requester() -> None:
            for i, order_id in feed:
                payload = route_payload(order_id, i)
                sent[order_id] = perf()
                try:
                    msg = await request(ROUTE_SUBJECT, payload, timeout=REQUEST_TIMEOUT)
                except Exception as exc:
                    block.failures[type(exc).__name__] += 1
                    continue
                replied[order_id] = perf()
                headers = msg.headers or {}
                if "Nats-Service-Error-Code" in headers:
                    block.failures[f"error {headers['Nats-Service-Error-Code']}"] += 1
                    continue
                reply = decoder.decode(msg.data)
                if reply.get("status") != "ACCEPTED" or reply.get("orderId") != order_id:
                    block.failures[f"status {reply.get('status')}: {reply.get('rejectionReason', '')}"] += 1

        wanted = set(order_ids)
        all_completed = asyncio.Event()

        def watch() -> None:
            if wanted.issubset(self._completed.keys()):
                all_completed.set()

        self._watch = watch
        started = perf()
        await asyncio.gather(*(requester() for _ in range(in_flight)))
        watch()
        try:
            await asyncio.wait_for(all_completed.wait(), max(60.0, BLOCK_TIMEOUT_PER_ORDER * len(order_ids)))
        except TimeoutError:
            block.failures["COMPLETED update missing"] += len(wanted - self._completed.keys())
        self._watch = lambda: None
        last_ack = last_fill = started
        for order_id in order_ids:
            ack, fill = replied.get(order_id), self._completed.pop(order_id, None)
            if ack is None or fill is None:
                continue
            block.acks.append(ack - sent[order_id])
            block.fills.append(fill - sent[order_id])
            last_ack, last_fill = max(last_ack, ack), max(last_fill, fill)
        block.elapsed_ack, block.elapsed_fill = last_ack - started, last_fill - started
        return block


async def wait_logged_on(nc: Any, timeout: float = 60.0) -> None:
    """Until GetBrokerStatus says the FIX broker is connected."""
    deadline = time.monotonic() + timeout
    status: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            msg = await nc.request(
                "trading.broker.v1.GetBrokerStatus", json.dumps({"brokerId": BROKER_ID}).encode(), timeout=2.0
            )
            status = json.loads(msg.data)
            if status.get("status") == "CONNECTED":
                return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the daemon's FIX session did not log on within {timeout}s: {status}")


@dataclass
class Settings:
    orders: int
    warmup: int
    in_flight: int
    rounds: int
    profile: Path | None


async def measure(
    stack: BenchStack, ports: dict[str, int], pids: dict[str, int], probe: Any, settings: Settings
) -> dict[str, list[Block]]:
    import nats

    run = uuid.uuid4().hex[:6]
    bare = BareClient("127.0.0.1", ports[":".join(BARE_SESSION)])
    await bare.connect()
    nc = await nats.connect(stack.nats_url, name="bench-fix-client")
    daemon = DaemonClient(nc)
    await daemon.subscribe()
    adapter = await AdapterClient.start(stack.database_url, ports[":".join(ADAPTER_SESSION)])
    meter = Meter({**pids, "adapter": adapter.proc.pid}, probe)
    blocks: dict[str, list[Block]] = {"bare": [], "adapter": [], "daemon": []}
    targets = (("bare", bare.block), ("adapter", adapter.block), ("daemon", daemon.block))
    profiler = None
    try:
        await wait_logged_on(nc)
        # Warm-up (not in the figures): connections, cached plans, the daemon's routing state.
        for target, runner in targets:
            ids = [f"w{run}-{target[0]}-{i:06d}" for i in range(settings.warmup)]
            warm = await runner(ids, settings.in_flight)
            if warm.failures:
                raise RuntimeError(f"{target} warm-up failed: {dict(warm.failures)}")
        if settings.profile is not None:
            profiler = start_profiler(pids["daemon"], settings.profile)
            await asyncio.sleep(1.0)  # let py-spy attach
        per_block = max(1, settings.orders // settings.rounds)
        for round_no in range(settings.rounds):
            for target, runner in targets:
                ids = [f"m{run}-{target[0]}{round_no}-{i:06d}" for i in range(per_block)]
                meter.start()
                block = await runner(ids, settings.in_flight)
                meter.stop(block)
                blocks[target].append(block)
                print(
                    f"  round {round_no + 1} {target:<7} {block.count / block.elapsed_fill:8,.0f} orders/s"
                    + (f"  FAILURES {dict(block.failures)}" if block.failures else ""),
                    flush=True,
                )
                if not stack.daemon_alive():
                    raise RuntimeError("the daemon exited during the run")
    finally:
        if profiler is not None and settings.profile is not None:
            stop_profiler(profiler, settings.profile, "the measured blocks")
        await bare.close()
        await adapter.close()
        await nc.close()
    return blocks


# --- the report -----------------------------------------------------------------------------------


@dataclass
class Summary:
    count: int
    rate_ack: float
    rate_fill: float
    acks: list[float]
    fills: list[float]
    failures: Counter[str]
    cpu: dict[str, float]
    xids: int
    wal: int

    @classmethod
    def of(cls, blocks: Sequence[Block]) -> Summary:
        count = sum(b.count for b in blocks)
        cpu: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        for b in blocks:
            cpu.update(b.cpu)
            failures += b.failures
        return cls(
            count=count,
            rate_ack=count / sum(b.elapsed_ack for b in blocks),
            rate_fill=count / sum(b.elapsed_fill for b in blocks),
            acks=sorted(t for b in blocks for t in b.acks),
            fills=sorted(t for b in blocks for t in b.fills),
            failures=failures,
            cpu=dict(cpu),
            xids=sum(b.xids for b in blocks),
            wal=sum(b.wal for b in blocks),
        )


def report(blocks: dict[str, list[Block]], settings: Settings) -> int:
    bare, adapter, daemon = (Summary.of(blocks[t]) for t in ("bare", "adapter", "daemon"))
    summaries = (bare, adapter, daemon)

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1e3:,.2f}"

    def pct(a: float, b: float) -> str:
        return f"{100 * a / b:.1f} %" if b else "-"

    def rate_row(label: str, rate: Callable[[Summary], float]) -> list[str]:
        return [
            label,
            *(f"{rate(x):,.0f}" for x in summaries),
            pct(rate(adapter), rate(bare)),
            pct(rate(daemon), rate(bare)),
        ]

    def latency_row(label: str, values: Callable[[Summary], list[float]], q: float) -> list[str]:
        return [label, *(ms(values(x), q) for x in summaries), "", ""]

    rows = [
        rate_row("orders/s, to the last ack", lambda x: x.rate_ack),
        rate_row("orders/s, to the last fill", lambda x: x.rate_fill),
        latency_row("order -> ack p50 (ms)", lambda x: x.acks, 50),
        latency_row("order -> ack p99 (ms)", lambda x: x.acks, 99),
        latency_row("order -> fill p50 (ms)", lambda x: x.fills, 50),
        latency_row("order -> fill p99 (ms)", lambda x: x.fills, 99),
        ["failures", *(str(sum(x.failures.values())) for x in summaries), "", ""],
    ]
    print()
    print(
        f"{bare.count:,} orders per target in {settings.rounds} alternating blocks, "
        f"{settings.in_flight} in flight (ack: bare = ExecutionReport New, adapter = submit returned, "
        "daemon = RouteOrder reply; fill: the ExecutionReport Fill, the adapter's OrderFilled event, "
        "the daemon's COMPLETED update):"
    )
    headers = ["figure", "bare FIX client", "FIX adapter alone", "daemon", "adapter / bare", "daemon / bare"]
    print_table(headers, rows)
    names = sorted({name for x in summaries for name in x.cpu})
    cpu_rows = []
    for label, summary in zip(("bare", "adapter", "daemon"), summaries, strict=True):
        total = sum(summary.cpu.get(n, 0.0) for n in names)
        cpu_rows.append(
            [label]
            + [f"{summary.cpu.get(n, float('nan')) / summary.count * 1e6:,.0f}" for n in names]
            + [f"{total / summary.count * 1e6:,.0f}"]
        )
    print()
    print(f"CPU per order (us) by process ({os.cpu_count()} cores shared by all of them):")
    print_table(["target", *names, "total"], cpu_rows)
    print()
    print(
        "PostgreSQL per order, whole database (write transactions, WAL bytes): "
        + "; ".join(
            f"{label} blocks {x.xids / x.count:.2f}, {x.wal / x.count:,.0f} B"
            for label, x in zip(("bare", "adapter", "daemon"), summaries, strict=True)
        )
        + " (the bare blocks: the daemon's background work)"
    )
    failures = bare.failures + adapter.failures + daemon.failures
    if failures:
        print("\nfailures:")
        for reason, count in failures.most_common(10):
            print(f"  {count:>7,}  {reason}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=2000, help="measured orders per target (default 2000)")
    parser.add_argument("--warmup", type=int, default=300, help="warm-up orders per target (default 300)")
    parser.add_argument("--concurrent", type=int, default=64, help="orders in flight (default 64)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating blocks per target (default 2)")
    parser.add_argument("--quick", action="store_true", help="500 orders, 100 warm-up: a smoke run")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy the daemon over the measured blocks (.svg, .json, raw)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (daemon log, config)")
    args = parser.parse_args(argv)
    if args.quick:
        args.orders, args.warmup = min(args.orders, 500), min(args.warmup, 100)
    settings = Settings(
        orders=args.orders,
        warmup=args.warmup,
        in_flight=args.concurrent,
        rounds=max(1, args.rounds),
        profile=args.profile.resolve() if args.profile else None,
    )

    interrupt_on_signals()
    started = time.monotonic()
    from _pg import PgProbe

    with BenchStack(keep=args.keep) as stack:
        print(f"bench/fix.py: temp dir {stack.tmp}", flush=True)
        stack.start_servers()
        acceptor_pid, ports = start_acceptor(stack)
        daemon_pid = start_daemon(stack, ports[":".join(DAEMON_SESSION)])
        probe = PgProbe(stack.database_url, pgdata=stack.pgdata)
        settings_db = stack.db_settings()
        print(
            f"stack: nats-server {stack.nats_url}; PostgreSQL {settings_db.get('server_version', '?')} "
            f"{stack.database_note} (fsync={settings_db.get('fsync')}, "
            f"synchronous_commit={settings_db.get('synchronous_commit')}); acceptor pid {acceptor_pid} "
            f"ports {ports}; daemon pid {daemon_pid}; setup {time.monotonic() - started:.1f} s",
            flush=True,
        )
        pids = {"daemon": daemon_pid, "acceptor": acceptor_pid, "nats-server": stack.nats.proc.pid}
        try:
            with contextlib.closing(probe):
                blocks = asyncio.run(measure(stack, ports, pids, probe, settings))
        except Exception:
            if not stack.daemon_alive():
                print(f"the daemon died; its log:\n{stack.daemon_log_tail()}", file=sys.stderr)
            raise
        interrupt_on_signals()  # asyncio.run reset both
        status = report(blocks, settings)
        if not stack.daemon_alive():
            print(f"the daemon died during the run; its log:\n{stack.daemon_log_tail()}", file=sys.stderr)
            status = 1
    print(f"\ntotal {time.monotonic() - started:.0f} s; exit status {status}")
    return status


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "acceptor":
        _acceptor_main(sys.argv[2:])
        sys.exit(0)
    if len(sys.argv) == 4 and sys.argv[1] == "adapter":
        _adapter_main(sys.argv[2], int(sys.argv[3]))
        sys.exit(0)
    exit_with(main)
