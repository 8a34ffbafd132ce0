"""Daemon memory under a steady flow of filled orders: RSS after each wave, idle as baseline.

    .venv/bin/python bench/steady.py            # 14 waves of 10,000 orders: ~2.5 min on 2 cores
    .venv/bin/python bench/steady.py --quick    # 3 waves of 5,000: ~20 s
    make bench BENCH_ARGS=--quick

Starts everything itself, as bench/route.py does (`_common.BenchStack`, the same daemon
configuration: two simulated brokers with zero latency, MARKET orders filled at once). The
baseline is the idle daemon's RSS, read before any order. Then `--waves` waves of `--orders`
RouteOrders each (MARKET, 10 shares, 64 in flight, bench/route.py's requests), each followed by
`--settle` seconds of quiet and a reading of the daemon's memory (`_memory.Memory`) and of the
CPU it used per order since the wave began (its post-trade work included).

What it shows: whether the daemon keeps something per order it has finished with. It must not,
beyond its bounded memories: the last 20,000 finished executions (`nursery.live.LiveBook`,
~2 kB each, besides the 300 s retain) and each simulated venue's last 100,000 finished orders
and fills (`adapters.simulated.matching`). So RSS grows until those are full and then stays
flat: the last column, growth per order since the previous wave, goes to ~0. Before these bounds
existed it stayed at ~3 kB per order for as long as orders came.

Exit status: 0, or 1 if a reply was not an ACCEPTED RouteOrder response or the daemon died;
130 on Ctrl-C / SIGTERM (everything started is stopped either way).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BenchStack, cpu_seconds, exit_with, format_table, interrupt_on_signals
from _memory import Memory, mb
from route import ROUTE_SUBJECT, check_route, concurrent, order_payloads

REQUESTERS = 64


async def wave(nats_url: str, number: int, orders: int) -> tuple[float, int]:
    """Wave `number`: `orders` new RouteOrders, REQUESTERS in flight: (seconds, failed replies)."""
    payloads = order_payloads(f"{number:03d}", "st", orders)
    nc = await nats.connect(nats_url)
    try:
        phase = await concurrent(nc, "steady", ROUTE_SUBJECT, payloads, check_route, REQUESTERS)
    finally:
        await nc.close()
    return phase.elapsed, sum(phase.failures.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--waves", type=int, default=14, help="waves of orders (default 14)")
    parser.add_argument("--orders", type=int, default=10_000, help="orders per wave (default 10,000)")
    parser.add_argument("--settle", type=float, default=3.0, help="quiet seconds before each reading")
    parser.add_argument("--quick", action="store_true", help="3 waves of 5,000 (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.waves, args.orders = min(args.waves, 3), min(args.orders, 5_000)
    if not 1 <= args.waves <= 999 or not 1 <= args.orders <= 9_999_999:
        parser.error("need 1 <= --waves <= 999 and 1 <= --orders <= 9,999,999")

    interrupt_on_signals()
    failed = 0
    with BenchStack() as stack:
        print(f"bench/steady.py: temp dir {stack.tmp}", flush=True)
        stack.start_servers()
        pid = stack.start_daemon()
        time.sleep(args.settle)
        idle = Memory.of(pid)
        rows = [["idle (baseline)", "0", "-", "-", mb(idle.rss), mb(idle.anon), "-"]]
        previous, sent = idle.rss, 0
        for n in range(args.waves):
            cpu = cpu_seconds(pid)
            elapsed, failures = asyncio.run(wave(stack.nats_url, n, args.orders))
            failed += failures
            if not stack.daemon_alive():
                print(f"the daemon died:\n{stack.daemon_log_tail()}", file=sys.stderr)
                return 1
            time.sleep(args.settle)  # the wave's post-trade work (reports, publishing) ends here
            now, cpu_us = Memory.of(pid), (cpu_seconds(pid) - cpu) / args.orders * 1e6
            sent += args.orders
            growth = (now.rss - previous) / args.orders
            rate = args.orders / elapsed
            figures = [f"{rate:,.0f}", f"{cpu_us:,.0f}", mb(now.rss), mb(now.anon), f"{growth:,.0f}"]
            rows.append([f"after wave {n + 1}", f"{sent:,}", *figures])
            print(f"  wave {n + 1}/{args.waves}: RSS {mb(now.rss)} MB, {growth:,.0f} B per order", flush=True)
            previous = now.rss
    print()
    headers = ["reading", "orders sent", "orders/s", "daemon CPU/order (us)", "RSS (MB)", "RssAnon (MB)",
               "RSS growth per order (B)"]  # fmt: skip
    print(format_table(headers, rows))
    if failed:
        print(f"{failed} replies were not ACCEPTED RouteOrder responses", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    exit_with(main)
