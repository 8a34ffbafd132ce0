"""Trio primitives without a trip through the scheduler on their fast path.

`QuietLock`: a Trio lock whose uncontended `async with` does not yield to the scheduler.
`trio.Lock` checkpoints on every acquire, even a free one: two trips through the scheduler (a
cancellation check and a reschedule). An execution's lock is taken a few times per order and is
almost never contended, so on the order path those trips cost more than what the lock guards.
This one takes a free lock at once, and only a task that finds it held parks (in FIFO order, as
`trio.Lock`'s waiters do); releasing hands the lock straight to the first waiter.

Contract: the same mutual exclusion and fairness as `trio.Lock`, without the checkpoint when the
lock is free: code that must yield or see a cancellation before its critical section has to
checkpoint itself. A waiter cancelled while parked leaves the queue without the lock. No owner
tracking: whoever took it (`async with`, or `acquire_nowait`) releases it once.

`drain_nowait(channel)`: what a memory channel holds right now, without waiting. After one
`receive()`, the rest of a burst is taken this way instead of one checkpoint per item: the loop
still yields at its next `receive()`, which waits when the channel is empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import TypeVar

import trio

__all__ = ["QuietLock", "drain_nowait"]

T = TypeVar("T")


def drain_nowait(channel: trio.MemoryReceiveChannel[T]) -> Iterator[T]:
    """Yield what `channel` holds now; stop when it is empty or closed (the caller's next
    `receive()` then waits, or ends the loop)."""
    while True:
        try:
            yield channel.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return


class QuietLock:
    __slots__ = ("_held", "_lot")

    def __init__(self) -> None:
        self._held = False
        self._lot = trio.lowlevel.ParkingLot()

    def __repr__(self) -> str:
        return f"<QuietLock held={self._held} waiting={len(self._lot)}>"

    def locked(self) -> bool:
        return self._held

    @property
    def waiting(self) -> int:
        """Tasks parked until the lock is theirs."""
        return len(self._lot)

    def acquire_nowait(self) -> bool:
        """Take the lock if it is free (True); never waits."""
        if self._held:
            return False
        self._held = True
        return True

    def release(self) -> None:
        """Let the lock go: to the first waiter if there is one."""
        if self._lot:
            self._lot.unpark(count=1)  # stays held: it is the woken task's now
        else:
            self._held = False

    async def __aenter__(self) -> None:
        if not self._held:
            self._held = True
            return
        await self._lot.park()  # returns holding the lock: the releaser handed it over

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
