"""The store: every PostgreSQL access of the daemon.

Writes go through one `GroupWriter` (group commit): each write method returns once its rows are
committed, sharing the commit with whatever else arrived meanwhile. Reads run on a sync
`psycopg_pool.ConnectionPool` in worker threads, at most `pool_size` at a time.

Guarantees:
- `claim_order` is the idempotency gate: of any number of claims of one order id (same batch,
  other tasks, other processes), exactly one gets `claimed=True`; the others get the stored row.
- A claim or transition and the outbox event describing it commit in the same transaction.
- Decimals round-trip exactly (same value; trailing zeros of the DECIMAL(20, 8) columns are
  dropped on load). A decimal the columns cannot hold exactly is refused (`ValueError`), never
  rounded. JSONB is written with `api.codec` (exact decimals) and read back typed.
- Timestamps come back timezone-aware, in UTC.
- Cancellation of a write: not written if the writer had not taken it yet; otherwise committed
  or rolled back before `Cancelled` propagates (see `sql.writer`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Self, TypeVar

import msgspec
import psycopg
import trio
from psycopg_pool import ConnectionPool

from api.codec import encode
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
from api.validation import decimal_problem
from sql.records import BrokerRecord, ClaimResult, OrderClaim, OutboxEvent
from sql.writer import GroupWriter, WriteOp, WriterStats, configure_session, connection_kwargs

__all__ = ["Store", "broker_row_id"]

T = TypeVar("T")
Conn = psycopg.Connection[Any]

_BROKER_NAMESPACE = uuid.UUID("3b0f8e1c-5a7d-4e2b-9c41-7d2e6f9a1b30")
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


def broker_row_id(broker_id: str) -> str:
    """`broker_connections.id` of a broker: derived from its broker id, so every daemon agrees."""
    return str(uuid.uuid5(_BROKER_NAMESPACE, broker_id))


class Store:
    """Open with `async with Store.open(conninfo) as store:`. All methods are async."""

    def __init__(
        self, pool: ConnectionPool[Conn], writer: GroupWriter, pool_size: int, timeout: float
    ) -> None:
        self._pool = pool
        self._writer = writer
        self._limiter = trio.CapacityLimiter(pool_size)
        self._timeout = timeout

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
    ) -> AsyncIterator[Store]:
        """Start the writer task (in its own nursery) and the read pool; on exit, commit what
        is queued, then close both (shielded, each bounded by `timeout`)."""

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
                conninfo, max_batch=max_batch, timeout=timeout, statement_timeout=statement_timeout
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
        attempt and its first outbox event, in the same transaction."""
        (result,) = await self._writer.submit([_Claim(claim)])
        return result

    async def start_attempt(
        self, execution: BrokerOrder, asset_class: str, event: OutboxEvent | None = None
    ) -> int:
        """Insert a further attempt (failover) of an already claimed order, numbered after the
        last one, with its first outbox event; returns its attempt number."""
        (attempt,) = await self._writer.submit([_Attempt(execution, asset_class, event)])
        return attempt

    async def save_transition(
        self,
        order: BrokerOrder,
        fill: OrderFill | None,
        event: OutboxEvent | None,
        response: tuple[str, OrderRoutingResponse] | None = None,
    ) -> None:
        """Persist one state change of an execution, atomically: the row's mutable columns, the
        new fill (stored once: a repeat is ignored), the outbox event (ignored if that sequence
        exists), and optionally the order's routing response (only if none is stored yet).
        Raises LookupError if the execution row does not exist."""
        await self._writer.submit([_Transition(order, fill, event, response)])

    async def save_response(self, order_id: str, response: OrderRoutingResponse) -> bool:
        """Store the order's routing response unless one is stored; True if this call stored it."""
        (stored,) = await self._writer.submit([_Response(order_id, response)])
        return stored

    async def mark_published(self, keys: Sequence[tuple[str, int]], at: datetime) -> None:
        """Mark outbox events (execution_id, sequence) published at `at` (first time only)."""
        if keys:
            await self._writer.submit([_Published(tuple(keys), at)])

    async def upsert_brokers(self, records: Sequence[BrokerRecord]) -> None:
        """Insert or update brokers by broker_id: created_at and credentials are kept, the rest
        replaced (last_connected_at only when given)."""
        if records:
            await self._writer.submit([_Brokers(tuple(records))])

    # --- reads ----------------------------------------------------------------------------

    async def get_claim(self, order_id: str) -> ClaimResult | None:
        """The stored claim of `order_id` (`claimed` is False), or None."""

        def read(conn: Conn) -> ClaimResult | None:
            row = conn.execute(_SELECT_CLAIMS, ([order_id],)).fetchone()
            return None if row is None else _claim_result(row)

        return await self._read(read)

    async def load_execution(self, execution_id: str) -> BrokerOrder | None:
        orders = await self._read(lambda conn: _load_orders(conn, _WHERE_ID, (execution_id,)))
        return orders[0] if orders else None

    async def load_latest_execution(self, order_id: str) -> BrokerOrder | None:
        """The order's last attempt (highest attempt number), or None."""
        orders = await self._read(lambda conn: _load_orders(conn, _WHERE_LATEST, (order_id, order_id)))
        return orders[0] if orders else None

    async def load_open_executions(self) -> list[BrokerOrder]:
        """Every execution not in a final status, with its fills, oldest first."""
        return await self._read(lambda conn: _load_orders(conn, _WHERE_OPEN, (_OPEN_STATUSES,)))

    async def unpublished_events(self, limit: int) -> list[OutboxEvent]:
        """Up to `limit` outbox events not yet published, oldest first."""
        return await self._read(
            lambda conn: [_event(row) for row in conn.execute(_SELECT_UNPUBLISHED, (limit,))]
        )

    async def execution_events(self, execution_id: str) -> list[OutboxEvent]:
        """Every update published (or to publish) for one execution, by sequence."""
        return await self._read(
            lambda conn: [_event(row) for row in conn.execute(_SELECT_EVENTS, (execution_id,))]
        )

    async def list_broker_records(self) -> list[BrokerRecord]:
        return await self._read(lambda conn: [_broker(row) for row in conn.execute(_SELECT_BROKERS)])

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

    async def _read(self, fn: Callable[[Conn], T]) -> T:
        def run() -> T:
            with self._pool.connection(timeout=self._timeout) as conn:
                return fn(conn)

        return await trio.to_thread.run_sync(run, limiter=self._limiter)


