"""The execution changes PostgreSQL could not take, kept in order until it is back.

A change the database cannot take now (`DatabaseUnavailable`, or a write whose outcome is
unknown) is not lost and does not fail the caller: the in-memory state moves on, and the unsaved
changes stay queued on the execution (`LiveExecution.unsaved`), ahead of anything that execution
changes later; the execution waits here (`keep`). The flusher writes each waiting execution's
changes, in order, as soon as the database is back (with the applier's `write`, under the
execution's lock), then publishes their updates. Every write is idempotent, so a change whose
first write did commit is written again harmlessly.

The applier's buffer is bounded (`max_unsaved` changes): past it, further broker events are
dropped (`drop`) — and only dropped because the broker still holds them: once the database is
back, the `dropped_events` hook asks every broker again for what happened since the first drop
(fills since, order status), the recovery every reconnect does (`nursery.resync`). A crash
during an outage loses only memory: the next start reloads the open executions and recovers the
same way (fills by id are stored once).

Contract: `holds(execution_id)` is true from `keep` until the flusher has written that
execution; while it is, the applier writes nothing of it itself (its later changes queue behind).
Nothing here raises into the caller; the flusher runs as a task of its own until nothing waits.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import trio

from api.events import AnyBrokerEvent
from nursery.hooks import DroppedEventsRecovery, Spawn
from nursery.live import LiveExecution
from sql.store import Store
from sql.writer import DatabaseUnavailable, WriteTimeout

log = logging.getLogger(__name__)

__all__ = ["OutageBacklog"]

#: How long the flusher waits before trying again when the database failed again under it.
RETRY_S = 0.05


class OutageBacklog:
    def __init__(
        self,
        store: Store,
        write: Callable[[LiveExecution], Awaitable[None]],
        recovery: DroppedEventsRecovery,
        spawn: Spawn,
    ) -> None:
        self._store = store
        self._write = write  # writes one execution's unsaved changes; raises what the store raises
        self._recovery = recovery
        self._spawn = spawn
        #: Broker events dropped because the unsaved buffer was full (recovered afterwards).
        self.dropped = 0
        self._waiting: dict[str, LiveExecution] = {}  # executions with unsaved changes, in order
        self._overflow_since: datetime | None = None
        self._flushing = False

    def __repr__(self) -> str:
        return f"<OutageBacklog waiting={len(self._waiting)} dropped={self.dropped}>"

    def holds(self, execution_id: str) -> bool:
        """The execution's changes wait for the flusher."""
        return execution_id in self._waiting

    def keep(self, lives: Sequence[LiveExecution], exc: Exception) -> None:
        """Their changes could not be written: they wait, in order, for the flusher."""
        if not self._waiting:
            log.warning(
                "database unavailable: keeping execution changes in memory until it is back",
                extra={"execution_id": lives[0].order.id, "executions": len(lives), "error": repr(exc)},
            )
        for live in lives:
            self._waiting.setdefault(live.order.id, live)
        self._start_flusher()

    def drop(self, event: AnyBrokerEvent, unsaved: int) -> None:
        """`event` cannot be kept (`unsaved` changes wait already): drop it, to be asked from
        the brokers again once the database is back."""
        self.dropped += 1
        if self._overflow_since is None:
            log.error(
                "database unavailable and the event buffer is full: dropping broker events, "
                "to be recovered from the brokers once the database is back",
                extra={"unsaved": unsaved},
            )
        at = min(event.at, datetime.now(UTC))
        self._overflow_since = at if self._overflow_since is None else min(self._overflow_since, at)
        self._start_flusher()

    def _start_flusher(self) -> None:
        if not self._flushing:
            self._flushing = True
            self._spawn(self._flush)

    async def _flush(self) -> None:
        """Once the database is back: every execution's unsaved changes, in order, then the
        recovery of the broker events that were dropped. Runs until nothing is left."""
        try:
            while self._waiting or self._overflow_since is not None:
                await self._store.wait_available()
                if not await self._flush_waiting():
                    await trio.sleep(RETRY_S)  # unavailable again: the writer probes; wait for it
                    continue
                if self._overflow_since is not None:
                    since, self._overflow_since = self._overflow_since, None
                    log.warning(
                        "database back: recovering dropped broker events from the brokers",
                        extra={"since": since.isoformat(), "dropped": self.dropped},
                    )
                    self._recovery.recover_all_since(since)
        finally:
            self._flushing = False

    async def _flush_waiting(self) -> bool:
        """Write every waiting execution's changes, oldest first; False if the database failed
        again (what is left stays waiting)."""
        for execution_id, live in list(self._waiting.items()):
            async with live.lock:
                try:
                    await self._write(live)
                except (DatabaseUnavailable, WriteTimeout):
                    return False
            live.settle()
            del self._waiting[execution_id]
        return True
