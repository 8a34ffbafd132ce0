"""The pre-trade checks' own reads and writes (migration 0012): kill switches, the day's routed
notional per account, the open orders of an account.

None of this is on the order path: start-up, a periodic reload, operator requests. Each call
opens its own short connection (bounded by `CONNECT_TIMEOUT_S` and `STATEMENT_TIMEOUT_MS`), so
it never waits behind the order path's writer; run them in a worker thread
(`trio.to_thread.run_sync`). Rows are returned as plain tuples: `sql` does not know the
nursery's types.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg

from api.enums import BrokerOrderStatus

__all__ = [
    "KillSwitchRow",
    "daily_totals",
    "load_kill_switches",
    "open_orders",
    "save_kill_switch",
]

CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 10_000

#: (scope, account_id, engaged, reason, changed_by, changed_at)
KillSwitchRow = tuple[str, str, bool, str | None, str | None, datetime]

_OPEN = [s.value for s in BrokerOrderStatus if not s.is_final]


def _connect(database_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        database_url,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT_S,
        options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
    )


def load_kill_switches(database_url: str) -> list[KillSwitchRow]:
    with _connect(database_url) as conn:
        rows = conn.execute(
            "SELECT scope, account_id, engaged, reason, changed_by, changed_at FROM kill_switches"
            " ORDER BY scope, account_id"
        ).fetchall()
    return [(str(r[0]), str(r[1]), bool(r[2]), r[3], r[4], r[5].astimezone(UTC)) for r in rows]


def save_kill_switch(database_url: str, row: KillSwitchRow) -> bool:
    """Store a switch's new position (and its audit row) unless a newer one is stored; whether
    it was stored. Idempotent: the same row again changes nothing."""
    scope, account_id, engaged, reason, changed_by, changed_at = row
    with _connect(database_url) as conn, conn.transaction():
        stored = conn.execute(
            "INSERT INTO kill_switches (scope, account_id, engaged, reason, changed_by, changed_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (scope, account_id) DO UPDATE SET engaged = EXCLUDED.engaged,"
            " reason = EXCLUDED.reason, changed_by = EXCLUDED.changed_by, changed_at = EXCLUDED.changed_at"
            " WHERE kill_switches.changed_at < EXCLUDED.changed_at"
            " RETURNING 1",
            row,
        ).fetchone()
        if stored is not None:
            conn.execute(
                "INSERT INTO kill_switch_changes (scope, account_id, engaged, reason, changed_by, changed_at)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (scope, account_id, engaged, reason, changed_by, changed_at),
            )
    return stored is not None


def daily_totals(database_url: str, since: datetime) -> dict[str, tuple[Decimal, int]]:
    """Per account: the gross notional and the number of the orders sent to a broker since
    `since` (the start of the UTC day): quantity x (limit price, else stop price, else the
    arrival mid; 0 without any), first attempts only."""
    with _connect(database_url) as conn:
        rows = conn.execute(
            "SELECT o.account_id,"
            " SUM(o.quantity * COALESCE(o.price, o.stop_price, r.arrival_price, 0)), COUNT(*)"
            " FROM broker_orders o JOIN routed_orders r ON r.order_id = o.order_id"
            " WHERE o.attempt = 1 AND o.created_at >= %s GROUP BY o.account_id",
            (since,),
        ).fetchall()
    return {str(r[0]): (Decimal(r[1]), int(r[2])) for r in rows}


def open_orders(database_url: str, account_id: str | None) -> list[tuple[str, str]]:
    """(order id, broker id) of every attempt still open at a broker (not final), of one
    account or (None) of all, oldest first."""
    query = (
        "SELECT b.order_id, b.broker_id FROM open_executions e JOIN broker_orders b ON b.id = e.execution_id"
        " WHERE b.status = ANY(%s)"
    )
    params: tuple[Any, ...] = (_OPEN,)
    if account_id is not None:
        query += " AND b.account_id = %s"
        params = (_OPEN, account_id)
    with _connect(database_url) as conn:
        rows = conn.execute(query + " ORDER BY b.created_at", params).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]
