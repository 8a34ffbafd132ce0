"""Execution reports and TCA requests, online.

When an execution ends with fills (filled, or cancelled/expired after partial fills), its report
is computed against the arrival price and written to `execution_reports` together with its
market window, the peer statistics take it in, and the routing statistics get its realised
implicit cost (`RoutingStats.on_tca`: slippage vs arrival, by broker and asset class).

Reports are made in batches, off the order path: the engine queues each finished execution
(`queue`: bounded, never blocks) and one task takes what is queued every `batch_interval_s` (or
as soon as `batch_size` wait: `next_batch`) and writes it with `report_many` — one wait for the
market data, one extraction of each symbol's window, the measures of every execution at once
(`tca.engine.analyse_many`, the vectorised engine of the offline tool), one writer submission.
`report` makes one report alone, with the scalar engine (`tca.engine.analyse`): the backfill
uses it, and the tests hold the two to the same rows.

A TCA request (any benchmark) for a finished execution is answered from its report row: the
stored window, arrival and end prices, and the official close of its trade date once known. For
an execution still working, from the live market tapes up to now. A window the tapes no longer
fully hold is not guessed at: VWAP, TWAP and the quality score are then reported unavailable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Protocol

import msgspec
import trio

from api.contracts import FieldError, TCARequest, TCAResponse
from api.enums import AssetClass, TCABenchmark
from api.errors import InvalidRequest, NotFound
from api.orders import BrokerOrder
from routing.stats import RoutingStats, TcaObservation
from sql.reports import ReportRecord
from sql.store import Store
from tca.batch import Windows
from tca.engine import analyse, analyse_many
from tca.model import (
    DEFAULT_CONFIG,
    MarketData,
    TcaConfig,
    TcaFill,
    TcaOrder,
    Trades,
    from_broker_order,
    ns_of,
)
from tca.result import TcaResult
from tca_online import windows
from tca_online.peers import PeerCache
from tca_online.queue import ReportJob, ReportQueue

log = logging.getLogger(__name__)

_JSON = msgspec.json.Encoder()


class MarketSource(Protocol):
    def asset_class(self, symbol: str) -> AssetClass | None: ...

    def mid(self, symbol: str) -> Decimal | None: ...

    def covers(self, symbol: str, start_ns: int) -> bool: ...

    def market_data(
        self, symbol: str, start_ns: int, end_ns: int, close_day: date | None = None
    ) -> MarketData: ...

    def close(self, symbol: str, day: date) -> Decimal | None: ...

    def mid_at(self, symbol: str, ts_ns: int) -> Decimal | None: ...

    def latest_ns(self, symbol: str) -> int | None: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _online(
    order: TcaOrder, fills: tuple[TcaFill, ...], end_ns: int, received_ns: int | None = None
) -> tuple[TcaOrder, tuple[TcaFill, ...]]:
    """The online window rule: first fill -> last fill (the TCA default), except when the fills
    span no time (one fill, or all at one instant: most market orders), where that window is
    empty; then the order's own window, arrival -> end."""
    if received_ns is not None and received_ns < order.arrival_ns:
        # After a failover the attempt that filled started late: the order arrived when the
        # OMS sent it, and the time lost to the failover is part of its cost.
        order = msgspec.structs.replace(order, arrival_ns=received_ns)
    times = {f.ts_ns for f in fills}
    if len(times) <= 1 and end_ns > order.arrival_ns:
        order = msgspec.structs.replace(order, window_start_ns=order.arrival_ns, window_end_ns=end_ns)
    return order, fills


def _tca_order(
    order: BrokerOrder,
    asset_class: str,
    arrival: Decimal | None,
    received_ns: int | None,
    end_price: Decimal | None,
    end_ns: int,
) -> tuple[TcaOrder, tuple[TcaFill, ...]]:
    """The TCA view of one execution, online (`_online`'s window and arrival rules)."""
    return _online(
        *from_broker_order(
            order, asset_class=asset_class, arrival_price=_float(arrival), end_price=_float(end_price)
        ),
        end_ns,
        received_ns,
    )


class _Case:
    """One execution of a batch being reported."""

    __slots__ = ("arrival", "asset_class", "end_ns", "end_price", "fills", "job", "order", "start_ns")

    def __init__(
        self,
        job: ReportJob,
        asset_class: AssetClass,
        arrival: Decimal | None,
        end_price: Decimal | None,
        end_ns: int,
        order: TcaOrder,
        fills: tuple[TcaFill, ...],
    ) -> None:
        self.job, self.asset_class, self.arrival, self.end_price = job, asset_class, arrival, end_price
        self.end_ns, self.order, self.fills = end_ns, order, fills
        self.start_ns = order.arrival_ns


