"""Orders nobody is answering, found and answered (invariant 7: every claimed order reaches an
answer).

A claim can lose the task routing it: the daemon was killed between the claim and the answer, a
peer daemon died, or (a bug, a cancellation) the task ended without answering. Every
`SWEEP_S`, and at once when an OMS repeats an order nobody answers (`take_one`), the sweeper
takes those orders over in PostgreSQL (`sql.leases.TakeOrphans`: owned by a daemon whose lease
ended or lapsed, or this daemon's own unanswered claims older than `OWN_AFTER_S` that no task
here is routing) and hands each to `adopt` (`ExecutionEngine.adopt`), which asks the broker what
became of its latest attempt and records the answer. The order is never sent again: a PENDING
attempt is resolved by client order id, exactly as after an unknown outcome.

`taken_over` (when given) is called after every sweep or `take_one` that took orders over: the
daemon that left them may have left work besides its answers (its execution reports, which the
daemon then backfills at once).

Taking over is fenced: a daemon whose lease lapsed (but which is alive) cannot start a further
attempt of an order it no longer owns (`StartAttempt.owner`), and answers are first-wins.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from nursery.lease import DATABASE_FAILURES, Lease
from sql.store import Store

log = logging.getLogger(__name__)

SWEEP_S = 2.0
#: An own claim still unanswered after this long, with no task here routing it, is stranded.
OWN_AFTER_S = 5.0
#: Orders adopted at once.
CONCURRENCY = 16


class OrphanSweeper:
    def __init__(
        self,
        store: Store,
        lease: Lease,
        adopt: Callable[[str], Awaitable[None]],
        routing_here: Callable[[str], bool],
        *,
        interval: float = SWEEP_S,
        own_after_s: float = OWN_AFTER_S,
        taken_over: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._lease = lease
        self._adopt = adopt
        self._routing_here = routing_here
        self._interval = interval
        self._own_after_s = own_after_s
        self._taken_over = taken_over
        self._limiter = trio.CapacityLimiter(CONCURRENCY)
        self.adopted = 0
        self.failed = 0

    def __repr__(self) -> str:
        return f"<OrphanSweeper adopted={self.adopted} failed={self.failed}>"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sweep now and every `interval` until cancelled."""
        task_status.started()
        while True:
            await self.sweep()
            await trio.sleep(self._interval)

    async def sweep(self) -> int:
        """Take and answer what nobody answers; how many were taken."""
        taken = [order_id for order_id in await self._take(None) if not self._routing_here(order_id)]
        if taken:
            log.warning("taking over orders nobody was answering", extra={"count": len(taken)})
            async with trio.open_nursery() as nursery:
                for order_id in taken:
                    nursery.start_soon(self._adopt_one, order_id)
            self._taken_over()
        return len(taken)

    async def take_one(self, order_id: str) -> bool:
        """Take `order_id` over and answer it now if nobody is answering it; True if so. The
        caller knows no task of this daemon is routing it."""
        if not await self._take([order_id]):
            return False
        await self._adopt_one(order_id)
        self._taken_over()
        return True

    async def _take(self, only: list[str] | None) -> list[str]:
        lease = self._lease
        try:
            rows = await self._store.take_orphans(
                lease.id,
                lease_s=lease.lease_s,
                own_after_s=self._own_after_s,
                judge=lease.vouched_for() >= lease.lease_s,
                only=only,
            )
        except DATABASE_FAILURES as exc:
            log.info("orphan sweep skipped: database unavailable", extra={"error": repr(exc)})
            return []
        return [order_id for order_id, _ in rows]

    async def _adopt_one(self, order_id: str) -> None:
        async with self._limiter:
            try:
                await self._adopt(order_id)
            except Exception as exc:  # the next sweep takes it again (it is ours, unanswered)
                self.failed += 1
                log.warning(
                    "could not answer an adopted order yet", extra={"order_id": order_id, "error": repr(exc)}
                )
                return
            self.adopted += 1
