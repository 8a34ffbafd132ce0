"""Shared helpers of the benchmarks: the embedded stack (nats-server, PostgreSQL, a daemon
process), echo responders (the same-run baselines), percentiles and table printing.

Everything here starts real processes and owns them: `BenchStack` is a context manager that
stops every process it started and removes its temporary directory, whatever happens (an error,
Ctrl-C). Run as a script, this module is one of the echo responders:

    python bench/_common.py echo NATS_URL SUBJECT          bare nats-py, asyncio, plain subscribe
    python bench/_common.py bridge-echo NATS_URL SUBJECT   the daemon's own request plumbing
        (daemon.bus.NatsBus.serve: nats.micro in trio-asyncio -> memory channel -> Trio workers
        -> aio_as_trio reply) around a handler that returns the payload: what the architecture
        costs before any business logic
    python bench/_common.py trio-nats-echo NATS_URL SUBJECT   the same shape on a minimal
        Trio-native NATS client (bench/_trio_nats.py): the bridge's cost, by difference
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import trio

REPO = Path(__file__).resolve().parents[1]
# The repository first and this folder last: `bench/routing.py` and `bench/tca.py` would otherwise
# shadow the `routing` and `tca` packages (`python bench/x.py` puts bench/ first), while the
# helpers (`_pg`) stay importable.
_BENCH = REPO / "bench"
sys.path[:] = [
    str(REPO),
    *(p for p in sys.path if Path(p or ".").resolve() not in (REPO, _BENCH)),
    str(_BENCH),
]

ECHO_READY = "echo-ready"


# --- statistics -----------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100.0 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell: the first left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells))

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    print(format_table(headers, rows))


# --- processes ------------------------------------------------------------------------------


def _stop_process(
    proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM, timeout: float = 20.0
) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def daemon_base(
    *,
    state_dir: Path,
    nats_url: str,
    database_url: str,
    instance_id: str = "bench",
    log_level: str = "WARNING",
    safeguards_off: Sequence[str] = (),
) -> str:
    """The TOML every benchmark daemon shares: REST off, quiet logging, materialized views not
    refreshed during the run (an hourly refresh would only add noise), and the safeguards one
    flooding account would trip turned off. `safeguards_off`: further `[safeguards]` limits a
    benchmark's orders would trip (0: off)."""
    extra_off = "".join(f"{name} = 0\n" for name in safeguards_off)
    return f"""
[service]
state_dir = {json.dumps(str(state_dir))}
instance_id = {json.dumps(instance_id)}
log_level = {json.dumps(log_level)}
shutdown_grace_s = 5.0

[nats]
url = {json.dumps(nats_url)}

[database]
url = {json.dumps(database_url)}
views_refresh_s = 3600.0

[rest]
enabled = false

# One account floods the daemon: its rate and daily notional limits are off; every other
# safeguard stays on, so its cost is part of what is measured.
[safeguards]
max_orders_per_second = 0
max_daily_notional = 0
{extra_off}"""


def daemon_config(
    *,
    state_dir: Path,
    nats_url: str,
    database_url: str,
    tick_interval_ms: float = 100.0,
    log_level: str = "WARNING",
    safeguards_off: Sequence[str] = (),
) -> str:
    """The daemon's TOML for the benchmark: `daemon_base`, with two simulated brokers like
    tests/support/daemon.py's, except that they answer with zero simulated latency and never
    reject."""
    base = daemon_base(
        state_dir=state_dir,
        nats_url=nats_url,
        database_url=database_url,
        log_level=log_level,
        safeguards_off=safeguards_off,
    )
    return (
        base
        + f"""
[market]
seed = 11
tick_interval_ms = {tick_interval_ms}

[[brokers]]
broker_id = "sim-cheap"
name = "Simulated Cheap"
asset_classes = ["EQUITY", "CRYPTO"]
features = ["MARKET_ORDERS", "LIMIT_ORDERS", "STOP_ORDERS"]
commission = {{ baseRate = "0.0001", minCommission = "0.35" }}
venue = "CHEAP"
seed = 1
reject_rate = 0.0
latency = {{ median_ms = 0.0 }}

[[brokers]]
broker_id = "sim-fast"
name = "Simulated Fast"
asset_classes = ["EQUITY", "FOREX"]
features = ["MARKET_ORDERS", "LIMIT_ORDERS", "STOP_ORDERS", "STOP_LIMIT_ORDERS"]
venue = "FAST"
seed = 2
reject_rate = 0.0
latency = {{ median_ms = 0.0 }}
[brokers.commission]
baseRate = "0.0008"
minCommission = "1"
tieredRates = [{{ volumeThreshold = "1000000", rate = "0.0005" }}]
"""
    )


