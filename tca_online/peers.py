"""Peer statistics for online TCA (broker rank, savings, recommendations): built from the
execution reports of the last `lookback` in PostgreSQL, refreshed periodically, and extended
with each new report in between.

A refresh reads the groups' sums, aggregated by the server (`sql.reports.load_peer_groups`):
a month of reports never comes into the daemon, whatever the desk's volume."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import trio

from sql.reports import PeerGroupRow
from tca.peers import CostStats, Dimension, PeerStats, peer_stats_of
from tca.result import TcaResult

log = logging.getLogger(__name__)

#: Reads the peer groups of the reports since a time (`sql.store.Store.load_peer_groups`).
LoadGroups = Callable[[datetime], Awaitable[Sequence[PeerGroupRow]]]


def stats_of_groups(rows: Sequence[PeerGroupRow]) -> PeerStats:
    """The peer statistics of the groups the server summed."""
    return PeerStats(
        tuple(
            CostStats(
                dimension=Dimension(r.dimension),
                key=r.key,
                asset_class=r.asset_class,
                size_bucket=r.size_bucket,
                count=r.count,
                weight=r.weight,
                weighted_sum=r.weighted_sum,
                weighted_squares=r.weighted_squares,
                squared_weights=r.squared_weights,
            )
            for r in rows
        )
    )


class PeerCache:
    """`stats` is what the last refresh loaded plus the reports added since. Added reports are
    merged in batches, at most every `merge_every` seconds (an aggregation per report would
    cost more than the report): a report counts within a second, not only at the next refresh."""

    def __init__(self, lookback: timedelta = timedelta(days=30), merge_every: float = 1.0) -> None:
        self.lookback = lookback
        self.merge_every = merge_every
        self._stats = PeerStats()
        self._pending: list[TcaResult] = []
        self._merged_at = -math.inf
        self.loaded_at: datetime | None = None

    def __repr__(self) -> str:
        return (
            f"<PeerCache groups={len(self._stats.groups)} pending={len(self._pending)}"
            f" loaded_at={self.loaded_at}>"
        )

    @property
    def stats(self) -> PeerStats:
        now = time.monotonic()
        if self._pending and now - self._merged_at >= self.merge_every:
            self._stats = self._stats.merge(peer_stats_of(self._pending))
            self._pending = []
            self._merged_at = now
        return self._stats

    def add(self, result: TcaResult) -> None:
        """A new report: counted within `merge_every`, not only at the next refresh."""
        self._pending.append(result)

    async def refresh(self, load: LoadGroups, now: datetime) -> None:
        self._stats = stats_of_groups(await load(now - self.lookback))  # every report before `now`
        self._pending = []
        self.loaded_at = now

    async def refresh_every(
        self,
        load: LoadGroups,
        clock: Callable[[], datetime],
        seconds: float,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Load now, report started, then reload every `seconds` (a failure keeps the last)."""
        first = True
        while True:
            try:
                await self.refresh(load, clock())
            except Exception as exc:
                log.warning("peer statistics not refreshed", extra={"error": repr(exc)})
            if first:
                first = False
                task_status.started()
            await trio.sleep(seconds)