class ExecutionReporter(ReportQueue):
    def __init__(
        self,
        store: Store,
        market: MarketSource,
        *,
        stats: RoutingStats | None = None,
        peers: PeerCache | None = None,
        config: TcaConfig = DEFAULT_CONFIG,
        clock: Callable[[], datetime] = _utcnow,
        market_settle_s: float = 1.0,
        batch_interval_s: float = 0.15,
        batch_size: int = 256,
        max_batch: int = 512,
        max_queued: int = 10_000,
    ) -> None:
        """`market_settle_s`: how long a report waits for the market data to reach the end of
        the execution (prints published just before it can arrive just after). The batches:
        see `ReportQueue`."""
        super().__init__(
            batch_interval_s=batch_interval_s,
            batch_size=batch_size,
            max_batch=max_batch,
            max_queued=max_queued,
        )
        self._store = store
        self._market_settle_s = market_settle_s
        self._market = market
        self.stats = stats
        self.peers = peers or PeerCache()
        self._config = config
        self._clock = clock
        self.written = 0

    def __repr__(self) -> str:
        return (
            f"<ExecutionReporter written={self.written} pending={self.pending}"
            f" dropped={self.dropped} {self.peers!r}>"
        )

    # --- reports --------------------------------------------------------------------------

    async def report_many(
        self, jobs: Sequence[ReportJob], *, await_market: bool = True
    ) -> list[TcaResult | None]:
        """`report` of each job (at most one per execution), as one batch: the arrivals not
        known read, one wait for the market data of every symbol, each symbol's window
        extracted once, every measure computed at once (`analyse_many`), every report saved
        in one writer submission. Returns each job's result (None: nothing to report, or the
        execution had its report). Raises `DatabaseUnavailable` during an outage (nothing
        written: the whole batch may be given again)."""
        if len({job.order.id for job in jobs}) != len(jobs):
            raise ValueError("at most one report per execution in a batch")
        out: list[TcaResult | None] = [None] * len(jobs)
        found: list[tuple[int, ReportJob, AssetClass, Decimal | None, int | None]] = []
        for i, job in enumerate(jobs):
            order = job.order
            if not order.status.is_final or order.filled_quantity <= 0:
                continue
            asset_class = self._market.asset_class(order.symbol)
            if asset_class is None:
                log.warning(
                    "no report: instrument unknown to the market data", extra={"symbol": order.symbol}
                )
                continue
            arrival, received_ns = await self._arrival(order, job.arrival_price, known=job.arrival_known)
            found.append((i, job, asset_class, arrival, received_ns))
        if not found:
            return out
        if await_market:
            ends: dict[str, int] = {}
            for _, job, *_ in found:
                end_ns = ns_of(job.order.updated_at) + 1
                ends[job.order.symbol] = max(ends.get(job.order.symbol, end_ns), end_ns)
            await self._await_markets(ends)
        cases: list[tuple[int, _Case]] = []
        for i, job, asset_class, arrival, received_ns in found:
            order = job.order
            try:
                end_ns = ns_of(order.updated_at) + 1
                end_price = self._market.mid_at(order.symbol, end_ns)
                tca_order, fills = _tca_order(
                    order, asset_class.value, arrival, received_ns, end_price, end_ns
                )
            except Exception:  # one execution the TCA cannot take does not hold up the others
                log.exception("execution report failed", extra={"execution_id": order.id})
                continue
            cases.append((i, _Case(job, asset_class, arrival, end_price, end_ns, tca_order, fills)))
        if not cases:
            return out
        layout, encoded = self._windows([case for _, case in cases])
        results = analyse_many(
            [case.order for _, case in cases],
            [case.fills for _, case in cases],
            layout,
            TCABenchmark.ARRIVAL_PRICE,
            peers=self.peers.stats,
            config=self._config,
        )
        records = [
            (
                self._record(c.job.order, result, c.asset_class, c.arrival, c.end_price, window),
                c.job.replace,
            )
            for (_, c), result, window in zip(cases, results, encoded, strict=True)
        ]
        written = await self._store.save_reports(records)
        for (i, case), result, wrote in zip(cases, results, written, strict=True):
            if wrote:
                out[i] = result
                self._account(case.job.order, result, case.asset_class, case.job.replace)
        return out

    async def report(
        self,
        order: BrokerOrder,
        arrival_price: Decimal | None = None,
        *,
        arrival_known: bool = False,
        replace: bool = False,
        await_market: bool = True,
    ) -> TcaResult | None:
        """Write the report of a finished execution with fills (once: a repeat writes nothing and
        returns None); None too when there is nothing to report. `arrival_price` is the one
        stored with the order when the caller has it (`arrival_known`), else it is read back.
        `replace`: rewrite the report of an execution that changed after it ended (a late fill);
        the peer and routing statistics are not told twice."""
        if not order.status.is_final or order.filled_quantity <= 0:
            return None
        asset_class = self._market.asset_class(order.symbol)
        if asset_class is None:
            log.warning("no report: instrument unknown to the market data", extra={"symbol": order.symbol})
            return None
        arrival, received_ns = await self._arrival(order, arrival_price, known=arrival_known)
        end_ns = ns_of(order.updated_at) + 1
        if await_market:
            await self._await_market(order.symbol, end_ns)
        end_price = self._market.mid_at(order.symbol, end_ns)
        tca_order, fills = _tca_order(order, asset_class.value, arrival, received_ns, end_price, end_ns)
        data = self._window(order.symbol, tca_order.arrival_ns, end_ns)
        result = analyse(
            tca_order, fills, data, TCABenchmark.ARRIVAL_PRICE, peers=self.peers.stats, config=self._config
        )
        record = self._record(order, result, asset_class, arrival, end_price, windows.encode(data))
        if not await self._store.save_report(record, replace=replace):
            return None
        self._account(order, result, asset_class, replace)
        return result

    def _account(self, order: BrokerOrder, result: TcaResult, asset_class: AssetClass, replace: bool) -> None:
        """A report was written: the peer and routing statistics take it in, once per
        execution (a `replace` is a correction of one they already counted)."""
        self.written += 1
        if replace:
            return
        self.peers.add(result)
        # What the broker's execution cost beyond the market's own move: slippage vs arrival
        # less the realised impact (the mid's move to the end), which routing models apart.
        implicit = result.arrival_slippage_bps
        if implicit is not None and result.market_impact_bps is not None:
            implicit -= result.market_impact_bps
        if self.stats is not None and implicit is not None and result.executed_notional > 0:
            self.stats.on_tca(
                TcaObservation(
                    broker_id=order.broker_id,
                    asset_class=asset_class,
                    cost_bps=implicit,
                    notional=result.executed_notional,
                )
            )

    async def backfill(self, since: datetime, until: datetime | None = None) -> int:
        """Write the reports a stop or crash cut short (finished executions with fills and no
        report, from `since` until before `until`: None, up to now); their windows are gone
        with the old tapes unless still held, so VWAP/TWAP may be unavailable for them. Returns
        how many were written. Never raises: an execution that cannot be reported is logged and
        skipped (and not asked for again in this pass), so one bad row cannot stop the daemon or
        hide the others."""
        written = failed = 0
        seen: set[str] = set()
        try:
            while True:
                batch = [
                    e
                    for e in await self._store.load_unreported(since, 200 + len(seen), until=until)
                    if e not in seen
                ]
                if not batch:
                    break
                for execution_id in batch:
                    seen.add(execution_id)
                    try:
                        order = await self._store.load_execution(execution_id)
                        if order is not None and await self.report(order, await_market=False) is not None:
                            written += 1
                    except Exception as exc:
                        failed += 1
                        log.error(
                            "execution report not backfilled",
                            extra={"execution_id": execution_id, "error": repr(exc)},
                        )
        except Exception as exc:
            log.error("report backfill stopped", extra={"error": repr(exc), "written": written})
        if written or failed:
            log.info("execution reports backfilled", extra={"count": written, "failed": failed})
        return written

    async def _arrival(
        self, order: BrokerOrder, price: Decimal | None, *, known: bool
    ) -> tuple[Decimal | None, int | None]:
        """The arrival price (`price` when `known`) and, for a later attempt (after a failover),
        when the OMS order was received; one read of the order's row, none at all for a first
        attempt whose price the caller has."""
        if known and order.attempt <= 1:
            return price, None
        stored_price, received = await self._store.load_arrival(order.order_id)
        arrival = price if known else stored_price
        return arrival, (ns_of(received) if order.attempt > 1 and received is not None else None)

    async def _await_market(self, symbol: str, end_ns: int) -> None:
        """Until the tapes reach `end_ns` (late prints of the window are in), at most
        `market_settle_s`; then the report goes ahead with what is there."""
        deadline = trio.current_time() + self._market_settle_s
        while trio.current_time() < deadline:
            latest = self._market.latest_ns(symbol)
            if latest is not None and latest >= end_ns:
                return
            await trio.sleep(0.05)

    async def _await_markets(self, ends: dict[str, int]) -> None:
        """`_await_market` for many symbols at once (each up to its own end)."""
        deadline = trio.current_time() + self._market_settle_s
        waiting = ends
        while trio.current_time() < deadline:
            waiting = {
                symbol: end
                for symbol, end in waiting.items()
                if (latest := self._market.latest_ns(symbol)) is None or latest < end
            }
            if not waiting:
                return
            await trio.sleep(0.05)

    def _window(self, symbol: str, start_ns: int, end_ns: int) -> MarketData:
        if not self._market.covers(symbol, start_ns):
            return MarketData(trades=Trades.empty())  # said unavailable, never half a window
        return self._market.market_data(symbol, start_ns, end_ns)

    def _windows(self, cases: Sequence[_Case]) -> tuple[Windows, list[bytes]]:
        """`_window` of every case, laid out for `analyse_many`, and each encoded for its row."""
        return windows.gather(self._market, [(c.job.order.symbol, c.start_ns, c.end_ns) for c in cases])

    def _record(
        self,
        order: BrokerOrder,
        result: TcaResult,
        asset_class: AssetClass,
        arrival: Decimal | None,
        end_price: Decimal | None,
        window: bytes,
    ) -> ReportRecord:
        assert order.average_price is not None
        return ReportRecord(
            execution_id=order.id,
            order_id=order.order_id,
            broker_id=order.broker_id,
            symbol=order.symbol,
            side=str(order.side),
            quantity=order.quantity,
            filled_quantity=order.filled_quantity,
            average_price=order.average_price,
            benchmark_type=str(result.benchmark),
            benchmark_price=result.benchmark_price,
            slippage_bps=result.slippage_bps,
            market_impact_bps=result.market_impact_bps,
            total_cost_bps=result.total_cost_bps,
            execution_start=order.created_at,
            execution_end=order.updated_at,
            quality_score=result.execution_quality_score,
            rank=result.broker_performance_rank,
            recommendations=_JSON.encode([r.to_wire() for r in result.recommendations]).decode(),
            created_at=self._clock(),
            asset_class=asset_class.value,
            order_type=str(order.order_type),
            strategy=str(order.execution_strategy),
            size_bucket=result.size_bucket,
            executed_notional=sum((f.quantity * f.price for f in order.fills), Decimal(0)),
            fees=order.fees,
            arrival_price=arrival,
            arrival_cost_bps=result.arrival_cost_bps,
            end_price=end_price,
            benchmarks=_JSON.encode(result.benchmarks).decode(),
            shortfall=_JSON.encode(result.shortfall).decode() if result.shortfall is not None else None,
            unavailable=_JSON.encode(result.unavailable).decode(),
            market_window=window,
        )

    # --- requests -------------------------------------------------------------------------

    async def analyse(self, request: TCARequest) -> TCAResponse:
        """GetTransactionCostAnalysis: NotFound for an unknown order or execution, InvalidRequest
        for an execution of another order."""
        return (await self.result(request)).to_response()

    async def result(self, request: TCARequest) -> TcaResult:
        order = await self._execution(request)
        asset_class = self._market.asset_class(order.symbol)
        stored = await self._store.load_report(order.id) if order.status.is_final else None
        stored_arrival = stored.arrival_price if stored is not None else None
        arrival, received_ns = await self._arrival(order, stored_arrival, known=stored is not None)
        end = order.updated_at if order.status.is_final else self._clock()
        end_price = stored.end_price if stored is not None else None
        if end_price is None:
            end_price = self._market.mid_at(order.symbol, ns_of(end) + 1)
        kind = asset_class.value if asset_class is not None else "EQUITY"
        tca_order, fills = _tca_order(order, kind, arrival, received_ns, end_price, ns_of(end) + 1)
        close = await self._close(order.symbol, end.date())
        if stored is not None and stored.market_window is not None:
            data = windows.decode(stored.market_window, close)
        else:
            data = msgspec.structs.replace(
                self._window(order.symbol, tca_order.arrival_ns, ns_of(end) + 1), close_price=close
            )
        return analyse(tca_order, fills, data, request.benchmark, peers=self.peers.stats, config=self._config)

    async def _execution(self, request: TCARequest) -> BrokerOrder:
        if request.execution_id is not None:
            order = await self._store.load_execution(request.execution_id)
            if order is None:
                raise NotFound(f"no execution {request.execution_id!r}")
            if order.order_id != request.order_id:
                raise InvalidRequest(
                    "invalid request: executionId",
                    [
                        FieldError(
                            "executionId", f"belongs to order {order.order_id!r}, not {request.order_id!r}"
                        )
                    ],
                )
            return order
        order = await self._store.load_latest_execution(request.order_id)
        if order is None:
            raise NotFound(f"no execution for order {request.order_id!r}")
        return order  # the last attempt: the one that holds the fills after a failover

    async def _close(self, symbol: str, day: date) -> float | None:
        close = self._market.close(symbol, day)
        if close is None:
            close = await self._store.load_close(symbol, day)
        return _float(close)
