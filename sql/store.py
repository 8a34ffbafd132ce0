"""The store: every PostgreSQL access of the daemon.

Writes go through one `GroupWriter` (group commit): each write method returns once its rows are
committed, sharing the commit with whatever else arrived meanwhile. Reads run on a sync
`psycopg_pool.ConnectionPool` in worker threads, at most `pool_size` at a time. The write ops
and their SQL live in `sql.ops` (order path) and `sql.status` (broker supervision); this module
holds the `Store` facade and the reads.

Guarantees:
- `claim_order` is the idempotency gate: of any number of claims of one order id (same batch,
  other tasks, other processes), exactly one gets `claimed=True`; the others get the stored row.
- A claim or transition and the outbox event describing it commit in the same transaction.
- Decimals round-trip exactly (same value; trailing zeros of the DECIMAL(20, 8) columns are
  dropped on load). A decimal the columns cannot hold exactly is refused (`ValueError`), never
  rounded. JSONB is written with `api.codec` (exact decimals) and read back typed.
- Timestamps come back timezone-aware, in UTC.
- Attempt numbers are the caller's (`BrokerOrder.attempt`), stored as given, never computed;
  (order id, attempt) is unique.
- The maintenance flag (`set_maintenance`) survives restarts and `upsert_brokers`.
- Cancellation of a write: not written if the writer had not taken it yet; otherwise committed
  or rolled back before `Cancelled` propagates (see `sql.writer`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import msgspec
import psycopg
import trio
from psycopg_pool import ConnectionPool, PoolTimeout

from api.contracts import CommissionStructure, LatencyStats, OrderRoutingResponse
from api.enums import (
    AssetClass,
    BrokerFeature,
    BrokerOrderStatus,
    ConnectionStatus,
    ExecutionStrategy,
    OrderType,
    Side,
    TimeInForce,
    Urgency,
)
from api.orders import BrokerOrder, OrderFill
from sql import reports
from sql.leases import DaemonSeat, EndLease, RegisterDaemon, RenewLease, TakeOrphans
from sql.ops import (
    SELECT_CLAIMS,
    Claim,
    MarkPublished,
    SaveResponse,
    SaveTransition,
    StartAttempt,
    UpsertBrokers,
    broker_row_id,
    claim_result,
)
from sql.records import BrokerRecord, ClaimResult, OrderClaim, OutboxEvent, StatusChange
from sql.reports import PeerGroupRow, ReportRecord, SaveClose, SaveReport, StoredReport
from sql.status import PruneStatusHistory, RecordStatus, SetMaintenance, UpdateBrokerRuntime
from sql.writer import (
    DatabaseUnavailable,
    GroupWriter,
    WriteOp,
    WriterStats,
    configure_session,
    connection_failed,
    connection_kwargs,
)

__all__ = ["Store", "broker_row_id"]

T = TypeVar("T")
Conn = psycopg.Connection[Any]

_OPEN_STATUSES = [s.value for s in BrokerOrderStatus if not s.is_final]
_VIEWS = ("execution_quality_by_asset_class", "broker_latency_stats")
_REFRESH: dict[tuple[str, bool], bytes] = {
    (view, concurrently): b"REFRESH MATERIALIZED VIEW "
    + (b"CONCURRENTLY " if concurrently else b"")
    + view.encode()
    for view in _VIEWS
    for concurrently in (True, False)
}
_REFRESH_TIMEOUT_MS = 10 * 60 * 1000


class Store:
    """Open with `async with Store.open(conninfo) as store:`. All methods are async."""

    def __init__(
        self, pool: ConnectionPool[Conn], writer: GroupWriter, pool_size: int, timeout: float
    ) -> None:
        self._pool = pool
        self._writer = writer
        self._limiter = trio.CapacityLimiter(pool_size)
        self._timeout = timeout
        #: How long a read waits for a pooled connection: short, so an outage the writer has
        #: not noticed yet still answers a reader quickly (a 503, not a hung request).
        self._connection_wait = min(timeout, 5.0)

    def __repr__(self) -> str:
        return f"<Store pool={self._pool.name} {self._writer!r}>"

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        conninfo: str,
        *,
        pool_size: int = 8,
        max_batch: int = 512,
        timeout: float = 30.0,
        statement_timeout: float = 10.0,
        writer_lanes: int = 1,
    ) -> AsyncIterator[Store]:
        """Start the writer task (in its own nursery, with `writer_lanes` connections) and the
        read pool; on exit, commit what is queued, then close both (shielded, each bounded by
        `timeout`)."""

        def configure(conn: Conn) -> None:
            configure_session(conn, statement_timeout=statement_timeout)

        pool: ConnectionPool[Conn] = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            open=False,
            kwargs={"autocommit": True, **connection_kwargs(conninfo, statement_timeout=statement_timeout)},
            configure=configure,
            timeout=timeout,
            name="store-read",
        )
        await trio.to_thread.run_sync(lambda: pool.open(wait=True, timeout=timeout))
        try:
            writer = GroupWriter(
                conninfo,
                max_batch=max_batch,
                timeout=timeout,
                statement_timeout=statement_timeout,
                lanes=writer_lanes,
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(writer.run)
                try:
                    yield cls(pool, writer, pool_size, timeout)
                finally:
                    # Commit what is queued, then disconnect; past the timeout, cancel the writer.
                    with trio.CancelScope(shield=True), trio.move_on_after(timeout):
                        await writer.aclose()
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(timeout):
                await trio.to_thread.run_sync(lambda: pool.close(timeout=timeout), abandon_on_cancel=True)

    @property
    def writer_stats(self) -> WriterStats:
        return self._writer.stats

    # --- writes ---------------------------------------------------------------------------

    async def claim_order(self, claim: OrderClaim) -> ClaimResult:
        """Insert the order's idempotency row unless it exists; if inserted, also the PENDING
        attempt (numbered `claim.execution.attempt`) and its first outbox event, in the same
        transaction."""
        (result,) = await self._writer.submit([Claim(claim)])
        return result

    async def start_attempt(
        self,
        execution: BrokerOrder,
        asset_class: str,
        event: OutboxEvent | None = None,
        owner: str | None = None,
    ) -> None:
        """Insert a further attempt (failover) of an already claimed order, with exactly the
        caller's number `execution.attempt`, and its first outbox event. Raises
        `DuplicateAttempt` if the order already has that attempt number (or the execution id or
        client order id is taken), `LookupError` if the order was never claimed,
        `ClaimTakenOver` if `owner` is given and no longer owns the unanswered claim."""
        await self._writer.submit([StartAttempt(execution, asset_class, event, owner)])

    async def save_changes(
        self,
        transitions: Sequence[tuple[BrokerOrder, OrderFill | None, OutboxEvent | None]],
        response: tuple[str, OrderRoutingResponse] | None = None,
        *,
        urgent: bool = True,
    ) -> None:
        """Persist consecutive state changes (of one or more executions, in order: each row's
        mutable columns, its new fill stored once, its outbox event) and optionally an order's
        routing response (only if none is stored yet), atomically, in one submission. Raises
        LookupError if an execution row does not exist. Idempotent (a repeat changes nothing),
        so a caller that got `DatabaseUnavailable` may submit the same changes again, followed
        by newer ones, once the database is back. `urgent=False`: no reply waits on it (it may
        share the next commit, `sql.writer` "Lingering")."""
        await self.save_many(transitions, [response] if response is not None else [], urgent=urgent)

    async def save_many(
        self,
        transitions: Sequence[tuple[BrokerOrder, OrderFill | None, OutboxEvent | None]],
        responses: Sequence[tuple[str, OrderRoutingResponse]],
        *,
        urgent: bool = True,
    ) -> None:
        """`save_changes` with any number of orders' routing responses (each stored only if
        none is stored yet): the changes of many executions in one submission."""
        ops: list[WriteOp[Any]] = [SaveTransition(order, fill, event) for order, fill, event in transitions]
        ops.extend(SaveResponse(order_id, response) for order_id, response in responses)
        await self._writer.submit(ops, urgent=urgent)

    async def save_response(self, order_id: str, response: OrderRoutingResponse) -> bool:
        """Store the order's routing response unless one is stored; True if this call stored it."""
        (stored,) = await self._writer.submit([SaveResponse(order_id, response)])
        return stored

    async def mark_published(self, keys: Sequence[tuple[str, int]]) -> None:
        """Outbox events (execution_id, sequence) the stream acknowledged: no longer unpublished."""
        if keys:
            await self._writer.submit([MarkPublished(tuple(keys))], urgent=False)

    async def upsert_brokers(self, records: Sequence[BrokerRecord]) -> None:
        """Insert or update brokers by broker_id: created_at, credentials and the maintenance
        flag are kept, the rest replaced (last_connected_at only when given)."""
        if records:
            await self._writer.submit([UpsertBrokers(tuple(records))])

    # --- broker supervision (writes) ------------------------------------------------------

    async def record_status(
        self, broker_id: str, status: ConnectionStatus | str, at: datetime, reason: str | None = None
    ) -> None:
        """Append a change of the broker's connection status (a ConnectionStatus value, else
        ValueError) to its history. Changes recorded with the same `at` keep their order of
        submission. LookupError for an unknown broker."""
        change = StatusChange(broker_id, ConnectionStatus(status), at, reason)
        await self._writer.submit([RecordStatus(change)], urgent=False)

    async def prune_status_history(self, before: datetime) -> int:
        """Delete status changes older than `before`, except each broker's last one before it
        (the status from `before` on, which a window starting later still needs). Returns how
        many rows were deleted."""
        (deleted,) = await self._writer.submit([PruneStatusHistory(before)])
        return deleted

    async def set_maintenance(self, broker_id: str, on: bool, reason: str | None, at: datetime) -> None:
        """Put the broker in maintenance since `at` with `reason` (already in maintenance: the
        reason is replaced, the start kept), or take it out (`reason` and `at` unused). Survives
        restarts and `upsert_brokers`. LookupError for an unknown broker."""
        await self._writer.submit([SetMaintenance(broker_id, on, reason, at)])

    async def update_broker_runtime(
        self,
        broker_id: str,
        status: ConnectionStatus | str,
        latency_stats: LatencyStats,
        last_connected_at: datetime | None,
    ) -> None:
        """Write the broker's live figures back to broker_connections (status, latency_stats,
        last_connected_at unless None, updated_at). LookupError for an unknown broker."""
        await self._writer.submit(
            [UpdateBrokerRuntime(broker_id, ConnectionStatus(status), latency_stats, last_connected_at)],
            urgent=False,
        )

    # --- daemon leases (sql.leases) ------------------------------------------------------

    async def register_daemon(self, seat: DaemonSeat) -> list[str]:
        """Register this process run; end the leases of the seat's predecessors (their ids)."""
        (ended,) = await self._writer.submit([RegisterDaemon(seat)])
        return ended

    async def renew_lease(self, daemon_id: str) -> datetime | None:
        """Renew the lease (the database's time of renewal); None if it was ended."""
        (seen_at,) = await self._writer.submit([RenewLease(daemon_id)])
        return seen_at

    async def end_lease(self, daemon_id: str) -> None:
        await self._writer.submit([EndLease(daemon_id)])

    async def take_orphans(
        self,
        daemon_id: str,
        *,
        lease_s: float,
        own_after_s: float,
        judge: bool,
        limit: int = 256,
        only: Sequence[str] | None = None,
    ) -> list[tuple[str, datetime]]:
        """Take the orders nobody answers (see `sql.leases.TakeOrphans`)."""
        op = TakeOrphans(
            daemon_id, lease_s, own_after_s, judge, limit, tuple(only) if only is not None else None
        )
        (taken,) = await self._writer.submit([op])
        return taken

    # --- reads ----------------------------------------------------------------------------

    async def get_claim(self, order_id: str) -> ClaimResult | None:
        """The stored claim of `order_id` (`claimed` is False), or None."""

        def read(conn: Conn) -> ClaimResult | None:
            row = conn.execute(SELECT_CLAIMS, ([order_id],)).fetchone()
            return None if row is None else claim_result(row)

        return await self._read(read)

    # --- execution reports and closes (online TCA) -------------------------------------------

    async def save_report(self, report: ReportRecord, *, replace: bool = False) -> bool:
        """Insert the execution's report unless it has one (`replace`: in place of it); True
        if this call wrote it."""
        (inserted,) = await self._writer.submit([SaveReport(report, replace)], urgent=False)
        return inserted

    async def save_reports(self, reports: Sequence[tuple[ReportRecord, bool]]) -> list[bool]:
        """`save_report` of many (`(record, replace)`, at most one per execution) in one
        submission: one transaction, one `INSERT ... SELECT`; True for each report
        this call wrote."""
        return await self._writer.submit(
            [SaveReport(record, replace) for record, replace in reports], urgent=False
        )

    async def save_close(self, symbol: str, trade_date: date, price: Decimal, received_at: datetime) -> None:
        await self._writer.submit([SaveClose(symbol, trade_date, price, received_at)])

    async def load_report(self, execution_id: str) -> StoredReport | None:
        return await self._read(lambda conn: reports.load_report(conn, execution_id))

    async def load_close(self, symbol: str, trade_date: date) -> Decimal | None:
        return await self._read(lambda conn: reports.load_close(conn, symbol, trade_date))

    async def load_arrival(self, order_id: str) -> tuple[Decimal | None, datetime | None]:
        """The order's stored arrival price and when it was received."""
        return await self._read(lambda conn: reports.load_arrival(conn, order_id))

    async def load_unreported(
        self, since: datetime, limit: int = 1000, *, until: datetime | None = None
    ) -> list[str]:
        """Finished executions with fills and no report, from `since` until before `until`
        (None: no end), oldest first (`sql.reports.load_unreported`)."""
        end = until if until is not None else _FAR_FUTURE
        return await self._read(lambda conn: reports.load_unreported(conn, since, end, limit))

    async def load_peer_groups(self, since: datetime) -> list[PeerGroupRow]:
        """The peer groups of the reports since `since` (`sql.reports.load_peer_groups`)."""
        return await self._read(lambda conn: reports.load_peer_groups(conn, since))

    async def load_decision(self, order_id: str, *, abandonable: bool = False) -> str | None:
        """The order's routing decision (JSON text), or None (unknown order, or routed before
        decisions were recorded). `abandonable`: a caller that gives up waiting (cancelled)
        leaves the read to finish in its thread (see `_read`)."""

        def read(conn: Conn) -> str | None:
            row = conn.execute(
                b"SELECT routing_decision::text FROM routed_orders WHERE order_id = %s", (order_id,)
            ).fetchone()
            return None if row is None else row[0]

        return await self._read(read, abandonable=abandonable)

    async def load_execution(self, execution_id: str) -> BrokerOrder | None:
        orders = await self._read(lambda conn: _load_orders(conn, _WHERE_ID, (execution_id,)))
        return orders[0] if orders else None

    async def load_latest_execution(self, order_id: str) -> BrokerOrder | None:
        """The order's last attempt (highest attempt number), or None."""
        orders = await self._read(lambda conn: _load_orders(conn, _WHERE_LATEST, (order_id, order_id)))
        return orders[0] if orders else None

    async def load_attempts(self, order_id: str) -> list[BrokerOrder]:
        """Every attempt of the order, by attempt number, each with its fills (empty if none)."""
        return await self._read(lambda conn: _load_orders(conn, _WHERE_ORDER, (order_id,)))

    async def load_open_executions(self) -> list[BrokerOrder]:
        """Every execution not in a final status, with its fills, oldest first."""
        return await self._read(lambda conn: _load_orders(conn, _WHERE_OPEN, (_OPEN_STATUSES,)))

    async def unpublished_events(
        self, limit: int, *, older_than: datetime | None = None
    ) -> list[OutboxEvent]:
        """Up to `limit` outbox events not yet published (created at `older_than` or before, if
        given), oldest first. Reads `limit` rows of execution_events at most, by key, whatever
        the backlog: the oldest keys are found in the narrow unpublished_events first."""
        cutoff = older_than if older_than is not None else _FAR_FUTURE
        return await self._read(
            lambda conn: [_event(row) for row in conn.execute(_SELECT_UNPUBLISHED, (cutoff, limit))]
        )

    async def outbox_depth(self, limit: int) -> tuple[int, datetime | None]:
        """How many outbox events are not yet published (counted up to `limit`: "at least that
        many" beyond), and when the oldest of them was created (None: none). Reads only the
        narrow unpublished_events, no event itself."""

        def read(conn: psycopg.Connection[Any]) -> tuple[int, datetime | None]:
            row = conn.execute(_SELECT_OUTBOX_DEPTH, (limit,)).fetchone()
            assert row is not None
            return int(row[0]), (_utc(row[1]) if row[1] is not None else None)

        return await self._read(read)

    async def execution_events(self, execution_id: str) -> list[OutboxEvent]:
        """Every update published (or to publish) for one execution, by sequence."""
        return await self._read(
            lambda conn: [_event(row) for row in conn.execute(_SELECT_EVENTS, (execution_id,))]
        )

    async def list_broker_records(self) -> list[BrokerRecord]:
        return await self._read(lambda conn: [_broker(row) for row in conn.execute(_SELECT_BROKERS)])

    async def status_history(self, broker_id: str, since: datetime) -> list[StatusChange]:
        """The broker's status changes from `since` on, preceded by its last change before
        `since` (the status at `since`) if there is one; in order (time, then recording)."""
        return await self._read(
            lambda conn: [
                _status_change(row) for row in conn.execute(_SELECT_HISTORY, (broker_id, since) * 2)
            ]
        )

    async def maintenance_flags(self) -> dict[str, tuple[str | None, datetime]]:
        """The brokers in maintenance: broker_id -> (reason, since)."""
        return await self._read(
            lambda conn: {row[0]: (row[1], _utc(row[2])) for row in conn.execute(_SELECT_MAINTENANCE)}
        )

    async def refresh_views(self) -> None:
        """Refresh both materialized views: CONCURRENTLY (readers never block), or plainly for a
        view that was never populated (CONCURRENTLY refuses those)."""

        def refresh(conn: Conn) -> None:
            for view in _VIEWS:
                row = conn.execute(
                    b"SELECT ispopulated FROM pg_matviews WHERE matviewname = %s", (view,)
                ).fetchone()
                populated = bool(row and row[0])
                with conn.transaction():
                    conn.execute(
                        b"SELECT set_config('statement_timeout', %s, true)", (f"{_REFRESH_TIMEOUT_MS}ms",)
                    )
                    conn.execute(_REFRESH[(view, populated)])

        await self._read(refresh)

    async def _read(self, fn: Callable[[Conn], T], *, abandonable: bool = False) -> T:
        """Run `fn` on a pooled connection in a worker thread. Reads are idempotent: one whose
        connection turned out dead (a server restart) runs once more on another, once the
        pool has tested its idle connections. During an
        outage it fails fast with `DatabaseUnavailable` instead of waiting for the pool.
        `abandonable`: if the caller is cancelled, it returns at once and the read finishes in
        its thread (the connection goes back to the pool then)."""
        writer = self._writer
        if not writer.available:
            raise DatabaseUnavailable("the database is unavailable (reconnecting)")

        def run() -> T:
            for attempt in (1, 2):
                with self._pool.connection(timeout=self._connection_wait) as conn:
                    try:
                        return fn(conn)
                    except psycopg.Error as exc:
                        if attempt == 2 or not connection_failed(exc, conn):
                            raise
                # A dead connection means the server restarted: its idle siblings are dead too.
                # Test them all (and replace the dead) before the retry takes one.
                self._pool.check()
            raise AssertionError("unreachable")  # pragma: no cover

        try:
            return await trio.to_thread.run_sync(run, limiter=self._limiter, abandon_on_cancel=abandonable)
        except PoolTimeout as exc:
            writer.report_lost(repr(exc))
            raise DatabaseUnavailable(repr(exc)) from exc
        except psycopg.Error as exc:
            if connection_failed(exc):
                writer.report_lost(repr(exc))
                raise DatabaseUnavailable(repr(exc)) from exc
            raise

    @property
    def available(self) -> bool:
        """False during a database outage (writes and reads fail fast with DatabaseUnavailable)."""
        return self._writer.available

    async def wait_available(self) -> None:
        """Return once the database is available again (at once if it is)."""
        await self._writer.wait_available()


