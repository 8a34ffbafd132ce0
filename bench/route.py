"""RouteOrder round trips against the embedded stack, with echo responders as same-run baselines.

    .venv/bin/python bench/route.py              # default: ~75-100 s on 2 cores
    .venv/bin/python bench/route.py --quick      # smoke run, ~25 s
    make bench BENCH_ARGS=--quick

Starts everything itself, in a temporary directory removed at the end: a nats-server (JetStream),
PostgreSQL (a fresh `bis_bench_<random>` database on DATABASE_URL's server, else an embedded
pgserver), the daemon as its own process (`python -m daemon.cli run --config ...`, simulated
brokers with zero latency and no rejects, REST off), and two echo responders, each in its own
process: a bare nats-py one (asyncio, plain `nc.subscribe` + `msg.respond`: the baseline of the
targets) and a "Trio echo" that is the daemon's own request plumbing (`daemon.bus.NatsBus.serve`:
nats.micro in trio-asyncio -> memory channel -> Trio workers -> reply) around a handler that
returns the payload, which splits the gap into plumbing and order work. One nats-py asyncio
client (`nc.request`) measures all three the same way, with payloads of the same size:

- sequential: one request at a time (after a warm-up) -> p50 / p90 / p99 round trip;
- concurrent: N requesters (default 64) sharing a fixed number of requests -> requests/s.

Every RouteOrder is a MARKET order on an equity with a unique orderId; every reply must be
ACCEPTED (anything else is counted as a failure and the exit status is 1). Targets from
DESIGN.md: RouteOrder p50 <= 2x the echo's p50, >= 5,000 routed orders/s.

The database is measured as one in production: before each RouteOrder phase the tables hold
rows (--seed), are ANALYZEd, and a second warm-up lets the daemon re-plan its cached statements
with the statistics (--no-analyze: as on brand-new tables). Per RouteOrder phase it reports
(bench/_pg.py): write transactions (xids) and all commits (pg_stat_database), sequential and
index scans, the CPU of the benchmark's own PostgreSQL server and of its database's backends,
and WAL by table and kind (pg_walinspect, else pg_waldump for the embedded server). Each figure
is described in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _steps
import msgspec
import nats
from _common import (
    BenchStack,
    cpu_seconds,
    exit_with,
    format_table,
    interrupt_on_signals,
    percentile,
    print_table,
    start_profiler,
    stop_profiler,
)
from _pg import KINDS, CpuSample, PgProbe, WalBreakdown

ROUTE_SUBJECT = "trading.broker.v1.RouteOrder"
ECHO_SUBJECT = "bench.echo.RouteOrder"
TRIO_ECHO_SUBJECT = "bench.trio-echo.RouteOrder"
SYMBOLS = ("AAPL", "MSFT", "SPY")
REQUEST_TIMEOUT = 10.0
REST_WINDOW = 1.5  # s at least without orders after the last phase, to see the daemon's background work


# --- requests and checks --------------------------------------------------------------------


def order_payloads(run: str, phase: str, count: int) -> list[bytes]:
    """`count` RouteOrder requests with unique order ids (`b<run>-<phase>-<n>`, <= 36 chars);
    MARKET orders on equities, alternating sides. Built before a phase starts, so the client does
    the same work for the echo and for RouteOrder while timing."""
    assert len(phase) == 2, "equal-length phase tags keep echo and RouteOrder payloads the same size"
    out = []
    for i in range(count):
        order_id = f"b{run}-{phase}-{i:07d}"
        out.append(
            msgspec.json.encode(
                {
                    "orderId": order_id,
                    "accountId": "ACC-BENCH",
                    "symbol": SYMBOLS[i % len(SYMBOLS)],
                    "side": "BUY" if i % 2 == 0 else "SELL",
                    "type": "MARKET",
                    "quantity": 10,
                    "timeInForce": "DAY",
                    "urgency": "MEDIUM",
                }
            )
        )
    return out


_reply_decoder = msgspec.json.Decoder()


def check_route(request: bytes, msg: Any) -> str | None:
    """None if the reply is an ACCEPTED OrderRoutingResponse for this order, else why not."""
    headers = msg.headers or {}
    if "Nats-Service-Error-Code" in headers:
        return f"error {headers['Nats-Service-Error-Code']}: {headers.get('Nats-Service-Error', '')}"
    try:
        reply = _reply_decoder.decode(msg.data)
    except msgspec.DecodeError:
        return "undecodable reply"
    if reply.get("status") != "ACCEPTED":
        return f"status {reply.get('status')}: {reply.get('rejectionReason', '')}"[:120]
    if reply.get("orderId") != _reply_decoder.decode(request)["orderId"]:
        return "reply for another order"
    return None


def check_echo(request: bytes, msg: Any) -> str | None:
    return None if msg.data == request else "echo mismatch"


@dataclass
class Phase:
    name: str
    count: int = 0
    elapsed: float = 0.0
    started: float = 0.0  # perf_counter() at its first request (CLOCK_MONOTONIC: `--steps`)
    latencies: list[float] = field(default_factory=list)  # seconds, sorted after the run
    failures: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds in the phase

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    def us(self, q: float) -> float:
        return percentile(self.latencies, q) * 1e6


class Stop:
    """Why the run must stop early (Ctrl-C, SIGTERM, the daemon died), checked before every
    request: nats-py swallows task cancellation in places (`_flush_pending`), so cancelling the
    measuring task alone does not reliably end a run."""

    reason: str | None = None

    @classmethod
    def check(cls) -> None:
        if cls.reason is not None:
            raise Interrupted(cls.reason)


class Interrupted(Exception):
    pass


async def sequential(
    nc: Any, name: str, subject: str, payloads: list[bytes], check: Callable[[bytes, Any], str | None]
) -> Phase:
    phase = Phase(name)
    request, perf = nc.request, time.perf_counter
    begun = phase.started = perf()
    for payload in payloads:
        Stop.check()
        started = perf()
        try:
            msg = await request(subject, payload, timeout=REQUEST_TIMEOUT)
        except Exception as exc:
            phase.failures[type(exc).__name__] += 1
            continue
        phase.latencies.append(perf() - started)
        problem = check(payload, msg)
        if problem:
            phase.failures[problem] += 1
    phase.count = len(payloads)
    phase.elapsed = perf() - begun
    phase.latencies.sort()
    return phase


async def concurrent(
    nc: Any,
    name: str,
    subject: str,
    payloads: list[bytes],
    check: Callable[[bytes, Any], str | None],
    requesters: int,
) -> Phase:
    phase = Phase(name)
    request, perf = nc.request, time.perf_counter
    feed = iter(payloads)  # shared: each requester takes the next request when its reply is in

    async def requester() -> None:
        for payload in feed:
            Stop.check()
            started = perf()
            try:
                msg = await request(subject, payload, timeout=REQUEST_TIMEOUT)
            except Exception as exc:
                phase.failures[type(exc).__name__] += 1
                continue
            phase.latencies.append(perf() - started)
            problem = check(payload, msg)
            if problem:
                phase.failures[problem] += 1

    started = phase.started = perf()
    await asyncio.gather(*(requester() for _ in range(requesters)))
    phase.elapsed = perf() - started
    phase.count = len(payloads)
    phase.latencies.sort()
    return phase


# --- CPU accounting (Linux /proc) -------------------------------------------------------------


class CpuMeter:
    """CPU seconds used by each part of the stack between `start()` and `stop()`. `postgres`: the
    benchmark's own server (the embedded server's whole process tree), or with DATABASE_URL the
    client backends of the benchmark's database when that server runs on this machine (see
    bench/_pg.py); `pg backends` (not a process of its own: part of `postgres`) is the latter in
    both cases."""

    def __init__(self, pids: dict[str, int], probe: PgProbe) -> None:
        self.pids = pids
        self.probe = probe
        self._before: dict[str, float] = {}
        self._pg_before: CpuSample | None = None

    def _sample(self) -> dict[str, float]:
        sample = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        sample["client"] = time.process_time()
        return sample

    def start(self) -> None:
        self._pg_before = self.probe.cpu()
        self._before = self._sample()

    def stop(self) -> dict[str, float]:
        after = self._sample()
        pg_after = self.probe.cpu()
        out = {name: after[name] - self._before.get(name, 0.0) for name in after}
        assert self._pg_before is not None
        server, backends = self.probe.cpu_diff(self._pg_before, pg_after)
        if server is not None or backends is not None:
            out["postgres"] = server if server is not None else backends or 0.0
        if backends is not None:
            out["pg backends"] = backends
        return out


# --- the run --------------------------------------------------------------------------------


@dataclass
class Settings:
    sequential: int
    warmup: int
    requesters: int
    requests: int
    concurrent_warmup: int
    profile: Path | None
    profile_rate: int
    profile_phase: str
    analyze: bool
    seed: int  # RouteOrders sent before the first ANALYZE
    embedded: bool
    reanalyze_warmup: int  # sequential RouteOrder warm-up after the ANALYZE
    reanalyze_concurrent_warmup: int


async def wait_settled(probe: PgProbe, timeout: float = 120.0) -> float:
    """Wait until every execution update is published (the daemon's outbox is empty); seconds."""
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        Stop.check()
        if await loop.run_in_executor(None, probe.unpublished_updates) == 0:
            return time.perf_counter() - started
        await asyncio.sleep(0.05)
    return float("nan")


@dataclass(frozen=True)
class Target:
    key: str  # also the first letter of the order ids' phase tag
    label: str
    subject: str
    check: Callable[[bytes, Any], str | None]


TARGETS = (
    Target("e", "echo", ECHO_SUBJECT, check_echo),
    Target("t", "Trio echo", TRIO_ECHO_SUBJECT, check_echo),
    Target("r", "RouteOrder", ROUTE_SUBJECT, check_route),
)


async def measure(
    stack: BenchStack, probe: PgProbe, settings: Settings, pids: dict[str, int]
) -> dict[str, Any]:
    """Sequential phases (echo, Trio echo, RouteOrder), then concurrent ones, in that order.

    Before each measured RouteOrder phase: its warm-up, then (unless --no-analyze) `ANALYZE` and a
    second, shorter warm-up, so the daemon's connections re-plan their cached statements and
    foreign-key checks with statistics, as on a database that has been running; then the outbox
    is drained and the statistics are let settle. After it: the outbox is drained again, and the
    WAL of both phases is read by relation at the end (untimed)."""
    run = uuid.uuid4().hex[:8]
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(
            signum, setattr, Stop, "reason", f"interrupted ({signal.Signals(signum).name})"
        )

    async def watch_daemon() -> None:
        while Stop.reason is None:
            if not stack.daemon_alive():
                Stop.reason = "the daemon exited during the run"
            await asyncio.sleep(0.5)

    watchdog = asyncio.create_task(watch_daemon())
    meter = CpuMeter(pids, probe)
    nc = await nats.connect(stack.nats_url, name="bench-client")
    results: dict[str, Any] = {"warm_failures": Counter()}

    @contextlib.asynccontextmanager
    async def profiled(phase: str) -> AsyncIterator[None]:
        if settings.profile is None or settings.profile_phase != phase:
            yield
            return
        profiler = start_profiler(pids["daemon"], settings.profile, settings.profile_rate)
        await asyncio.sleep(1.0)  # let py-spy attach before the load starts
        try:
            yield
        finally:
            stop_profiler(profiler, settings.profile, f"the {phase} RouteOrder phase")

    async def run_phase(target: Target, kind: str, tag: str, count: int) -> Phase:
        payloads = order_payloads(run, target.key + tag, count)
        if kind == "sequential":
            return await sequential(nc, target.label, target.subject, payloads, target.check)
        return await concurrent(nc, target.label, target.subject, payloads, target.check, settings.requesters)

    async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
        return await loop.run_in_executor(None, fn, *args)

    try:
        # One order first: a daemon that refuses everything should fail fast, not after minutes.
        probe_order = order_payloads(run, "pr", 1)[0]
        reply = await nc.request(ROUTE_SUBJECT, probe_order, timeout=REQUEST_TIMEOUT)
        problem = check_route(probe_order, reply)
        if problem:
            raise RuntimeError(f"the first RouteOrder was not accepted: {problem}\n{reply.data!r}")

        for kind, tag, warmup, rewarm, count in (
            ("sequential", "s", settings.warmup, settings.reanalyze_warmup, settings.sequential),
            ("concurrent", "c", settings.concurrent_warmup, settings.reanalyze_concurrent_warmup,
             settings.requests),
        ):  # fmt: skip
            print(
                f"{kind}: {warmup:,} warm-up + {count:,} requests to each"
                + (f", {settings.requesters} requesters" if kind == "concurrent" else "")
                + " ...",
                flush=True,
            )
            for target in TARGETS:
                warm = await run_phase(target, kind, tag.upper(), warmup)
                results["warm_failures"] += warm.failures
                is_route = target.subject == ROUTE_SUBJECT
                if is_route and settings.analyze:
                    if kind == "sequential" and settings.seed:
                        seed = await run_phase(target, "concurrent", "d", settings.seed)
                        results["warm_failures"] += seed.failures
                        print(
                            f"  seeded {settings.seed:,} RouteOrders ({settings.requesters} in flight) "
                            f"before the first ANALYZE: {seed.elapsed:.1f} s",
                            flush=True,
                        )
                    await wait_settled(probe)
                    took = await in_thread(probe.analyze)
                    warm = await run_phase(target, kind, "a" if kind == "sequential" else "b", rewarm)
                    results["warm_failures"] += warm.failures
                    print(
                        f"  ANALYZE after the RouteOrder warm-up: {took:.2f} s, then {rewarm:,} more "
                        "warm-up orders (cached plans re-made with statistics)",
                        flush=True,
                    )
                if is_route:
                    await wait_settled(probe)
                    stats_before, settle_before = await in_thread(probe.settled_stats)
                async with contextlib.AsyncExitStack() as phase_stack:
                    if is_route:
                        await phase_stack.enter_async_context(profiled(kind))
                        before = await in_thread(probe.counters)
                    meter.start()
                    phase = await run_phase(target, kind, tag, count)
                    phase.cpu = meter.stop()
                    if is_route:
                        at_reply = await in_thread(probe.counters)
                        drain = await wait_settled(probe)
                        after = await in_thread(probe.counters)
                        stats_after, settle_after = await in_thread(probe.settled_stats)
                        results[f"db_{kind}"] = {
                            "before": before, "at_reply": at_reply, "after": after, "drain": drain,
                            "stats_before": stats_before, "stats_after": stats_after,
                        }  # fmt: skip
                        print(
                            f"  statistics read {settle_before:.1f} s / {settle_after:.1f} s after the load "
                            "before / after the measured RouteOrder phase",
                            flush=True,
                        )
                        if kind == "concurrent":  # the start of the window at rest, below
                            rest_start = (stats_after, await in_thread(probe.counters), time.perf_counter())
                results[f"{target.key}_{kind}"] = phase

        print(f"reading the WAL of both RouteOrder phases ({probe.wal_note}) ...", flush=True)
        for kind in ("sequential", "concurrent"):
            db = results[f"db_{kind}"]
            started = time.perf_counter()
            results[f"wal_{kind}"] = await in_thread(
                probe.wal_breakdown,
                db["before"]["lsn"],
                db["after"]["lsn"],
                db["after"]["wal_bytes"] - db["before"]["wal_bytes"],
            )
            print(f"  {kind}: {time.perf_counter() - started:.1f} s", flush=True)
        # The daemon at rest after the load: what it writes without orders (background work).
        await asyncio.sleep(max(0.0, REST_WINDOW - (time.perf_counter() - rest_start[2])))
        stats_rest, _ = await in_thread(probe.settled_stats)
        results["rest"] = {
            "start": rest_start[:2],
            "end": (stats_rest, await in_thread(probe.counters)),
            "seconds": time.perf_counter() - rest_start[2],
        }
    finally:
        watchdog.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 5)
    return results


