"""What a FIX session keeps in PostgreSQL (migration 0005): sequence numbers, the application
messages we sent, the execution reports we received.

Guarantees:
- `record_outgoing` commits the message's MsgSeqNum (next_out_seq = seq + 1, only if it still
  was `seq`: a second process driving the same session gets `SessionConflict` instead of reusing
  numbers) together with the message itself, before the caller writes a byte to the socket.
  A second NewOrderSingle with an already recorded ClOrdID is refused (`DuplicateNewOrder`) in
  that same transaction: nothing is committed, nothing may be sent.
- `record_execution` stores a report once per ExecID; it says whether the report was new.

- `claim_session` holds a PostgreSQL advisory lock on the session for as long as `run` lasts:
  a second process (another daemon of the same desk) cannot drive the same FIX session.

Every call runs on one dedicated connection in a worker thread (one at a time), bounded by
`timeout`: trio's deadline on our side, `statement_timeout` and libpq's TCP timeouts on the
server's. A call that times out or is cancelled abandons its thread and the connection with it
(the next call reconnects), and raises `StoreUnavailable`/`Cancelled`: the outcome of that write
is unknown to this process, so the session built on it must be torn down and reloaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import msgspec
import psycopg
import trio

from adapters.base import BrokerOrderSnapshot
from adapters.fix.config import CommissionReporting, FixConfig
from adapters.fix.orders import ExecutionReport, fill_fee, order_status
from adapters.fix.resend import StoredMessage
from adapters.fix.tags import FILL_EXEC_TYPES, MsgType
from api.enums import BrokerOrderStatus
from api.events import OrderFilled
from sql.writer import connect as connect_database

__all__ = [
    "DuplicateNewOrder",
    "FixStore",
    "RecordedExecution",
    "SessionConflict",
    "SessionNumbers",
    "StoreUnavailable",
]

log = logging.getLogger(__name__)
R = TypeVar("R")
Connection = psycopg.Connection[Any]

_FILL_TYPES = tuple(sorted(t.value for t in FILL_EXEC_TYPES))
_OPEN = (BrokerOrderStatus.ACCEPTED, BrokerOrderStatus.PARTIALLY_FILLED)


class StoreUnavailable(Exception):
    """The database did not answer in time or failed: the outcome of the call is unknown."""


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


class RecordedExecution(msgspec.Struct, frozen=True):
    new: bool  # False: this ExecID was recorded before (a duplicate)
    fee: Decimal  # what the fill cost (0 when not a fill or nothing reported)
    fee_priced: bool = True  # False: a CommType we cannot price (recorded as 0)


#: The client order ids of the session whose latest report leaves them final (2 filled,
#: 4 canceled, 8 rejected, C expired).
_FINAL_ORDERS = (
    b"SELECT client_order_id FROM ("
    b" SELECT DISTINCT ON (client_order_id) client_order_id, ord_status"
    b" FROM fix_executions WHERE session_id = %(s)s ORDER BY client_order_id, id DESC"
    b") latest WHERE ord_status IN ('2', '4', '8', 'C')"
)


class FixStore:
    """The PostgreSQL side of one FIX session (see the module docstring)."""

    def __init__(self, database_url: str, config: FixConfig) -> None:
        self._url = database_url
        self._session_id = config.session_id
        self._sender = config.sender_comp_id
        self._target = config.target_comp_id
        self._reporting = config.commission_reporting
        self._timeout = config.timeouts.store_s
        self._retention = timedelta(days=config.retention_days)
        self._conn: Connection | None = None
        self._claimed = False  # we hold the session's advisory lock (on `_conn`)
        self._generation = 0
        self._limiter = trio.CapacityLimiter(1)

    def __repr__(self) -> str:
        state = "connected" if self._conn is not None else "idle"
        return f"<FixStore {self._session_id} {state}>"

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
                b" AND (m.msg_type <> 'D' OR m.client_order_id IN (" + _FINAL_ORDERS + b"))",
                params,
            ).rowcount
            reports = conn.execute(
                b"DELETE FROM fix_executions e WHERE e.session_id = %(s)s AND e.received_at < %(b)s"
                b" AND e.client_order_id IN (" + _FINAL_ORDERS + b")",
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

    async def record_outgoing(
        self,
        numbers_epoch: int,
        seq: int,
        *,
        msg_type: str,
        raw: bytes | None,
        client_order_id: str | None,
        sent_at: datetime,
    ) -> None:
        """Commit MsgSeqNum `seq` as used (next_out_seq = seq + 1) and, unless `raw` is None
        (session messages), the message itself. Raises SessionConflict, DuplicateNewOrder,
        StoreUnavailable."""

        def work(conn: Connection) -> None:
            try:
                with conn.transaction():
                    updated = conn.execute(
                        b"UPDATE fix_sessions SET next_out_seq = %s, updated_at = now()"
                        b" WHERE session_id = %s AND epoch = %s AND next_out_seq = %s",
                        (seq + 1, self._session_id, numbers_epoch, seq),
                    ).rowcount
                    if updated != 1:
                        raise SessionConflict(
                            f"{self._session_id}: next_out_seq is no longer {seq} (epoch {numbers_epoch})"
                        )
                    if raw is not None:
                        conn.execute(
                            b"INSERT INTO fix_outbound_messages"
                            b" (session_id, epoch, seq, msg_type, raw, client_order_id, sent_at)"
                            b" VALUES (%s, %s, %s, %s, %s, %s, %s)",
                            (self._session_id, numbers_epoch, seq, msg_type, raw, client_order_id, sent_at),
                        )
            except psycopg.errors.UniqueViolation as exc:
                raise DuplicateNewOrder(
                    f"a NewOrderSingle with ClOrdID {client_order_id} was already sent on {self._session_id}"
                ) from exc

        await self._run(work)

    async def set_next_in(self, numbers_epoch: int, next_in: int) -> None:
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

    async def record_execution(
        self, report: ExecutionReport, *, client_order_id: str, venue: str, received_at: datetime
    ) -> RecordedExecution:
        """Store a report once per ExecID, with the fee of its fill (see `orders.fill_fee`)."""
        reporting = self._reporting

        def work(conn: Connection) -> RecordedExecution:
            with conn.transaction():
                previous: Decimal | None = None
                if reporting is CommissionReporting.CUMULATIVE and report.is_fill:
                    row = conn.execute(
                        b"SELECT commission FROM fix_executions WHERE session_id = %s"
                        b" AND client_order_id = %s AND commission IS NOT NULL AND exec_type = ANY(%s)"
                        b" ORDER BY id DESC LIMIT 1",
                        (self._session_id, client_order_id, list(_FILL_TYPES)),
                    ).fetchone()
                    previous = None if row is None else row[0]
                fee = fill_fee(report, previous, reporting)
                inserted = conn.execute(
                    b"INSERT INTO fix_executions (session_id, exec_id, client_order_id, broker_order_id,"
                    b" exec_type, ord_status, last_qty, last_px, cum_qty, avg_px, commission, fee, venue,"
                    b" text, msg_seq_num, transact_time, received_at)"
                    b" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    b" ON CONFLICT (session_id, exec_id) DO NOTHING RETURNING id",
                    (
                        self._session_id,
                        report.exec_id,
                        client_order_id,
                        report.order_id,
                        report.exec_type,
                        report.ord_status,
                        report.last_qty,
                        report.last_px,
                        report.cum_qty,
                        report.avg_px,
                        report.commission,
                        Decimal(0) if fee is None else fee,
                        report.last_mkt or venue,
                        report.text,
                        report.seq,
                        report.transact_time,
                        received_at,
                    ),
                ).fetchone()
            return RecordedExecution(
                new=inserted is not None, fee=Decimal(0) if fee is None else fee, fee_priced=fee is not None
            )

        return await self._run(work)

    async def latest_state(self, client_order_id: str) -> BrokerOrderSnapshot | None:
        """The order's state as of the latest report recorded for it, or None."""

        def work(conn: Connection) -> BrokerOrderSnapshot | None:
            row = conn.execute(
                _LATEST_STATE % b"AND client_order_id = %s",
                (self._session_id, self._session_id, client_order_id),
            ).fetchone()
            return None if row is None else _snapshot(row)

        return await self._run(work)

    async def open_orders(self) -> list[BrokerOrderSnapshot]:
        """Orders whose latest recorded report leaves them accepted or partially filled."""

        def work(conn: Connection) -> list[BrokerOrderSnapshot]:
            rows = conn.execute(
                _LATEST_STATE % b"" + b" WHERE latest.ord_status NOT IN ('2', '4', '8', 'C')",
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

    # --- the connection ------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection (waiting for a call in flight, bounded by `timeout`)."""
        self._claimed = False  # closing the connection releases the lock
        with trio.move_on_after(self._timeout) as scope:
            async with self._limiter:
                conn, self._conn = self._conn, None
                if conn is not None:
                    await trio.to_thread.run_sync(conn.close)
        if scope.cancelled_caught:
            self._discard()

    async def _run(self, work: Callable[[Connection], R]) -> R:
        generation = self._generation

        def call() -> R:
            conn = self._connection()
            try:
                return work(conn)
            finally:
                if self._generation != generation:  # abandoned meanwhile: nobody else will close it
                    conn.close()

        try:
            with trio.fail_after(self._timeout):
                return await trio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=self._limiter)
        except trio.TooSlowError:
            self._discard()
            raise StoreUnavailable(
                f"{self._session_id}: no answer from PostgreSQL within {self._timeout}s"
            ) from None
        except trio.Cancelled:
            self._discard()
            raise
        except psycopg.Error as exc:
            raise StoreUnavailable(f"{self._session_id}: PostgreSQL failed: {exc}") from exc

    def _connection(self) -> Connection:
        """The open connection (worker thread only), reconnecting when it is gone or broken."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = connect_database(self._url, statement_timeout=self._timeout)
            if self._claimed:  # the lock went with the old connection: take it again
                try:
                    self._lock(conn)
                except BaseException:
                    conn.close()
                    raise
            self._conn = conn
        return conn

    def _discard(self) -> None:
        """Forget the connection an abandoned thread still uses; that thread closes it."""
        self._generation += 1
        self._conn = None


#: Each order's latest report (one row per order; `%b` narrows the orders), with the last
#: OrderID the broker gave it when that report has none. Parameters: session id twice.
_LATEST_STATE = (
    b"SELECT latest.client_order_id, COALESCE(latest.broker_order_id,"
    b" (SELECT b.broker_order_id FROM fix_executions b WHERE b.session_id = %%s"
    b" AND b.client_order_id = latest.client_order_id AND b.broker_order_id IS NOT NULL"
    b" ORDER BY b.id DESC LIMIT 1)), latest.ord_status, latest.cum_qty, latest.avg_px"
    b" FROM (SELECT DISTINCT ON (client_order_id) client_order_id, broker_order_id, ord_status,"
    b" cum_qty, avg_px FROM fix_executions WHERE session_id = %%s %b"
    b" ORDER BY client_order_id, id DESC) latest"
)


def _snapshot(row: tuple[Any, ...]) -> BrokerOrderSnapshot:
    client_order_id, broker_order_id, ord_status, cum_qty, avg_px = row[:5]
    return BrokerOrderSnapshot(
        client_order_id=client_order_id,
        broker_order_id=broker_order_id or "",
        status=order_status(ord_status, cum_qty),
        filled_quantity=cum_qty,
        average_price=avg_px if avg_px and cum_qty > 0 else None,
    )


def _stored(row: tuple[Any, ...]) -> StoredMessage:
    seq, msg_type, raw, sent_at, client_order_id = row
    return StoredMessage(
        seq=seq, msg_type=msg_type, raw=bytes(raw), sent_at=sent_at, client_order_id=client_order_id
    )
