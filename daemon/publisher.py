"""The execution publisher: moves committed outbox rows to JetStream.

At least once, deduplicated: every update is committed (with its state) before it reaches this
task; it is published with its `Nats-Msg-Id`, marked published only once the stream acknowledged
it, and anything unacknowledged is picked up again by the sweep of unpublished rows (also at
start-up, for what a crash left behind). JetStream drops the repeats inside its duplicate window.
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


class Publisher:
    def __init__(self, bus: NatsBus, store: Store, *, timeout: float = 5.0, sweep_every: float = 2.0) -> None:
        self._bus = bus
        self._store = store
        self._timeout = timeout
        self._sweep_every = sweep_every
        self.published = 0
        self.failed = 0
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
            await self.sweep(min_age=timedelta(0))  # flush anything still unpublished
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
            await self._store.mark_published(done, datetime.now(UTC))
            self.published += len(done)

    async def sweep(self, min_age: timedelta = timedelta(seconds=2)) -> None:
        """Publish outbox rows older than `min_age` that are still unpublished."""
        cutoff = datetime.now(UTC) - min_age
        while True:
            pending = [e for e in await self._store.unpublished_events(MAX_BATCH) if e.created_at <= cutoff]
            if not pending:
                return
            before = self.published
            await self.publish(pending)
            if self.published == before:
                return  # NATS is not acknowledging; try again at the next sweep

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("outbox sweep failed", extra={"error": repr(exc)})
            await trio.sleep(self._sweep_every)
