"""Execution reports and official closes: the writes (group-commit ops) and the reads behind
online TCA. See migration 0004 for the columns beyond the spec's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar, Self

import msgspec
import psycopg

from sql.batch_rows import rows_from, statement
from sql.roundtrip import Rows, Statement
from sql.trio_pg import TrioConnection
from sql.writer import WriteOp

Conn = psycopg.Connection[Any]


class ReportRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One `execution_reports` row (id = the execution id)."""

    execution_id: str
    order_id: str
    broker_id: str
    symbol: str
    side: str
    quantity: Decimal
    filled_quantity: Decimal
    average_price: Decimal
    benchmark_type: str
    benchmark_price: float | None
    slippage_bps: float | None
    market_impact_bps: float | None
    total_cost_bps: float | None
    execution_start: datetime
    execution_end: datetime
    quality_score: float | None
    rank: int | None
    recommendations: str  # JSON
    created_at: datetime
    asset_class: str
    order_type: str
    strategy: str
    size_bucket: int
    executed_notional: Decimal
    fees: Decimal
    arrival_price: Decimal | None
    arrival_cost_bps: float | None
    end_price: Decimal | None
    benchmarks: str  # JSON
    shortfall: str | None  # JSON
    unavailable: str  # JSON
    market_window: bytes

    def __repr__(self) -> str:
        return f"<ReportRecord {self.execution_id} {self.broker_id} {self.symbol} cost={self.total_cost_bps}>"


class StoredReport(msgspec.Struct, frozen=True):
    """What a later TCA request needs back from a report row."""

    execution_id: str
    arrival_price: Decimal | None
    end_price: Decimal | None
    market_window: bytes | None
    created_at: datetime


class PeerGroupRow(msgspec.Struct, frozen=True, array_like=True):
    """One peer group's notional-weighted cost moments over the reports since a time, summed by
    the server (`load_peer_groups`): what `tca.peers.CostStats` holds."""

    dimension: str  # BROKER, STRATEGY, ORDER_TYPE or HOUR
    key: str
    asset_class: str
    size_bucket: int | None  # None: every size
    count: int
    weight: float
    weighted_sum: float
    weighted_squares: float
    squared_weights: float


# id = broker_order_id (migration 0017): the primary key is the execution id.
_DELETE_REPORTS = b"DELETE FROM execution_reports WHERE id = ANY(%s::text[])"

_INSERT_REPORTS = (
    b"""
INSERT INTO execution_reports
    (id, order_id, broker_order_id, broker_id, symbol, side, quantity, filled_quantity,
     average_price, benchmark_price, benchmark_type, slippage_bps, market_impact_bps,
     total_cost_bps, execution_start, execution_end, execution_duration_ms,
     execution_quality_score, broker_performance_rank, recommendations, created_at,
     asset_class, order_type, strategy, size_bucket, executed_notional, fees, arrival_price,
     arrival_cost_bps, end_price, benchmarks, shortfall, unavailable, market_window)
SELECT i, o, i, b, s, sd, q, fq, ap, bp, bt, sl, mi, tc, es, ee,
       GREATEST(0, (EXTRACT(EPOCH FROM ee - es) * 1000)::bigint), qs, rk, rc, ca,
       ac, ot, st, sb, en, fe, ar, acb, ep, bm, sf, un, mw
FROM """
    + rows_from(
        "i text, o text, b text, s text, sd text, q numeric, fq numeric, ap numeric, bp numeric, "
        "bt text, sl float8, mi float8, tc float8, es timestamptz, ee timestamptz, qs float8, "
        "rk int, rc json, ca timestamptz, ac text, ot text, st text, sb smallint, en numeric, "
        "fe numeric, ar numeric, acb float8, ep numeric, bm json, sf json, un json, mw bytea"
    )
    + b"""
ON CONFLICT (id) DO NOTHING
RETURNING id
"""
)


@dataclass(frozen=True, slots=True)
class SaveReport(WriteOp[bool]):
    """Insert an execution's report unless it has one (with `replace`: in place of the one it
    has, e.g. after a fill that arrived once the execution had ended); True if this op wrote it."""

    report: ReportRecord
    replace: bool = False
    phase: ClassVar[int] = 30  # after the transitions of the same batch (the foreign keys)

    @classmethod
    def statements(cls, ops: Sequence[Self]) -> Sequence[Statement]:
        replaced = [op.report.execution_id for op in ops if op.replace]
        delete = [Statement(_DELETE_REPORTS, (replaced,))] if replaced else []
        return [*delete, *statement(_INSERT_REPORTS, [_report_values(op.report) for op in ops], returns=True)]

    @classmethod
    async def finish(cls, conn: TrioConnection, ops: Sequence[Self], rows: Sequence[Rows]) -> Sequence[bool]:
        inserted = {row[0] for row in rows[-1]}
        results = []
        for op in ops:
            results.append(op.report.execution_id in inserted)
            inserted.discard(op.report.execution_id)
        return results


