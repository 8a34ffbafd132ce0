"""Execution reports one at a time (the engine before issue 11) against batched, in one run.

    .venv/bin/python bench/reports.py                   # 2,000 executions a scenario, batches of 200
    .venv/bin/python bench/reports.py --quick           # 400 executions: a smoke run
    .venv/bin/python bench/reports.py --no-database     # the reporter's own work only (saves kept in memory)
    DATABASE_URL=postgresql://... .venv/bin/python bench/reports.py   # that server, a fresh database

What it does: builds a market (`MarketBook`, 3 equities, a quote every 20 ms and a print every
100 ms each for 20 minutes), a month of peer statistics (6,000 reports of 3 brokers: ranks and
recommendations are worked out as in production) and, per scenario, N finished executions in
the order they finish, `--rate` a second (default 800: the daemon's throughput); with a
database, their parent rows (`routed_orders`, `broker_orders`) are inserted first, since
reports reference them. Then, alternating, `--repeat` times:

- **one by one**: one Trio task per execution calling `ExecutionReporter.report` — what
  `ExecutionEngine._on_finished` did before (one `_report` task per finished execution; their
  saves meet in the writer's group commits);
- **batched**: `ExecutionReporter.report_many` over batches of `--batch`, one after the other —
  what the engine's single report task does now.

Both wait for the market data (already there), take the arrival price from the order (as the
engine gives it), extract the window, analyse, encode the window, build and save the row, and
feed the peer and routing statistics. Figures: wall time, CPU time of this process (the Trio
thread and the writer's threads; PostgreSQL's own CPU is not counted) per report, and the best
(lowest CPU) of the runs. Between runs the reports are deleted; each run's rows are read back
and compared with the other kind's (every figure to 1e-9 relative, windows byte for byte): exit
status 1 on any difference or missing row.

Scenarios: `market` (one fill a few ms after arrival: the route benchmark's zero-latency MARKET
orders) and `working` (1-5 fills over up to a minute, a quarter cancelled part-filled).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The repository first, and not this folder (`bench/tca.py` would shadow the `tca` package).
sys.path[:] = [str(REPO), *(p for p in sys.path if Path(p or ".").resolve() not in (REPO, REPO / "bench"))]

import msgspec  # noqa: E402
import numpy as np  # noqa: E402
import psycopg  # noqa: E402
import trio  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402

from api.enums import (  # noqa: E402
    AssetClass,
    BrokerOrderStatus,
    ExecutionStrategy,
    OrderType,
    Side,
    TimeInForce,
    Urgency,
)
from api.orders import BrokerOrder, OrderFill  # noqa: E402
from bench._common import print_table  # noqa: E402
from daemon.servers import database_url_from_env, embedded_postgres  # noqa: E402
from market.book import MarketBook  # noqa: E402
from market.messages import QuoteMessage, TradeMessage  # noqa: E402
from routing.stats import RoutingStats  # noqa: E402
from sql.migrate import apply_migrations  # noqa: E402
from sql.reports import PeerGroupRow, ReportRecord  # noqa: E402
from sql.store import Store  # noqa: E402
from tca.model import ns_of  # noqa: E402
from tca.peers import hour_key, peer_stats  # noqa: E402
from tca_online.peers import PeerCache  # noqa: E402
from tca_online.queue import ReportJob  # noqa: E402
from tca_online.reporter import ExecutionReporter  # noqa: E402

SYMBOLS = {"AAPL": 190.0, "MSFT": 410.0, "SPY": 510.0}
BROKERS = ("bench-a", "bench-b", "bench-c")
T0 = datetime(2024, 3, 1, 14, 0, tzinfo=UTC)
MARKET_S = 20 * 60
COMPARED = (
    "benchmark_price",
    "slippage_bps",
    "market_impact_bps",
    "total_cost_bps",
    "execution_quality_score",
    "broker_performance_rank",
    "size_bucket",
    "arrival_cost_bps",
    "end_price",
    "benchmarks",
    "shortfall",
    "unavailable",
    "recommendations",
    "md5(market_window)",
)


def market() -> MarketBook:
    rng = np.random.default_rng(1)
    book = MarketBook(dict.fromkeys(SYMBOLS, AssetClass.EQUITY), clock_ns=lambda: 0)
    for symbol, start in SYMBOLS.items():
        steps = MARKET_S * 50
        mids = np.round(start + np.cumsum(rng.normal(0, 0.01, steps)), 2)
        for k, mid in enumerate(mids.tolist()):
            at = T0 + timedelta(milliseconds=20 * k)
            book.on_quote(
                QuoteMessage(symbol, Decimal(f"{mid - 0.01:.2f}"), Decimal(f"{mid + 0.01:.2f}"), at)
            )
            if k % 5 == 0:
                book.on_trade(
                    TradeMessage(symbol, Decimal(f"{mid:.2f}"), Decimal(int(rng.integers(1, 500))), at)
                )
    return book


def executions(scenario: str, n: int, seed: int, rate: float) -> list[BrokerOrder]:
    """N finished executions, in the order they finish (as the report queue sees them), `rate`
    a second."""
    rng = np.random.default_rng(seed)
    ends = np.sort(120 + rng.uniform(0, n / rate, n))
    if ends[-1] > MARKET_S - 5:
        raise SystemExit(f"{n} executions at {rate}/s end after the {MARKET_S} s of market data")
    out = []
    for i, end_s in enumerate(ends.tolist()):
        symbol = str(rng.choice(list(SYMBOLS)))
        end = T0 + timedelta(seconds=end_s)
        partial = False
        if scenario == "market":
            created = end - timedelta(milliseconds=float(rng.uniform(1, 20)))
            times = [end]
        else:
            created = end - timedelta(seconds=float(rng.uniform(1, 60)))
            count = int(rng.integers(1, 6))
            span = (end - created).total_seconds()
            times = sorted(created + timedelta(seconds=float(x)) for x in rng.uniform(0, span, count))
            partial = rng.random() < 0.25
            if not partial:
                end = times[-1]
        price = SYMBOLS[symbol]
        fills = tuple(
            OrderFill(
                id=f"{scenario}-{seed}-{i}-{k}",
                broker_fill_id=f"f{k}",
                quantity=Decimal(int(rng.integers(1, 50))),
                price=Decimal(f"{price + float(rng.normal(0, 0.05)):.2f}"),
                fees=Decimal("0.25"),
                timestamp=at,
                venue="SIMX",
            )
            for k, at in enumerate(times)
        )
        filled = sum((f.quantity for f in fills), Decimal(0))
        execution_id = str(uuid.uuid4())
        out.append(
            BrokerOrder(
                id=execution_id,
                order_id=f"o-{execution_id[:30]}",
                broker_id=str(rng.choice(BROKERS)),
                client_order_id=f"c-{execution_id}",
                account_id="ACC",
                symbol=symbol,
                side=Side.BUY if i % 2 == 0 else Side.SELL,
                order_type=OrderType.MARKET if scenario == "market" else OrderType.LIMIT,
                quantity=filled + (Decimal(20) if partial else Decimal(0)),
                time_in_force=TimeInForce.DAY,
                execution_strategy=ExecutionStrategy.SMART,
                urgency=Urgency.MEDIUM,
                created_at=created,
                updated_at=end,
                status=BrokerOrderStatus.CANCELED if partial else BrokerOrderStatus.FILLED,
                broker_order_id=f"b-{i}",
                filled_quantity=filled,
                average_price=sum((f.quantity * f.price for f in fills), Decimal(0)) / filled,
                fees=sum((f.fees for f in fills), Decimal(0)),
                fills=fills,
            )
        )
    return out


def peer_groups() -> list[PeerGroupRow]:
    """A month of 6,000 reports, as the server's sums per peer group (`load_peer_groups`)."""
    rng = np.random.default_rng(2)
    drawn = []
    for k in range(6_000):
        drawn.append(
            (
                int(rng.integers(0, 3)),
                float(rng.normal((2.0, 1.0, 4.0)[k % 3], 1.5)),
                float(Decimal(f"{rng.uniform(1e3, 2e5):.2f}")),
                BROKERS[k % 3],
                str(rng.choice(["MARKET", "LIMIT"])),
                hour_key(ns_of(T0 - timedelta(hours=float(rng.uniform(1, 700))))),
            )
        )
    stats = peer_stats(
        asset_classes=["EQUITY"] * len(drawn),
        buckets=[d[0] for d in drawn],
        costs=[d[1] for d in drawn],
        weights=[d[2] for d in drawn],
        brokers=[d[3] for d in drawn],
        strategies=["SMART"] * len(drawn),
        order_types=[d[4] for d in drawn],
        hours=[d[5] for d in drawn],
    )
    return [PeerGroupRow(*msgspec.structs.astuple(g)) for g in stats.groups]  # the same fields, in order