# --- write ops ---------------------------------------------------------------------------------

# Batches are written with one statement per table: the rows travel as binary arrays (%b) and
# `unnest` turns them back into rows. Per-row statements (executemany) cost the server twice as
# much, and text arrays cost Python more than they save.

_INSERT_ROUTED = b"""
INSERT INTO routed_orders
    (order_id, routing_id, request_hash, request, response, arrival_price, received_at, responded_at)
SELECT o, r, h, q::jsonb, s::jsonb, a, t, u
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::numeric[],
            %b::timestamptz[], %b::timestamptz[]) WITH ORDINALITY AS x(o, r, h, q, s, a, t, u, n)
ORDER BY o, n
ON CONFLICT (order_id) DO NOTHING
RETURNING routing_id
"""

_EXECUTION_COLUMNS = b"""
    (id, order_id, broker_id, client_order_id, broker_order_id, account_id, symbol, asset_class,
     side, order_type, quantity, price, stop_price, time_in_force, status, filled_quantity,
     average_price, fees, rejection_reason, execution_strategy, urgency, sequence,
     created_at, updated_at, attempt)
"""

_INSERT_EXECUTIONS = (
    b"INSERT INTO broker_orders"
    + _EXECUTION_COLUMNS
    + b"""
SELECT *, 1
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],
            %b::text[], %b::text[], %b::text[], %b::numeric[], %b::numeric[], %b::numeric[],
            %b::text[], %b::text[], %b::numeric[], %b::numeric[], %b::numeric[], %b::text[],
            %b::text[], %b::text[], %b::int[], %b::timestamptz[], %b::timestamptz[])
"""
)

_INSERT_ATTEMPT = (
    b"INSERT INTO broker_orders"
    + _EXECUTION_COLUMNS
    + b"""
SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
       %s, %s, COALESCE(MAX(attempt), 0) + 1
FROM broker_orders WHERE order_id = %s
RETURNING attempt
"""
)

