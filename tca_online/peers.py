"""Peer statistics for online TCA (broker rank, savings, recommendations): built from the
execution reports of the last `lookback` in PostgreSQL, refreshed periodically, and extended
with each new report in between."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import trio

from sql.reports import PeerRow
from tca.model import ns_of
from tca.peers import PeerStats, hour_key, peer_stats, peer_stats_of
from tca.result import TcaResult

log = logging.getLogger(__name__)


def stats_of_rows(rows: list[PeerRow]) -> PeerStats:
    return peer_stats(
        asset_classes=[r.asset_class for r in rows],
        buckets=[r.size_bucket for r in rows],
        costs=[math.nan if r.arrival_cost_bps is None else r.arrival_cost_bps for r in rows],
        weights=[float(r.executed_notional) for r in rows],
        brokers=[r.broker_id for r in rows],
        strategies=[r.strategy for r in rows],
        order_types=[r.order_type for r in rows],
        hours=[hour_key(ns_of(r.execution_start)) for r in rows],
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

    async def refresh(self, load: Callable[[datetime], Awaitable[list[PeerRow]]], now: datetime) -> None:
        rows = await load(now - self.lookback)
        # Aggregating a month of reports takes a while: not on the Trio thread.
        stats = await trio.to_thread.run_sync(stats_of_rows, rows)
        self._stats = stats  # includes every report written before `now`
        self._pending = []
        self.loaded_at = now

    async def refresh_every(
        self,
        load: Callable[[datetime], Awaitable[list[PeerRow]]],
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