def _per(value: float | None, n: float, fmt: str) -> str:
    return "-" if value is None or n == 0 else format(value / n, fmt)


def database_table(results: dict[str, Any], phases: tuple[Phase, Phase], settings: Settings) -> str:
    """PostgreSQL per RouteOrder, one column per phase (see bench/README.md for each figure)."""
    rows: list[list[str]] = []
    labels: list[tuple[str, Callable[[dict[str, Any], Phase], str]]] = [
        ("orders", lambda db, p: f"{p.count:,}"),
        (
            "write transactions/order, at last reply (xids)",
            lambda db, p: _per(db["at_reply"]["next_xid"] - db["before"]["next_xid"], p.count, ".3f"),
        ),
        (
            "write transactions/order, incl. publishing (xids)",
            lambda db, p: _per(db["after"]["next_xid"] - db["before"]["next_xid"], p.count, ".3f"),
        ),
        (
            "commits/order, all (pg_stat_database xact_commit)",
            lambda db, p: _per(_stat_diff(db, "xact_commit", probe=True), p.count, ".3f"),
        ),
        ("rollbacks/order", lambda db, p: _per(_stat_diff(db, "xact_rollback"), p.count, ".3f")),
        (
            "sequential scans/order (user tables)",
            lambda db, p: _per(_stat_diff(db, "seq_scan"), p.count, ".2f"),
        ),
        ("rows read by them/order", lambda db, p: _per(_stat_diff(db, "seq_tup_read"), p.count, ",.1f")),
        ("  most rows read: table, rows/order", lambda db, p: _most_scanned(db, p.count)),
        ("index scans/order (user tables)", lambda db, p: _per(_stat_diff(db, "idx_scan"), p.count, ".2f")),
        (
            "PostgreSQL CPU/order (us), whole server"
            if settings.embedded
            else "PostgreSQL CPU/order (us), whole server: shared, not measured",
            lambda db, p: _per(p.cpu.get("postgres") if settings.embedded else None, p.count / 1e6, ",.0f"),
        ),
        (
            "  of which the benchmark database's client backends",
            lambda db, p: _per(p.cpu.get("pg backends"), p.count / 1e6, ",.0f"),
        ),
        (
            "WAL/order (B), pg_current_wal_lsn difference",
            lambda db, p: _per(db["after"]["wal_bytes"] - db["before"]["wal_bytes"], p.count, ",.0f"),
        ),
        ("outbox drained (s after the last reply)", lambda db, p: f"{db['drain']:.2f}"),
    ]
    for label, cell in labels:
        rows.append(
            [label]
            + [
                cell(results[f"db_{kind}"], p)
                for kind, p in zip(("sequential", "concurrent"), phases, strict=True)
            ]
        )
    lines = [
        "PostgreSQL per RouteOrder"
        + (" (statistics made with ANALYZE after the warm-up)" if settings.analyze else " (--no-analyze)")
        + ":"
    ]
    lines.append(format_table(["figure", "sequential", "concurrent"], rows))
    rest = results.get("rest")
    if rest and "end" in rest:
        (s0, c0), (s1, c1), seconds = rest["start"], rest["end"], rest["seconds"]
        commits = s1["xact_commit"] - s0["xact_commit"] - (s1["probe_queries"] - s0["probe_queries"])
        lines.append(
            f"At rest ({seconds:.1f} s without orders after the last phase), per second: "
            f"{commits / seconds:,.1f} commits, "
            f"{(c1['next_xid'] - c0['next_xid']) / seconds:,.1f} write transactions, "
            f"{(c1['wal_bytes'] - c0['wal_bytes']) / seconds:,.0f} B of WAL: background work (the "
            "daemon's timers, autovacuum once the tables have grown), also inside the figures above."
        )
    return "\n".join(lines)