_INSERT_EVENTS = b"""
INSERT INTO execution_events (execution_id, sequence, subject, payload, msg_id, created_at)
SELECT * FROM unnest(%b::text[], %b::int[], %b::text[], %b::bytea[], %b::text[], %b::timestamptz[])
ON CONFLICT (execution_id, sequence) DO NOTHING
"""

_UPDATE_EXECUTIONS = b"""
UPDATE broker_orders AS o
SET status = x.status, broker_order_id = x.broker_order_id, filled_quantity = x.filled_quantity,
    average_price = x.average_price, fees = x.fees, rejection_reason = x.rejection_reason,
    sequence = x.sequence, updated_at = x.updated_at
FROM unnest(%b::text[], %b::text[], %b::text[], %b::numeric[], %b::numeric[], %b::numeric[],
            %b::text[], %b::int[], %b::timestamptz[])
     AS x(id, status, broker_order_id, filled_quantity, average_price, fees, rejection_reason,
          sequence, updated_at)
WHERE o.id = x.id
RETURNING o.id
"""

_INSERT_FILLS = b"""
INSERT INTO order_fills (id, broker_order_id, broker_fill_id, quantity, price, fees, timestamp, venue)
SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::numeric[], %b::numeric[], %b::numeric[],
                     %b::timestamptz[], %b::text[])
ON CONFLICT DO NOTHING
"""

_SET_RESPONSES = b"""
UPDATE routed_orders AS r SET response = x.response::jsonb, responded_at = x.responded_at
FROM unnest(%b::text[], %b::text[], %b::timestamptz[]) AS x(order_id, response, responded_at)
WHERE r.order_id = x.order_id AND r.response IS NULL
RETURNING r.order_id
"""

_MARK_PUBLISHED = b"""
UPDATE execution_events AS e SET published_at = x.at
FROM unnest(%b::text[], %b::int[], %b::timestamptz[]) AS x(execution_id, sequence, at)
WHERE e.execution_id = x.execution_id AND e.sequence = x.sequence AND e.published_at IS NULL
"""

_UPSERT_BROKER = b"""
INSERT INTO broker_connections
    (id, broker_id, name, status, supported_asset_classes, features, commission_structure,
     credentials, connection_params, rate_limits, latency_stats, created_at, updated_at,
     last_connected_at)
VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, '{}'::jsonb, %s::jsonb, %s::jsonb,
        %s::jsonb, now(), now(), %s)
ON CONFLICT (broker_id) DO UPDATE SET
    name = EXCLUDED.name,
    status = EXCLUDED.status,
    supported_asset_classes = EXCLUDED.supported_asset_classes,
    features = EXCLUDED.features,
    commission_structure = EXCLUDED.commission_structure,
    connection_params = EXCLUDED.connection_params,
    rate_limits = EXCLUDED.rate_limits,
    latency_stats = EXCLUDED.latency_stats,
    updated_at = EXCLUDED.updated_at,
    last_connected_at = COALESCE(EXCLUDED.last_connected_at, broker_connections.last_connected_at)
"""


def _json(value: Any) -> str:
    return encode(value).decode()


def _check_decimals(what: object, **values: Decimal | None) -> None:
    """Refuse a value DECIMAL(20, 8) cannot hold exactly; `what` is only repr'd on failure."""
    for name, value in values.items():
        if value is not None:
            problem = decimal_problem(value)
            if problem is not None:
                raise ValueError(f"{what!r}: {name} {value} {problem}")


def _check_execution(execution: BrokerOrder, asset_class: str | None) -> str:
    if asset_class is None:
        raise ValueError(f"{execution!r}: asset_class is required with an execution")
    AssetClass(asset_class)  # ValueError if not one
    _check_decimals(
        execution,
        quantity=execution.quantity,
        price=execution.price,
        stop_price=execution.stop_price,
        filled_quantity=execution.filled_quantity,
        average_price=execution.average_price,
        fees=execution.fees,
    )
    return asset_class


