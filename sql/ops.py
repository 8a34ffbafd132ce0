"""The store's writes of the order path: one `WriteOp` class per kind of write, with its SQL.

Each op checks its input when built (a write the columns cannot hold exactly is refused with
`ValueError` before it reaches the writer), and its class's `run_batch` writes every op of a
batch with one statement per table (`sql.batch_rows`). `sql.status` holds the broker
supervision writes, `sql.reports` the execution reports'.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Self

import msgspec
import psycopg

from api.contracts import OrderRoutingResponse
from api.enums import AssetClass, ConnectionStatus
from api.orders import BrokerOrder, OrderFill
from api.validation import decimal_problem
from sql.batch_rows import last_per_key, params, returned, rows_from, statement, to_json, write
from sql.records import BrokerRecord, ClaimResult, ClaimTakenOver, DuplicateAttempt, OrderClaim, OutboxEvent
from sql.roundtrip import Rows, Statement
from sql.trio_pg import TrioConnection
from sql.writer import WriteOp

__all__ = [
    "SELECT_CLAIMS",
    "Claim",
    "MarkPublished",
    "SaveResponse",
    "SaveTransition",
    "StartAttempt",
    "UpsertBrokers",
    "broker_row_id",
    "claim_result",
]

Conn = TrioConnection

_BROKER_NAMESPACE = uuid.UUID("3b0f8e1c-5a7d-4e2b-9c41-7d2e6f9a1b30")
#: Key of the transaction advisory lock that serialises broker upserts (`UpsertBrokers`); the
#: migrations' lock is 0x0B15_0001 (sql/migrate.py).
_UPSERT_BROKERS_LOCK = 0x0B15_0002
#: broker_orders.attempt is a SMALLINT.
_MAX_ATTEMPT = 32767


def broker_row_id(broker_id: str) -> str:
    """`broker_connections.id` of a broker: derived from its broker id, so every daemon agrees."""
    return str(uuid.uuid5(_BROKER_NAMESPACE, broker_id))


# --- SQL ---------------------------------------------------------------------------------------


_INSERT_ROUTED = (
    b"""
INSERT INTO routed_orders
    (order_id, routing_id, request_hash, request, response, arrival_price, received_at, responded_at,
     routing_decision, chosen_broker, owner)
SELECT o, r, h, q, s, a, t, u, d, c, w
FROM """
    + rows_from(
        "o text, r text, h text, q json, s json, a numeric, t timestamptz, u timestamptz, "
        "d json, c text, w text"
    )
    + b"""
ORDER BY o, n
ON CONFLICT (order_id) DO NOTHING
RETURNING routing_id
"""
)

_EXECUTION_SPEC = (
    "id text, order_id text, broker_id text, client_order_id text, broker_order_id text, "
    "account_id text, symbol text, asset_class text, side text, order_type text, "
    "quantity numeric, price numeric, stop_price numeric, time_in_force text, status text, "
    "filled_quantity numeric, average_price numeric, fees numeric, rejection_reason text, "
    "execution_strategy text, urgency text, sequence int, created_at timestamptz, "
    "updated_at timestamptz, attempt int"
)
_EXECUTION_COLUMNS = rows_from(_EXECUTION_SPEC)

_INSERT_EXECUTIONS = (
    b"""
INSERT INTO broker_orders
    (id, order_id, broker_id, client_order_id, broker_order_id, account_id, symbol, asset_class,
     side, order_type, quantity, price, stop_price, time_in_force, status, filled_quantity,
     average_price, fees, rejection_reason, execution_strategy, urgency, sequence,
     created_at, updated_at, attempt)
SELECT id, order_id, broker_id, client_order_id, broker_order_id, account_id, symbol, asset_class,
     side, order_type, quantity, price, stop_price, time_in_force, status, filled_quantity,
     average_price, fees, rejection_reason, execution_strategy, urgency, sequence,
     created_at, updated_at, attempt