# --- reads -------------------------------------------------------------------------------------

_SELECT_ORDERS = b"""
SELECT o.id, o.order_id, o.broker_id, o.client_order_id, o.account_id, o.symbol, o.side,
       o.order_type, o.quantity, o.time_in_force, o.execution_strategy, o.urgency, o.created_at,
       o.updated_at, o.status, o.price, o.stop_price, o.broker_order_id, o.filled_quantity,
       o.average_price, o.fees, o.rejection_reason, o.sequence, o.attempt,
       f.id, f.broker_fill_id, f.quantity, f.price, f.fees, f.timestamp, f.venue, f.reconstructed
FROM broker_orders o
LEFT JOIN order_fills f ON f.broker_order_id = o.id
"""
_WHERE_ID = b"WHERE o.id = %s ORDER BY f.timestamp, f.id"
_WHERE_LATEST = b"""WHERE o.order_id = %s
  AND o.attempt = (SELECT MAX(attempt) FROM broker_orders WHERE order_id = %s)
ORDER BY f.timestamp, f.id"""
_WHERE_ORDER = b"WHERE o.order_id = %s ORDER BY o.attempt, f.timestamp, f.id"
# open_executions (migration 0013) lists the executions whose status is not final.
_WHERE_OPEN = b"""WHERE o.id IN (SELECT execution_id FROM open_executions) AND o.status = ANY(%s)
ORDER BY o.created_at, o.id, f.timestamp, f.id"""

