"""Memory of a process, for the benchmarks: readings (RSS, anonymous, USS, peak) and a census
harness that says which Python objects and which lines of this repository hold it.

    python bench/_memory.py ARGS...      `daemon.cli.main(ARGS)` under the census harness

Readings (`Memory.of`, `rss_now`) come from psutil and /proc and never disturb the process.
The harness runs the daemon in this process with a SIGUSR1 handler: the nth signal writes
`$BIS_BENCH_CENSUS_DIR/census-<n>.json` (renamed into place when complete), holding every
object reachable from the garbage collector's lists, once, counted by type with
`sys.getsizeof` (`object_census`), and with `BIS_BENCH_TRACE=1` (tracemalloc from the first
import, `TRACE_FRAMES` frames) the live allocations by line (`trace_census`). The handler runs
on the main thread between two bytecodes: the daemon is frozen while it counts (about a second
per million objects; much longer with tracemalloc), and the census allocates as it goes, so a
process's memory readings after a census are not those of an undisturbed one.
`census_tables` prints the difference of two censuses per unit of work.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, format_table

MB = 1_000_000
#: The harness's environment: where the census files go, and whether tracemalloc runs.
CENSUS_DIR_ENV = "BIS_BENCH_CENSUS_DIR"
TRACE_ENV = "BIS_BENCH_TRACE"
TRACE_FRAMES = 12


# --- readings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """One reading of a process's memory, in bytes. `anon` (RssAnon: the heap, what Python
    objects live in) and `file` (RssFile: code and libraries mapped from files) add up to `rss`;
    `peak` is VmHWM, the highest RSS so far (all three from /proc/<pid>/status). `uss`/`pss` come
    from /proc/<pid>/smaps and move with what other processes share: None where unreadable."""

    rss: int
    anon: int | None
    file: int | None
    peak: int | None
    uss: int | None
    pss: int | None

    @classmethod
    def of(cls, pid: int) -> Memory:
        process = psutil.Process(pid)
        try:
            full = process.memory_full_info()
            rss, uss, pss = int(full.rss), _int_or_none(full, "uss"), _int_or_none(full, "pss")
        except (psutil.AccessDenied, AttributeError):
            rss, uss, pss = int(process.memory_info().rss), None, None
        status = _proc_status(pid)
        return cls(rss, status.get("RssAnon"), status.get("RssFile"), status.get("VmHWM"), uss, pss)


def _int_or_none(info: object, name: str) -> int | None:
    value = getattr(info, name, None)
    return int(value) if value is not None else None


def _proc_status(pid: int) -> dict[str, int]:
    """The `kB` lines of /proc/<pid>/status, in bytes (empty where unreadable)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[name] = int(parts[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def rss_now(pid: int) -> int:
    """RSS only (statm): cheap enough for every progress line."""
    return int(psutil.Process(pid).memory_info().rss)


def mb(value: float | None) -> str:
    return "-" if value is None else f"{value / MB:,.1f}"


# --- the census harness (runs inside the measured process) ---------------------------------


def _type_name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def object_census() -> dict[str, list[int]]:
    """Every object reachable from the collector's lists, once: type -> [count, bytes]
    (`sys.getsizeof`: the object itself, with its own tables, not what it refers to). Untracked
    objects (str, int, Decimal, datetime, atomic tuples and Structs...) are found as the
    referents of tracked ones, and followed in turn."""
    gc.collect()
    counts: dict[type, list[int]] = {}

    def count(obj: object) -> None:
        entry = counts.get(type(obj))
        if entry is None:
            entry = counts[type(obj)] = [0, 0]
        entry[0] += 1
        entry[1] += sys.getsizeof(obj)

    tracked = gc.get_objects()
    seen: set[int] = set()
    for obj in tracked:
        count(obj)
    pending = [r for obj in tracked for r in gc.get_referents(obj) if not gc.is_tracked(r)]
    while pending:
        obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        count(obj)
        pending.extend(r for r in gc.get_referents(obj) if not gc.is_tracked(r))
    del tracked, pending, seen
    return {_type_name(kind): entry for kind, entry in counts.items()}


def trace_census() -> dict[str, dict[str, list[int]]]:
    """Live tracemalloc allocations: by the innermost frame in this repository (`project`:
    which of our lines made what is still alive), and by the innermost frame (`line`)."""
    import tracemalloc

    snapshot = tracemalloc.take_snapshot()
    venv = str(REPO / ".venv")
    repo = str(REPO) + os.sep
    here = str(Path(__file__).resolve().parent)  # the benchmarks themselves: not the daemon's
    project: dict[str, list[int]] = {}
    line: dict[str, list[int]] = {}

    def add(table: dict[str, list[int]], key: str, size: int, count: int) -> None:
        entry = table.setdefault(key, [0, 0])
        entry[0] += count
        entry[1] += size

    for stat in snapshot.statistics("traceback"):
        frames = list(reversed(stat.traceback))  # innermost first
        inner = frames[0]
        add(line, f"{_short(inner.filename, repo)}:{inner.lineno}", stat.size, stat.count)
        ours = next(
            (
                f
                for f in frames
                if f.filename.startswith(repo)
                and not f.filename.startswith(venv)
                and not f.filename.startswith(here)
            ),
            None,
        )
        key = f"{_short(ours.filename, repo)}:{ours.lineno}" if ours else "(no frame in the repository)"
        add(project, key, stat.size, stat.count)
    return {"project": project, "line": line}


def _short(filename: str, repo: str) -> str:
    if filename.startswith(repo):
        filename = filename[len(repo) :]
    marker = "site-packages" + os.sep
    if marker in filename:
        filename = filename.split(marker, 1)[1]
    elif "/lib/python" in filename:
        filename = "stdlib/" + filename.rsplit("/lib/python", 1)[1].split("/", 1)[-1]
    return filename


def harness_main(argv: list[str]) -> int:
    """The daemon (`daemon.cli.main(argv)`) in this process, with a census on SIGUSR1: the nth
    signal writes `<census dir>/census-<n>.json` (renamed into place when complete)."""
    census_dir = Path(os.environ[CENSUS_DIR_ENV])
    tracing = os.environ.get(TRACE_ENV) == "1"
    if tracing:
        import tracemalloc

        tracemalloc.start(TRACE_FRAMES)
    taken = 0

    def census(signum: int, frame: object) -> None:
        nonlocal taken
        taken += 1
        started = time.perf_counter()
        result: dict[str, Any] = {"objects": object_census()}
        if tracing:
            result["trace"] = trace_census()
        result["seconds"] = time.perf_counter() - started
        path = census_dir / f"census-{taken}.json"
        partial = path.with_suffix(".part")
        partial.write_text(json.dumps(result))
        partial.rename(path)

    signal.signal(signal.SIGUSR1, census)
    from daemon.cli import main as daemon_main

    return daemon_main(argv)


# --- in the benchmark's process ---------------------------------------------------------------


def take_census(census_dir: Path, pid: int, number: int, timeout: float = 600.0) -> dict[str, Any]:
    """Signal the harness (`pid`) for census `number` and wait for its file. Raises
    RuntimeError if the process exits first or nothing comes within `timeout` s."""
    path = census_dir / f"census-{number}.json"
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            raise RuntimeError("the daemon exited during the census")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no census after {timeout:.0f} s")
        time.sleep(0.2)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def census_tables(before: dict[str, Any], after: dict[str, Any], orders: int, top: int) -> str:
    """The difference between two censuses (`take_census`), per order in between: `top` rows
    per table."""
    lines: list[str] = []

    def diff(a: dict[str, list[int]], b: dict[str, list[int]]) -> list[tuple[str, float, float]]:
        out = []
        for key in set(a) | set(b):
            count = b.get(key, [0, 0])[0] - a.get(key, [0, 0])[0]
            size = b.get(key, [0, 0])[1] - a.get(key, [0, 0])[1]
            if count or size:
                out.append((key, count / orders, size / orders))
        return sorted(out, key=lambda r: -r[2])

    def table(rows: list[tuple[str, float, float]], title: str, what: str) -> None:
        shown = rows[:top]
        rest = rows[top:]
        cells = [[key, f"{count:,.2f}", f"{size:,.1f}"] for key, count, size in shown]
        if rest:
            cells.append(
                [
                    f"({len(rest)} more)",
                    f"{sum(r[1] for r in rest):,.2f}",
                    f"{sum(r[2] for r in rest):,.1f}",
                ]
            )
        cells.append(["total", f"{sum(r[1] for r in rows):,.2f}", f"{sum(r[2] for r in rows):,.1f}"])
        lines.append(title)
        lines.append(format_table([what, "objects/order", "bytes/order"], cells))
        lines.append("")

    table(
        diff(before["objects"], after["objects"]),
        f"Python objects per resting order, by type (gc-reachable, sys.getsizeof; {orders:,} orders "
        f"between the censuses, which took {before['seconds']:.1f} / {after['seconds']:.1f} s):",
        "type",
    )
    if "trace" in before and "trace" in after:
        table(
            diff(before["trace"]["project"], after["trace"]["project"]),
            "tracemalloc, live allocations per resting order by the innermost frame in this repository:",
            "file:line",
        )
        table(
            diff(before["trace"]["line"], after["trace"]["line"]),
            "tracemalloc, live allocations per resting order by the innermost frame:",
            "file:line",
        )
        modules: dict[str, list[int]] = {}
        for snapshot, sign in ((before, -1), (after, 1)):
            for key, (count, size) in snapshot["trace"]["project"].items():
                entry = modules.setdefault(key.rsplit(":", 1)[0], [0, 0])
                entry[0] += sign * count
                entry[1] += sign * size
        rows = sorted(
            ((k, c / orders, s / orders) for k, (c, s) in modules.items() if c or s), key=lambda r: -r[2]
        )
        table(rows, "tracemalloc, per resting order by file of this repository:", "file")
    return "\n".join(lines).rstrip()


if __name__ == "__main__":
    sys.exit(harness_main(sys.argv[1:]))