FROM """
    + _EXECUTION_COLUMNS
    + b"\n"
)

# A claim's execution: written only if the claim's routing row is there (this transaction's or,
# when a batch whose COMMIT went through is run again, an earlier one's) and the execution is not.
# The lookups are scalar subqueries, not EXISTS: the planner may turn a semi-join over the ~100
# rows it expects from `rows_from` into a hash join reading the whole table; a subquery per row
# is an index lookup whatever the estimate.
_INSERT_CLAIMED_EXECUTIONS = (
    _INSERT_EXECUTIONS.replace(_EXECUTION_COLUMNS, rows_from(_EXECUTION_SPEC + ", routing_id text"))
    + b"""WHERE (SELECT r.routing_id FROM routed_orders r WHERE r.order_id = x.order_id) = x.routing_id
  AND (SELECT true FROM broker_orders b WHERE b.id = x.id) IS NULL
"""
)

# A further attempt: any unique key already taken (the order's attempt number, the execution id,
# the client order id) skips the row instead of failing the batch; the op then says which.
_INSERT_ATTEMPTS = (
    _INSERT_EXECUTIONS
    + b"""ON CONFLICT DO NOTHING
RETURNING id
"""
)

_SELECT_CLAIMED = b"SELECT order_id, owner, response IS NOT NULL FROM routed_orders WHERE order_id = ANY(%s)"

_SELECT_IN_THE_WAY = b"""
SELECT id, order_id, attempt, client_order_id FROM broker_orders
WHERE id = %s OR (order_id = %s AND attempt = %s) OR client_order_id = %s
ORDER BY id
"""

_SELECT_SAME_ATTEMPT = b"""
SELECT id FROM broker_orders
WHERE id = %s AND order_id = %s AND attempt = %s AND broker_id = %s AND client_order_id = %s
"""

# An event is also still to publish (unpublished_events, migration 0015), in the same statement.
_INSERT_EVENTS = (
    b"""
WITH inserted AS (
INSERT INTO execution_events (execution_id, sequence, subject, payload, created_at)
SELECT e, s, j, p, c FROM """
    + rows_from("e text, s int, j text, p bytea, c timestamptz")
    + b"""
ON CONFLICT (execution_id, sequence) DO NOTHING
RETURNING execution_id, sequence, created_at
)
INSERT INTO unpublished_events (execution_id, sequence, created_at) SELECT * FROM inserted
"""
)

# A claim's first event: only once its execution is written (not for a claim that lost).
_INSERT_CLAIMED_EVENTS = _INSERT_EVENTS.replace(
    b"ON CONFLICT", b"WHERE (SELECT true FROM broker_orders b WHERE b.id = x.e)\nON CONFLICT"
)

# The executions not found fail the transaction (`bis_missing`, migration 0014: LookupError).
_UPDATE_EXECUTIONS = (
    b"""
WITH updated AS (
UPDATE broker_orders AS o
SET status = x.status, broker_order_id = x.broker_order_id, filled_quantity = x.filled_quantity,
    average_price = x.average_price, fees = x.fees, rejection_reason = x.rejection_reason,
    sequence = x.sequence, updated_at = x.updated_at
FROM """
    + rows_from(
        "id text, status text, broker_order_id text, filled_quantity numeric, "
        "average_price numeric, fees numeric, rejection_reason text, sequence int, "
        "updated_at timestamptz"
    )
    + b"""
WHERE o.id = x.id AND o.id = ANY(%b::text[])
RETURNING o.id
)
SELECT bis_missing('execution', ARRAY(SELECT unnest(%b::text[]) EXCEPT SELECT id FROM updated))
"""
)

_INSERT_FILLS = (
    b"""
INSERT INTO order_fills (id, broker_order_id, broker_fill_id, quantity, price, fees, timestamp, venue,
                         reconstructed)
