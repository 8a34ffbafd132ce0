"""Liveness: the Trio loop turns.

A task (`Liveness.run`) stamps the time every `every` seconds. The daemon is live while the last
stamp is younger than `stale_after`: a loop blocked by a synchronous call, or starved, stops
stamping and turns `GET /health/live` to 503 and the systemd watchdog silent (so systemd restarts
a wedged process). Liveness says nothing about dependencies (that is readiness, `daemon.readiness`):
a daemon waiting out a PostgreSQL or NATS outage is live and must not be restarted for it.

The clock is `time.monotonic` (wall-clock jumps change nothing); reading it is free.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
import trio

__all__ = ["Liveness", "LivenessReport"]


class LivenessReport(msgspec.Struct, frozen=True, omit_defaults=True):
    """`status` "ok" or "stalled"; `detail` says for how long when stalled."""

    status: str
    detail: str | None = None


class Liveness:
    def __init__(
        self, *, every: float = 0.5, stale_after: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not 0 < every < stale_after:
            raise ValueError("the stamp interval must be positive and shorter than stale_after")
        self.every = every
        self.stale_after = stale_after
        self._clock = clock
        self.last_beat = clock()

    def __repr__(self) -> str:
        return f"<Liveness age={self.age():.3f}s stale_after={self.stale_after}s>"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stamp now, report started, then every `every` seconds until cancelled."""
        self.last_beat = self._clock()
        task_status.started()
        while True:
            await trio.sleep(self.every)
            self.last_beat = self._clock()

    def age(self) -> float:
        return max(0.0, self._clock() - self.last_beat)

    def is_live(self) -> bool:
        return self.age() <= self.stale_after

    def report(self) -> LivenessReport:
        age = self.age()
        if age <= self.stale_after:
            return LivenessReport("ok")
        return LivenessReport("stalled", f"the event loop has not turned for {age:.1f}s")