# --- a benchmark's process: signals, exit status, children that die with their parent ---------


def interrupt_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt, so `with BenchStack` stops everything it
    started (set explicitly: a shell may start us with SIGINT ignored)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def exit_with(main: Callable[[], int]) -> NoReturn:
    """`sys.exit(main())`; 130 after Ctrl-C or SIGTERM, once everything started was stopped."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted (everything started was stopped)", file=sys.stderr)
        sys.exit(130)


async def serve_until_told(nursery: trio.Nursery) -> None:
    """In a child process: return, cancelling `nursery`, at SIGTERM or SIGINT, or once the parent
    is gone (our stdin, its pipe, closes)."""
    import trio

    async def parent_gone() -> None:
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        while await stdin.receive_some():
            pass
        nursery.cancel_scope.cancel()

    nursery.start_soon(parent_gone)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            break
    nursery.cancel_scope.cancel()


# --- CPU accounting and profiling of a process (Linux /proc, py-spy) ---------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` so far (NaN once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return float("nan")


def start_profiler(pid: int, out: Path, rate: int = 250) -> subprocess.Popen[bytes] | None:
    """py-spy recording `pid` (all threads, without pausing it) into `out`: `.svg` flame graph,
    `.json` speedscope, anything else collapsed stacks. None (said on stderr) without py-spy."""
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


def stop_profiler(proc: subprocess.Popen[bytes] | None, out: Path, what: str) -> None:
    """Stop `start_profiler`'s recording and say where it is (`what`: during which part)."""
    if proc is None:
        return
    proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if out.exists():
        print(f"py-spy profile of the daemon during {what}: {out}", flush=True)
    else:
        print(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}", file=sys.stderr)


class BenchStack:
    """nats-server + PostgreSQL (+ the daemon, + the echo responder) for one benchmark run.

    PostgreSQL: with DATABASE_URL, a fresh database `bis_bench_<random>` on that server, dropped
    at the end; otherwise an embedded server (pgserver) in the temporary directory."""

    def __init__(self, *, keep: bool = False) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="bis-bench-"))
        self.keep = keep
        self.nats: Any = None
        self.nats_url = ""
        self.database_url = ""
        self.database_note = ""
        self.pgdata: Path | None = None  # the embedded server's data directory
        self.daemon: subprocess.Popen[bytes] | None = None
        self.daemon_log = self.tmp / "daemon.log"
        self.responders: list[subprocess.Popen[str]] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> BenchStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        # A second Ctrl-C (or a SIGTERM) must not interrupt the cleanup half-way.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            for responder in self.responders:
                _stop_process(responder)
            self.responders.clear()
            _stop_process(self.daemon, timeout=30.0)
            self.daemon = None
            self._stack.close()  # database, then nats-server (reverse order of start)
        finally:
            if not self.keep:
                shutil.rmtree(self.tmp, ignore_errors=True)
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])

    # --- servers ------------------------------------------------------------------------

    def start_nats(self) -> None:
        """nats-server alone (JetStream on, in the temporary directory)."""
        from daemon.servers import NatsServer

        self.nats = NatsServer(self.tmp / "nats")
        self._stack.callback(self.nats.stop)
        self.nats.start()
        self.nats_url = self.nats.url

    def start_servers(self) -> None:
        from daemon.servers import database_url_from_env, embedded_postgres

        self.start_nats()
        server_url = database_url_from_env()
        if server_url is None:
            with warnings.catch_warnings():  # platformdirs, inside pgserver: XDG_RUNTIME_DIR not set
                warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
                self.database_url = self._stack.enter_context(embedded_postgres(self.tmp / "pgdata"))
            self.pgdata = self.tmp / "pgdata"
            self.database_note = "embedded (pgserver, in the temp dir)"
        else:
            self.database_url = self._fresh_database(server_url)
            self.database_note = "DATABASE_URL server, fresh database"

    def _fresh_database(self, server_url: str) -> str:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        name = f"bis_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')

        def drop() -> None:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
                )
                admin.execute(f'DROP DATABASE IF EXISTS "{name}"')

        self._stack.callback(drop)
        params = conninfo_to_dict(server_url)
        params["dbname"] = name
        return str(make_conninfo("", **params))

    # --- the daemon ---------------------------------------------------------------------

    def start_daemon(
        self,
        *,
        tick_interval_ms: float = 100.0,
        timeout: float = 90.0,
        launcher: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> int:
        """Start `python -m daemon.cli run --config ...` (or `<launcher> run --config ...`, with
        `env` added to its environment); return its pid once runtime.json exists."""
        state_dir = self.tmp / "state"
        config = self.tmp / "daemon.toml"
        config.write_text(
            daemon_config(
                state_dir=state_dir,
                nats_url=self.nats_url,
                database_url=self.database_url,
                tick_interval_ms=tick_interval_ms,
            )
        )
        dropped = ("NATS_URL", "DATABASE_URL", "BIS_LOG_LEVEL")
        environ = {k: v for k, v in os.environ.items() if k not in dropped}
        environ["PYTHONPATH"] = str(REPO) + (
            os.pathsep + environ["PYTHONPATH"] if environ.get("PYTHONPATH") else ""
        )
        environ.update(env or {})
        runtime = state_dir / "runtime.json"
        with open(self.daemon_log, "ab") as log:
            self.daemon = subprocess.Popen(
                [*(launcher or (sys.executable, "-m", "daemon.cli")), "run", "--config", str(config)],
                cwd=REPO,
                env=environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only us; we stop it in order
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.daemon.returncode}:\n{_tail(self.daemon_log)}")
            if runtime.exists():
                return self.daemon.pid
            time.sleep(0.05)
        raise RuntimeError(f"daemon not ready after {timeout}s:\n{_tail(self.daemon_log)}")

    def stop_daemon(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL past 30 s) and wait for it to exit."""
        _stop_process(self.daemon, timeout=30.0)

    def daemon_alive(self) -> bool:
        return self.daemon is not None and self.daemon.poll() is None

    def daemon_log_tail(self, lines: int = 40) -> str:
        return _tail(self.daemon_log, lines)

    # --- the echo responders ------------------------------------------------------------

    def start_echo(self, subject: str, kind: str = "echo", timeout: float = 30.0) -> int:
        """Start an echo responder (`echo`, `bridge-echo` or `trio-nats-echo`: bench/_trio_nats.py)
        on `subject`; its pid once subscribed."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), kind, self.nats_url, subject],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,  # closed when we exit, however we exit: the responder stops
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.responders.append(proc)
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.strip() == ECHO_READY:
                return proc.pid
            if not line and proc.poll() is not None:
                break
        raise RuntimeError(f"{kind} responder did not start")

    # --- database probes ----------------------------------------------------------------

    def db_settings(self) -> dict[str, str]:
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN"
                " ('fsync', 'synchronous_commit', 'wal_sync_method', 'server_version')"
            ).fetchall()
        return {str(n): str(s) for n, s in rows}

    def unpublished_updates(self) -> int:
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM unpublished_events").fetchone()
        return int(row[0]) if row else 0


