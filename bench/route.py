"""RouteOrder round trips against the embedded stack, with echo responders as same-run baselines.

    .venv/bin/python bench/route.py              # default: ~2 minutes on 2 cores
    .venv/bin/python bench/route.py --quick      # smoke run, well under 30 s
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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import msgspec
import nats
from _common import BenchStack, percentile, print_table

ROUTE_SUBJECT = "trading.broker.v1.RouteOrder"
ECHO_SUBJECT = "bench.echo.RouteOrder"
TRIO_ECHO_SUBJECT = "bench.trio-echo.RouteOrder"
SYMBOLS = ("AAPL", "MSFT", "SPY")
REQUEST_TIMEOUT = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


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
    begun = perf()
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

    started = perf()
    await asyncio.gather(*(requester() for _ in range(requesters)))
    phase.elapsed = perf() - started
    phase.count = len(payloads)
    phase.latencies.sort()
    return phase


# --- CPU accounting (Linux /proc) -------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    except (OSError, IndexError, ValueError):
        return float("nan")


def _postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(entry.name))
    return pids


class CpuMeter:
    """CPU seconds used by each part of the stack between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, int], postgres: bool) -> None:
        self.pids = pids
        self.postgres = postgres
        self._before: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        sample = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        sample["client"] = time.process_time()
        if self.postgres:
            sample["postgres"] = sum(_cpu_seconds(pid) for pid in _postgres_pids())
        return sample

    def start(self) -> None:
        self._before = self._sample()

    def stop(self) -> dict[str, float]:
        after = self._sample()
        return {name: after[name] - self._before.get(name, 0.0) for name in after}


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


async def wait_settled(stack: BenchStack, timeout: float = 120.0) -> float:
    """Wait until every execution update is published (the daemon's outbox is empty); seconds."""
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        Stop.check()
        if await loop.run_in_executor(None, stack.unpublished_updates) == 0:
            return time.perf_counter() - started
        await asyncio.sleep(0.05)
    return float("nan")


def start_profiler(pid: int, out: Path, rate: int) -> subprocess.Popen[bytes] | None:
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        print(f"--profile: {spy} not found (pip install py-spy); running without it", file=sys.stderr)
        return None
    fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(out.suffix, "raw")
    command = [str(spy), "record", "--pid", str(pid), "--output", str(out), "--format", fmt]
    command += ["--rate", str(rate), "--nonblocking", "--threads"]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


def stop_profiler(proc: subprocess.Popen[bytes] | None, out: Path, phase: str) -> None:
    if proc is None:
        return
    proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if out.exists():
        print(f"py-spy profile of the daemon during the {phase} RouteOrder phase: {out}", flush=True)
    else:
        print(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}", file=sys.stderr)


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