class Kept:
    """The store without a database: arrivals are given, saves are kept in memory."""

    def __init__(self) -> None:
        self.saved: list[ReportRecord] = []

    async def load_arrival(self, order_id: str) -> tuple[Decimal | None, datetime | None]:
        raise AssertionError("the engine gives first attempts their arrival price")

    async def save_report(self, report: ReportRecord, *, replace: bool = False) -> bool:
        self.saved.append(report)
        return True

    async def save_reports(self, reports: Sequence[tuple[ReportRecord, bool]]) -> list[bool]:
        self.saved += [report for report, _ in reports]
        return [True] * len(reports)


async def fresh_reporter(store: Any, book: MarketBook, rows: list[PeerGroupRow]) -> ExecutionReporter:
    """A reporter with the month's peer statistics, frozen for the run (merging the run's own
    reports in would make the two kinds' rows differ by when the merge happened)."""
    peers = PeerCache(merge_every=math.inf)

    async def load(since: datetime) -> list[PeerGroupRow]:
        return rows

    await peers.refresh(load, T0)
    peers._merged_at = math.inf
    return ExecutionReporter(store, book, stats=RoutingStats(), peers=peers, market_settle_s=0.5)


async def one_by_one(reporter: ExecutionReporter, jobs: list[ReportJob]) -> None:
    async def report(job: ReportJob) -> None:
        await reporter.report(job.order, job.arrival_price, arrival_known=job.arrival_known)

    async with trio.open_nursery() as nursery:
        for job in jobs:
            nursery.start_soon(report, job)


