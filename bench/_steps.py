"""Where the daemon's Trio thread spends each order: every task step, timed (`route.py --steps`).

Run as a script, this module *is* the daemon: `python bench/_steps.py run --config X` installs
`StepClock` as an instrument of the daemon's `trio.run` and then runs `daemon.cli`'s `main` as `python -m
daemon.cli` would. The clock records the start and end of every task step and of every wait for
I/O in arrays (~40 bytes a step), and writes them to `$BIS_BENCH_STEPS` (JSON) when `trio.run`
returns: stop the daemon (SIGTERM) before reading them. Nothing in the daemon's code knows about
it; the instrument adds ~2 µs to every task step.

Times are `time.perf_counter()`: CLOCK_MONOTONIC on Linux, the same clock in every process, so
the benchmark brackets its phases with its own `perf_counter()` and `StepLog.table` attributes
the steps that began inside a phase to it.

What the figures mean:

- **busy**: the sum of the Trio thread's task steps (Python work done by tasks; trio's own
  scheduling between steps and the instrument are not in it). **waiting for I/O**: time in the
  scheduler's epoll wait, the thread idle. **passes**: trips through the scheduler's wait, each
  a batch of steps.
- **per task**: a task is named by its function (`trio.lowlevel.Task.name`): the NATS request
  workers (`daemon.bus.NatsBus._work`: decode, route, claim, place, encode), the trio-asyncio
  loop (`trio_asyncio...._main_loop`: nats-py's own work, every asyncio callback), the group
  writer's commits, the applier's rounds, the reporter, the publisher, ...
"""

from __future__ import annotations

import json
import os
import sys
import time
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV = "BIS_BENCH_STEPS"

__all__ = ["ENV", "StepClock", "StepLog", "launcher"]


def launcher() -> list[str]:
    """The argv prefix that starts the daemon under the clock (instead of `-m daemon.cli`)."""
    return [sys.executable, str(Path(__file__).resolve())]


class StepClock:
    """A Trio instrument (duck-typed: trio takes any object with the hook methods) that times
    every task step and every I/O wait."""

    def __init__(self) -> None:
        self.names: dict[str, int] = {}
        self.steps = array("d")  # start, end, pairs
        self.step_task = array("i")
        self.waits = array("d")  # start, end, pairs
        self._step_start = 0.0
        self._wait_start = 0.0

    def before_task_step(self, task: Any) -> None:
        self._step_start = time.perf_counter()

    def after_task_step(self, task: Any) -> None:
        end = time.perf_counter()
        name = task.name
        index = self.names.get(name)
        if index is None:
            index = self.names[name] = len(self.names)
        self.steps.append(self._step_start)
        self.steps.append(end)
        self.step_task.append(index)

    def before_io_wait(self, timeout: float) -> None:
        self._wait_start = time.perf_counter()

    def after_io_wait(self, timeout: float) -> None:
        self.waits.append(self._wait_start)
        self.waits.append(time.perf_counter())

    def dump(self, path: Path) -> None:
        names = sorted(self.names, key=self.names.__getitem__)
        path.write_text(
            json.dumps(
                {
                    "names": names,
                    "steps": self.steps.tolist(),
                    "step_task": self.step_task.tolist(),
                    "waits": self.waits.tolist(),
                }
            )
        )


@dataclass(frozen=True)
class StepLog:
    """A dump of `StepClock`, read back."""

    names: list[str]
    steps: list[float]
    step_task: list[int]
    waits: list[float]

    @classmethod
    def read(cls, path: Path) -> StepLog:
        data = json.loads(path.read_text())
        return cls(data["names"], data["steps"], data["step_task"], data["waits"])

    def table(self, start: float, end: float, orders: int, top: int = 14) -> str:
        """The phase [start, end] per order: busy, waiting, passes, and the busiest tasks."""
        per_task: defaultdict[int, float] = defaultdict(float)
        count: Counter[int] = Counter()
        steps = self.steps
        for i, task in enumerate(self.step_task):
            began = steps[2 * i]
            if start <= began < end:
                per_task[task] += steps[2 * i + 1] - began
                count[task] += 1
        waited, passes = 0.0, 0
        waits = self.waits
        for i in range(0, len(waits), 2):
            if start <= waits[i] < end:
                waited += min(waits[i + 1], end) - waits[i]
                passes += 1
        busy = sum(per_task.values())
        n = max(orders, 1)

        def us(seconds: float) -> str:
            return f"{seconds / n * 1e6:,.0f}"

        lines = [
            f"  wall {us(end - start)} us/order: busy (task steps) {us(busy)}, waiting for I/O {us(waited)}; "
            f"{sum(count.values()) / n:.1f} task steps and {passes / n:.1f} scheduler passes per order",
            f"  {'us/order':>9}  {'share':>6}  {'steps/order':>11}  task",
        ]
        ranked = sorted(per_task.items(), key=lambda item: -item[1])
        for task, seconds in ranked[:top]:
            share, per_order, name = seconds / busy, count[task] / n, _short(self.names[task])
            lines.append(f"  {us(seconds):>9}  {share:>6.1%}  {per_order:>11.2f}  {name}")
        rest = ranked[top:]
        if rest:
            seconds = sum(s for _, s in rest)
            lines.append(f"  {us(seconds):>9}  {seconds / busy:>6.1%}  {'':>11}  ({len(rest)} other tasks)")
        return "\n".join(lines)


def _short(name: str) -> str:
    return name.replace("trio_asyncio._base.BaseTrioEventLoop.", "trio-asyncio ")[:90]


def _run_daemon() -> int:
    """`daemon.cli.main(<args>)` with the clock on `trio.run`."""
    # This file's folder is sys.path[0]: bench/routing.py and bench/tca.py would shadow the
    # `routing` and `tca` packages; the repository (on PYTHONPATH) must come first.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    import trio

    out = Path(os.environ[ENV])
    clock = StepClock()
    plain_run = trio.run

    def run(*args: Any, **kwargs: Any) -> Any:
        kwargs["instruments"] = (*kwargs.get("instruments", ()), clock)
        try:
            return plain_run(*args, **kwargs)
        finally:
            clock.dump(out)

    trio.run = run  # type: ignore[assignment]
    from daemon.cli import main

    status: int = main(sys.argv[1:])
    return status


if __name__ == "__main__":
    sys.exit(_run_daemon())