def _execution_values(o: BrokerOrder, asset_class: str) -> tuple[Any, ...]:
    """Every column but `attempt`, in the order of the INSERT statements."""
    return (
        o.id, o.order_id, o.broker_id, o.client_order_id, o.broker_order_id, o.account_id, o.symbol,
        asset_class, o.side.value, o.order_type.value, o.quantity, o.price, o.stop_price,
        o.time_in_force.value, o.status.value, o.filled_quantity, o.average_price, o.fees,
        o.rejection_reason, o.execution_strategy.value, o.urgency.value, o.sequence,
        o.created_at, o.updated_at,
    )  # fmt: skip


def _event_values(e: OutboxEvent) -> tuple[Any, ...]:
    return (e.execution_id, e.sequence, e.subject, e.payload, e.msg_id, e.created_at)


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows to one list per column: the parameters of an `unnest` statement."""
    return [list(column) for column in zip(*rows, strict=True)]


def _returned(cur: psycopg.Cursor[Any], statement: bytes, rows: Sequence[tuple[Any, ...]]) -> set[Any]:
    """Run a set-based statement; the first column of the rows it returned."""
    cur.execute(statement, _columns(rows))
    return {row[0] for row in cur.fetchall()}


def _write(cur: psycopg.Cursor[Any], statement: bytes, rows: Sequence[tuple[Any, ...]]) -> None:
    if rows:
        cur.execute(statement, _columns(rows))


def _last_per_key(rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """One row per key (the first column), the last one given: an UPDATE ... FROM joining
    two rows to one target would apply an arbitrary one of them."""
    return list({row[0]: row for row in rows}.values())


@dataclass(frozen=True, slots=True)
class _Brokers(WriteOp[None]):
    records: tuple[BrokerRecord, ...]
    phase: ClassVar[int] = 0  # before anything that references a broker

    def __post_init__(self) -> None:
        for record in self.records:
            ConnectionStatus(record.status)  # ValueError if not one

    @classmethod
    def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[None]:
        records = sorted((r for op in ops for r in op.records), key=lambda r: r.broker_id)
        conn.cursor().executemany(_UPSERT_BROKER, [_broker_values(r) for r in records])
        return [None] * len(ops)


def _broker_values(r: BrokerRecord) -> tuple[Any, ...]:
    return (
        broker_row_id(r.broker_id), r.broker_id, r.name, r.status, _json(r.supported_asset_classes),
        _json(r.features), _json(r.commission_structure), _json(r.connection_params),
        _json(r.rate_limits), _json(r.latency_stats), r.last_connected_at,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Claim(WriteOp[ClaimResult]):
    claim: OrderClaim
    phase: ClassVar[int] = 10

    def __post_init__(self) -> None:
        claim = self.claim
        if claim.request.order_id != claim.order_id:
            raise ValueError(f"{claim!r}: the request is for order {claim.request.order_id}")
        _check_decimals(claim, arrival_price=claim.arrival_price)
        if claim.execution is not None:
            if claim.execution.order_id != claim.order_id:
                raise ValueError(f"{claim!r}: the execution is for order {claim.execution.order_id}")
            _check_execution(claim.execution, claim.asset_class)
        execution_id = claim.execution.id if claim.execution is not None else None
        if claim.event is not None and claim.event.execution_id != execution_id:
            raise ValueError(f"{claim!r}: the event must belong to the claim's execution")

    @classmethod
    def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[ClaimResult]:
        # The statement inserts in order_id order (then batch order): two processes claiming
        # overlapping orders lock them in the same order and wait instead of deadlocking, and of
        # two claims of one order in this batch the first wins.
        cur = conn.cursor()
        inserted = _returned(cur, _INSERT_ROUTED, [_routed_values(op.claim) for op in ops])
        claimed = []
        for op in ops:
            won_it = op.claim.routing_id in inserted
            inserted.discard(op.claim.routing_id)  # a repeated routing id wins once
            claimed.append(won_it)
        won = [op.claim for op, won_it in zip(ops, claimed, strict=True) if won_it]
        _write(
            cur,
            _INSERT_EXECUTIONS,
            [_execution_values(c.execution, c.asset_class or "") for c in won if c.execution is not None],
        )
        _write(cur, _INSERT_EVENTS, [_event_values(c.event) for c in won if c.event is not None])
        stored: dict[str, ClaimResult] = {}
        lost = sorted({op.claim.order_id for op, c in zip(ops, claimed, strict=True) if not c})
        if lost:
            for row in cur.execute(_SELECT_CLAIMS, (lost,)):
                stored[row[0]] = _claim_result(row)
        results: list[ClaimResult] = []
        for op, won_it in zip(ops, claimed, strict=True):
            c = op.claim
            if won_it:
                execution_id = c.execution.id if c.execution is not None else None
                results.append(ClaimResult(True, c.request_hash, c.response, execution_id))
            else:
                results.append(stored[c.order_id])
        return results


def _routed_values(c: OrderClaim) -> tuple[Any, ...]:
    response = _json(c.response) if c.response is not None else None
    responded_at = c.response.timestamp if c.response is not None else None
    return (
        c.order_id, c.routing_id, c.request_hash, _json(c.request), response, c.arrival_price,
        c.received_at, responded_at,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Attempt(WriteOp[int]):
    execution: BrokerOrder
    asset_class: str
    event: OutboxEvent | None
    phase: ClassVar[int] = 15

    def __post_init__(self) -> None:
        _check_execution(self.execution, self.asset_class)
        if self.event is not None and self.event.execution_id != self.execution.id:
            raise ValueError(f"{self.event!r} does not belong to {self.execution!r}")

    @classmethod
    def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[int]:
        cur = conn.cursor()
        attempts: list[int] = []
        for op in ops:  # each number depends on the rows before it
            row = cur.execute(
                _INSERT_ATTEMPT, (*_execution_values(op.execution, op.asset_class), op.execution.order_id)
            ).fetchone()
            assert row is not None
            attempts.append(int(row[0]))
        _write(cur, _INSERT_EVENTS, [_event_values(op.event) for op in ops if op.event is not None])
        return attempts


@dataclass(frozen=True, slots=True)
class _Transition(WriteOp[None]):
    order: BrokerOrder
    fill: OrderFill | None
    event: OutboxEvent | None
    response: tuple[str, OrderRoutingResponse] | None
    phase: ClassVar[int] = 20

    def __post_init__(self) -> None:
        o = self.order
        _check_decimals(
            o, filled_quantity=o.filled_quantity, average_price=o.average_price, fees=o.fees
        )
        if self.fill is not None:
            f = self.fill
            _check_decimals(f, quantity=f.quantity, price=f.price, fees=f.fees)
        if self.event is not None and self.event.execution_id != o.id:
            raise ValueError(f"{self.event!r} does not belong to {o!r}")

    @classmethod
    def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[None]:
        cur = conn.cursor()
        # Two transitions of one execution in a batch: the later one is the state to keep.
        updates = _last_per_key(_update_values(op.order) for op in ops)
        found = _returned(cur, _UPDATE_EXECUTIONS, updates)
        for op in ops:
            if op.order.id not in found:
                raise LookupError(f"execution {op.order.id} does not exist")
        _write(cur, _INSERT_FILLS, [_fill_values(op.order.id, op.fill) for op in ops if op.fill is not None])
        _write(cur, _INSERT_EVENTS, [_event_values(op.event) for op in ops if op.event is not None])
        _set_responses(cur, [op.response for op in ops if op.response is not None])
        return [None] * len(ops)


def _update_values(o: BrokerOrder) -> tuple[Any, ...]:
    return (
        o.id, o.status.value, o.broker_order_id, o.filled_quantity, o.average_price, o.fees,
        o.rejection_reason, o.sequence, o.updated_at,
    )  # fmt: skip


def _set_responses(
    cur: psycopg.Cursor[Any], responses: Sequence[tuple[str, OrderRoutingResponse]]
) -> set[str]:
    """Store each order's response unless one is stored (of two for one order, the first wins);
    the order ids whose response this call stored."""
    if not responses:
        return set()
    rows = {order_id: (order_id, _json(r), r.timestamp) for order_id, r in reversed(responses)}
    return _returned(cur, _SET_RESPONSES, list(rows.values()))


def _fill_values(execution_id: str, f: OrderFill) -> tuple[Any, ...]:
    return (f.id, execution_id, f.broker_fill_id, f.quantity, f.price, f.fees, f.timestamp, f.venue)


@dataclass(frozen=True, slots=True)
class _Response(WriteOp[bool]):
    order_id: str
    response: OrderRoutingResponse
    phase: ClassVar[int] = 20

    @classmethod
    def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[bool]:
        stored = _set_responses(conn.cursor(), [(op.order_id, op.response) for op in ops])
        results = []
        for op in ops:
            results.append(op.order_id in stored)
            stored.discard(op.order_id)  # the first of two responses for one order won
        return results


@dataclass(frozen=True, slots=True)
class _Published(WriteOp[None]):
    keys: tuple[tuple[str, int], ...]
    at: datetime
    phase: ClassVar[int] = 30

    @classmethod
    def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[None]:
        rows = sorted((execution_id, sequence, op.at) for op in ops for execution_id, sequence in op.keys)
        _write(conn.cursor(), _MARK_PUBLISHED, rows)
        return [None] * len(ops)


# --- reads -------------------------------------------------------------------------------------

_SELECT_CLAIMS = b"""
SELECT r.order_id, r.request_hash, r.response::text,
       (SELECT b.id FROM broker_orders b WHERE b.order_id = r.order_id ORDER BY b.attempt DESC LIMIT 1)