def _most_scanned(db: dict[str, Any], n: int) -> str:
    """The table whose sequential scans read the most rows in the phase, and how many per order."""
    before, after = db["stats_before"]["tables"], db["stats_after"]["tables"]
    read = {t: after[t][1] - before.get(t, (0, 0, 0))[1] for t in after}
    table = max(read, key=lambda t: read[t], default=None)
    if not table or not read[table] or not n:
        return "-"
    scans = after[table][0] - before.get(table, (0, 0, 0))[0]
    return f"{table} {read[table] / n:,.1f} ({scans / n:.2f} scans)"


def _stat_diff(db: dict[str, Any], key: str, probe: bool = False) -> int:
    before, after = db["stats_before"], db["stats_after"]
    diff = int(after[key] - before[key])
    if probe:  # the probe's own queries are transactions too
        diff -= int(after["probe_queries"] - before["probe_queries"])
    return diff


def wal_table(results: dict[str, Any], phases: tuple[Phase, Phase]) -> str:
    """WAL per RouteOrder by table and kind (heap, indexes, TOAST), both phases side by side."""
    seq, conc = (results[f"wal_{k}"] for k in ("sequential", "concurrent"))
    breakdowns: tuple[WalBreakdown, WalBreakdown] = (seq, conc)
    counts = tuple(p.count for p in phases)
    lines = [f"WAL per RouteOrder (bytes) by table, read with {seq.method}:"]
    if seq.method == "LSN difference" or seq.error or conc.error:
        for kind, wal in zip(("sequential", "concurrent"), breakdowns, strict=True):
            if wal.error:
                lines.append(f"  {kind}: could not read the WAL: {wal.error}")
        lines.append(
            "  no breakdown: totals only, "
            + " / ".join(f"{w.lsn_bytes / n:,.0f}" for w, n in zip(breakdowns, counts, strict=True))
            + " B/order (sequential / concurrent)"
        )
        return "\n".join(lines)

    def per(value: float, n: int) -> str:
        return f"{value / n:,.0f}" if value else ""

    groups = set(seq.groups) | set(conc.groups)
    size = {
        g: max(w.groups.get(g, Counter())["total"] / n for w, n in zip(breakdowns, counts, strict=True))
        for g in groups
    }
    tables = sorted((g for g in groups if not g.startswith("(")), key=lambda g: -size[g])
    small = [g for g in tables if size[g] < 5]
    tables = [g for g in tables if size[g] >= 5]
    special = sorted((g for g in groups if g.startswith("(")), key=lambda g: -size[g])
    rows = []
    for group in tables:
        row = [group]
        for wal, n in zip(breakdowns, counts, strict=True):
            c = wal.groups.get(group, Counter())
            row += [per(c[k], n) for k in KINDS] + [per(c["total"], n) or "0"]
        rows.append(row)

    def total_row(label: str, value: Callable[[WalBreakdown], float]) -> list[str]:
        row = [label]
        for wal, n in zip(breakdowns, counts, strict=True):
            row += ["", "", "", f"{value(wal) / n:,.0f}"]
        return row

    if small:
        rows.append(
            total_row(
                f"({len(small)} other tables, < 5 B/order each)",
                lambda w: sum(w.groups.get(g, Counter())["total"] for g in small),
            )
        )
    for group in special:
        rows.append(total_row(group, lambda w, g=group: w.groups.get(g, Counter())["total"]))  # type: ignore[misc]
    rows.append(total_row("records, sum", lambda w: w.records))
    rows.append(total_row("  of which full-page images", lambda w: w.fpi))
    rows.append(total_row("page headers, alignment", lambda w: w.lsn_bytes - w.records))
    rows.append(total_row("total (LSN difference)", lambda w: w.lsn_bytes))
    headers = ["table", *(f"{p} {k}" for p in ("seq", "conc") for k in (*KINDS, "all"))]
    lines.append(format_table(headers, rows))
    return "\n".join(lines)