async def batched(reporter: ExecutionReporter, jobs: list[ReportJob], size: int) -> None:
    for start in range(0, len(jobs), size):
        await reporter.report_many(jobs[start : start + size])


def read_rows(url: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT id, {', '.join(COMPARED)} FROM execution_reports"  # the columns are constants
        ).fetchall()
        conn.execute("DELETE FROM execution_reports")
        conn.commit()
    return {row[0]: tuple(row[1:]) for row in rows}


def kept_rows(store: Kept) -> dict[str, tuple[Any, ...]]:
    import hashlib

    out = {}
    for r in store.saved:
        out[r.execution_id] = (
            r.benchmark_price,
            r.slippage_bps,
            r.market_impact_bps,
            r.total_cost_bps,
            r.quality_score,
            r.rank,
            r.size_bucket,
            r.arrival_cost_bps,
            r.end_price,
            r.benchmarks,
            r.shortfall,
            r.unavailable,
            r.recommendations,
            hashlib.md5(r.market_window).hexdigest(),  # a fingerprint
        )
    store.saved.clear()
    return out


def differences(a: dict[str, tuple[Any, ...]], b: dict[str, tuple[Any, ...]]) -> int:
    """Rows missing on either side, or with a figure that differs beyond 1e-9 relative."""
    bad = len(a.keys() ^ b.keys())
    for key in a.keys() & b.keys():
        for x, y in zip(a[key], b[key], strict=True):
            if not same(x, y):
                bad += 1
                break
    return bad


