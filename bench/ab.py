"""Two revisions of the project, one benchmark, run alternately: the only comparison this shared,
noisy machine allows.

    .venv/bin/python bench/ab.py 51bd921                     # route.py --quick, 51bd921 vs the working tree
    .venv/bin/python bench/ab.py 51bd921 HEAD --rounds 3     # vs HEAD, three rounds of each
    .venv/bin/python bench/ab.py 51bd921 -- fix.py           # another benchmark (its arguments after it)

What it does: checks each revision out into a temporary git worktree (the working tree itself
for `.`, the default head), sharing this checkout's `.venv`, then runs the benchmark once per
revision per round, alternating base, head, base, head, ... so both meet the same minutes of
the machine. Each run's summary lines (the rows of the benchmark's tables that carry its
figures: rates, p50s, CPU per order, WAL) are printed under the revision's name as they come,
then side by side at the end. Figures are compared within a round, never across rounds: a
neighbour's load moves every figure of a minute. Worktrees are removed at the end (and on
Ctrl-C); a run that fails is reported with its last lines and the comparison goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: The lines of a benchmark's output worth comparing (first column of its tables).
SUMMARY = re.compile(
    r"^(sequential p50|concurrent x64|orders/s, to the last ack|PostgreSQL CPU/order|WAL/order"
    r"|RouteOrder, (sequential|concurrent)|daemon |adapter |sequential scans/order|failed replies|failures"
    r"|orders: |with [0-9,]+ resting orders)"
)


@contextlib.contextmanager
def checkout(revision: str) -> Iterator[Path]:
    """The revision's tree: this checkout for ".", else a temporary worktree using our .venv."""
    if revision == ".":
        yield REPO
        return
    with tempfile.TemporaryDirectory(prefix="bis-ab-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(tree), revision],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        try:
            (tree / ".venv").symlink_to(REPO / ".venv")
            yield tree
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )


def run(tree: Path, bench: list[str]) -> list[str]:
    """The benchmark's summary lines, run from `tree` with this checkout's interpreter."""
    proc = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), f"bench/{bench[0]}", *bench[1:]],
        cwd=tree,
        capture_output=True,
        text=True,
    )
    lines = [line.rstrip() for line in proc.stdout.splitlines() if SUMMARY.match(line)]
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        lines.append(f"exit status {proc.returncode}: " + " | ".join(tail))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("base", help="the revision to compare against (any git revision)")
    parser.add_argument("head", nargs="?", default=".", help='the revision to compare (".": working tree)')
    parser.add_argument("--rounds", type=int, default=2, help="runs of each revision, alternating")
    argv = sys.argv[1:] if argv is None else argv
    ours, bench = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = parser.parse_args(ours)
    bench = bench or ["route.py", "--quick"]
    results: list[tuple[int, str, list[str]]] = []
    with checkout(args.base) as base_tree, checkout(args.head) as head_tree:
        for round_ in range(1, args.rounds + 1):
            for name, tree in ((args.base, base_tree), (args.head, head_tree)):
                print(f"== round {round_}, {name}: bench/{' '.join(bench)}", flush=True)
                lines = run(tree, bench)
                print("\n".join(lines) or "(no summary lines)", flush=True)
                results.append((round_, name, lines))
    print("\nside by side (compare within a round):")
    for round_ in range(1, args.rounds + 1):
        pair = [r for r in results if r[0] == round_]
        for label_index in range(max(len(r[2]) for r in pair)):
            cells = [r[2][label_index] if label_index < len(r[2]) else "" for r in pair]
            print(f"  round {round_}  " + "  ||  ".join(re.sub(r"\s{2,}", "  ", c) for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
