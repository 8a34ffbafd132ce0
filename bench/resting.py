"""Daemon memory with many resting orders: RSS before and after N open LIMIT orders.

    .venv/bin/python bench/resting.py                  # 100,000 orders: ~3 min on 2 cores
    .venv/bin/python bench/resting.py --quick          # 10,000 orders: ~25 s
    .venv/bin/python bench/resting.py --breakdown      # + Python objects per order, by type
    .venv/bin/python bench/resting.py --quick --trace  # + tracemalloc by line (slow)
    make bench BENCH_ARGS=--quick

Starts everything itself, as bench/route.py does (`_common.BenchStack`), in a temporary directory
removed at the end: a nats-server (JetStream), PostgreSQL (a fresh `bis_bench_<random>` database
on DATABASE_URL's server, else an embedded pgserver), and the daemon as its own process
(`python -m daemon.cli run`, two simulated brokers with zero latency and no rejects, REST off).

What it measures. The daemon's memory (`_memory.Memory`: RSS, RssAnon and RssFile, VmHWM (the peak
RSS) from /proc/<pid>/status, USS from /proc/<pid>/smaps) at three points:

1. idle, a few seconds after the daemon is ready, before any order: the same-run baseline;
2. after the warm-up, the first `--warmup` orders (they count towards N): one-time costs (lazy
   imports, caches, connection buffers, prepared statements) are paid by then;
3. after all N orders are acknowledged, the outbox is drained (every update published) and
   `--settle` seconds have passed: the figure the target is about.

Every order is a GTC LIMIT order of 10 shares on an equity (AAPL / MSFT / SPY), buys at 1.00 and
sells at 1,000,000.00, so nothing ever fills: each one rests at its broker and stays open in the
daemon. `--concurrent` requesters (default 128) share the orders, each sending its next request
when its reply is in. Every reply must be an ACCEPTED OrderRoutingResponse for its order, and at
the end PostgreSQL must hold N executions ACCEPTED (open): anything else makes the exit status 1.
Target (issue 11): RSS with 100,000 resting orders <= 300 MB, goal <= 200 MB (MB = 10^6 bytes).

`--breakdown` runs the daemon under the census harness of `_memory.py` (`python bench/_memory.py
run --config ...`): on SIGUSR1 it counts every Python object reachable from the garbage
collector's lists (by type: count and `sys.getsizeof` bytes) and, with `--trace` (tracemalloc
from the daemon's first import), the live allocations grouped by the innermost frame in this
repository, by the innermost frame of all, and by file. Both are taken after the warm-up and
after the last order; the difference divided by the orders in between is the cost per resting
order. The census freezes the daemon for seconds and tracemalloc slows it down and adds its own
memory: the RSS figures of such a run are not the benchmark's figures (printed, marked so).

Exit status: 0, or 1 if a reply was not ACCEPTED, an execution is not open at the end, or the
daemon died; 130 on Ctrl-C / SIGTERM (everything started is stopped either way).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, BenchStack, _tail, daemon_config, exit_with, format_table, interrupt_on_signals
from _memory import CENSUS_DIR_ENV, MB, TRACE_ENV, Memory, census_tables, mb, rss_now, take_census

ROUTE_SUBJECT = "trading.broker.v1.RouteOrder"
SYMBOLS = ("AAPL", "MSFT", "SPY")
REQUEST_TIMEOUT = 30.0
TARGET_MB, GOAL_MB = 300, 200
#: Seconds between progress lines.
PROGRESS_S = 5.0


# --- the daemon, plain or under the census harness ------------------------------------------


def start_daemon(stack: BenchStack, *, harness: bool, trace: bool, timeout: float = 120.0) -> int:
    """Start the daemon like `BenchStack.start_daemon` (same configuration, same readiness
    check: `<state>/runtime.json`), either as `python -m daemon.cli run` or under the census
    harness (`_memory.py`); `stack` owns the process (stopped by `stack.close()`). Returns its pid."""
    state_dir = stack.tmp / "state"
    config = stack.tmp / "daemon.toml"
    config.write_text(
        daemon_config(
            state_dir=state_dir,
            nats_url=stack.nats_url,
            database_url=stack.database_url,
            safeguards_off=("max_order_notional",),  # the resting orders are large on purpose
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "DATABASE_URL", "BIS_LOG_LEVEL")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if harness:
        census_dir = stack.tmp / "census"
        census_dir.mkdir(exist_ok=True)
        env[CENSUS_DIR_ENV] = str(census_dir)
        if trace:
            env[TRACE_ENV] = "1"
        command = [sys.executable, str(Path(__file__).resolve().parent / "_memory.py")]
    else:
        command = [sys.executable, "-m", "daemon.cli"]
    runtime = state_dir / "runtime.json"
    with open(stack.daemon_log, "ab") as log:
        stack.daemon = subprocess.Popen(
            [*command, "run", "--config", str(config)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only us; the stack stops it in order
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.daemon.poll() is not None:
            raise RuntimeError(f"daemon exited with {stack.daemon.returncode}:\n{_tail(stack.daemon_log)}")
        if runtime.exists():
            return stack.daemon.pid
        time.sleep(0.05)
    raise RuntimeError(f"daemon not ready after {timeout}s:\n{_tail(stack.daemon_log)}")


# --- requests ---------------------------------------------------------------------------------


def resting_payloads(run: str, count: int) -> list[bytes]:
    """`count` RouteOrder requests that rest: GTC LIMIT orders of 10 shares, buys at 1.00 and
    sells at 1,000,000.00, on AAPL / MSFT / SPY in turn, order ids `r<run>-<n>`."""
    import msgspec

    out = []
    for i in range(count):
        buy = i % 2 == 0
        out.append(
            msgspec.json.encode(
                {
                    "orderId": f"r{run}-{i:07d}",
                    "accountId": "ACC-BENCH",
                    "symbol": SYMBOLS[i % len(SYMBOLS)],
                    "side": "BUY" if buy else "SELL",
                    "type": "LIMIT",
                    "quantity": 10,
                    "price": 1.0 if buy else 1_000_000.0,
                    "timeInForce": "GTC",
                    "urgency": "MEDIUM",
                }
            )
        )
    return out


def check_accepted(request: bytes, msg: Any) -> str | None:
    """None if the reply is an ACCEPTED OrderRoutingResponse for this order, else why not."""
    import msgspec

    headers = msg.headers or {}
    if "Nats-Service-Error-Code" in headers:
        return f"error {headers['Nats-Service-Error-Code']}: {headers.get('Nats-Service-Error', '')}"
    try:
        reply = msgspec.json.decode(msg.data)
    except msgspec.DecodeError:
        return "undecodable reply"
    if reply.get("status") != "ACCEPTED":
        return f"status {reply.get('status')}: {reply.get('rejectionReason', '')}"[:120]
    if reply.get("orderId") != msgspec.json.decode(request)["orderId"]:
        return "reply for another order"
    return None


class Interrupted(Exception):
    """The run stops early (Ctrl-C, SIGTERM, the daemon died)."""


@dataclass
class Load:
    """What sending the orders produced: failures by reason, RSS after each tenth."""

    sent: int = 0
    done: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    deciles: list[tuple[int, int]] = field(default_factory=list)  # (orders done, RSS)
    elapsed: float = 0.0
    stop: str | None = None  # why to stop: checked before each request (nats-py swallows cancellation)


async def send_orders(
    nats_url: str, payloads: list[bytes], requesters: int, pid: int, label: str, load: Load, total: int
) -> None:
    """Send `payloads` from `requesters` tasks, each sending its next one when its reply is in;
    a progress line every `PROGRESS_S` (orders, rate, daemon RSS) and the RSS at each tenth of `total`."""
    import nats

    nc = await nats.connect(nats_url, name="bench-resting")
    feed = iter(payloads)
    started = time.perf_counter()
    first = load.done
    next_decile = (load.done * 10 // total + 1) * total // 10

    async def requester() -> None:
        nonlocal next_decile
        for payload in feed:
            if load.stop is not None:
                raise Interrupted(load.stop)
            load.sent += 1
            try:
                msg = await nc.request(ROUTE_SUBJECT, payload, timeout=REQUEST_TIMEOUT)
            except Exception as exc:
                load.failures[type(exc).__name__] += 1
            else:
                problem = check_accepted(payload, msg)
                if problem:
                    load.failures[problem] += 1
            load.done += 1
            if load.done >= next_decile:
                load.deciles.append((load.done, rss_now(pid)))
                next_decile += total // 10

    async def progress() -> None:
        while True:
            await asyncio.sleep(PROGRESS_S)
            seconds = time.perf_counter() - started
            rate = (load.done - first) / seconds if seconds else 0.0
            left = (total - load.done) / rate if rate else float("nan")
            print(
                f"  {label}: {load.done:>9,} / {total:,} orders acked, {rate:,.0f}/s, "
                f"daemon RSS {mb(rss_now(pid))} MB, failures {sum(load.failures.values())}, "
                f"~{left:,.0f} s left",
                flush=True,
            )

    reporter = asyncio.create_task(progress())
    try:
        await asyncio.gather(*(requester() for _ in range(requesters)))
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        load.elapsed += time.perf_counter() - started
        with contextlib.suppress(Exception):
            await nc.close()


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Settings:
    orders: int
    warmup: int
    requesters: int
    settle: float
    breakdown: bool
    trace: bool
    top: int


@dataclass
class Results:
    idle: Memory | None = None
    warm: Memory | None = None
    loaded: Memory | None = None
    nats_rss: tuple[int, int] | None = None  # nats-server: idle, loaded
    statuses: dict[str, int] = field(default_factory=dict)
    drain: float = float("nan")
    census: list[dict[str, Any]] = field(default_factory=list)
    load: Load = field(default_factory=Load)


def wait_drained(stack: BenchStack, load: Load, timeout: float = 300.0) -> float:
    """Seconds until every execution update is published (the daemon's outbox is empty)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if load.stop is not None:
            raise Interrupted(load.stop)
        if stack.unpublished_updates() == 0:
            return time.monotonic() - started
        time.sleep(0.1)
    return float("nan")


def settle(seconds: float, stack: BenchStack, load: Load) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not stack.daemon_alive():
            raise Interrupted("the daemon exited during the run")
        if load.stop is not None:
            raise Interrupted(load.stop)
        time.sleep(0.1)


def execution_statuses(stack: BenchStack, run: str) -> dict[str, int]:
    """This run's executions in PostgreSQL, by status."""
    import psycopg

    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM broker_orders WHERE order_id LIKE %s GROUP BY status",
            (f"r{run}-%",),
        ).fetchall()
    return {str(status): int(n) for status, n in rows}