# --- the echo responders (each in its own process and event loop) --------------------------


def _echo_main(url: str, subject: str) -> None:
    import asyncio

    import nats

    async def main() -> None:
        nc = await nats.connect(url)

        async def respond(msg: Any) -> None:
            await msg.respond(msg.data)

        await nc.subscribe(subject, cb=respond)
        await nc.flush()
        print(ECHO_READY, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_reader(sys.stdin.fileno(), stop.set)  # the parent died: its end of stdin closed
        await stop.wait()
        await nc.close()

    asyncio.run(main())


def _bridge_echo_main(url: str, subject: str) -> None:
    import functools
    import logging

    import trio
    import trio_asyncio

    from daemon.bus import Endpoint, NatsBus, Reply

    async def echo(data: bytes) -> Reply:
        return Reply(data)

    logging.basicConfig(level=logging.ERROR)  # "nats disconnected" at shutdown is expected

    async def main() -> None:
        async with trio_asyncio.open_loop(), NatsBus.connect(url, name="bench-bridge-echo") as bus:
            serve = functools.partial(
                bus.serve,
                [Endpoint(name="Echo", subject=subject, handler=echo)],
                service_name="bench-bridge-echo",
                version="0.0.1",
                description="benchmark baseline: the daemon's request plumbing around an echo",
                queue_group="bench-bridge-echo",
                workers=128,  # the daemon's defaults (daemon.config.ServiceSection)
                backlog=4096,
                overloaded=b'{"message": "overloaded"}',
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(serve)
                print(ECHO_READY, flush=True)
                await serve_until_told(nursery)

    trio.run(main)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "echo":
        _echo_main(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "bridge-echo":
        _bridge_echo_main(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "trio-nats-echo":
        import _trio_nats
        import trio

        trio.run(_trio_nats.serve_echo, sys.argv[2], sys.argv[3], ECHO_READY)
    else:
        sys.exit("usage: _common.py echo|bridge-echo|trio-nats-echo NATS_URL SUBJECT")