SELECT i, e, b, q, p, f, t, v, r FROM """
    + rows_from("i text, e text, b text, q numeric, p numeric, f numeric, t timestamptz, v text, r boolean")
    + b"""
ON CONFLICT DO NOTHING
"""
)

# An answered claim leaves open_claims in the same statement (migration 0009).
_SET_RESPONSES = (
    b"""
WITH answered AS (
    UPDATE routed_orders AS r SET response = x.response, responded_at = x.responded_at
    FROM """
    + rows_from("order_id text, response json, responded_at timestamptz")
    + b"""
    WHERE r.order_id = x.order_id AND r.order_id = ANY(%b::text[]) AND r.response IS NULL
    RETURNING r.order_id
), closed AS (  -- by key (the writer's sessions never scan: sql/writer.py)
    DELETE FROM open_claims WHERE order_id = ANY(ARRAY(SELECT order_id FROM answered))
)
SELECT order_id FROM answered
"""
)

# Only for a claim whose routing row is there, still unanswered (see _INSERT_CLAIMED_EXECUTIONS).
_INSERT_OPEN_CLAIMS = (
    b"""
INSERT INTO open_claims (order_id, received_at)
SELECT o, t FROM """
    + rows_from("o text, t timestamptz, r text")
    + b"""
WHERE (SELECT ro.routing_id FROM routed_orders ro WHERE ro.order_id = x.o AND ro.response IS NULL) = x.r
ON CONFLICT DO NOTHING
"""
)

# Published: no longer waiting (the event itself is never changed).
_MARK_PUBLISHED = (
    b"""
DELETE FROM unpublished_events AS u
USING """
    + rows_from("execution_id text, sequence int")
    + b"""
WHERE u.execution_id = x.execution_id AND u.sequence = x.sequence AND u.execution_id = ANY(%b::text[])
"""
)

# Leaves the maintenance columns (0002) alone: only set_maintenance changes them.
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

#: The stored claims of some order ids (also read by `Store.get_claim`).
SELECT_CLAIMS = b"""
SELECT r.order_id, r.request_hash, r.response::text,
       (SELECT b.id FROM broker_orders b WHERE b.order_id = r.order_id ORDER BY b.attempt DESC LIMIT 1),
       r.routing_id
FROM routed_orders r
WHERE r.order_id = ANY(%s::text[])
"""


def claim_result(row: Sequence[Any]) -> ClaimResult:
    """A row of `SELECT_CLAIMS`."""
    response = None if row[2] is None else msgspec.json.decode(row[2], type=OrderRoutingResponse)
    return ClaimResult(
        claimed=False, request_hash=row[1], response=response, execution_id=row[3], routing_id=row[4]
    )


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
    if not 1 <= execution.attempt <= _MAX_ATTEMPT:
        raise ValueError(f"{execution!r}: attempt {execution.attempt} is not in 1..{_MAX_ATTEMPT}")
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
    """Every column, in the order of `_INSERT_EXECUTIONS` (`attempt` last)."""
    return (
        o.id, o.order_id, o.broker_id, o.client_order_id, o.broker_order_id, o.account_id, o.symbol,
        asset_class, o.side.value, o.order_type.value, o.quantity, o.price, o.stop_price,
        o.time_in_force.value, o.status.value, o.filled_quantity, o.average_price, o.fees,
        o.rejection_reason, o.execution_strategy.value, o.urgency.value, o.sequence,
        o.created_at, o.updated_at, o.attempt,
    )  # fmt: skip


def _event_values(e: OutboxEvent) -> tuple[Any, ...]:
    return (e.execution_id, e.sequence, e.subject, e.payload, e.created_at)


# --- ops ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpsertBrokers(WriteOp[None]):
    records: tuple[BrokerRecord, ...]
    phase: ClassVar[int] = 0  # before anything that references a broker

    def __post_init__(self) -> None:
        for record in self.records:
            ConnectionStatus(record.status)  # ValueError if not one

    @classmethod
    async def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[None]:
        # One upsert of brokers at a time across daemons (a lock held until the commit): two of
        # them inserting the same new broker at once both pass ON CONFLICT's check on broker_id,
        # and the second then fails on the primary key (derived from broker_id) instead of
        # updating. Waiting, it finds the first one's row and updates it.
        await conn.execute(b"SELECT pg_advisory_xact_lock(%s)", (_UPSERT_BROKERS_LOCK,))
        records = sorted((r for op in ops for r in op.records), key=lambda r: r.broker_id)
        await conn.cursor().executemany(_UPSERT_BROKER, [_broker_values(r) for r in records])
        return [None] * len(ops)


def _broker_values(r: BrokerRecord) -> tuple[Any, ...]:
    return (
        broker_row_id(r.broker_id), r.broker_id, r.name, r.status, to_json(r.supported_asset_classes),
        to_json(r.features), to_json(r.commission_structure), to_json(r.connection_params),
        to_json(r.rate_limits), to_json(r.latency_stats), r.last_connected_at,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Claim(WriteOp[ClaimResult]):
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
    def statements(cls, ops: Sequence[Self]) -> Sequence[Statement]:
        # The routing rows go in order_id order (then batch order): two processes claiming
        # overlapping orders lock them in the same order and wait instead of deadlocking, and of
        # two claims of one order in this batch the first wins. What a claim brings along (its
        # open claim, execution and first event) is written only if its routing row is there:
        # a claim that lost writes nothing more.
        claims = [op.claim for op in ops]
        once = list({c.routing_id: c for c in reversed(claims)}.values())[::-1]  # a repeat brings nothing
        return [
            *statement(_INSERT_ROUTED, [_routed_values(c) for c in claims], returns=True),
            *statement(
                _INSERT_OPEN_CLAIMS,
                [(c.order_id, c.received_at, c.routing_id) for c in once if c.response is None],
            ),
            *statement(
                _INSERT_CLAIMED_EXECUTIONS,
                [
                    (*_execution_values(c.execution, c.asset_class or ""), c.routing_id)
                    for c in once
                    if c.execution is not None
                ],
            ),
            *statement(_INSERT_CLAIMED_EVENTS, [_event_values(c.event) for c in once if c.event is not None]),
        ]

    @classmethod
    async def finish(cls, conn: Conn, ops: Sequence[Self], rows: Sequence[Rows]) -> Sequence[ClaimResult]:
        inserted = {row[0] for row in rows[0]}  # claims whose routing rows this transaction wrote
        stored: dict[str, ClaimResult] = {}

        async def read(order_ids: list[str]) -> list[Any]:
            cur = await conn.execute(SELECT_CLAIMS, (order_ids,))
            found = await cur.fetchall()
            stored.update((row[0], claim_result(row)) for row in found)
            return found

        missing = sorted({op.claim.order_id for op in ops if op.claim.routing_id not in inserted})
        if missing:  # lost to an earlier claim, or a rerun after a COMMIT that went through
            ours = {op.claim.routing_id for op in ops}
            inserted.update(row[4] for row in await read(missing) if row[4] in ours)
        won = []
        for op in ops:
            won.append(op.claim.routing_id in inserted)
            inserted.discard(op.claim.routing_id)  # a repeated routing id wins once
        lost = sorted({op.claim.order_id for op, w in zip(ops, won, strict=True) if not w} - stored.keys())
        if lost:  # the repeats of a claim that won in this batch
            await read(lost)
        results: list[ClaimResult] = []
        for op, won_it in zip(ops, won, strict=True):
            c = op.claim
            if won_it:
                execution_id = c.execution.id if c.execution is not None else None
                results.append(ClaimResult(True, c.request_hash, c.response, execution_id, c.routing_id))
            else:
                results.append(stored[c.order_id])
        return results


def _routed_values(c: OrderClaim) -> tuple[Any, ...]:
    response = to_json(c.response) if c.response is not None else None
    responded_at = c.response.timestamp if c.response is not None else None
    return (
        c.order_id, c.routing_id, c.request_hash, to_json(c.request), response, c.arrival_price,
        c.received_at, responded_at, c.decision, c.chosen_broker, c.owner,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class StartAttempt(WriteOp[None]):
    """A further attempt of a claimed order, numbered by the caller (`execution.attempt`)."""

    execution: BrokerOrder
    asset_class: str
    event: OutboxEvent | None
    #: The daemon starting it: refused (`ClaimTakenOver`) unless it still owns the unanswered
    #: claim, so a daemon that lost its lease never sends an order another daemon answered.
    owner: str | None = None
    phase: ClassVar[int] = 15

    def __post_init__(self) -> None:
        _check_execution(self.execution, self.asset_class)
        if self.event is not None and self.event.execution_id != self.execution.id:
            raise ValueError(f"{self.event!r} does not belong to {self.execution!r}")

    @classmethod
    async def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[None]:
        cur = conn.cursor()
        order_ids = sorted({op.execution.order_id for op in ops})
        claimed = {
            row[0]: (row[1], row[2])
            for row in await (await cur.execute(_SELECT_CLAIMED, (order_ids,))).fetchall()
        }
        for op in ops:  # checked first: the foreign key would fail the statement, unexplained
            order_id = op.execution.order_id
            if order_id not in claimed:
                raise LookupError(f"order {order_id} was never claimed")
            owner, answered = claimed[order_id]
            if op.owner is not None and (owner != op.owner or answered):
                raise ClaimTakenOver(order_id, owner, answered)
        inserted = await returned(
            cur, _INSERT_ATTEMPTS, [_execution_values(op.execution, op.asset_class) for op in ops]
        )
        for op in ops:
            if op.execution.id not in inserted:
                problem = await _in_the_way(cur, op.execution)
                if not problem.existing == op.execution.id == await _ours(cur, op.execution):
                    raise problem
                # else: a rerun after a broken COMMIT that went through; the row is this one
            inserted.discard(op.execution.id)  # the same execution twice in a batch: once
        await write(cur, _INSERT_EVENTS, [_event_values(op.event) for op in ops if op.event is not None])
        return [None] * len(ops)


async def _ours(cur: psycopg.AsyncCursor[Any], o: BrokerOrder) -> str | None:
    """`o.id` if the stored row with that id is this very attempt (same order, attempt number,
    broker and client order id), else None."""
    row = await cur.execute(
        _SELECT_SAME_ATTEMPT, (o.id, o.order_id, o.attempt, o.broker_id, o.client_order_id)
    )
    found = await row.fetchone()
    return None if found is None else str(found[0])


async def _in_the_way(cur: psycopg.AsyncCursor[Any], o: BrokerOrder) -> DuplicateAttempt:
    """Why `o` was not inserted (rows inserted earlier in this transaction included)."""
    rows = await (
        await cur.execute(_SELECT_IN_THE_WAY, (o.id, o.order_id, o.attempt, o.client_order_id))
    ).fetchall()

    def refused(existing: str, message: str) -> DuplicateAttempt:
        return DuplicateAttempt(message, order_id=o.order_id, attempt=o.attempt, existing=existing)

    for existing, order_id, attempt, _ in rows:
        if order_id == o.order_id and attempt == o.attempt:
            return refused(
                existing, f"order {o.order_id} already has attempt {attempt} (execution {existing})"
            )
    for existing, order_id, attempt, _ in rows:
        if existing == o.id:
            return refused(
                existing, f"execution {o.id} already exists (attempt {attempt} of order {order_id})"
            )
    for existing, _, _, client_order_id in rows:
        if client_order_id == o.client_order_id:
            return refused(
                existing, f"client order id {client_order_id} is already used by execution {existing}"
            )
    return refused("", f"attempt {o.attempt} of order {o.order_id} was not inserted")  # the row went away


@dataclass(frozen=True, slots=True)
class SaveTransition(WriteOp[None]):
    """One state change of an execution: the row's mutable columns, the new fill (stored once:
    a repeat is ignored), the outbox event (ignored if that sequence exists). LookupError if the
    execution row does not exist. The routing answer goes with it as a `SaveResponse`."""

    order: BrokerOrder
    fill: OrderFill | None
    event: OutboxEvent | None
    phase: ClassVar[int] = 20

    def __post_init__(self) -> None:
        o = self.order
        _check_decimals(o, filled_quantity=o.filled_quantity, average_price=o.average_price, fees=o.fees)
        if self.fill is not None:
            f = self.fill
            _check_decimals(f, quantity=f.quantity, price=f.price, fees=f.fees)
        if self.event is not None and self.event.execution_id != o.id:
            raise ValueError(f"{self.event!r} does not belong to {o!r}")

    @classmethod
    def statements(cls, ops: Sequence[Self]) -> Sequence[Statement]:
        # Two transitions of one execution in a batch: the later one is the state to keep.
        updates = last_per_key(_update_values(op.order) for op in ops)
        keys = [row[0] for row in updates]
        return [
            Statement(_UPDATE_EXECUTIONS, (*params(updates, keyed=True), keys)),
            *statement(
                _INSERT_FILLS, [_fill_values(op.order.id, op.fill) for op in ops if op.fill is not None]
            ),
            *statement(_INSERT_EVENTS, [_event_values(op.event) for op in ops if op.event is not None]),
        ]

    @classmethod
    async def finish(cls, conn: Conn, ops: Sequence[Self], rows: Sequence[Rows]) -> Sequence[None]:
        return [None] * len(ops)


def _update_values(o: BrokerOrder) -> tuple[Any, ...]:
    return (
        o.id, o.status.value, o.broker_order_id, o.filled_quantity, o.average_price, o.fees,
        o.rejection_reason, o.sequence, o.updated_at,
    )  # fmt: skip


def _fill_values(execution_id: str, f: OrderFill) -> tuple[Any, ...]:
    return (
        f.id, execution_id, f.broker_fill_id, f.quantity, f.price, f.fees, f.timestamp, f.venue,
        f.reconstructed,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class SaveResponse(WriteOp[bool]):
    order_id: str
    response: OrderRoutingResponse
    phase: ClassVar[int] = 20

    @classmethod
    def statements(cls, ops: Sequence[Self]) -> Sequence[Statement]:
        # Stored unless one is stored already; of two for one order in the batch, the first.
        rows = {
            op.order_id: (op.order_id, to_json(op.response), op.response.timestamp) for op in reversed(ops)
        }
        return statement(_SET_RESPONSES, list(rows.values()), keyed=True, returns=True)

    @classmethod
    async def finish(cls, conn: Conn, ops: Sequence[Self], rows: Sequence[Rows]) -> Sequence[bool]:
        stored = {row[0] for row in rows[0]}
        results = []
        for op in ops:
            results.append(op.order_id in stored)
            stored.discard(op.order_id)  # the first of two responses for one order won
        return results


@dataclass(frozen=True, slots=True)
class MarkPublished(WriteOp[None]):
    """The stream acknowledged these events (execution id, sequence): they leave
    unpublished_events. Events already gone are ignored."""

    keys: tuple[tuple[str, int], ...]
    phase: ClassVar[int] = 30

    @classmethod
    def statements(cls, ops: Sequence[Self]) -> Sequence[Statement]:
        rows = sorted({key for op in ops for key in op.keys})
        return statement(_MARK_PUBLISHED, rows, keyed=True)

    @classmethod
    async def finish(cls, conn: Conn, ops: Sequence[Self], rows: Sequence[Rows]) -> Sequence[None]:
        return [None] * len(ops)
