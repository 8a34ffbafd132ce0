"""The daemon's asyncio loop (trio-asyncio, inside Trio) runs ready callbacks in bursts.

trio-asyncio runs asyncio's callbacks one per pass of its loop task, and every pass is a trip
through Trio's scheduler (a checkpoint and a cancel scope). nats-py schedules several callbacks
for each message it reads or writes (futures resolved, tasks woken), so at a few thousand orders a
second those trips were a large share of the daemon's CPU. With `install()`, trio-asyncio's
loop has one change: after each callback, the callbacks *already queued* behind it run
at once, up to `BURST`, before the loop task yields to Trio again. Order is unchanged (FIFO, due
timers first, as trio-asyncio does), and Trio tasks still run at least every `BURST` callbacks.
Measured under cProfile on bench/route.py's concurrent phase: Trio scheduler passes per order
5.0 -> 2.5, cancel scopes 8.6 -> 4.4, daemon time per order -12 %.

The change replaces `BaseTrioEventLoop._main_loop_one` with a wrapper that calls the original
with `no_wait=True` (trio-asyncio's own non-blocking variant). If a later trio-asyncio lacks
that method, the original loop runs unchanged (logged once). `install()` is idempotent and
takes effect on a running loop at its next pass; `daemon.bus` calls it when it connects (the bus
is the bridge to asyncio), so the daemon and anything else serving through `NatsBus` use it.

History: reverted once (edede2e) on a suspicion that it slowed the recovery after a nats-server
kill -9; the same slow recovery (requests lost inside the killed server, retried only after
the requester's timeout) then showed up without it in 2 of 4 runs, so it was not the cause.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from trio_asyncio._base import BaseTrioEventLoop

log = logging.getLogger(__name__)

__all__ = ["BURST", "install"]

#: Callbacks run back to back, at most, before the loop task lets other Trio tasks run.
BURST = 64

_original: Any = getattr(BaseTrioEventLoop, "_main_loop_one", None)


async def _main_loop_burst(self: BaseTrioEventLoop, no_wait: bool = False) -> None:
    await _original(self, no_wait)
    for _ in range(BURST):
        try:
            await _original(self, True)  # the next queued callback or due timer, never waiting
        except trio.WouldBlock:
            return


def install() -> None:
    """Make trio-asyncio loops run callbacks in bursts (see the module docstring)."""
    if _original is None:
        log.warning("trio-asyncio has no _main_loop_one: asyncio callbacks run one per Trio pass")
        return
    if BaseTrioEventLoop._main_loop_one is not _main_loop_burst:  # type: ignore[comparison-overlap]
        BaseTrioEventLoop._main_loop_one = _main_loop_burst  # type: ignore[method-assign]
