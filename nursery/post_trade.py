"""After each attempt and each execution: the adaptive routing statistics and the TCA reports.

`PostTrade` is told what happened and never changes an order. Contract:

- `observe_attempt` (after every placement), `on_probe` (after every heartbeat) and
  `execution_finished` (once per execution that ends) feed `routing.stats.RoutingStats`: acks
  and their latency, refusals, timeouts, fill fraction and time to fill. A local denial, an
  OMS cancel and an order the broker never held say nothing about the broker and are not
  counted.
- A finished execution with fills is queued for its execution report, and one that fills after
  it ended (`late_fill`) has its report rewritten. The queue never blocks the caller (the
  applier, on the order path); one writer task runs exactly while reports are pending and
  writes them in batches. Reports never take the engine down: a batch that fails is logged, one
  that meets a database outage waits for it (at most `REPORT_OUTAGE_WAIT_S`) and is then left
  to the periodic backfill, as is what is pending when the engine stops.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import Protocol

import trio

from api.contracts import TCARequest, TCAResponse
from api.enums import AssetClass, BrokerOrderStatus, Urgency
from api.orders import BrokerOrder
from nursery.hooks import Spawn
from nursery.live import LiveExecution
from nursery.placement import Outcome, Placement
from routing.stats import RoutingStats
from sql.store import Store
from sql.writer import DatabaseUnavailable
from tca_online.queue import ReportJob

__all__ = ["REPORT_OUTAGE_WAIT_S", "AssetClasses", "PostTrade", "Reporter"]

log = logging.getLogger(__name__)

#: A batch of reports that met a database outage waits this long (s) for the database, then is
#: left to the periodic backfill.
REPORT_OUTAGE_WAIT_S = 60.0


class Reporter(Protocol):
    """Execution reports and TCA (`tca_online.reporter.ExecutionReporter`)."""

    async def report(
        self,
        order: BrokerOrder,
        arrival_price: Decimal | None = None,
        *,
        arrival_known: bool = False,
        replace: bool = False,
    ) -> object: ...

    async def analyse(self, request: TCARequest) -> TCAResponse: ...

    # The batching queue (`tca_online.queue.ReportQueue`): finished executions wait there and
    # are reported many at a time, off the order path.
    @property
    def pending(self) -> int: ...

    def queue(
        self,
        order: BrokerOrder,
        arrival_price: Decimal | None = None,
        *,
        arrival_known: bool = False,
        replace: bool = False,
    ) -> bool: ...

    async def next_batch(self) -> list[ReportJob]: ...

    async def report_many(self, jobs: Sequence[ReportJob]) -> object: ...

    def batch_done(self, batch: Sequence[ReportJob]) -> None: ...

    def discard(self) -> int: ...


class AssetClasses(Protocol):
    """The asset class of a symbol (None: unknown), from the market view."""

    def asset_class(self, symbol: str) -> AssetClass | None: ...


class PostTrade:
    def __init__(
        self,
        stats: RoutingStats,
        market: AssetClasses,
        reporter: Reporter | None,
        store: Store,
        spawn: Spawn,
    ) -> None:
        self._stats = stats
        self._market = market
        self._reporter = reporter
        self._store = store
        self._spawn = spawn

    def __repr__(self) -> str:
        return f"<PostTrade reports_pending={self.reports_pending}>"

    # --- routing statistics -----------------------------------------------------------------

    def observe_attempt(self, broker_id: str, placement: Placement, urgency: Urgency) -> None:
        """What one attempt says about the broker: an ack and its latency, a refusal, or a
        timeout (its wait enters the latency tail). A local denial says nothing about it."""
        now = trio.current_time()
        if placement.outcome is Outcome.CONFIRMED:
            self._stats.on_ack(broker_id, placement.latency_ms, urgency, at=now)
        elif placement.outcome is Outcome.REJECTED:
            self._stats.on_reject(broker_id, at=now)
        elif placement.outcome is Outcome.UNKNOWN:
            self._stats.on_timeout(broker_id, placement.latency_ms, urgency, at=now)

    def on_probe(self, broker_id: str, round_trip_ms: float) -> None:
        """A heartbeat's round trip (`BrokerHandle.probe_listener`)."""
        self._stats.on_probe(broker_id, round_trip_ms, at=trio.current_time())

    def execution_finished(self, live: LiveExecution) -> None:
        """An execution reached its end: one with fills is queued for its report (`_report`
        writes them in batches); how much of it filled and how fast feed the broker's fill
        statistics — unless the OMS cancelled it (that says nothing about the broker) or the
        broker never held it (rejections were counted when they happened)."""
        order = live.order
        if order.filled_quantity > 0:
            self._queue_report(live, replace=False)
        if order.status is BrokerOrderStatus.REJECTED or order.broker_order_id is None:
            return
        if live.cancel_requested and order.filled_quantity < order.quantity:
            return
        asset_class = self._market.asset_class(order.symbol)
        if asset_class is None:
            return
        fraction = float(order.filled_quantity / order.quantity) if order.quantity else 0.0
        time_to_fill = None
        if order.fills:
            start = live.accepted_at or order.created_at
            time_to_fill = max(0.0, (order.fills[-1].timestamp - start).total_seconds() * 1000.0)
        self._stats.on_fill(
            order.broker_id,
            asset_class,
            order.order_type,
            order.time_in_force,
            min(1.0, max(0.0, fraction)),
            time_to_fill,
            at=trio.current_time(),
        )

    # --- execution reports ------------------------------------------------------------------

    def late_fill(self, live: LiveExecution) -> None:
        """A fill after the execution ended (it raced a cancel): its report is rewritten."""
        self._queue_report(live, replace=True)

    @property
    def reports_pending(self) -> int:
        """Reports queued or being written (shutdown waits for zero)."""
        return self._reporter.pending if self._reporter is not None else 0

    def _queue_report(self, live: LiveExecution, *, replace: bool) -> None:
        """Queue `live`'s report; start the writer (`_report`) if none runs: one runs exactly
        while reports are pending."""
        reporter = self._reporter
        if reporter is None:
            return
        idle = reporter.pending == 0
        reporter.queue(live.order, live.arrival_price, arrival_known=live.arrival_known, replace=replace)
        if idle and reporter.pending:
            self._spawn(self._report)

    async def _report(self) -> None:
        """The report writer: runs while reports are pending (queued or being written) and ends
        when none are. It takes the queued reports in batches (every ~150 ms,
        or as soon as enough wait: `ExecutionReporter.next_batch`) and writes each batch at
        once (`report_many`: one market wait, one vectorised analysis, one writer submission).
        A batch that meets a database outage waits for the database (at most
        `REPORT_OUTAGE_WAIT_S`) and is written once it is back; past that it is left to the
        periodic backfill. Reports never take the engine down: the orders are unaffected."""
        reporter = self._reporter
        assert reporter is not None
        try:
            while reporter.pending:
                batch = await reporter.next_batch()
                try:
                    for _ in range(2):
                        try:
                            await reporter.report_many(batch)
                            break
                        except DatabaseUnavailable:
                            with trio.move_on_after(REPORT_OUTAGE_WAIT_S):
                                await self._store.wait_available()
                    else:
                        log.warning(
                            "execution reports left to the backfill",
                            extra={"count": len(batch), "execution_ids": [j.order.id for j in batch]},
                        )
                except Exception:
                    log.exception(
                        "execution reports failed",
                        extra={"count": len(batch), "execution_ids": [j.order.id for j in batch]},
                    )
                reporter.batch_done(batch)
        finally:
            if reporter.pending:  # cancelled (the engine stops): the backfill writes the rest
                reporter.discard()