def _report_values(r: ReportRecord) -> tuple[Any, ...]:
    return (
        r.execution_id, r.order_id, r.broker_id, r.symbol, r.side, r.quantity, r.filled_quantity,
        r.average_price, r.benchmark_price, r.benchmark_type, r.slippage_bps, r.market_impact_bps,
        r.total_cost_bps, r.execution_start, r.execution_end, r.quality_score, r.rank,
        r.recommendations, r.created_at, r.asset_class, r.order_type, r.strategy, r.size_bucket,
        r.executed_notional, r.fees, r.arrival_price, r.arrival_cost_bps, r.end_price,
        r.benchmarks, r.shortfall, r.unavailable, r.market_window,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class SaveClose(WriteOp[None]):
    """Record (or correct) the official close of a symbol's trade date."""

    symbol: str
    trade_date: date
    price: Decimal
    received_at: datetime
    phase: ClassVar[int] = 30

    @classmethod
    async def run_batch(cls, conn: TrioConnection, ops: Sequence[Self]) -> Sequence[None]:
        last = {(op.symbol, op.trade_date): op for op in ops}  # a correction in the batch wins
        await conn.cursor().executemany(
            b"INSERT INTO market_closes (symbol, trade_date, price, received_at) VALUES (%s, %s, %s, %s)"
            b" ON CONFLICT (symbol, trade_date) DO UPDATE"
            b" SET price = EXCLUDED.price, received_at = EXCLUDED.received_at",
            [(op.symbol, op.trade_date, op.price, op.received_at) for op in last.values()],
        )
        return [None] * len(ops)


# --- reads ---------------------------------------------------------------------------------


def load_report(conn: Conn, execution_id: str) -> StoredReport | None:
    row = conn.execute(
        b"SELECT id, arrival_price, end_price, market_window, created_at"
        b" FROM execution_reports WHERE id = %s",
        (execution_id,),
    ).fetchone()
    return None if row is None else StoredReport(row[0], row[1], row[2], row[3], row[4])


def load_close(conn: Conn, symbol: str, trade_date: date) -> Decimal | None:
    row = conn.execute(
        b"SELECT price FROM market_closes WHERE symbol = %s AND trade_date = %s", (symbol, trade_date)
    ).fetchone()
    return None if row is None else Decimal(row[0])


def load_arrival(conn: Conn, order_id: str) -> tuple[Decimal | None, datetime | None]:
    """The OMS order's arrival: the price stored with it (the mid when it was received) and
    when it was received; (None, None) for an unknown order."""
    row = conn.execute(
        b"SELECT arrival_price, received_at FROM routed_orders WHERE order_id = %s", (order_id,)
    ).fetchone()
    if row is None:
        return None, None
    return (None if row[0] is None else Decimal(row[0])), row[1]


def load_unreported(conn: Conn, since: datetime, until: datetime, limit: int) -> list[str]:
    """Executions finished with fills from `since` until before `until` that have no report (a
    report task cut short by a stop or a crash), oldest first."""
    rows = conn.execute(
        b"SELECT bo.id FROM broker_orders bo"
        b" WHERE bo.status IN ('FILLED', 'CANCELED', 'EXPIRED', 'REJECTED') AND bo.filled_quantity > 0"
        b" AND bo.updated_at >= %s AND bo.updated_at < %s"
        b" AND NOT EXISTS (SELECT 1 FROM execution_reports r WHERE r.id = bo.id)"
        b" ORDER BY bo.updated_at LIMIT %s",
        (since, until, limit),
    ).fetchall()
    return [row[0] for row in rows]


def load_peer_groups(conn: Conn, since: datetime) -> list[PeerGroupRow]:
    """The peer groups of every report since `since` with a known cost, aggregated by the server
    (a month of reports stays in PostgreSQL: what comes back is a row per group). The same groups
    and the same rules as `tca.peers.peer_stats`: by broker, strategy, order type and UTC hour of
    arrival, each per (asset class, size bucket) and per asset class over every size; a report
    with an unknown or infinite cost, no executed notional or an empty key is left out."""
    rows = conn.execute(_SELECT_PEER_GROUPS, (since,)).fetchall()
    return [
        PeerGroupRow(d, k, a, None if every_size else b, n, w, ws, wss, sw)
        for d, k, a, b, n, w, ws, wss, sw, every_size in rows
    ]


# Summed once per (asset class, bucket, broker, strategy, order type, hour), then per group of
# each dimension from those sums: the month's rows are grouped once, not once per dimension.
_SELECT_PEER_GROUPS = b"""
WITH r AS (
    SELECT asset_class, size_bucket::int AS size_bucket, broker_id, strategy, order_type,
           (floor(date_part('epoch', execution_start) / 3600)::bigint %% 24)::int AS hour,  -- UTC
           count(*) AS n, sum(w) AS w, sum(w * x) AS wx, sum(w * x * x) AS wxx, sum(w * w) AS ww
    FROM (
        SELECT asset_class, size_bucket, broker_id, strategy, order_type, execution_start,
               arrival_cost_bps AS x, executed_notional::float8 AS w
        FROM execution_reports
        WHERE created_at >= %s AND asset_class IS NOT NULL AND executed_notional > 0
          AND arrival_cost_bps IS NOT NULL AND arrival_cost_bps NOT IN ('NaN', 'Infinity', '-Infinity')
          AND size_bucket >= 0
    ) AS report
    GROUP BY 1, 2, 3, 4, 5, 6
)
SELECT d.dimension, d.key, r.asset_class, r.size_bucket, sum(r.n)::int,
       sum(r.w), sum(r.wx), sum(r.wxx), sum(r.ww), GROUPING(r.size_bucket) = 1
FROM r
CROSS JOIN LATERAL (VALUES
    ('BROKER', r.broker_id), ('STRATEGY', r.strategy), ('ORDER_TYPE', r.order_type),
    ('HOUR', lpad(r.hour::text, 2, '0'))
) AS d (dimension, key)
WHERE d.key <> ''
GROUP BY GROUPING SETS (
    (d.dimension, d.key, r.asset_class, r.size_bucket), (d.dimension, d.key, r.asset_class)
)
"""
