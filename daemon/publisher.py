"""The execution publisher: moves committed outbox rows to JetStream.

At least once, deduplicated: every update is committed (with its state) before it reaches this
task; it is published with its `Nats-Msg-Id`, marked published only once the stream acknowledged
it, and anything unacknowledged is picked up again by the sweep of unpublished rows (also at
start-up, for what a crash left behind). JetStream drops the repeats inside its duplicate window.
Neither NATS nor PostgreSQL failing ends this task: a failed publish or mark is retried by the
sweep, which keeps running through outages of either.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import trio

from daemon.bus import DurableMessage, NatsBus
from sql.records import OutboxEvent
from sql.store import Store

log = logging.getLogger(__name__)

MAX_BATCH = 512
#: Acknowledged updates are recorded as published this long after the first of them, together:
#: one write for the acknowledgements of many orders, not one per publish (the record only
#: spares the sweep a republish, which JetStream would drop as a duplicate anyway).
MARK_DELAY_S = 0.02


class Publisher:
    def __init__(self, bus: NatsBus, store: Store, *, timeout: float = 5.0, sweep_every: float = 2.0) -> None:
        self._bus = bus
        self._store = store
        self._timeout = timeout
        self._sweep_every = sweep_every
        self.published = 0
        self.failed = 0
        self._unmarked: list[tuple[str, int]] = []  # acknowledged, not yet recorded as published
        self._mark_wanted = trio.Event()
        self.finished = trio.Event()

    def __repr__(self) -> str:
        return f"<Publisher published={self.published} failed={self.failed}>"

    async def run(
        self,
        receive: trio.MemoryReceiveChannel[OutboxEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Publish what arrives on `receive` until it is closed and empty (the daemon closes it
        on shutdown, after the last transition was committed), sweeping the outbox meanwhile.
        Sets `finished` when it has flushed and returned."""
        try:
            await self._run(receive, task_status)
        finally:
            self.finished.set()

    async def _run(
        self, receive: trio.MemoryReceiveChannel[OutboxEvent], task_status: trio.TaskStatus[None]
    ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sweep_forever)
            nursery.start_soon(self._mark_forever)
            task_status.started()
            async with receive:
                while True:
                    try:
                        first = await receive.receive()
                    except trio.EndOfChannel:
                        break
                    batch = [first]
                    while len(batch) < MAX_BATCH:
                        try:
                            batch.append(receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    await self.publish(batch)
            try:
                await self.sweep(min_age=timedelta(0))  # flush anything still unpublished
            except Exception as exc:  # the database is down: the next start publishes the rest
                log.warning("final outbox sweep failed", extra={"error": repr(exc)})
            nursery.cancel_scope.cancel()

    async def publish(self, events: list[OutboxEvent]) -> None:
        messages = [DurableMessage(e.subject, e.payload, e.msg_id) for e in events]
        try:
            results = await self._bus.publish_durable(messages, timeout=self._timeout)
        except Exception as exc:
            self.failed += len(events)
            log.warning("publish failed; the sweep retries", extra={"count": len(events), "error": repr(exc)})
            return
        done = [
            (e.execution_id, e.sequence) for e, error in zip(events, results, strict=True) if error is None
        ]
        failures = len(events) - len(done)
        if failures:
            self.failed += failures
            log.warning("some publishes not acknowledged; the sweep retries", extra={"count": failures})
        if done:
            self.published += len(done)
            self._unmarked.extend(done)
            self._mark_wanted.set()  # recorded shortly, with others (`_mark_forever`)

    async def _mark(self) -> bool:
        """Record in the outbox what JetStream acknowledged; during a database outage keep the
        keys and try again later (until then the sweep may publish them again: JetStream drops
        the repeats inside its duplicate window, and subscribers are idempotent past it)."""
        if not self._unmarked:
            return True
        keys, self._unmarked = self._unmarked, []
        try:
            await self._store.mark_published(keys)
        except Exception as exc:
            self._unmarked = keys + self._unmarked
            log.warning(
                "could not record published updates; retrying", extra={"count": len(keys), "error": repr(exc)}
            )
            return False
        return True

    async def sweep(self, min_age: timedelta = timedelta(seconds=2)) -> None:
        """Publish outbox rows older than `min_age` that are still unpublished."""
        cutoff = datetime.now(UTC) - min_age
        if not await self._mark():
            return  # the database is not answering: nothing to read the outbox from either
        while True:
            pending = await self._store.unpublished_events(MAX_BATCH, older_than=cutoff)
            if not pending:
                return
            before = self.published
            await self.publish(pending)
            await self._mark()  # at once: the next page of the outbox must not list these again
            if self.published == before or self._unmarked:
                return  # NATS is not acknowledging, or PostgreSQL not recording: next sweep

    async def _mark_forever(self) -> None:
        while True:
            await self._mark_wanted.wait()
            await trio.sleep(MARK_DELAY_S)
            self._mark_wanted = trio.Event()
            await self._mark()

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("outbox sweep failed", extra={"error": repr(exc)})
            await trio.sleep(self._sweep_every)
