"""Daemon leases and the orders whose daemon is gone (migration 0008).

A daemon registers itself (`RegisterDaemon`), renews its lease every few seconds
(`RenewLease`) and ends it on a clean stop (`EndLease`). Registering also ends the leases of
the daemons that ran before it on the same seat (host and state directory): the state
directory's lock (`daemon.statelock`) proves they are dead, so their orders need not wait for
their leases to lapse.

`TakeOrphans` gives the calling daemon the orders nobody is answering: claims without a
response, and claims whose latest attempt is still PENDING, owned by a daemon whose lease has
lapsed (or by no daemon: rows from before leases), plus the caller's own unanswered claims
older than `own_after_s` (the caller decides which of those no task of its own is routing). A lease ended
by a clean stop or a successor counts as lapsed at once.
Rows another transaction is taking are skipped (SKIP LOCKED): two survivors never take one
order. Every timestamp is the database's clock, so daemons on hosts with skewed clocks agree.

All ops are idempotent, as `sql.writer.WriteOp` requires: a rerun registers the same row,
renews the same lease, and takes nothing new (the caller's own claims come back through the
own-claims clause).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Self

from sql.trio_pg import TrioConnection
from sql.writer import WriteOp

Conn = TrioConnection


@dataclass(frozen=True, slots=True)
class DaemonSeat:
    """Who a daemon is: `id` is new for every process run."""

    id: str
    instance_id: str
    host: str
    pid: int
    state_dir: str


_REGISTER = b"""
INSERT INTO daemons (id, instance_id, host, pid, state_dir, started_at, seen_at)
VALUES (%s, %s, %s, %s, %s, now(), now())
ON CONFLICT (id) DO UPDATE SET seen_at = now(), stopped_at = NULL
"""

_END_PREDECESSORS = b"""
UPDATE daemons SET stopped_at = coalesce(stopped_at, now()), seen_at = '-infinity'
WHERE host = %s AND state_dir = %s AND id <> %s AND seen_at > '-infinity'
RETURNING id
"""

_RENEW = b"""
UPDATE daemons SET seen_at = now() WHERE id = %s AND stopped_at IS NULL RETURNING seen_at
"""

_END = b"""
UPDATE daemons SET stopped_at = now(), seen_at = '-infinity' WHERE id = %s
"""

_PRUNE = b"""
DELETE FROM daemons d
WHERE d.seen_at < now() - make_interval(days => %s)
  AND NOT EXISTS (SELECT 1 FROM open_claims c JOIN routed_orders r USING (order_id) WHERE r.owner = d.id)
"""

# Candidates come from two small sets: unanswered claims (open_claims, migration 0009) and
# PENDING attempts (among open_executions, migration 0013). Only then is the owner's lease looked at.
_TAKE = b"""
WITH candidates AS (
    SELECT c.order_id FROM open_claims c
    UNION
    SELECT b.order_id FROM open_executions e JOIN broker_orders b ON b.id = e.execution_id
    WHERE b.status = 'PENDING'
),
orphans AS (
    SELECT r.order_id
    FROM routed_orders r
    JOIN candidates c ON c.order_id = r.order_id
    LEFT JOIN daemons d ON d.id = r.owner
    WHERE (%(only)s::text[] IS NULL OR r.order_id = ANY(%(only)s::text[]))
    AND ((
        r.owner = %(me)s
        AND r.response IS NULL
        AND r.received_at < now() - make_interval(secs => %(own_after_s)s)
    ) OR (
        r.owner IS DISTINCT FROM %(me)s
        AND (
            d.id IS NULL
            OR d.stopped_at IS NOT NULL
            OR (%(judge)s AND d.seen_at < now() - make_interval(secs => %(lease_s)s))
        )
    ))
    ORDER BY r.received_at
    LIMIT %(limit)s
    FOR UPDATE OF r SKIP LOCKED
)
UPDATE routed_orders r SET owner = %(me)s
FROM orphans o
WHERE r.order_id = o.order_id
RETURNING r.order_id, r.received_at
"""


@dataclass(frozen=True, slots=True)
class RegisterDaemon(WriteOp[list[str]]):
    """Insert (or revive) the daemon's row; end its seat's predecessors. Returns their ids."""

    seat: DaemonSeat
    phase: ClassVar[int] = 0

    @classmethod
    async def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[list[str]]:
        results = []
        for op in ops:
            s = op.seat
            await conn.execute(_REGISTER, (s.id, s.instance_id, s.host, s.pid, s.state_dir))
            ended = await (await conn.execute(_END_PREDECESSORS, (s.host, s.state_dir, s.id))).fetchall()
            results.append([row[0] for row in ended])
        return results


@dataclass(frozen=True, slots=True)
class RenewLease(WriteOp[datetime | None]):
    """Renew the lease; None when it was ended (the daemon must register again)."""

    daemon_id: str
    phase: ClassVar[int] = 0

    @classmethod
    async def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[datetime | None]:
        results = []
        for op in ops:
            row = await (await conn.execute(_RENEW, (op.daemon_id,))).fetchone()
            results.append(None if row is None else row[0])
        return results


@dataclass(frozen=True, slots=True)
class EndLease(WriteOp[None]):
    """A clean stop: the lease ends now, so what the daemon leaves is taken over at once."""

    daemon_id: str
    prune_after_days: int = 7
    phase: ClassVar[int] = 0

    @classmethod
    async def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[None]:
        for op in ops:
            await conn.execute(_END, (op.daemon_id,))
            await conn.execute(_PRUNE, (op.prune_after_days,))
        return [None] * len(ops)


@dataclass(frozen=True, slots=True)
class TakeOrphans(WriteOp[list[tuple[str, datetime]]]):
    """Take (set the owner of) up to `limit` orders nobody answers, of `only` if given; returns
    (order id, received at) of each, oldest first. Owners whose lease ended (a clean stop, a
    successor on their seat) or who have no row are always taken from; owners whose lease is
    older than `lease_s` only when `judge` (the caller renewed its own lease long enough to
    judge anyone else's)."""

    daemon_id: str
    lease_s: float
    own_after_s: float
    judge: bool
    limit: int = 256
    only: tuple[str, ...] | None = None
    phase: ClassVar[int] = 0

    @classmethod
    async def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[list[tuple[str, datetime]]]:
        results = []
        for op in ops:
            params = {
                "me": op.daemon_id,
                "lease_s": op.lease_s,
                "own_after_s": op.own_after_s,
                "judge": op.judge,
                "limit": op.limit,
                "only": list(op.only) if op.only is not None else None,
            }
            rows = await (await conn.execute(_TAKE, params)).fetchall()
            results.append(sorted(((row[0], row[1]) for row in rows), key=lambda r: r[1]))
        return results