def run(stack: BenchStack, settings: Settings, pid: int) -> Results:
    results = Results()
    load = results.load
    run_id = uuid.uuid4().hex[:8]
    payloads = resting_payloads(run_id, settings.orders)

    def stop(signum: int, frame: object) -> None:
        load.stop = f"interrupted ({signal.Signals(signum).name})"

    previous = signal.signal(signal.SIGINT, stop), signal.signal(signal.SIGTERM, stop)
    try:
        settle(settings.settle, stack, load)
        results.idle = Memory.of(pid)
        nats_idle = rss_now(stack.nats.proc.pid)
        print(f"idle daemon: RSS {mb(results.idle.rss)} MB (anon {mb(results.idle.anon)} MB)", flush=True)

        def send(part: list[bytes], label: str) -> None:
            async def go() -> None:
                loop = asyncio.get_running_loop()

                async def watch() -> None:
                    while load.stop is None:
                        if not stack.daemon_alive():
                            load.stop = "the daemon exited during the run"
                        await asyncio.sleep(0.5)

                watcher = loop.create_task(watch())
                try:
                    await send_orders(
                        stack.nats_url, part, settings.requesters, pid, label, load, settings.orders
                    )
                finally:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher

            asyncio.run(go())
            # asyncio.run leaves the default handlers behind: ours again
            signal.signal(signal.SIGINT, stop)
            signal.signal(signal.SIGTERM, stop)

        print(f"warm-up: the first {settings.warmup:,} orders", flush=True)
        send(payloads[: settings.warmup], "warm-up")
        if load.failures:  # a daemon that refuses these orders should fail fast, not after minutes
            reason, count = load.failures.most_common(1)[0]
            raise RuntimeError(f"{count:,} of the {settings.warmup:,} warm-up orders failed: {reason}")
        wait_drained(stack, load)
        settle(settings.settle, stack, load)
        results.warm = Memory.of(pid)
        print(f"after the warm-up: RSS {mb(results.warm.rss)} MB", flush=True)
        if settings.breakdown:
            print("census after the warm-up (the daemon pauses)...", flush=True)
            results.census.append(take_census(stack.tmp / "census", pid, 1))

        rest = payloads[settings.warmup :]
        print(
            f"{len(rest):,} more orders, {settings.requesters} in flight (GTC LIMIT, far from the market)",
            flush=True,
        )
        send(rest, "resting")
        print("all replies in; waiting for the outbox to drain", flush=True)
        results.drain = wait_drained(stack, load)
        settle(settings.settle, stack, load)
        results.loaded = Memory.of(pid)
        results.nats_rss = (nats_idle, rss_now(stack.nats.proc.pid))
        results.statuses = execution_statuses(stack, run_id)
        if settings.breakdown:
            print("census after the last order (the daemon pauses)...", flush=True)
            results.census.append(take_census(stack.tmp / "census", pid, 2))
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    return results


