"""The SQL of the FIX store (`store`), one constant per statement, with what each guarantees.
Tables: migration 0005_fix_sessions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from psycopg.types.json import Jsonb

__all__ = ["FINAL_ORDERS", "LATEST_STATE", "RECORD_EXECUTIONS", "RECORD_OUTGOING", "json_rows"]

_rows_encoder = msgspec.json.Encoder()


def json_rows(rows: Sequence[tuple[Any, ...]]) -> Jsonb:
    """The %(rows)s parameter of RECORD_OUTGOING / RECORD_EXECUTIONS: the rows as one JSON
    array (Decimal as exact strings, datetimes as RFC 3339, bytes as base64, None as null)."""
    return Jsonb(rows, dumps=_rows_encoder.encode)


#: The client order ids of the session whose latest report leaves them final (2 filled,
#: 4 canceled, 8 rejected, C expired).
FINAL_ORDERS = (
    b"SELECT client_order_id FROM ("
    b" SELECT DISTINCT ON (client_order_id) client_order_id, ord_status"
    b" FROM fix_executions WHERE session_id = %(s)s ORDER BY client_order_id, id DESC"
    b") latest WHERE ord_status IN ('2', '4', '8', 'C')"
)


def _json_rows(columns: str) -> bytes:
    """A FROM item `m` reading the parameter %(rows)s, a JSON array of rows (`json_rows`), as a
    table: `columns` is "name type, ..." in row order; `ord` numbers the rows from 1. One
    parameter, encoded at C speed (msgspec), instead of one Python-dumped array per column."""
    selects = []
    for i, column in enumerate(columns.split(",")):
        name, kind = column.split()
        expr = f"decode(r->>{i}, 'base64')" if kind == "bytea" else f"(r->>{i})::{kind}"
        selects.append(f"{expr} AS {name}")
    rows = "jsonb_array_elements(%(rows)s::jsonb) WITH ORDINALITY AS j(r, ord)"
    return f"(SELECT {', '.join(selects)}, ord FROM {rows}) AS m".encode()


#: A burst of outgoing numbers and its stored messages (rows: seq, msg_type, raw,
#: client_order_id, sent_at), in one statement: nothing is written when a NewOrderSingle's
#: ClOrdID is already recorded (`dup`; the ClOrdIDs of the burst's NewOrderSingles in
#: %(new_orders)s) or next_out_seq is no longer the burst's first number (`guard` empty). `dup`
#: probes the unique index once per ClOrdID (LATERAL ... LIMIT 1): a plain `= ANY(...)` was
#: planned, on a table not analyzed yet, as a scan of every NewOrderSingle of the session.
RECORD_OUTGOING = (
    b"WITH dup AS (SELECT n.client_order_id FROM unnest(%(new_orders)s::varchar[]) AS n(client_order_id)"
    b" CROSS JOIN LATERAL (SELECT 1 FROM fix_outbound_messages o WHERE o.session_id = %(s)s"
    b" AND o.msg_type = 'D' AND o.client_order_id = n.client_order_id LIMIT 1) AS sent),"
    b" guard AS (UPDATE fix_sessions SET next_out_seq = %(next)s, updated_at = now()"
    b" WHERE session_id = %(s)s AND epoch = %(e)s AND next_out_seq = %(first)s"
    b" AND NOT EXISTS (SELECT 1 FROM dup) RETURNING session_id),"
    b" stored AS (INSERT INTO fix_outbound_messages"
    b" (session_id, epoch, seq, msg_type, raw, client_order_id, sent_at)"
    b" SELECT guard.session_id, %(e)s, m.seq, m.msg_type, m.raw, m.client_order_id, m.sent_at"
    b" FROM guard, "
    + _json_rows("seq bigint, msg_type text, raw bytea, client_order_id text, sent_at timestamptz")
    + b" RETURNING 1)"
    b" SELECT (SELECT count(*) FROM guard), (SELECT count(*) FROM stored),"
    b" array_to_json(ARRAY(SELECT client_order_id FROM dup))"
)

#: A batch of reports (rows: the columns of fix_executions after session_id, in their order),
#: inserted in arrival order (`id` keeps it), once per ExecID, and the next inbound number, in
#: one statement. The `mark` only raises next_in_seq (two connections may carry marks: the
#: later commit of an older mark must not move it back), and is skipped when %(n)s is NULL.
RECORD_EXECUTIONS = (
    b"WITH mark AS (UPDATE fix_sessions SET next_in_seq = GREATEST(next_in_seq, %(n)s), updated_at = now()"
    b" WHERE %(n)s::bigint IS NOT NULL AND session_id = %(s)s AND epoch = %(e)s RETURNING 1),"
    b" stored AS (INSERT INTO fix_executions (session_id, exec_id, client_order_id, broker_order_id,"
    b" exec_type, ord_status, last_qty, last_px, cum_qty, avg_px, commission, fee, venue, text,"
    b" msg_seq_num, transact_time, received_at)"
    b" SELECT %(s)s, m.exec_id, m.client_order_id, m.broker_order_id, m.exec_type, m.ord_status,"
    b" m.last_qty, m.last_px, m.cum_qty, m.avg_px, m.commission, m.fee, m.venue, m.text, m.seq,"
    b" m.transact_time, m.received_at FROM "
    + _json_rows(
        "exec_id text, client_order_id text, broker_order_id text, exec_type text, ord_status text,"
        " last_qty numeric, last_px numeric, cum_qty numeric, avg_px numeric, commission numeric,"
        " fee numeric, venue text, text text, seq bigint, transact_time timestamptz,"
        " received_at timestamptz"
    )
    + b" ORDER BY m.ord ON CONFLICT (session_id, exec_id) DO NOTHING RETURNING exec_id)"
    b" SELECT (SELECT count(*) FROM mark), array_to_json(ARRAY(SELECT exec_id FROM stored))"
)


#: Each order's latest report (one row per order; `%b` narrows the orders), with the last
#: OrderID the broker gave it when that report has none. Parameters: session id twice.
LATEST_STATE = (
    b"SELECT latest.client_order_id, COALESCE(latest.broker_order_id,"
    b" (SELECT b.broker_order_id FROM fix_executions b WHERE b.session_id = %%s"
    b" AND b.client_order_id = latest.client_order_id AND b.broker_order_id IS NOT NULL"
    b" ORDER BY b.id DESC LIMIT 1)), latest.ord_status, latest.cum_qty, latest.avg_px"
    b" FROM (SELECT DISTINCT ON (client_order_id) client_order_id, broker_order_id, ord_status,"
    b" cum_qty, avg_px FROM fix_executions WHERE session_id = %%s %b"
    b" ORDER BY client_order_id, id DESC) latest"
)
