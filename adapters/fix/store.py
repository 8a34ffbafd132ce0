"""What a FIX session keeps in PostgreSQL (migration 0005): sequence numbers, the application
messages we sent, the execution reports we received.

Guarantees:
- `record_outgoing` commits, in one statement (one commit), a burst of consecutive MsgSeqNums as
  used (next_out_seq = last + 1, only if it still was the first: a second process driving the
  same session gets `SessionConflict` instead of reusing numbers) together with the application
  messages among them, before the caller writes a byte of any of them to the socket: each
  message is durable before it is sent, as QuickFIX's store makes it, one commit for the burst.
  A NewOrderSingle whose ClOrdID is already recorded (a second submit of the order) makes the
  whole statement commit nothing; its ClOrdID is returned, and the caller sends none of the
  burst until it has dropped that message and recorded the rest again.
- `record_executions` stores a batch of reports once per ExecID, and (when given) the next
  expected inbound MsgSeqNum with them, in one commit; it says which reports were new. It runs
  on a connection of its own, so that an inbound batch commits while an outbound burst does
  (they touch different rows: only the mark updates the session's row, and the caller gives one
  rarely). A mark only ever raises next_in_seq; `set_next_in` sets it exactly.

- `claim_session` holds a PostgreSQL advisory lock on the session for as long as `run` lasts:
  a second process (another daemon of the same desk) cannot drive the same FIX session.

Every call runs on a dedicated connection, one call at a time per connection: `record_outgoing`
and `record_executions` each on a `connection.TrioLane` (driven by Trio itself, no thread; their
statement sent, prepared, in one round trip by `sql.roundtrip`),
everything else on the `connection.DedicatedConnection` that holds the lock (a worker thread);
each call is bounded by `timeout`: trio's deadline on our side,
`statement_timeout` and libpq's TCP timeouts on the server's. A call that times out or is
cancelled abandons its thread and the connection with it (the next call reconnects), and raises
`StoreUnavailable`/`Cancelled`: the outcome of that write is unknown to this process, so the
session built on it must be torn down and reloaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

import msgspec
import psycopg

from adapters.base import BrokerOrderSnapshot
from adapters.fix.config import CommissionReporting, FixConfig
from adapters.fix.connection import (
    Connection,
    DedicatedConnection,
    StoreUnavailable,
    TrioConnection,
    TrioLane,
)
from adapters.fix.orders import ExecutionReport, fill_fee, order_status
from adapters.fix.queries import FINAL_ORDERS, LATEST_STATE, RECORD_EXECUTIONS, RECORD_OUTGOING, json_rows
from adapters.fix.resend import StoredMessage
from adapters.fix.tags import FILL_EXEC_TYPES, MsgType
from api.enums import BrokerOrderStatus
from api.events import OrderFilled
from sql import roundtrip
from sql.roundtrip import Statement

__all__ = [
    "DuplicateNewOrder",
    "FixStore",
    "InboundMark",
    "InboundReport",
    "OutgoingRecord",
    "RecordedExecution",
    "SessionConflict",
    "SessionNumbers",
    "StoreUnavailable",
]

log = logging.getLogger(__name__)
R = TypeVar("R")

_FILL_TYPES = tuple(sorted(t.value for t in FILL_EXEC_TYPES))
_OPEN = (BrokerOrderStatus.ACCEPTED, BrokerOrderStatus.PARTIALLY_FILLED)


class SessionConflict(StoreUnavailable):
    """The session's numbers in the database are not the ones this process holds: another
    process drives (or reset) the same session. Never send on it."""


class DuplicateNewOrder(Exception):
    """A NewOrderSingle with this ClOrdID was already recorded for the session: nothing was
    committed and nothing may be sent (the first one may have reached the broker)."""


class SessionNumbers(msgspec.Struct, frozen=True):
    epoch: int
    next_out: int
    next_in: int


class OutgoingRecord(NamedTuple):
    """One message of a burst for `record_outgoing`: `raw` None for a session message (only its
    number is committed; it is never resent)."""

    seq: int
    msg_type: str
    raw: bytes | None
    client_order_id: str | None
    sent_at: datetime


class InboundMark(NamedTuple):
    """The next expected inbound MsgSeqNum once a batch is processed, in the session's epoch."""

    epoch: int
    next_in: int