# --- the report -------------------------------------------------------------------------------


def memory_table(results: Results, settings: Settings) -> str:
    idle, warm, loaded = results.idle, results.warm, results.loaded
    assert idle is not None and warm is not None and loaded is not None
    n, after_warm = settings.orders, settings.orders - settings.warmup

    def delta(a: int | None, b: int | None) -> str:
        return "-" if a is None or b is None else f"{(b - a) / MB:+,.1f}"

    def per(a: int | None, b: int | None, count: int) -> str:
        return "-" if a is None or b is None or count <= 0 else f"{(b - a) / count:,.0f}"

    rows = [
        [label, mb(m.rss), mb(m.anon), mb(m.file), mb(m.uss), mb(m.peak)]
        for label, m in (
            ("idle, after start (baseline)", idle),
            (f"after the warm-up ({settings.warmup:,} resting)", warm),
            (f"with {n:,} resting orders", loaded),
        )
    ]
    rows.append(
        [
            "delta, idle -> loaded (MB)",
            *(delta(getattr(idle, k), getattr(loaded, k)) for k in ("rss", "anon", "file", "uss")),
            "",
        ]
    )
    rows.append(
        [
            f"bytes per resting order, idle -> {n:,}",
            *(per(getattr(idle, k), getattr(loaded, k), n) for k in ("rss", "anon", "file", "uss")),
            "",
        ]
    )
    rows.append(
        [
            f"bytes per resting order, warm-up -> {n:,} (marginal)",
            *(per(getattr(warm, k), getattr(loaded, k), after_warm) for k in ("rss", "anon", "file", "uss")),
            "",
        ]
    )
    table = format_table(["daemon memory (MB = 10^6 B)", "RSS", "anon", "file", "USS", "peak RSS"], rows)
    verdict = (
        f"target: RSS with {n:,} resting orders <= {TARGET_MB} MB: "
        f"{'met' if loaded.rss <= TARGET_MB * MB else 'MISSED'} ({mb(loaded.rss)} MB); "
        f"goal <= {GOAL_MB} MB: {'met' if loaded.rss <= GOAL_MB * MB else 'not yet'}"
    )
    if n != 100_000:
        verdict += f" (the target is for 100,000 orders; this run had {n:,})"
    return f"{table}\n{verdict}"


