"""The queue of execution reports waiting to be written: the engine queues each finished
execution (never blocks) and its report task takes them in batches (`next_batch`), which the
reporter writes at once (`ExecutionReporter.report_many`). No I/O here: only the bookkeeping
(what is pending, one report per execution, the bound, when a batch is due)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal
from itertools import islice

import msgspec
import trio

from api.orders import BrokerOrder

log = logging.getLogger(__name__)


class ReportJob(msgspec.Struct, frozen=True):
    """A finished execution waiting for its report (the arguments of `ExecutionReporter.report`)."""

    order: BrokerOrder
    arrival_price: Decimal | None = None
    arrival_known: bool = False
    replace: bool = False


class ReportQueue:
    def __init__(
        self,
        *,
        batch_interval_s: float = 0.15,
        batch_size: int = 256,
        max_batch: int = 512,
        max_queued: int = 10_000,
    ) -> None:
        """A batch is taken `batch_interval_s` after its oldest report was queued, or as soon
        as `batch_size` are queued; at most `max_batch` reports a batch, `max_queued` queued."""
        if batch_interval_s < 0 or batch_size < 1 or max_batch < 1 or max_queued < 1:
            raise ValueError("batch_interval_s >= 0, batch_size, max_batch and max_queued >= 1")
        self._batch_interval_s = batch_interval_s
        self._batch_size = batch_size
        self._max_batch = max_batch
        self._max_queued = max_queued
        #: Queued reports by execution id, oldest first (one per execution: see `queue`).
        self._queue: dict[str, ReportJob] = {}
        self._queued_since = 0.0  # trio time the oldest queued report was queued
        self._taken = 0  # reports of the batch being written (`next_batch` .. `batch_done`)
        self._wake: trio.Event | None = None
        self._dropping = False
        #: Reports not queued because the queue was full (left to the periodic backfill).
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Reports queued or being written: not written yet."""
        return len(self._queue) + self._taken

    def queue(
        self,
        order: BrokerOrder,
        arrival_price: Decimal | None = None,
        *,
        arrival_known: bool = False,
        replace: bool = False,
    ) -> bool:
        """Queue the report of a finished execution for a batch (`ExecutionReporter.report`'s
        arguments); never blocks. A report for an execution already queued takes its place (the
        newer state of the execution, the first one's `replace`): one report per execution and
        batch. False when `max_queued` reports wait: that report is left to the periodic
        backfill (a late-fill rewrite, which the backfill would not redo, is always queued)."""
        queue = self._queue
        queued = queue.get(order.id)
        if queued is not None:
            queue[order.id] = ReportJob(order, arrival_price, arrival_known, queued.replace)
            return True
        if len(queue) >= self._max_queued and not replace:
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "execution report queue full: reports left to the backfill",
                    extra={"queued": len(queue), "execution_id": order.id},
                )
            return False
        self._dropping = False
        if not queue:
            self._queued_since = trio.current_time()
        queue[order.id] = ReportJob(order, arrival_price, arrival_known, replace)
        if self._wake is not None and (len(queue) == 1 or len(queue) >= self._batch_size):
            self._wake.set()
        return True

    async def next_batch(self) -> list[ReportJob]:
        """Wait for queued reports, until `batch_size` are queued or the oldest has waited
        `batch_interval_s`; then take them (at most `max_batch`, oldest first). They count as
        `pending` until `batch_done`."""
        while not self._queue:
            self._wake = trio.Event()
            await self._wake.wait()
        if len(self._queue) < self._batch_size:
            self._wake = trio.Event()
            with trio.move_on_at(self._queued_since + self._batch_interval_s):
                await self._wake.wait()
        self._wake = None
        batch = list(islice(self._queue.values(), self._max_batch))
        for job in batch:
            del self._queue[job.order.id]
        self._taken += len(batch)
        return batch

    def batch_done(self, batch: Sequence[ReportJob]) -> None:
        """The reports of `batch` are written (or given up): no longer pending."""
        self._taken -= len(batch)

    def discard(self) -> int:
        """Forget every pending report (they are left to the backfill); how many there were."""
        count = self.pending
        self._queue.clear()
        self._taken = 0
        return count