def steps_table(log: _steps.StepLog, results: dict[str, Any]) -> None:
    """Where each RouteOrder's time went in the daemon's Trio thread, per measured phase."""
    print("\nThe daemon's Trio thread per RouteOrder, task by task (--steps; bench/_steps.py):")
    for kind in ("sequential", "concurrent"):
        phase: Phase = results[f"r_{kind}"]
        print(f"{kind} ({phase.count:,} orders):")
        print(log.table(phase.started, phase.started + phase.elapsed, phase.count))


def report(results: dict[str, Any], settings: Settings) -> int:
    es, ts, rs = results["e_sequential"], results["t_sequential"], results["r_sequential"]
    ec, tc, rc = results["e_concurrent"], results["t_concurrent"], results["r_concurrent"]

    def us(value: float) -> str:
        return f"{value:,.0f}"

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "-"

    def latency_row(label: str, e: Phase, t: Phase, r: Phase, q: float, target: str = "") -> list[str]:
        verdict = ("met" if r.us(q) <= 2 * e.us(q) else "MISSED") if target else ""
        return [label, us(e.us(q)), us(t.us(q)), us(r.us(q)), ratio(r.us(q), e.us(q)), target, verdict]

    failed = {key: sum(results[key].failures.values()) for key in results if key[1:2] == "_"}
    rows = [
        latency_row("sequential p50 (us)", es, ts, rs, 50, "<= 2x echo"),
        latency_row("sequential p90 (us)", es, ts, rs, 90),
        latency_row("sequential p99 (us)", es, ts, rs, 99),
        [
            f"concurrent x{settings.requesters} (req/s)",
            f"{ec.rate:,.0f}",
            f"{tc.rate:,.0f}",
            f"{rc.rate:,.0f}",
            ratio(rc.rate, ec.rate),
            ">= 5,000/s",
            "met" if rc.rate >= 5000 else "MISSED",
        ],
        latency_row("concurrent p50 (us)", ec, tc, rc, 50),
        latency_row("concurrent p99 (us)", ec, tc, rc, 99),
        [
            "failed replies",
            str(failed["e_sequential"] + failed["e_concurrent"]),
            str(failed["t_sequential"] + failed["t_concurrent"]),
            str(failed["r_sequential"] + failed["r_concurrent"]),
            "",
            "0",
            "",
        ],
    ]
    print()
    print_table(["figure", "echo", "Trio echo", "RouteOrder", "Route/echo", "target", ""], rows)

    print()
    print(database_table(results, (rs, rc), settings))
    print()
    print(wal_table(results, (rs, rc)))

    names = [name for name in rc.cpu if name != "pg backends"]
    cpu_rows = []
    for kind, phases in (("sequential", (es, ts, rs)), ("concurrent", (ec, tc, rc))):
        for phase in phases:
            total = sum(phase.cpu.get(name, 0.0) for name in names)
            cpu_rows.append(
                [f"{phase.name}, {kind}"]
                + [f"{phase.cpu.get(name, float('nan')) / phase.count * 1e6:,.0f}" for name in names]
                + [f"{total / phase.count * 1e6:,.0f}", f"{total / phase.elapsed:.2f}"]
            )
    print()
    what = (
        "the embedded server's processes, all of them"
        if settings.embedded
        else "the client backends of the benchmark's database (that server's background processes serve "
        "every database on it: not counted)"
        if "postgres" in names
        else "not measured (the DATABASE_URL server is not on this machine)"
    )
    print(
        f"CPU time per request (us) by process, and cores busy (of {os.cpu_count()}, shared by all of "
        f"them); postgres = {what}:"
    )
    print_table(["phase", *names, "total", "cores"], cpu_rows)

    failures: Counter[str] = Counter(results["warm_failures"])
    for key in failed:
        failures += results[key].failures
    if failures:
        print("\nfailed replies (warm-ups included):")
        for reason, count in failures.most_common(10):
            print(f"  {count:>7,}  {reason}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=2000, help="sequential requests (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="sequential warm-up requests (default 200)")
    parser.add_argument("--concurrent", type=int, default=64, help="concurrent requesters (default 64)")
    parser.add_argument(
        "--requests", type=int, default=20000, help="requests in the concurrent phase (default 20000)"
    )
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run of well under 30 s")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record the daemon with py-spy during the concurrent RouteOrder phase "
        "(.svg flame graph, .json speedscope, else collapsed stacks)",
    )
    parser.add_argument(
        "--profile-phase",
        choices=("sequential", "concurrent"),
        default="concurrent",
        help="which RouteOrder phase --profile records (default concurrent)",
    )
    parser.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument(
        "--steps",
        action="store_true",
        help="time every task step of the daemon's Trio thread (bench/_steps.py) and show, per "
        "RouteOrder phase, where each order's time went, task by task",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=1000,
        help="RouteOrders sent (concurrently) before the first ANALYZE, so that the statistics "
        "describe tables of some size (default 1000; 0: none)",
    )
    parser.add_argument(
        "--no-analyze",
        action="store_true",
        help="skip the ANALYZE (and the second warm-up) before each RouteOrder phase: plans made on "
        "empty tables, as the benchmark ran before (to see what statistics change)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (daemon log, configs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sequential, args.warmup, args.requests, args.seed = (
            min(args.sequential, 300),
            min(args.warmup, 50),
            min(args.requests, 2000),
            min(args.seed, 500),
        )
    settings = Settings(
        sequential=args.sequential,
        warmup=args.warmup,
        requesters=args.concurrent,
        requests=args.requests,
        concurrent_warmup=max(args.concurrent * 4, args.requests // 20),
        profile=args.profile.resolve() if args.profile else None,
        profile_rate=args.profile_rate,
        profile_phase=args.profile_phase,
        analyze=not args.no_analyze,
        seed=args.seed,
        embedded=False,  # known once the servers run
        reanalyze_warmup=max(20, args.warmup // 4),
        reanalyze_concurrent_warmup=max(
            2 * args.concurrent, max(args.concurrent * 4, args.requests // 20) // 4
        ),
    )

    interrupt_on_signals()
    started = time.monotonic()
    with BenchStack(keep=args.keep) as stack:
        print(f"bench/route.py: temp dir {stack.tmp}", flush=True)
        stack.start_servers()
        steps_file = stack.tmp / "steps.json"
        daemon_pid = stack.start_daemon(
            tick_interval_ms=100.0,
            launcher=_steps.launcher() if args.steps else None,
            env={_steps.ENV: str(steps_file)} if args.steps else None,
        )
        echo_pid = stack.start_echo(ECHO_SUBJECT, "echo")
        trio_echo_pid = stack.start_echo(TRIO_ECHO_SUBJECT, "bridge-echo")
        settings.embedded = stack.pgdata is not None
        probe = PgProbe(stack.database_url, pgdata=stack.pgdata)
        settings_db = stack.db_settings()
        print(
            f"stack: nats-server {stack.nats_url} (pid {stack.nats.proc.pid}); PostgreSQL "
            f"{settings_db.get('server_version', '?')} {stack.database_note} "
            f"(fsync={settings_db.get('fsync')}, "
            f"synchronous_commit={settings_db.get('synchronous_commit')}); "
            f"daemon pid {daemon_pid}; "
            f"echo pid {echo_pid}; Trio echo pid {trio_echo_pid}; setup {time.monotonic() - started:.1f} s",
            flush=True,
        )
        cpu_of = (
            f"postmaster {probe.postmaster} and its children"
            if probe.postmaster
            else "the benchmark database's client backends"
        )
        print(f"PostgreSQL probes: CPU of {cpu_of}; WAL: {probe.wal_note}; {probe.slot_note}", flush=True)
        pids = {
            "daemon": daemon_pid,
            "nats-server": stack.nats.proc.pid,
            "echo": echo_pid,
            "Trio echo": trio_echo_pid,
        }
        try:
            with contextlib.closing(probe):
                results = asyncio.run(measure(stack, probe, settings, pids))
            interrupt_on_signals()  # the event loop reset both on closing
        except Interrupted as exc:
            if not stack.daemon_alive():
                print(f"the daemon died; its log:\n{stack.daemon_log_tail()}", file=sys.stderr)
                raise RuntimeError(str(exc)) from None
            raise KeyboardInterrupt from None
        except Exception:
            if not stack.daemon_alive():
                print(f"the daemon died; its log:\n{stack.daemon_log_tail()}", file=sys.stderr)
            raise
        print(
            f"\n{os.cpu_count()} cores shared by the client, both echo responders, nats-server, the daemon "
            "and PostgreSQL: every figure includes CPU contention between them (ratios matter more "
            "than absolute values)."
        )
        status = report(results, settings)
        if not stack.daemon_alive():
            print(f"the daemon died during the run; its log:\n{stack.daemon_log_tail()}", file=sys.stderr)
            status = 1
        elif args.steps:
            stack.stop_daemon()  # the clock writes its steps as the daemon's trio.run returns
            steps_table(_steps.StepLog.read(steps_file), results)
    print(f"\ntotal {time.monotonic() - started:.0f} s; exit status {status}")
    return status


if __name__ == "__main__":
    exit_with(main)