def same(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(same(p, q) for p, q in zip(x, y, strict=True))
    if isinstance(x, str) and isinstance(y, str) and x[:1] in "[{":
        import json

        return same(json.loads(x), json.loads(y))
    return bool(x == y)


def insert_parents(url: str, orders: list[BrokerOrder]) -> None:
    """The rows a report refers to: the brokers, the OMS orders and the executions."""
    now = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        for broker in BROKERS:
            conn.execute(
                "INSERT INTO broker_connections (id, broker_id, name, status, supported_asset_classes,"
                " features, commission_structure, credentials, connection_params, rate_limits,"
                " latency_stats, created_at, updated_at)"
                " VALUES (%s, %s, %s, 'CONNECTED', '[]', '{}', '{}', '{}', '{}', '{}', '{}', %s, %s)"
                " ON CONFLICT DO NOTHING",
                (broker, broker, broker, now, now),
            )
        with conn.cursor().copy(
            "COPY routed_orders (order_id, routing_id, request_hash, request, arrival_price, received_at)"
            " FROM STDIN"
        ) as copy:
            for o in orders:
                copy.write_row((o.order_id, o.id, "h", "{}", None, o.created_at))
        with conn.cursor().copy(
            "COPY broker_orders (id, order_id, broker_id, client_order_id, account_id, symbol,"
            " asset_class, side, order_type, quantity, time_in_force, status, filled_quantity,"
            " average_price, fees, execution_strategy, urgency, created_at, updated_at) FROM STDIN"
        ) as copy:
            for o in orders:
                copy.write_row(
                    (
                        o.id, o.order_id, o.broker_id, o.client_order_id, o.account_id, o.symbol,
                        "EQUITY", str(o.side), str(o.order_type), o.quantity, str(o.time_in_force),
                        str(o.status), o.filled_quantity, round(o.average_price or 0, 8), o.fees,
                        str(o.execution_strategy), str(o.urgency), o.created_at, o.updated_at,
                    )
                )  # fmt: skip
        conn.commit()


@contextlib.contextmanager
def database(directory: Path) -> Iterator[str]:
    """A fresh, migrated database: on `DATABASE_URL`'s server, else on an embedded one."""
    with contextlib.ExitStack() as stack:
        server = database_url_from_env() or stack.enter_context(embedded_postgres(directory / "pg"))
        name = f"bis_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = make_conninfo(server, dbname=name)
        try:
            apply_migrations(url)
            yield url
        finally:
            with psycopg.connect(server, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
                )
                admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


async def run(args: argparse.Namespace, url: str | None) -> int:
    book = market()
    rows = peer_groups()
    status = 0
    table = []
    for scenario in args.scenarios:
        orders = executions(scenario, args.executions, len(scenario), args.rate)
        jobs = [ReportJob(o, Decimal(f"{SYMBOLS[o.symbol]:.2f}"), True) for o in orders]
        if url is not None:
            insert_parents(url, orders)
        best: dict[str, tuple[float, float]] = {}
        seen: dict[str, dict[str, tuple[Any, ...]]] = {}
        for run_index in range(args.repeat):
            for kind in ("one by one", "batched"):
                async with contextlib.AsyncExitStack() as stack:
                    store: Any = await stack.enter_async_context(Store.open(url)) if url else Kept()
                    reporter = await fresh_reporter(store, book, rows)
                    wall, cpu = time.perf_counter(), time.process_time()
                    if kind == "one by one":
                        await one_by_one(reporter, jobs)
                    else:
                        await batched(reporter, jobs, args.batch)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                written = reporter.written
                got = read_rows(url) if url else kept_rows(store)
                if written != len(jobs) or len(got) != len(jobs):
                    print(
                        f"  {scenario} {kind} run {run_index + 1}: {written} written,"
                        f" {len(got)} rows of {len(jobs)}"
                    )
                    status = 1
                other = seen.get("batched" if kind == "one by one" else "one by one")
                if other is not None and (bad := differences(got, other)):
                    print(
                        f"  {scenario} {kind} run {run_index + 1}: {bad} row(s) differ from the other kind's"
                    )
                    status = 1
                seen[kind] = got
                print(f"  {scenario} {kind} run {run_index + 1}: {wall:.3f} s wall, {cpu:.3f} s CPU")
                if kind not in best or cpu < best[kind][1]:
                    best[kind] = (wall, cpu)
        base_cpu = best["one by one"][1]
        for kind, (wall, cpu) in best.items():
            table.append(
                [
                    f"{scenario}: {kind}",
                    f"{len(jobs):,}",
                    f"{cpu / len(jobs) * 1e6:,.0f}",
                    f"{wall / len(jobs) * 1e6:,.0f}",
                    f"{len(jobs) / wall:,.0f}",
                    f"x{base_cpu / cpu:.1f}",
                ]
            )
    print()
    print(
        f"reports per run: {args.executions:,}; batch: {args.batch}; best (lowest CPU) of {args.repeat} runs;"
        f" saves: {'PostgreSQL (fsync on)' if url else 'kept in memory (--no-database)'}"
    )
    print_table(["kind", "reports", "CPU µs/report", "wall µs/report", "reports/s", "CPU speed-up"], table)
    return status


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--executions", type=int, default=2_000, help="reports per run and scenario")
    parser.add_argument("--batch", type=int, default=200, help="reports per batch (the engine takes <= 512)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each kind (alternating)")
    parser.add_argument(
        "--rate", type=float, default=800.0, help="executions finishing per second (the daemon's ~800/s)"
    )
    parser.add_argument(
        "--scenarios", nargs="+", default=["market", "working"], choices=["market", "working"]
    )
    parser.add_argument("--quick", action="store_true", help="400 executions, 2 runs")
    parser.add_argument("--no-database", action="store_true", help="keep the saves in memory")
    args = parser.parse_args()
    if args.quick:
        args.executions, args.repeat = min(args.executions, 400), min(args.repeat, 2)
    one, five, _ = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {one:.2f} / {five:.2f};"
        f" Python {sys.version.split()[0]}"
    )
    if args.no_database:
        return trio.run(run, args, None)
    with tempfile.TemporaryDirectory(prefix="bis-bench-reports-") as tmp, database(Path(tmp)) as url:
        return trio.run(run, args, url)


if __name__ == "__main__":
    sys.exit(main())