class InboundReport(NamedTuple):
    """One ExecutionReport to record (`record_executions`)."""

    report: ExecutionReport
    client_order_id: str  # our order's ClOrdID
    venue: str  # the fill's venue when the report has no LastMkt
    received_at: datetime


class RecordedExecution(msgspec.Struct, frozen=True):
    new: bool  # False: this ExecID was recorded before (a duplicate)
    fee: Decimal  # what the fill cost (0 when not a fill or nothing reported)
    fee_priced: bool = True  # False: a CommType we cannot price (recorded as 0)


class FixStore:
    """The PostgreSQL side of one FIX session (see the module docstring)."""

    def __init__(self, database_url: str, config: FixConfig) -> None:
        self._url = database_url
        self._session_id = config.session_id
        self._sender = config.sender_comp_id
        self._target = config.target_comp_id
        self._reporting = config.commission_reporting
        self._retention = timedelta(days=config.retention_days)
        timeout = config.timeouts.store_s
        self._claimed = False  # we hold the session's advisory lock (on the main connection)
        #: Everything but the inbound reports; holds the session's advisory lock.
        self._main = DedicatedConnection(
            database_url, label=self._session_id, timeout=timeout, on_connect=self._relock
        )
        #: `record_outgoing` and `record_executions`, each on its own connection driven by Trio
        #: (no thread), so that an inbound batch commits while an outbound burst does.
        self._outbound = TrioLane(database_url, label=self._session_id, timeout=timeout)
        self._inbound = TrioLane(database_url, label=self._session_id, timeout=timeout)

    def __repr__(self) -> str:
        return f"<FixStore {self._session_id} claimed={self._claimed}>"

    @property
    def session_id(self) -> str:
        return self._session_id

    # --- ownership -----------------------------------------------------------------------

    async def claim_session(self) -> None:
        """Take the session's PostgreSQL advisory lock (held by our connection, so a crashed
        process loses it with its connection). Raises SessionConflict while another process
        holds it: two daemons must never drive one FIX session. Then prune what the retention
        no longer keeps."""
        if self._claimed:
            return

        def work(conn: Connection) -> None:
            self._lock(conn)

        await self._run(work)
        self._claimed = True
        await self.prune(datetime.now(UTC) - self._retention)

    async def prune(self, before: datetime) -> tuple[int, int]:
        """Delete the messages sent before `before`, and the reports received before it, of
        orders whose latest state is final (filled, cancelled, rejected, expired); the
        NewOrderSingle and the reports of an order still open (a GTC order resting for months)
        stay: `query` asks the broker only about orders it has a NewOrderSingle of, and
        recovery would otherwise end a live order as unknown. Other messages (cancels, status
        requests) go by age alone. Returns (messages, reports) deleted."""

        def work(conn: Connection) -> tuple[int, int]:
            params = {"s": self._session_id, "b": before}
            sent = conn.execute(
                b"DELETE FROM fix_outbound_messages m WHERE m.session_id = %(s)s AND m.sent_at < %(b)s"
                b" AND (m.msg_type <> 'D' OR m.client_order_id IN (" + FINAL_ORDERS + b"))",
                params,
            ).rowcount
            reports = conn.execute(
                b"DELETE FROM fix_executions e WHERE e.session_id = %(s)s AND e.received_at < %(b)s"
                b" AND e.client_order_id IN (" + FINAL_ORDERS + b")",
                params,
            ).rowcount
            return sent, reports

        return await self._run(work)

    async def release_session(self) -> None:
        if not self._claimed:
            return
        self._claimed = False

        def work(conn: Connection) -> None:
            conn.execute(b"SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (self._session_id,))

        await self._run(work)

    def _lock(self, conn: Connection) -> None:
        row = conn.execute(
            b"SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (self._session_id,)
        ).fetchone()
        if row is None or not row[0]:
            raise SessionConflict(f"{self._session_id}: another process drives this FIX session")

    # --- sequence numbers ----------------------------------------------------------------

    async def load_session(self) -> SessionNumbers:
        """The session's numbers, creating the session (1, 1) on first use."""

        def work(conn: Connection) -> SessionNumbers:
            with conn.transaction():
                conn.execute(
                    b"INSERT INTO fix_sessions (session_id, sender_comp_id, target_comp_id)"
                    b" VALUES (%s, %s, %s) ON CONFLICT (session_id) DO NOTHING",
                    (self._session_id, self._sender, self._target),
                )
                row = conn.execute(
                    b"SELECT epoch, next_out_seq, next_in_seq FROM fix_sessions WHERE session_id = %s",
                    (self._session_id,),
                ).fetchone()
            assert row is not None
            return SessionNumbers(epoch=row[0], next_out=row[1], next_in=row[2])

        return await self._run(work)

    async def reset_session(self) -> SessionNumbers:
        """Start a new epoch at (1, 1): what ResetSeqNumFlag=Y agrees with the counterparty."""

        def work(conn: Connection) -> SessionNumbers:
            row = conn.execute(
                b"UPDATE fix_sessions SET epoch = epoch + 1, next_out_seq = 1, next_in_seq = 1,"
                b" updated_at = now() WHERE session_id = %s RETURNING epoch",
                (self._session_id,),
            ).fetchone()
            if row is None:
                raise SessionConflict(f"{self._session_id}: no such session to reset")
            return SessionNumbers(epoch=row[0], next_out=1, next_in=1)

        return await self._run(work)

    async def record_outgoing(self, numbers_epoch: int, burst: Sequence[OutgoingRecord]) -> list[str]:
        """Commit the burst's MsgSeqNums (consecutive, the first being next_out_seq) as used and
        its application messages, in one commit. Returns [] once committed; else the ClOrdIDs of
        its NewOrderSingles already recorded, with nothing committed. Raises SessionConflict
        (next_out_seq is no longer the burst's first number), StoreUnavailable."""
        if not burst:
            return []
        first = burst[0].seq
        stored = [m for m in burst if m.raw is not None]
        new_orders = [m.client_order_id for m in stored if m.msg_type == MsgType.NEW_ORDER_SINGLE]
        params = {
            "s": self._session_id,
            "e": numbers_epoch,
            "first": first,
            "next": first + len(burst),
            "new_orders": new_orders,
            "rows": json_rows([(m.seq, m.msg_type, m.raw, m.client_order_id, m.sent_at) for m in stored]),
        }

        async def work(conn: TrioConnection) -> list[str]:
            try:
                ((updated, inserted, duplicates),) = (
                    await roundtrip.run(conn, [Statement(RECORD_OUTGOING, params, returns=True)])
                )[0]
            except psycopg.errors.UniqueViolation as exc:  # only a race with another writer
                raise SessionConflict(
                    f"{self._session_id}: a message number or ClOrdID was taken: {exc}"
                ) from exc
            taken: list[str] = msgspec.json.decode(duplicates or "[]")
            if taken:
                return taken
            if int(updated or 0) != 1 or int(inserted or 0) != len(stored):
                raise SessionConflict(
                    f"{self._session_id}: next_out_seq is no longer {first} (epoch {numbers_epoch})"
                )
            return []

        return await self._outbound.run(work)

    async def set_next_in(self, numbers_epoch: int, next_in: int) -> None:
        """Set the next expected inbound number, even below the one recorded (the counterparty
        started its numbers again); `record_executions` only ever raises it."""

        def work(conn: Connection) -> None:
            updated = conn.execute(
                b"UPDATE fix_sessions SET next_in_seq = %s, updated_at = now()"
                b" WHERE session_id = %s AND epoch = %s",
                (next_in, self._session_id, numbers_epoch),
            ).rowcount
            if updated != 1:
                raise SessionConflict(f"{self._session_id}: epoch {numbers_epoch} is no longer current")

        await self._run(work)

    # --- our messages --------------------------------------------------------------------

    async def outgoing_between(self, numbers_epoch: int, begin: int, end: int) -> dict[int, StoredMessage]:
        """Our stored application messages with begin <= MsgSeqNum <= end, by MsgSeqNum."""

        def work(conn: Connection) -> dict[int, StoredMessage]:
            rows = conn.execute(
                b"SELECT seq, msg_type, raw, sent_at, client_order_id FROM fix_outbound_messages"
                b" WHERE session_id = %s AND epoch = %s AND seq BETWEEN %s AND %s",
                (self._session_id, numbers_epoch, begin, end),
            ).fetchall()
            return {row[0]: _stored(row) for row in rows}

        return await self._run(work)

    async def new_order(self, client_order_id: str) -> StoredMessage | None:
        """The NewOrderSingle we sent for this ClOrdID (any epoch), or None: then the broker
        never received it over this session (it is committed before it is sent)."""

        def work(conn: Connection) -> StoredMessage | None:
            row = conn.execute(
                b"SELECT seq, msg_type, raw, sent_at, client_order_id FROM fix_outbound_messages"
                b" WHERE session_id = %s AND msg_type = %s AND client_order_id = %s",
                (self._session_id, MsgType.NEW_ORDER_SINGLE.value, client_order_id),
            ).fetchone()
            return None if row is None else _stored(row)

        return await self._run(work)

    # --- executions ----------------------------------------------------------------------

    async def record_executions(
        self, reports: Sequence[InboundReport], mark: InboundMark | None
    ) -> list[RecordedExecution]:
        """Store the reports once per ExecID, with the fee of each fill (see `orders.fill_fee`),
        and the next expected inbound number (`mark`, unless None), in one commit. One result
        per report, in order: `new` False for an ExecID recorded before (or earlier in the
        batch). Raises SessionConflict when the mark's epoch is no longer current (the reports
        are committed), StoreUnavailable."""
        if not reports and mark is None:
            return []
        if self._reporting is CommissionReporting.CUMULATIVE:
            return await self._inbound.run(lambda conn: self._record_cumulative(conn, reports, mark))
        fees = [fill_fee(item.report, None, self._reporting) for item in reports]
        params = self._execution_params(reports, fees, mark)

        async def work(conn: TrioConnection) -> list[RecordedExecution]:
            ((marked, inserted),) = (
                await roundtrip.run(conn, [Statement(RECORD_EXECUTIONS, params, returns=True)])
            )[0]
            self._check_mark(int(marked or 0), mark)
            return _recorded(reports, fees, set(msgspec.json.decode(inserted or "[]")))

        return await self._inbound.run(work)

    async def _record_cumulative(
        self, conn: TrioConnection, reports: Sequence[InboundReport], mark: InboundMark | None
    ) -> list[RecordedExecution]:
        """Cumulative commissions: each fill's fee is the increase over the order's previous
        recorded commission, so the reports go in one at a time (one transaction)."""
        results: list[RecordedExecution] = []
        async with conn.transaction():
            for item in reports:
                previous: Decimal | None = None
                if item.report.is_fill:
                    cursor = await conn.execute(
                        b"SELECT commission FROM fix_executions WHERE session_id = %s"
                        b" AND client_order_id = %s AND commission IS NOT NULL AND exec_type = ANY(%s)"
                        b" ORDER BY id DESC LIMIT 1",
                        (self._session_id, item.client_order_id, list(_FILL_TYPES)),
                    )
                    row = await cursor.fetchone()
                    previous = None if row is None else row[0]
                fee = fill_fee(item.report, previous, self._reporting)
                cursor = await conn.execute(RECORD_EXECUTIONS, self._execution_params([item], [fee], None))
                row = await cursor.fetchone()
                assert row is not None
                results += _recorded([item], [fee], set(row[1]))
            if mark is not None:
                cursor = await conn.execute(RECORD_EXECUTIONS, self._execution_params([], [], mark))
                row = await cursor.fetchone()
                assert row is not None
                self._check_mark(row[0], mark)
        return results

    def _execution_params(
        self, reports: Sequence[InboundReport], fees: Sequence[Decimal | None], mark: InboundMark | None
    ) -> dict[str, Any]:
        rows = []
        for item, fee in zip(reports, fees, strict=True):
            r = item.report
            rows.append(
                (
                    r.exec_id,
                    item.client_order_id,
                    r.order_id,
                    r.exec_type,
                    r.ord_status,
                    r.last_qty,
                    r.last_px,
                    r.cum_qty,
                    r.avg_px,
                    r.commission,
                    Decimal(0) if fee is None else fee,
                    r.last_mkt or item.venue,
                    r.text,
                    r.seq,
                    r.transact_time,
                    item.received_at,
                )
            )
        return {
            "s": self._session_id,
            "e": None if mark is None else mark.epoch,
            "n": None if mark is None else mark.next_in,
            "rows": json_rows(rows),
        }

    def _check_mark(self, updated: int, mark: InboundMark | None) -> None:
        if mark is not None and updated != 1:
            raise SessionConflict(f"{self._session_id}: epoch {mark.epoch} is no longer current")

    async def latest_state(self, client_order_id: str) -> BrokerOrderSnapshot | None:
        """The order's state as of the latest report recorded for it, or None."""

        def work(conn: Connection) -> BrokerOrderSnapshot | None:
            row = conn.execute(
                LATEST_STATE % b"AND client_order_id = %s",
                (self._session_id, self._session_id, client_order_id),
            ).fetchone()
            return None if row is None else _snapshot(row)

        return await self._run(work)

    async def open_orders(self) -> list[BrokerOrderSnapshot]:
        """Orders whose latest recorded report leaves them accepted or partially filled."""

        def work(conn: Connection) -> list[BrokerOrderSnapshot]:
            rows = conn.execute(
                LATEST_STATE % b"" + b" WHERE latest.ord_status NOT IN ('2', '4', '8', 'C')",
                (self._session_id, self._session_id),
            ).fetchall()
            snapshots = [_snapshot(row) for row in rows]
            return [s for s in snapshots if s.status in _OPEN]

        return await self._run(work)

    async def fills_since(self, since: datetime) -> list[OrderFilled]:
        def work(conn: Connection) -> list[OrderFilled]:
            rows = conn.execute(
                b"SELECT client_order_id, transact_time, exec_id, last_qty, last_px, fee, venue,"
                b" broker_order_id, cum_qty FROM fix_executions WHERE session_id = %s"
                b" AND exec_type = ANY(%s) AND last_qty > 0 AND transact_time >= %s"
                b" ORDER BY transact_time, id",
                (self._session_id, list(_FILL_TYPES), since),
            ).fetchall()
            return [
                OrderFilled(
                    row[0],
                    row[1],
                    fill_id=row[2],
                    quantity=row[3],
                    price=row[4],
                    fee=row[5],
                    venue=row[6],
                    broker_order_id=row[7],
                    cumulative_quantity=row[8],
                )
                for row in rows
            ]

        return await self._run(work)

    # --- the connections ----------------------------------------------------------------

    async def aclose(self) -> None:
        """Close both connections (waiting for calls in flight, bounded by `timeout`)."""
        self._claimed = False  # closing the main connection releases the lock
        await self._main.aclose()
        await self._outbound.aclose()
        await self._inbound.aclose()

    async def _run(self, work: Callable[[Connection], R]) -> R:
        return await self._main.run(work)

    def _relock(self, conn: Connection) -> None:
        """A new main connection: the lock went with the old one, take it again."""
        if self._claimed:
            self._lock(conn)


def _snapshot(row: tuple[Any, ...]) -> BrokerOrderSnapshot:
    client_order_id, broker_order_id, ord_status, cum_qty, avg_px = row[:5]
    return BrokerOrderSnapshot(
        client_order_id=client_order_id,
        broker_order_id=broker_order_id or "",
        status=order_status(ord_status, cum_qty),
        filled_quantity=cum_qty,
        average_price=avg_px if avg_px and cum_qty > 0 else None,
    )


def _recorded(
    reports: Sequence[InboundReport], fees: Sequence[Decimal | None], inserted: set[str]
) -> list[RecordedExecution]:
    """Results in report order; an ExecID twice in one batch is new only the first time."""
    results = []
    for item, fee in zip(reports, fees, strict=True):
        exec_id = item.report.exec_id
        new = exec_id in inserted
        inserted.discard(exec_id)
        results.append(
            RecordedExecution(new=new, fee=Decimal(0) if fee is None else fee, fee_priced=fee is not None)
        )
    return results


def _stored(row: tuple[Any, ...]) -> StoredMessage:
    seq, msg_type, raw, sent_at, client_order_id = row
    return StoredMessage(
        seq=seq, msg_type=msg_type, raw=bytes(raw), sent_at=sent_at, client_order_id=client_order_id
    )