# The page of keys first, from the narrow table; then its events, one primary-key lookup each.
# Joined before the LIMIT, a backlog of thousands made the planner hash-join the whole of
# execution_events (the audit trail: it only grows) on every sweep and every sample.
_SELECT_UNPUBLISHED = b"""
SELECT e.execution_id, e.sequence, e.subject, e.payload, e.created_at
FROM (
    SELECT execution_id, sequence, created_at FROM unpublished_events
    WHERE created_at <= %s
    ORDER BY created_at, execution_id, sequence
    LIMIT %s
) AS u
CROSS JOIN LATERAL (  -- LIMIT 1 (the key is unique) keeps it a lookup per key: never flattened
    SELECT * FROM execution_events x WHERE x.execution_id = u.execution_id AND x.sequence = u.sequence
    LIMIT 1
) AS e
ORDER BY u.created_at, u.execution_id, u.sequence
"""

_SELECT_OUTBOX_DEPTH = b"""
SELECT (SELECT count(*) FROM (SELECT 1 FROM unpublished_events LIMIT %s) AS page),
       (SELECT min(created_at) FROM unpublished_events)
"""

#: `unpublished_events` without a cutoff: every row is older than this.
_FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)

_SELECT_EVENTS = b"""
SELECT execution_id, sequence, subject, payload, created_at
FROM execution_events WHERE execution_id = %s ORDER BY sequence
"""

