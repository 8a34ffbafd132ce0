"""The garbage collector, set for a long-running daemon on the order path.

CPython's default (a young collection every 700 net allocations, older generations scanned every
10 of those) made collection the largest single cost of routing an order: `bench/route.py`'s
concurrent phase spent ~270 µs of ~1,150 µs of daemon CPU per order in 620 collections per
4,000 orders, most of it re-scanning objects that live as long as the process (modules, the
configuration, brokers, routing tables, compiled statements).

`settle()`, called once the daemon is ready:
- collects once, then freezes every object alive at that point (`gc.freeze`): start-up objects
  are never scanned again (they are not freed either: they live as long as the process);
- raises the young generation's threshold to `YOUNG` allocations, so a collection runs about 30
  times less often and each costs a few milliseconds at most; older generations are scanned
  every `MIDDLE` young collections and fully every `OLD` middle ones (and, as CPython decides,
  only once a quarter more objects survived than were long-lived).

Memory is still reclaimed: reference counting frees almost everything at once, and cycles
(exceptions with their tracebacks, Trio's tasks) are collected as before, only in fewer,
larger batches. Measured by `bench/route.py` (see bench/README.md).
"""

from __future__ import annotations

import gc

__all__ = ["MIDDLE", "OLD", "YOUNG", "settle"]

YOUNG = 20_000
MIDDLE = 20
OLD = 100


def settle() -> None:
    """Freeze what start-up left alive and set the thresholds (see the module docstring)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
