"""The store's writes of broker supervision (migration 0002): status history, the maintenance
flag, the runtime figures of `broker_connections`. Same conventions as `sql.ops`.

They run in phase 5: after `UpsertBrokers` (phase 0) of the same batch, so a broker registered
and reported on in one batch exists first; independent of the order path's writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

from api.contracts import LatencyStats
from api.enums import ConnectionStatus
from sql.batch_rows import raw_json, returned, rows_from
from sql.records import StatusChange
from sql.trio_pg import TrioConnection
from sql.writer import WriteOp

__all__ = ["PruneStatusHistory", "RecordStatus", "SetMaintenance", "UpdateBrokerRuntime"]

Conn = TrioConnection

# Rows of unknown brokers are skipped by the join (and reported by the op) instead of failing
# the batch on the foreign key. WITH ORDINALITY: ids follow the order of submission, which
# orders two changes of one broker at the same instant.
_INSERT_TRANSITIONS = (
    b"""
INSERT INTO broker_status_transitions (broker_id, status, at, reason)
SELECT x.broker_id, x.status, x.at, x.reason
FROM """
    + rows_from("broker_id text, status text, at timestamptz, reason text")
    + b"""
JOIN broker_connections b ON b.broker_id = x.broker_id
ORDER BY x.n
RETURNING broker_id
"""
)

# A repeated "on" keeps the start of the maintenance under way (and takes the new reason).
_SET_MAINTENANCE = b"""
UPDATE broker_connections
SET maintenance = %(on)s,
    maintenance_reason = CASE WHEN %(on)s THEN %(reason)s::text END,
    maintenance_since = CASE
        WHEN NOT %(on)s THEN NULL
        WHEN maintenance THEN maintenance_since
        ELSE %(at)s::timestamptz
    END,
    updated_at = now()
WHERE broker_id = %(broker_id)s
RETURNING broker_id
"""

_UPDATE_RUNTIME = (
    b"""
UPDATE broker_connections AS b
SET status = x.status, latency_stats = x.latency_stats,
    last_connected_at = COALESCE(x.last_connected_at, b.last_connected_at), updated_at = now()
FROM """
    + rows_from("broker_id text, status text, latency_stats jsonb, last_connected_at timestamptz")
    + b"""
WHERE b.broker_id = x.broker_id
RETURNING b.broker_id
"""
)

# Keeps each broker's last change before the cut-off: it is the status from the cut-off on. The
# keepers are found per broker by a backward index scan (few brokers), so the cost is linear in
# the rows deleted. (rowcount is not known yet in pipeline mode: the statement counts itself.)
_PRUNE = b"""
WITH keep AS (
    SELECT k.id
    FROM broker_connections AS b
    CROSS JOIN LATERAL (
        SELECT t.id FROM broker_status_transitions AS t
        WHERE t.broker_id = b.broker_id AND t.at < %(before)s
        ORDER BY t.at DESC, t.id DESC
        LIMIT 1
    ) AS k
), deleted AS (
    DELETE FROM broker_status_transitions
    WHERE at < %(before)s AND id NOT IN (SELECT id FROM keep)
    RETURNING 1
)
SELECT count(*) FROM deleted
"""


def _unknown(broker_id: str) -> LookupError:
    return LookupError(f"broker {broker_id} does not exist")


@dataclass(frozen=True, slots=True)
class RecordStatus(WriteOp[None]):
    """Appends a status change. A writer rerun (`WriteOp`) may append it twice: the same status
    at the same instant, which changes neither the status history's meaning nor uptime."""

    change: StatusChange
    phase: ClassVar[int] = 5

    def __post_init__(self) -> None:
        ConnectionStatus(self.change.status)  # ValueError if not one

    @classmethod
    async def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[None]:
        rows = [(c.broker_id, str(c.status), c.at, c.reason) for c in (op.change for op in ops)]
        known = await returned(conn.cursor(), _INSERT_TRANSITIONS, rows)
        for op in ops:
            if op.change.broker_id not in known:
                raise _unknown(op.change.broker_id)
        return [None] * len(ops)


@dataclass(frozen=True, slots=True)
class SetMaintenance(WriteOp[None]):
    broker_id: str
    on: bool
    reason: str | None
    at: datetime
    phase: ClassVar[int] = 5

    @classmethod
    async def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[None]:
        # One statement per op, in submission order (an executemany in pipeline mode): whether
        # a maintenance is under way depends on the ops before. Operator actions: few, rare.
        cur = conn.cursor()
        params = [{"broker_id": op.broker_id, "on": op.on, "reason": op.reason, "at": op.at} for op in ops]
        await cur.executemany(_SET_MAINTENANCE, params, returning=True)
        found = {row[0] async for result in cur.results() for row in await result.fetchall()}
        for op in ops:
            if op.broker_id not in found:
                raise _unknown(op.broker_id)
        return [None] * len(ops)


@dataclass(frozen=True, slots=True)
class UpdateBrokerRuntime(WriteOp[None]):
    broker_id: str
    status: ConnectionStatus
    latency_stats: LatencyStats
    last_connected_at: datetime | None  # None keeps the stored value
    phase: ClassVar[int] = 5

    def __post_init__(self) -> None:
        ConnectionStatus(self.status)  # ValueError if not one

    @classmethod
    async def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[None]:
        # Two updates of one broker in a batch: the later one is the state to keep, except that
        # a last_connected_at given by the earlier one survives a later None.
        rows: dict[str, tuple[Any, ...]] = {}
        for op in ops:
            earlier = rows.get(op.broker_id)
            connected = op.last_connected_at
            if connected is None and earlier is not None:
                connected = earlier[3]
            rows[op.broker_id] = (op.broker_id, str(op.status), raw_json(op.latency_stats), connected)
        found = await returned(conn.cursor(), _UPDATE_RUNTIME, sorted(rows.values(), key=lambda row: row[0]))
        for op in ops:
            if op.broker_id not in found:
                raise _unknown(op.broker_id)
        return [None] * len(ops)


@dataclass(frozen=True, slots=True)
class PruneStatusHistory(WriteOp[int]):
    before: datetime
    phase: ClassVar[int] = 6  # after the changes recorded in the same batch

    @classmethod
    async def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[int]:
        cur = conn.cursor()
        deleted = []
        for op in ops:
            row = await (await cur.execute(_PRUNE, {"before": op.before})).fetchone()
            assert row is not None
            deleted.append(int(row[0]))
        return deleted