_SELECT_BROKERS = b"""
SELECT broker_id, name, status, supported_asset_classes::text, features::text,
       commission_structure::text, connection_params::text, rate_limits::text,
       latency_stats::text, last_connected_at
FROM broker_connections ORDER BY broker_id
"""


# (broker_id, since) twice. Both halves are range scans of (broker_id, at).
_SELECT_HISTORY = b"""
(SELECT id, broker_id, status, at, reason FROM broker_status_transitions
 WHERE broker_id = %s AND at < %s ORDER BY at DESC, id DESC LIMIT 1)
UNION ALL
(SELECT id, broker_id, status, at, reason FROM broker_status_transitions
 WHERE broker_id = %s AND at >= %s)
ORDER BY at, id
"""

_SELECT_MAINTENANCE = b"""
SELECT broker_id, maintenance_reason, maintenance_since FROM broker_connections
WHERE maintenance ORDER BY broker_id
"""

_ONE = Decimal(1)


def _dec(value: Decimal) -> Decimal:
    """The value without the column's trailing zeros (100.50000000 -> 100.5, 100.00000000 -> 100)."""
    normal = value.normalize()
    exponent = normal.as_tuple().exponent
    return normal.quantize(_ONE) if isinstance(exponent, int) and exponent > 0 else normal


