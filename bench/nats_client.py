"""What the NATS client costs: the same echo served three ways, measured in one run.

    .venv/bin/python bench/nats_client.py            # default: 2,000 sequential, 20,000 at 64 in flight
    .venv/bin/python bench/nats_client.py --quick    # 300 / 2,000

- **nats-py, asyncio**: a bare nats-py subscriber replying to each message (route.py's "echo").
- **nats-py in Trio (the daemon's bus)**: `daemon.bus.NatsBus.serve` around an echo handler:
  nats.micro in trio-asyncio, a memory channel to Trio workers, replies in one bridge crossing
  (route.py's "Trio echo"). The daemon's request plumbing on the design card's NATS stack.
- **Trio-native client (bench/_trio_nats.py)**: the same shape (reader -> memory channel ->
  workers -> one write for the replies that are ready) on a minimal NATS client written for
  Trio: core protocol only, no TLS, no reconnects. What the plumbing would cost without asyncio.

Per responder: sequential p50/p99 (one request at a time), concurrent requests/s (64 requesters),
and the responder's CPU per request in each phase (/proc utime + stime). The benchmark's client
is nats-py in every case. Responders run in turn against one nats-server, in alternating
rounds (`--rounds`), so a change of load on the shared cores hits all three alike.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nats
from _common import BenchStack, cpu_seconds, exit_with, interrupt_on_signals, print_table
from route import Phase, check_echo, concurrent, order_payloads, sequential

RESPONDERS = (
    ("echo", "nats-py, asyncio"),
    ("bridge-echo", "nats-py in Trio (the daemon's bus)"),
    ("trio-nats-echo", "Trio-native client"),
)
REQUEST = order_payloads("nc", "nc", 1)[0]  # a RouteOrder request, as route.py sends


async def measure(
    url: str, pids: dict[str, int], sequential_n: int, concurrent_n: int, requesters: int, rounds: int
) -> dict[str, list[tuple[Phase, float, Phase, float]]]:
    nc = await nats.connect(url, name="bench-nats-client")
    results: dict[str, list[tuple[Phase, float, Phase, float]]] = {kind: [] for kind, _ in RESPONDERS}
    try:
        for kind, _ in RESPONDERS:  # warm-up
            await sequential(nc, kind, f"bench.{kind}", [REQUEST] * 100, check_echo)
        for round_ in range(rounds):
            for kind, label in RESPONDERS:
                subject, pid = f"bench.{kind}", pids[kind]
                before = cpu_seconds(pid)
                seq = await sequential(nc, label, subject, [REQUEST] * sequential_n, check_echo)
                middle = cpu_seconds(pid)
                conc = await concurrent(nc, label, subject, [REQUEST] * concurrent_n, check_echo, requesters)
                after = cpu_seconds(pid)
                results[kind].append((seq, middle - before, conc, after - middle))
                print(
                    f"  round {round_ + 1} {label:<36} sequential p50 {seq.us(50):6,.0f} us, "
                    f"concurrent {conc.rate:8,.0f}/s",
                    flush=True,
                )
    finally:
        await nc.close()
    return results


def report(results: dict[str, list[tuple[Phase, float, Phase, float]]]) -> int:
    rows: list[list[str]] = []
    bare_p50 = bare_rate = 0.0
    failed = 0
    for kind, label in RESPONDERS:
        runs = results[kind]
        latencies = sorted(x for seq, _, _, _ in runs for x in seq.latencies)
        seq = Phase(label, latencies=latencies)
        seq_count = sum(s.count for s, _, _, _ in runs)
        conc_count = sum(c.count for _, _, c, _ in runs)
        rate = conc_count / sum(c.elapsed for _, _, c, _ in runs)
        cpu_seq = sum(cpu for _, cpu, _, _ in runs) / seq_count * 1e6
        cpu_conc = sum(cpu for _, _, _, cpu in runs) / conc_count * 1e6
        failed += sum(sum(s.failures.values()) + sum(c.failures.values()) for s, _, c, _ in runs)
        if kind == "echo":
            bare_p50, bare_rate = seq.us(50), rate
        rows.append(
            [
                label,
                f"{seq.us(50):,.0f}",
                f"{seq.us(99):,.0f}",
                f"{seq.us(50) / bare_p50:.2f}x",
                f"{rate:,.0f}",
                f"{rate / bare_rate:.2f}x",
                f"{cpu_seq:,.0f}",
                f"{cpu_conc:,.0f}",
            ]
        )
    print()
    print_table(
        [
            "responder",
            "seq p50 (us)",
            "seq p99 (us)",
            "p50 / bare",
            "concurrent (req/s)",
            "rate / bare",
            "CPU/req seq (us)",
            "CPU/req conc (us)",
        ],
        rows,
    )
    if failed:
        print(f"\n{failed} failed requests")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=2000, help="sequential requests per round")
    parser.add_argument("--requests", type=int, default=20000, help="concurrent requests per round")
    parser.add_argument("--concurrent", type=int, default=64, help="concurrent requesters")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    parser.add_argument("--quick", action="store_true", help="300 sequential and 2,000 concurrent per round")
    args = parser.parse_args(argv)
    if args.quick:
        args.sequential, args.requests = min(args.sequential, 300), min(args.requests, 2000)
    interrupt_on_signals()
    started = time.monotonic()
    with BenchStack() as stack:
        stack.start_nats()
        pids: dict[str, Any] = {kind: stack.start_echo(f"bench.{kind}", kind) for kind, _ in RESPONDERS}
        print(
            f"bench/nats_client.py: nats-server {stack.nats_url}; {args.rounds} rounds of "
            f"{args.sequential:,} sequential + {args.requests:,} concurrent requests ({args.concurrent} "
            "requesters) to each responder in turn",
            flush=True,
        )
        results = asyncio.run(
            measure(stack.nats_url, pids, args.sequential, args.requests, args.concurrent, args.rounds)
        )
        status = report(results)
    print(f"\ntotal {time.monotonic() - started:.0f} s; exit status {status}")
    return status


if __name__ == "__main__":
    exit_with(main)