async def measure(stack: BenchStack, settings: Settings, pids: dict[str, int]) -> dict[str, Any]:
    """Sequential phases (echo, Trio echo, RouteOrder), then concurrent ones, in that order; the
    daemon's outbox is drained before each RouteOrder phase and after the last one."""
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
    meter = CpuMeter(pids, postgres=stack.database_note.startswith("embedded"))
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
            stop_profiler(profiler, settings.profile, phase)

    async def run_phase(target: Target, kind: str, tag: str, count: int) -> Phase:
        payloads = order_payloads(run, target.key + tag, count)
        if kind == "sequential":
            return await sequential(nc, target.label, target.subject, payloads, target.check)
        return await concurrent(nc, target.label, target.subject, payloads, target.check, settings.requesters)

    try:
        # One order first: a daemon that refuses everything should fail fast, not after minutes.
        probe = order_payloads(run, "pr", 1)[0]
        reply = await nc.request(ROUTE_SUBJECT, probe, timeout=REQUEST_TIMEOUT)
        problem = check_route(probe, reply)
        if problem:
            raise RuntimeError(f"the first RouteOrder was not accepted: {problem}\n{reply.data!r}")

        for kind, tag, warmup, count in (
            ("sequential", "s", settings.warmup, settings.sequential),
            ("concurrent", "c", settings.concurrent_warmup, settings.requests),
        ):
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
                if is_route:
                    await wait_settled(stack)
                async with contextlib.AsyncExitStack() as phase_stack:
                    if is_route:
                        await phase_stack.enter_async_context(profiled(kind))
                        before = await loop.run_in_executor(None, stack.db_counters)
                    meter.start()
                    phase = await run_phase(target, kind, tag, count)
                    phase.cpu = meter.stop()
                    if is_route:
                        at_reply = await loop.run_in_executor(None, stack.db_counters)
                        drain = await wait_settled(stack)
                        after = await loop.run_in_executor(None, stack.db_counters)
                        results[f"db_{kind}"] = {
                            "before": before, "at_reply": at_reply, "after": after, "drain": drain
                        }  # fmt: skip
                results[f"{target.key}_{kind}"] = phase
    finally:
        watchdog.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 5)
    return results


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
    print(
        "PostgreSQL write transactions (commits) and WAL per RouteOrder; outbox drain after the last reply:"
    )
    db_rows = []
    for kind, phase in (("sequential", rs), ("concurrent", rc)):
        db = results[f"db_{kind}"]
        n = phase.count
        at_reply = db["at_reply"]["next_xid"] - db["before"]["next_xid"]
        total = db["after"]["next_xid"] - db["before"]["next_xid"]
        wal = db["after"]["wal_bytes"] - db["before"]["wal_bytes"]
        db_rows.append(
            [
                kind,
                f"{n:,}",
                f"{at_reply / n:.3f}",
                f"{total / n:.3f}",
                f"{wal / n:,.0f}",
                f"{db['drain']:.2f}",
            ]
        )
    print_table(
        ["RouteOrder phase", "orders", "commits/order at last reply", "incl. publishing", "WAL B/order",
         "drain s"],
        db_rows,
    )  # fmt: skip

    names = list(rc.cpu)
    cpu_rows = []
    for kind, phases in (("sequential", (es, ts, rs)), ("concurrent", (ec, tc, rc))):
        for phase in phases:
            total = sum(phase.cpu.values())
            cpu_rows.append(
                [f"{phase.name}, {kind}"]
                + [f"{phase.cpu.get(name, float('nan')) / phase.count * 1e6:,.0f}" for name in names]
                + [f"{total / phase.count * 1e6:,.0f}", f"{total / phase.elapsed:.2f}"]
            )
    print()
    print(
        f"CPU time per request (us) by process, and cores busy (of {os.cpu_count()}, shared by all of "
        "them; postgres = every postgres process on the machine, embedded server only):"
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
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (daemon log, configs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sequential, args.warmup, args.requests = (
            min(args.sequential, 300),
            min(args.warmup, 50),
            min(args.requests, 2000),
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
    )

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM cleans up like Ctrl-C; both set explicitly (a shell may start us with SIGINT ignored)
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    started = time.monotonic()
    with BenchStack(keep=args.keep) as stack:
        print(f"bench/route.py: temp dir {stack.tmp}", flush=True)
        stack.start_servers()
        daemon_pid = stack.start_daemon(tick_interval_ms=100.0)
        echo_pid = stack.start_echo(ECHO_SUBJECT, "echo")
        trio_echo_pid = stack.start_echo(TRIO_ECHO_SUBJECT, "bridge-echo")
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
        pids = {
            "daemon": daemon_pid,
            "nats-server": stack.nats.proc.pid,
            "echo": echo_pid,
            "Trio echo": trio_echo_pid,
        }
        try:
            results = asyncio.run(measure(stack, settings, pids))
            signal.signal(signal.SIGINT, interrupt)  # the event loop reset both on closing
            signal.signal(signal.SIGTERM, interrupt)
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
    print(f"\ntotal {time.monotonic() - started:.0f} s; exit status {status}")
    return status


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted (everything started was stopped)", file=sys.stderr)
        sys.exit(130)
