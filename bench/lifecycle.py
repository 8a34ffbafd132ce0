"""Order state machine throughput: `api.lifecycle.apply_event` per broker event, pure CPU.

    .venv/bin/python bench/lifecycle.py                       # ~10 s
    .venv/bin/python bench/lifecycle.py --quick               # ~2 s
    git show HEAD~1:api/lifecycle.py > /tmp/old_lifecycle.py
    .venv/bin/python bench/lifecycle.py --baseline /tmp/old_lifecycle.py   # same-run A/B

`apply_event` runs once per broker event on the order path (nursery/applier.py), so its cost is
paid per ack, fill and cancel. The workload is the mix a live daemon sees: per order an ack, two
partial fills, a repeated fill (stream replay), the last fill, then a late cancel (ignored); and
per fourth order an ack and a cancel. Each figure is the median CPU time per event over
`--repeat` blocks (gc disabled inside a block); with `--baseline`, the blocks of the two
implementations are interleaved so that both see the same machine noise. A baseline that gives
different results on the workload is an error (exit status 1).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
from _common import REPO, print_table  # noqa: E402

sys.path[:] = [str(REPO), *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

import api.lifecycle  # noqa: E402
from api.enums import ExecutionStrategy, OrderType, Side, TimeInForce, Urgency  # noqa: E402
from api.events import (  # noqa: E402
    AnyBrokerEvent,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
)
from api.orders import BrokerOrder  # noqa: E402

T0 = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)

Scenario = tuple[BrokerOrder, list[AnyBrokerEvent]]


def scenarios(count: int) -> list[Scenario]:
    """`count` orders with their events (see the module docstring)."""
    out: list[Scenario] = []
    for n in range(count):
        cid = f"bis-{n:032d}"
        order = BrokerOrder(
            id=f"id-{n}", order_id=f"ord-{n}", broker_id="sim-a", client_order_id=cid,
            account_id="acc-1", symbol="AAPL", side=Side.BUY, order_type=OrderType.MARKET,
            quantity=Decimal(100), time_in_force=TimeInForce.DAY,
            execution_strategy=ExecutionStrategy.SMART, urgency=Urgency.MEDIUM,
            created_at=T0, updated_at=T0,
        )  # fmt: skip
        at = [T0 + timedelta(milliseconds=k) for k in range(1, 7)]
        events: list[AnyBrokerEvent] = [OrderAccepted(client_order_id=cid, at=at[0], broker_order_id=f"B{n}")]
        if n % 4 == 3:
            events.append(OrderCanceled(client_order_id=cid, at=at[1]))
        else:
            fills = [(f"F{n}-1", "30", "190.01"), (f"F{n}-2", "30", "190.02"), (f"F{n}-3", "40", "190.03")]
            for k, (fill_id, quantity, price) in enumerate(fills):
                fill = OrderFilled(
                    client_order_id=cid, at=at[k + 1], fill_id=fill_id, quantity=Decimal(quantity),
                    price=Decimal(price), fee=Decimal("0.05"), venue="XNAS",
                )  # fmt: skip
                events.append(fill)
                if k == 1:
                    events.append(fill)  # replayed
            events.append(OrderCanceled(client_order_id=cid, at=at[5]))
        out.append((order, events))
    return out


def run_block(apply: Callable[[BrokerOrder, Any], Any], work: list[Scenario]) -> list[BrokerOrder]:
    finals = []
    for order, events in work:
        for event in events:
            order = apply(order, event).order
        finals.append(order)
    return finals


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("baseline_lifecycle", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baseline", type=Path, help="another lifecycle.py to compare against")
    args = parser.parse_args()
    if args.quick:
        args.orders, args.repeat = min(args.orders, 500), min(args.repeat, 5)
    work = scenarios(args.orders)
    events = sum(len(e) for _, e in work)
    variants: dict[str, Callable[[BrokerOrder, Any], Any]] = {"current": api.lifecycle.apply_event}
    if args.baseline is not None:
        variants = {"baseline": load(args.baseline).apply_event, **variants}
        if run_block(variants["baseline"], work) != run_block(variants["current"], work):
            print("baseline and current disagree on the workload", file=sys.stderr)
            return 1
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeat):
        for name, apply in variants.items():
            gc.collect()
            gc.disable()
            start = time.process_time()
            run_block(apply, work)
            times[name].append(time.process_time() - start)
            gc.enable()
    rows = []
    for name, values in times.items():
        per_event = statistics.median(values) / events * 1e9
        rows.append([name, f"{events:,}", f"{per_event:,.0f}", f"{1e9 / per_event:,.0f}"])
    print_table(["variant", "events/block", "ns/event (median)", "events/s"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