def deciles_line(load: Load, idle: Memory) -> str:
    """RSS growth per order in each tenth of the run (linear growth: a steady cost per order)."""
    cells = []
    previous = (0, idle.rss)
    for done, rss in load.deciles:
        if done > previous[0]:
            cells.append(f"{(rss - previous[1]) / (done - previous[0]):,.0f}")
        previous = (done, rss)
    return "RSS growth per order, by tenth of the run (B): " + " ".join(cells)


def report(results: Results, settings: Settings) -> int:
    load = results.load
    print()
    if settings.breakdown:
        print(
            "NOTE: --breakdown run: the census (and tracemalloc with --trace) inflate the daemon's "
            "memory; these RSS figures are not the benchmark's."
        )
    print(memory_table(results, settings))
    assert results.idle is not None
    print(deciles_line(load, results.idle))
    rate = (settings.orders / load.elapsed) if load.elapsed else 0.0
    print(
        f"orders: {settings.orders:,} sent, {settings.requesters} in flight, {rate:,.0f}/s while "
        f"sending; outbox drained {results.drain:.1f} s after the last reply"
    )
    if results.nats_rss:
        print(
            f"nats-server RSS (not the daemon's; for reference): {mb(results.nats_rss[0])} -> "
            f"{mb(results.nats_rss[1])} MB"
        )
    statuses = ", ".join(f"{s} {n:,}" for s, n in sorted(results.statuses.items())) or "none"
    print(f"executions of this run in PostgreSQL, by status: {statuses}")
    if len(results.census) == 2:
        print()
        before, after = results.census
        print(census_tables(before, after, settings.orders - settings.warmup, settings.top))
    status = 0
    if load.failures:
        print("\nfailed replies:")
        for reason, count in load.failures.most_common(10):
            print(f"  {count:>7,}  {reason}")
        status = 1
    if results.statuses != {"ACCEPTED": settings.orders}:
        print(f"\nexpected {settings.orders:,} executions ACCEPTED (resting), found: {statuses}")
        status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=100_000, help="resting orders (default 100,000)")
    parser.add_argument("--quick", action="store_true", help="10,000 orders (a smoke run)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="of which warm-up, measured apart (default 5%%, >= 500)"
    )
    parser.add_argument("--concurrent", type=int, default=128, help="requests in flight (default 128)")
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds of quiet before each reading (default 3)"
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="run the daemon under the census harness: objects per order by type (a diagnostic run)",
    )
    parser.add_argument(
        "--trace", action="store_true", help="with --breakdown: tracemalloc too, by line (slow)"
    )
    parser.add_argument("--top", type=int, default=25, help="rows per breakdown table (default 25)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (daemon log, configs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.orders = min(args.orders, 10_000)
    warmup = args.warmup if args.warmup is not None else max(500, args.orders // 20)
    if args.orders < 10 or not 0 < warmup < args.orders:
        parser.error("need --orders >= 10 and 0 < --warmup < --orders")
    settings = Settings(
        orders=args.orders,
        warmup=warmup,
        requesters=args.concurrent,
        settle=args.settle,
        breakdown=args.breakdown or args.trace,
        trace=args.trace,
        top=args.top,
    )

    interrupt_on_signals()
    started = time.monotonic()
    with BenchStack(keep=args.keep) as stack:
        print(f"bench/resting.py: temp dir {stack.tmp}", flush=True)
        stack.start_servers()
        pid = start_daemon(stack, harness=settings.breakdown, trace=settings.trace)
        harness = ""
        if settings.breakdown:
            harness = " (census harness, tracemalloc)" if settings.trace else " (census harness)"
        print(
            f"stack: nats-server {stack.nats_url}; PostgreSQL {stack.database_note}; daemon pid {pid}"
            f"{harness}; setup {time.monotonic() - started:.1f} s",
            flush=True,
        )
        try:
            results = run(stack, settings, pid)
        except Interrupted as exc:
            if not stack.daemon_alive():
                print(f"the daemon died; its log:\n{stack.daemon_log_tail()}", file=sys.stderr)
                raise RuntimeError(str(exc)) from None
            raise KeyboardInterrupt from None
        status = report(results, settings)
        if not stack.daemon_alive():
            print(f"the daemon died during the run; its log:\n{stack.daemon_log_tail()}", file=sys.stderr)
            status = 1
    print(f"\ntotal {time.monotonic() - started:.0f} s; exit status {status}")
    return status


if __name__ == "__main__":
    exit_with(main)