FROM routed_orders r
WHERE r.order_id = ANY(%s)
"""

_SELECT_ORDERS = b"""
SELECT o.id, o.order_id, o.broker_id, o.client_order_id, o.account_id, o.symbol, o.side,
       o.order_type, o.quantity, o.time_in_force, o.execution_strategy, o.urgency, o.created_at,
       o.updated_at, o.status, o.price, o.stop_price, o.broker_order_id, o.filled_quantity,
       o.average_price, o.fees, o.rejection_reason, o.sequence,
       f.id, f.broker_fill_id, f.quantity, f.price, f.fees, f.timestamp, f.venue
FROM broker_orders o
LEFT JOIN order_fills f ON f.broker_order_id = o.id
"""
_WHERE_ID = b"WHERE o.id = %s ORDER BY f.timestamp, f.id"
_WHERE_LATEST = b"""WHERE o.order_id = %s
  AND o.attempt = (SELECT MAX(attempt) FROM broker_orders WHERE order_id = %s)
ORDER BY f.timestamp, f.id"""
_WHERE_OPEN = b"WHERE o.status = ANY(%s) ORDER BY o.created_at, o.id, f.timestamp, f.id"

_SELECT_UNPUBLISHED = b"""
SELECT execution_id, sequence, subject, payload, msg_id, created_at
FROM execution_events
WHERE published_at IS NULL
ORDER BY created_at, execution_id, sequence
LIMIT %s
"""

_SELECT_EVENTS = b"""
SELECT execution_id, sequence, subject, payload, msg_id, created_at
FROM execution_events WHERE execution_id = %s ORDER BY sequence
"""

_SELECT_BROKERS = b"""
SELECT broker_id, name, status, supported_asset_classes::text, features::text,
       commission_structure::text, connection_params::text, rate_limits::text,
       latency_stats::text, last_connected_at
FROM broker_connections ORDER BY broker_id
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
        if row[23] is not None:
            entry[1].append(
                OrderFill(
                    id=row[23],
                    broker_fill_id=row[24],
                    quantity=_dec(row[25]),
                    price=_dec(row[26]),
                    fees=_dec(row[27]),
                    timestamp=_utc(row[28]),
                    venue=row[29],
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
        fills=tuple(fills),
    )


def _claim_result(row: Sequence[Any]) -> ClaimResult:
    response = None if row[2] is None else msgspec.json.decode(row[2], type=OrderRoutingResponse)
    return ClaimResult(claimed=False, request_hash=row[1], response=response, execution_id=row[3])


def _event(row: Sequence[Any]) -> OutboxEvent:
    return OutboxEvent(
        execution_id=row[0],
        sequence=row[1],
        subject=row[2],
        payload=bytes(row[3]),
        msg_id=row[4],
        created_at=_utc(row[5]),
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
