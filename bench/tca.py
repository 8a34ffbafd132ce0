"""Offline TCA over a generated trading day, with a naive pure-Python baseline in the same run.

    .venv/bin/python bench/tca.py                 # 10,000 orders, 1,000,000 fills, 10,000,000 prints
    .venv/bin/python bench/tca.py --quick         # 1,000 / 100,000 / 1,000,000: a smoke run
    .venv/bin/python bench/tca.py --formats csv --no-report --repeat 3

What it does: generates the day (`tca_offline.synthetic.generate_day`, vectorised; not timed in the
figures) as CSV and as Parquet in a temporary directory; then, for each format, runs
`tca_offline.offline.run_offline` end to end — read and check the files, every measure of every order,
peer statistics, ranking, savings, recommendations, the CSV and JSON results, and the HTML
report — and prints wall time, CPU time and rates per phase. The target (issue 5) is <= 3 s end
to end on 2 cores. The naive baseline runs the pure-Python engine (`tca.analyse`, one order at a
time over its symbol's prints, as Python lists) on an even sample of the orders, extrapolates
its rate, and checks that every number it gives equals the vectorised one (exit status 1 if not).

The machine may be shared: the load average before each run is printed; CPU time shows the
work done whatever the contention.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The repository first, and not this folder: `bench/routing.py` and `bench/tca.py` would
# otherwise shadow the `routing` and `tca` packages (`python bench/x.py` puts bench/ first).
sys.path[:] = [str(REPO), *(p for p in sys.path if Path(p or ".").resolve() not in (REPO, REPO / "bench"))]

import polars as pl  # noqa: E402

from api.enums import TCABenchmark  # noqa: E402
from bench._common import print_table  # noqa: E402
from tca import analyse  # noqa: E402
from tca.batch import compute  # noqa: E402
from tca.result import TcaResult  # noqa: E402
from tca_offline.files import engine_case, load  # noqa: E402
from tca_offline.offline import analyse_table, run_offline  # noqa: E402
from tca_offline.synthetic import DayFiles, generate_day  # noqa: E402

TARGET_S = 3.0
COMPARED: tuple[tuple[str, Callable[[TcaResult], float | None]], ...] = (
    ("average_price", lambda r: r.average_price),
    ("benchmark_price", lambda r: r.benchmark_price),
    ("slippage_bps", lambda r: r.slippage_bps),
    ("total_cost_bps", lambda r: r.total_cost_bps),
    ("market_impact_bps", lambda r: r.market_impact_bps),
    ("execution_quality_score", lambda r: r.execution_quality_score),
    ("savings_opportunity_bps", lambda r: r.savings_opportunity_bps),
    ("broker_performance_rank", lambda r: r.broker_performance_rank),
    ("is_total", lambda r: None if r.shortfall is None else r.shortfall.total),
    ("vwap", lambda r: r.benchmarks.vwap),
    ("twap", lambda r: r.benchmarks.twap),
    ("is_paper_value", lambda r: None if r.shortfall is None else r.shortfall.paper_value),
    ("is_bps", lambda r: None if r.shortfall is None else r.shortfall.bps),
)
#: The offline table's implementation-shortfall components (issue 14), each in currency and in
#: bps of the paper value (`<column>_bps`), against the naive engine's `Shortfall` fields.
SHORTFALL_COMPONENTS = (
    ("is_explicit_cost", "fees"),
    ("is_execution_cost", "execution_cost"),
    ("is_delay_cost", "trading_delay"),
    ("is_opportunity_delay", "opportunity_delay"),
    ("is_realized_cost", "trading_cost"),
    ("is_missed_opportunity_cost", "opportunity_cost"),
    ("wagner_delay_cost", "delay_cost"),
    ("wagner_opportunity_cost", "wagner_opportunity_cost"),
)


def _component(field: str, in_bps: bool) -> Callable[[TcaResult], float | None]:
    def get(result: TcaResult) -> float | None:
        shortfall = result.shortfall
        if shortfall is None:
            return None
        amount: float | None = getattr(shortfall, field)
        return shortfall.bps_of(amount) if in_bps else amount

    return get


COMPARED += tuple(
    (column + suffix, _component(field, in_bps=bool(suffix)))
    for column, field in SHORTFALL_COMPONENTS
    for suffix in ("", "_bps")
)


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min)"


def _to_parquet(day: DayFiles, directory: Path) -> DayFiles:
    paths = {}
    for name in ("orders", "fills", "trades"):
        target = directory / f"{name}.parquet"
        pl.scan_csv(getattr(day, name)).sink_parquet(target)
        paths[name] = str(target)
    return DayFiles(quotes=None, closes=None, **paths)


def run_format(name: str, day: DayFiles, out: Path, report: bool, repeat: int) -> tuple[float, float]:
    """Run the offline tool `repeat` times; print the best run's phases. Returns (analysis wall
    time, end-to-end wall time) of the best run."""
    runs = []
    for i in range(repeat):
        load = _load()
        wall, cpu = time.perf_counter(), time.process_time()
        result = run_offline(day.orders, day.fills, day.trades, None, out / name, report=report)
        runs.append((time.perf_counter() - wall, time.process_time() - cpu, result))
        print(f"  {name} run {i + 1}: {runs[-1][0]:.2f} s wall, {runs[-1][1]:.2f} s CPU ({load} before)")
    wall, cpu, result = min(runs, key=lambda run: run[0])
    if repeat > 1:
        print(f"  {name}: best of {repeat} runs below")
    timings = result.timings
    analysis = sum(v for k, v in timings.items() if k != "report")
    orders, fills, trades = result.orders, result.fills, result.trades
    rows = [[phase, f"{seconds:.3f}"] for phase, seconds in timings.items()]
    rows.append(["analysis (read -> CSV/JSON)", f"{analysis:.3f}"])
    rows.append(["end to end", f"{wall:.3f}"])
    print_table([f"{name}: phase", "wall s"], rows)
    print(
        f"  {name}: {orders:,} orders, {fills:,} fills, {trades:,} prints in {wall:.2f} s end to end"
        f" ({analysis:.2f} s without the report); CPU {cpu:.2f} s = {cpu / wall:.2f} cores busy;"
        f" {orders / analysis:,.0f} orders/s, {fills / analysis:,.0f} fills/s,"
        f" {trades / analysis:,.0f} prints/s (analysis); target <= {TARGET_S:.0f} s end to end:"
        f" {'met' if wall <= TARGET_S else 'missed'}\n"
    )
    return analysis, wall


def baseline(day: DayFiles, sample: int) -> int:
    """Vectorised engine vs the naive pure-Python engine on `sample` orders; returns mismatches."""
    inputs = load(day.orders, day.fills, day.trades)
    n = len(inputs.order_batch)
    wall = time.perf_counter()
    measures = compute(inputs.order_batch, inputs.fill_batch, inputs.trades, None)
    table, _, peers = analyse_table(inputs, measures, TCABenchmark.ARRIVAL_PRICE)
    vector_s = time.perf_counter() - wall

    rows = sorted({round(i * (n - 1) / max(sample - 1, 1)) for i in range(sample)})
    results = []
    wall = time.perf_counter()
    for row in rows:
        close = float(measures.close[row])
        order, fills, market = engine_case(inputs, row, None if math.isnan(close) else close)
        results.append(analyse(order, fills, market, TCABenchmark.ARRIVAL_PRICE, peers=peers))
    naive_s = time.perf_counter() - wall

    mismatches = 0
    for row, result in zip(rows, results, strict=True):
        record = table.row(row, named=True)
        for column, get in COMPARED:
            mine, theirs = get(result), record[column]
            if (mine is None) != (theirs is None) or (
                mine is not None and not math.isclose(mine, theirs, rel_tol=1e-9, abs_tol=1e-6)
            ):
                mismatches += 1
                print(f"  MISMATCH order {record['order_id']} {column}: naive {mine} vs vectorised {theirs}")
    naive_rate = len(rows) / naive_s
    vector_rate = n / vector_s
    print_table(
        ["measures + peers + recommendations (files already read)", "orders", "seconds", "orders/s"],
        [
            ["vectorised (tca.batch + tca.peers)", f"{n:,}", f"{vector_s:.3f}", f"{vector_rate:,.0f}"],
            [
                "naive pure Python (tca.analyse per order)",
                f"{len(rows):,}",
                f"{naive_s:.3f}",
                f"{naive_rate:,.0f}",
            ],
            ["naive, extrapolated to every order", f"{n:,}", f"{n / naive_rate:,.1f}", ""],
        ],
    )
    print(
        f"  speed-up x{vector_rate / naive_rate:,.0f}; {len(rows)} sampled orders x {len(COMPARED)}"
        " numbers compared,"
        f" {mismatches} mismatch(es)\n"
    )
    return mismatches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--fills", type=int, default=1_000_000)
    parser.add_argument("--trades", type=int, default=10_000_000, help="market prints")
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--formats", default="csv,parquet", help="comma-separated: csv, parquet")
    parser.add_argument("--repeat", type=int, default=1, help="runs per format; the best is shown")
    parser.add_argument(
        "--baseline-orders", type=int, default=200, help="orders in the naive baseline sample"
    )
    parser.add_argument("--no-report", dest="report", action="store_false", help="skip the HTML report")
    parser.add_argument("--quick", action="store_true", help="1,000 orders, 100,000 fills, 1,000,000 prints")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (files and results)"
    )
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"(ignoring arguments meant for other benchmarks: {' '.join(unknown)})")
    if args.quick:
        args.orders, args.fills, args.trades, args.symbols = 1_000, 100_000, 1_000_000, 100
        args.baseline_orders = min(args.baseline_orders, 100)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if not set(formats) <= {"csv", "parquet"}:
        parser.error("--formats takes csv and/or parquet")

    workdir = Path(tempfile.mkdtemp(prefix="bench-tca-"))
    try:
        print(f"machine: {os.cpu_count()} CPUs, {_load()}; Python {sys.version.split()[0]}")
        wall = time.perf_counter()
        day = generate_day(
            workdir / "day", orders=args.orders, fills=args.fills, trades=args.trades, symbols=args.symbols
        )
        days = {"csv": day}
        if "parquet" in formats:
            days["parquet"] = _to_parquet(day, workdir / "day")
        sizes = ", ".join(
            f"{Path(getattr(day, n)).name} {Path(getattr(day, n)).stat().st_size / 1e6:,.0f} MB"
            for n in ("orders", "fills", "trades")
        )
        print(
            f"generated {args.orders:,} orders, {args.fills:,} fills, {args.trades:,} prints"
            f" of {args.symbols} symbols"
            f" in {time.perf_counter() - wall:.1f} s ({sizes})\n"
        )
        for name in formats:
            run_format(name, days[name], workdir / "out", args.report, max(args.repeat, 1))
        mismatches = baseline(day, args.baseline_orders)
        if args.keep:
            print(f"kept {workdir}")
        return 1 if mismatches else 0
    except KeyboardInterrupt:
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
