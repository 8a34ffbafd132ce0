"""The execution-update feed: every update on its way from the engine to the publisher passes
here once, in process, before it reaches JetStream.

    engine ──(publish channel)──> UpdatesFeed.run ──(channel)──> Publisher
                                     ├─ DaemonMetrics.observe_update   (fills, cancels, rejects)
                                     ├─ `recent`: the last `keep` updates, raw (the console's history)
                                     └─ listeners: the console's live streams (a slow one misses some)

Guarantees: order and content are unchanged and nothing is dropped on the way to the publisher
(the forward waits when the publisher's channel is full, exactly as the engine's `send_nowait`
would otherwise have failed over to the outbox sweep); when the engine's side is closed the feed
closes the publisher's side, so the publisher's final flush still happens. A listener never
slows the path down: it gets `send_nowait` and loses what does not fit (counted in `missed`).
What the feed shows is this daemon's updates (other daemons of the queue group have their own).
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Iterator

import trio

from daemon.metrics import DaemonMetrics
from sql.records import OutboxEvent

log = logging.getLogger(__name__)

__all__ = ["UpdatesFeed"]

#: Updates kept for the console's "last executions" (raw bytes: decoded only when asked).
KEEP = 2000
#: Updates a console stream may fall behind before it misses some.
LISTENER_BUFFER = 1024


class UpdatesFeed:
    def __init__(
        self, metrics: DaemonMetrics, *, keep: int = KEEP, listener_buffer: int = LISTENER_BUFFER
    ) -> None:
        self._metrics = metrics
        self._buffer = listener_buffer
        self._listeners: set[trio.MemorySendChannel[bytes]] = set()
        #: (subject, payload) of the last `keep` updates, oldest first.
        self.recent: deque[tuple[str, bytes]] = deque(maxlen=keep)
        self.passed = 0
        self.missed = 0
        self._failing = False

    def __repr__(self) -> str:
        return f"<UpdatesFeed passed={self.passed} listeners={len(self._listeners)} missed={self.missed}>"

    async def run(
        self,
        receive: trio.MemoryReceiveChannel[OutboxEvent],
        send: trio.MemorySendChannel[OutboxEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Forward everything from `receive` to `send` until `receive` ends; then close `send`."""
        task_status.started()
        async with receive, send:
            async for event in receive:
                self.observe(event)
                try:
                    send.send_nowait(event)
                except trio.WouldBlock:
                    await send.send(event)

    def observe(self, event: OutboxEvent) -> None:
        """Count and show one update; never raises (a bug here must not stop publication)."""
        self.passed += 1
        try:
            self._metrics.observe_update(event.subject, event.payload)
            self.recent.append((event.subject, event.payload))
            for listener in self._listeners:
                try:
                    listener.send_nowait(event.payload)
                except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                    self.missed += 1
        except Exception:
            if not self._failing:
                log.exception("execution update not counted or shown", extra={"subject": event.subject})
            self._failing = True

    @contextlib.contextmanager
    def listen(self) -> Iterator[trio.MemoryReceiveChannel[bytes]]:
        """A live stream of update payloads (JSON bytes) from now on, until the block exits."""
        send, receive = trio.open_memory_channel[bytes](self._buffer)
        self._listeners.add(send)
        try:
            yield receive
        finally:
            self._listeners.discard(send)
            send.close()

    @property
    def listeners(self) -> int:
        return len(self._listeners)