def _opt_dec(value: Decimal | None) -> Decimal | None:
    return None if value is None else _dec(value)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def _opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _load_orders(conn: Conn, where: bytes, params: tuple[Any, ...]) -> list[BrokerOrder]:
    """Orders with their fills, from one statement (one snapshot): a row per fill."""
    orders: dict[str, tuple[Sequence[Any], list[OrderFill]]] = {}
    for row in conn.execute(_SELECT_ORDERS + where, params):
        entry = orders.get(row[0])
        if entry is None:
            entry = orders[row[0]] = (row, [])
        if row[24] is not None:
            entry[1].append(
                OrderFill(
                    id=row[24],
                    broker_fill_id=row[25],
                    quantity=_dec(row[26]),
                    price=_dec(row[27]),
                    fees=_dec(row[28]),
                    timestamp=_utc(row[29]),
                    venue=row[30],
                    reconstructed=row[31],
                )
            )
    return [_order(row, fills) for row, fills in orders.values()]


def _order(r: Sequence[Any], fills: Iterable[OrderFill]) -> BrokerOrder:
    return BrokerOrder(
        id=r[0],
        order_id=r[1],
        broker_id=r[2],
        client_order_id=r[3],
        account_id=r[4],
        symbol=r[5],
        side=Side(r[6]),
        order_type=OrderType(r[7]),
        quantity=_dec(r[8]),
        time_in_force=TimeInForce(r[9]),
        execution_strategy=ExecutionStrategy(r[10]),
        urgency=Urgency(r[11]),
        created_at=_utc(r[12]),
        updated_at=_utc(r[13]),
        status=BrokerOrderStatus(r[14]),
        price=_opt_dec(r[15]),
        stop_price=_opt_dec(r[16]),
        broker_order_id=r[17],
        filled_quantity=_dec(r[18]),
        average_price=_opt_dec(r[19]),
        fees=_dec(r[20]),
        rejection_reason=r[21],
        sequence=r[22],
        attempt=r[23],
        fills=tuple(fills),
    )


def _event(row: Sequence[Any]) -> OutboxEvent:
    return OutboxEvent(
        execution_id=row[0],
        sequence=row[1],
        subject=row[2],
        payload=bytes(row[3]),
        created_at=_utc(row[4]),
    )


def _broker(row: Sequence[Any]) -> BrokerRecord:
    return BrokerRecord(
        broker_id=row[0],
        name=row[1],
        status=row[2],
        supported_asset_classes=msgspec.json.decode(row[3], type=tuple[AssetClass, ...]),
        features=msgspec.json.decode(row[4], type=tuple[BrokerFeature, ...]),
        commission_structure=msgspec.json.decode(row[5], type=CommissionStructure),
        connection_params=msgspec.json.decode(row[6], type=dict[str, str]),
        rate_limits=msgspec.json.decode(row[7], type=dict[str, int]),
        latency_stats=msgspec.json.decode(row[8], type=LatencyStats),
        last_connected_at=_opt_utc(row[9]),
    )


def _status_change(row: Sequence[Any]) -> StatusChange:
    return StatusChange(broker_id=row[1], status=ConnectionStatus(row[2]), at=_utc(row[3]), reason=row[4])
