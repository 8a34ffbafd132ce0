"""A broker reached over FIX 4.4: `adapters.base.BrokerAdapter` on a `FixSession`.

Requests and their answers. Each request registers what it waits for before it is sent, then
waits under the caller's cancel scope (and `answer_s`):
- `submit` (NewOrderSingle, ClOrdID = our client order id) waits for the order's first
  ExecutionReport: New (or any report showing the order exists) -> BrokerAck(OrderID 37);
  Rejected -> BrokerRejected(Text 58); a session Reject or BusinessMessageReject of the message
  -> BrokerRejected. Not logged on, or the sequence store failing before the send ->
  DeniedLocally (nothing was sent). The connection dropping with the order sent, or no answer in
  time -> ConnectionLost/OutcomeUnknown: reconcile with `query`, never resend. A second submit
  of a ClOrdID this session already sent is refused as OutcomeUnknown (the first may be live).
- `cancel` (OrderCancelRequest, a fresh ClOrdID, OrigClOrdID = the order's) waits for the
  order's Canceled/PendingCancel report, or an OrderCancelReject (-> CancelRejected; a reject
  saying the order is already canceled counts as done: cancels are idempotent).
- `query` (OrderStatusRequest with OrdStatusReqID) waits for the ExecutionReport with ExecType I
  that answers it; "unknown order" (OrdStatus 8, OrdRejReason 5, with ExecType I or 8) is None:
  the broker does not know it (after a restart that lost its orders, say), and it is never
  recorded as a rejection of the order. An order no NewOrderSingle was ever recorded for is
  None without asking: it is committed before it is sent, so the broker cannot have it from
  this session. The snapshot's CumQty/AvgPx is what the daemon's recovery reconciles the fills
  it holds with (`nursery.recovery`): after a sequence reset it is the only record left of fills
  whose reports the broker discarded.

Events. The session hands over received application messages in batches. Every
ExecutionReport of a batch that reports a change is recorded in PostgreSQL once per ExecID (with
the session's inbound mark when it asks) in one commit (`FixStore.record_executions`) before
any event of the batch is emitted, in order, so an ExecID is emitted at most once per session,
across restarts too (a resend or a broker repeating itself is dropped), and a crash before the
commit costs a resend of the batch, not a report. The requests waiting for a report (a submit
for its New, a cancel for its Canceled) are answered as soon as the batch is parsed, before
that commit: the answer is the broker's, and the daemon's record of the order does not depend on
ours (a crash in between leaves the report unrecorded, behind the session's inbound mark: the
broker sends it again at the next logon); what reads the record (`open_orders`, `fills_since`,
a cancel's status check) waits for the commits in flight, so it sees what was answered.

Events wait in an unbounded internal queue (the receive loop never blocks on a slow consumer)
that a task of `run` forwards into `events`; those still queued when `run` ends, or whose report
was recorded just before the connection or the database failed, are lost from the stream but
not from the record: `fills_since` answers from it (what the daemon asks after a reconnect).

`open_orders` and `fills_since` answer from that record, not from OrderMassStatusRequest: FIX
delivers every ExecutionReport in sequence (gaps are resent), so once the session is logged on
and in sync the record is complete, and it does not depend on the broker supporting AF.
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import trio

from adapters.base import (
    BrokerAck,
    BrokerOrderSnapshot,
    BrokerRejected,
    CancelRejected,
    ConnectionLost,
    DeniedLocally,
    OutcomeUnknown,
    SubmitRequest,
)
from adapters.fix.codec import Message, parse_frame
from adapters.fix.config import FixConfig
from adapters.fix.orders import (
    ExecutionReport,
    OrderDetails,
    events_of,
    new_order_single,
    order_cancel_request,
    order_details,
    order_status,
    order_status_request,
    parse_execution_report,
    snapshot_of,
)
from adapters.fix.requests import CancelWait, KnownOrder, Pending, QueryWait
from adapters.fix.session import FixSession, Rejection, SentReference
from adapters.fix.store import (
    DuplicateNewOrder,
    FixStore,
    InboundMark,
    InboundReport,
    RecordedExecution,
    StoreUnavailable,
)
from adapters.fix.tags import ExecType, MsgType, OrdStatus, Tag
from api.enums import BrokerOrderStatus
from api.events import AnyBrokerEvent, OrderFilled

__all__ = ["FixBroker", "build_fix_broker"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], datetime]

#: Orders remembered in memory (details, latest state); older ones are read back from PostgreSQL.
_ORDERS_KEPT = 100_000
_FINAL = frozenset(
    {
        BrokerOrderStatus.FILLED,
        BrokerOrderStatus.REJECTED,
        BrokerOrderStatus.EXPIRED,
        BrokerOrderStatus.CANCELED,
    }
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class FixBroker:
    """One FIX broker connection, driven through the `BrokerAdapter` interface."""

    def __init__(self, config: FixConfig, store: FixStore, *, clock: Clock | None = None) -> None:
        self.config = config
        self.broker_id = config.broker_id
        self.name = config.name
        self.capabilities = config.capabilities()
        self.commission = config.commission
        self.outlives_daemon = True
        self._store = store
        self._clock = _utcnow if clock is None else clock
        self._session: FixSession | None = None
        self._outbox: trio.MemorySendChannel[AnyBrokerEvent] | None = None
        self._running = False
        self._orders: OrderedDict[str, KnownOrder] = OrderedDict()
        self._submits: dict[str, Pending[BrokerAck]] = {}
        self._cancels: dict[str, CancelWait] = {}  # by the cancel's own ClOrdID
        self._cancel_orders: OrderedDict[str, str] = OrderedDict()  # cancel ClOrdID -> the order's
        self._queries: dict[str, QueryWait] = {}  # by OrdStatusReqID
        self._recording = 0  # batches whose reports are being committed (answered already)
        self._recorded = trio.Event()  # set whenever `_recording` drops to 0
        self._ids = itertools.count(1)
        self._token = secrets.token_hex(3)

    def __repr__(self) -> str:
        return f"<FixBroker {self.broker_id} {self._session!r} pending={len(self._submits)}>"

    @property
    def session(self) -> FixSession | None:
        """The logged-on session, if any (read it; drive it through the adapter)."""
        return self._session

    async def aclose(self) -> None:
        """Release the database connection (the adapter must not be running)."""
        await self._store.aclose()

    # --- connection ----------------------------------------------------------------------

    async def run(
        self,
        events: trio.MemorySendChannel[AnyBrokerEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect and log on, report started, then process the session until it ends: raises
        ConnectionLost (or AuthenticationFailed at logon) for the supervisor to reconnect. When
        cancelled it logs out (Logout exchange, bounded by `logout_s`) before returning."""
        if self._running:
            raise RuntimeError(f"{self.broker_id}: run() is already active")
        self._running = True
        try:
            try:
                session = await FixSession.establish(self.config, self._store, self, self._clock)
            except BaseException as exc:
                with trio.CancelScope(shield=True):
                    await self._release_session()
                if isinstance(exc, StoreUnavailable):
                    raise ConnectionLost(f"sequence store unavailable: {exc}") from exc
                raise
            outbox, inbox = trio.open_memory_channel[AnyBrokerEvent](math.inf)
            try:
                async with outbox, inbox, trio.open_nursery() as nursery:
                    nursery.start_soon(_forward, inbox, events)
                    self._outbox = outbox
                    self._session = session
                    task_status.started()
                    await session.serve()
            except BaseExceptionGroup as group:
                error = _single_error(group)
                if error is None:
                    raise
                raise error from None
            finally:
                self._session = None
                self._outbox = None
                self._fail_waiters("disconnected before the broker answered")
                with trio.CancelScope(shield=True):
                    await session.logout()
                    await self._release_session()
        finally:
            self._running = False

    async def _release_session(self) -> None:
        try:
            await self._store.release_session()
        except StoreUnavailable as exc:  # the lock goes with the connection anyway
            log.warning("could not release the FIX session lock", extra={"error": str(exc)})

    async def heartbeat(self) -> None:
        """A TestRequest answered by its Heartbeat within `test_request_s`."""
        session = self._session
        if session is None or not session.logged_on:
            raise ConnectionLost(f"{self.broker_id}: not logged on")
        await session.test_request()

    # --- orders --------------------------------------------------------------------------

    async def submit(self, request: SubmitRequest) -> BrokerAck:
        """Send a NewOrderSingle and wait for the broker's first answer (module docstring)."""
        session = self._logged_on()
        reason = self.capabilities.supports(request.asset_class, request.order_type, request.time_in_force)
        if reason is not None:
            raise DeniedLocally(reason)
        client_order_id = request.client_order_id
        if client_order_id in self._submits:
            raise OutcomeUnknown(f"{client_order_id} is already being submitted")
        answer = Pending[BrokerAck]()
        self._submits[client_order_id] = answer
        try:
            order = self._order(client_order_id)
            if order.details is None:
                order.details = OrderDetails(client_order_id, request.symbol, request.side, request.quantity)
            body = new_order_single(
                request, account=self.config.account or request.account_id, transact_time=self._clock()
            )
            try:
                await session.send(
                    MsgType.NEW_ORDER_SINGLE, body, reference=client_order_id, client_order_id=client_order_id
                )
            except DuplicateNewOrder as exc:
                raise OutcomeUnknown(f"{exc}; reconcile it with query") from exc
            except StoreUnavailable as exc:
                raise DeniedLocally(f"not sent: {exc}") from exc
            return await self._await(answer, "the order's acknowledgement")
        finally:
            del self._submits[client_order_id]

    async def cancel(self, client_order_id: str) -> None:
        """Send an OrderCancelRequest and wait for the broker's answer. Idempotent: an order
        already canceled is left alone. Raises CancelRejected (unknown order, already final, or
        the broker refused), DeniedLocally (not logged on), OutcomeUnknown."""
        session = self._logged_on()
        try:
            details = await self._details(client_order_id)
            status = await self._status(client_order_id)
        except StoreUnavailable as exc:
            raise OutcomeUnknown(f"cancel not sent: {exc}") from exc
        if details is None:
            raise CancelRejected(f"unknown order {client_order_id}")
        if status is BrokerOrderStatus.CANCELED:
            return
        if status in _FINAL:
            raise CancelRejected(f"order {client_order_id} is already {status}")
        cancel_id = f"{client_order_id}-C{self._token}{next(self._ids)}"
        waiting = CancelWait(client_order_id)
        self._cancels[cancel_id] = waiting
        self._cancel_orders[cancel_id] = client_order_id
        while len(self._cancel_orders) > _ORDERS_KEPT:
            self._cancel_orders.popitem(last=False)
        try:
            body = order_cancel_request(
                cancel_id,
                details,
                broker_order_id=self._order(client_order_id).broker_order_id,
                transact_time=self._clock(),
            )
            try:
                await session.send(
                    MsgType.ORDER_CANCEL_REQUEST, body, reference=cancel_id, client_order_id=client_order_id
                )
            except StoreUnavailable as exc:
                raise OutcomeUnknown(f"cancel not sent: {exc}") from exc
            await self._await(waiting.answer, "the cancel's answer")
        finally:
            del self._cancels[cancel_id]

    async def query(self, client_order_id: str) -> BrokerOrderSnapshot | None:
        """The broker's view of the order (OrderStatusRequest), or None if it never had it."""
        session = self._logged_on()
        try:
            details = await self._details(client_order_id)
        except StoreUnavailable as exc:
            raise OutcomeUnknown(f"query not sent: {exc}") from exc
        if details is None:
            return None  # never sent over this session (see the module docstring)
        request_id = f"Q{self._token}{next(self._ids)}"
        waiting = QueryWait(client_order_id)
        self._queries[request_id] = waiting
        try:
            body = order_status_request(
                details, request_id=request_id, broker_order_id=self._order(client_order_id).broker_order_id
            )
            try:
                await session.send(
                    MsgType.ORDER_STATUS_REQUEST, body, reference=request_id, client_order_id=client_order_id
                )
            except StoreUnavailable as exc:
                raise OutcomeUnknown(f"query not sent: {exc}") from exc
            return await self._await(waiting.answer, "the status report")
        finally:
            del self._queries[request_id]

    async def open_orders(self) -> list[BrokerOrderSnapshot]:
        """Orders whose latest ExecutionReport leaves them open (accepted, partially filled),
        once the session is in sync. Raises DeniedLocally when not logged on, OutcomeUnknown
        while a resend is still in progress after `sync_s`."""
        await self._in_sync()
        await self._reports_committed()
        try:
            return await self._store.open_orders()
        except StoreUnavailable as exc:
            raise OutcomeUnknown(str(exc)) from exc

    async def fills_since(self, since: datetime) -> list[OrderFilled]:
        """Every fill received at or after `since` (TransactTime), oldest first, each ExecID
        once, once the session is in sync (same errors as `open_orders`)."""
        await self._in_sync()
        await self._reports_committed()
        try:
            return await self._store.fills_since(since)
        except StoreUnavailable as exc:
            raise OutcomeUnknown(str(exc)) from exc

    # --- the session's Application ----------------------------------------------------------

    async def on_application_messages(
        self, messages: Sequence[Message], mark: InboundMark | None
    ) -> list[Rejection]:
        """Answer the requests waiting for the batch's ExecutionReports at once; record the
        reports (and `mark`, if any) in one commit; then emit their events and act on the other
        messages, in order (module docstring). Malformed ones are returned for the session to
        reject."""
        received_at = self._clock()
        rejections: list[Rejection] = []
        parsed: list[tuple[Message, ExecutionReport | None, str]] = []
        to_record: list[InboundReport] = []
        for message in messages:
            if message.msg_type != MsgType.EXECUTION_REPORT:
                parsed.append((message, None, ""))
                continue
            try:
                report = parse_execution_report(message, received_at=received_at)
            except ValueError as exc:
                rejections.append(Rejection(message, str(exc)))
                continue
            client_order_id = self._order_of(report)
            if not report.answers_status_request:
                to_record.append(InboundReport(report, client_order_id, self.config.fill_venue, received_at))
                # The answer is the broker's, whatever becomes of our record of it: a submit
                # does not wait for the commit (the events do).
                self._note(client_order_id, report)
                self._settle_submit(client_order_id, report)
                self._settle_cancels(client_order_id, report)
            parsed.append((message, report, client_order_id))
        self._recording += 1
        try:
            recorded = iter(await self._store.record_executions(to_record, mark))
        finally:
            self._recording -= 1
            if not self._recording:
                self._recorded.set()
                self._recorded = trio.Event()
        for message, handled, client_order_id in parsed:
            if handled is None:
                try:
                    self._on_other(message)
                except ValueError as exc:
                    rejections.append(Rejection(message, str(exc)))
            elif handled.answers_status_request:
                self._on_status_answer(handled, client_order_id)
            else:
                self._on_recorded(handled, client_order_id, next(recorded))
        return rejections

    def _on_other(self, message: Message) -> None:
        msg_type = message.msg_type
        if msg_type == MsgType.ORDER_CANCEL_REJECT:
            self._on_cancel_reject(message)
        elif msg_type == MsgType.BUSINESS_MESSAGE_REJECT:
            self._on_business_reject(message)
        else:
            log.info("application message ignored", extra={"broker_id": self.broker_id, "msg_type": msg_type})

    async def on_session_reject(self, reference: SentReference | None, text: str) -> None:
        if reference is not None:
            self._refused(reference.msg_type, reference.key, f"session reject: {text}")

    # --- internals -----------------------------------------------------------------------

    def _on_status_answer(self, report: ExecutionReport, client_order_id: str) -> None:
        answered = self._answer_query(report, client_order_id)
        if not report.unknown_order:
            self._note(client_order_id, report)
        elif not answered:  # a late answer: the query gave up (OutcomeUnknown) already
            log.info(
                "unknown-order answer with no status request waiting",
                extra={"broker_id": self.broker_id, "client_order_id": client_order_id},
            )

    def _on_recorded(
        self, report: ExecutionReport, client_order_id: str, recorded: RecordedExecution
    ) -> None:
        """A report that reports a change, once recorded: settle what waits for it, emit its
        events unless its ExecID was seen before."""
        if not recorded.fee_priced:
            log.error(
                "commission of a fill could not be priced; recorded as 0",
                extra={"broker_id": self.broker_id, "exec_id": report.exec_id, "comm_type": report.comm_type},
            )
        if not recorded.new:
            log.info(
                "duplicate ExecID ignored", extra={"broker_id": self.broker_id, "exec_id": report.exec_id}
            )
            return
        for event in events_of(
            report, client_order_id=client_order_id, fee=recorded.fee, venue=self.config.fill_venue
        ):
            self._emit(event)

    def _order_of(self, report: ExecutionReport) -> str:
        """Our order's ClOrdID: OrigClOrdID when given (reports of a cancel carry the cancel's
        ClOrdID in 11), else ClOrdID, mapped back if it is one of our cancels."""
        if report.orig_cl_ord_id:
            return report.orig_cl_ord_id
        return self._cancel_orders.get(report.cl_ord_id, report.cl_ord_id)

    def _note(self, client_order_id: str, report: ExecutionReport) -> None:
        order = self._order(client_order_id)
        if report.order_id:
            order.broker_order_id = report.order_id
        order.status = order_status(report.ord_status, report.cum_qty)

    def _settle_submit(self, client_order_id: str, report: ExecutionReport) -> None:
        answer = self._submits.get(client_order_id)
        if answer is None or report.exec_type == ExecType.PENDING_NEW:
            return
        if report.exec_type == ExecType.REJECTED:
            answer.fail(BrokerRejected(report.text or "rejected by the broker"))
        else:  # New, or any later state: the order exists
            answer.resolve(BrokerAck(broker_order_id=report.order_id or "", at=report.transact_time))

    def _settle_cancels(self, client_order_id: str, report: ExecutionReport) -> None:
        if report.exec_type not in (ExecType.CANCELED, ExecType.PENDING_CANCEL):
            return
        for waiting in self._cancels.values():
            if waiting.client_order_id == client_order_id:
                waiting.answer.resolve(None)

    def _answer_query(self, report: ExecutionReport, client_order_id: str) -> bool:
        """Settle the status request `report` answers; False when none is waiting for it."""
        waiting = self._queries.get(report.status_req_id or "")
        if waiting is None:  # a broker that does not echo OrdStatusReqID: match by order
            waiting = next((q for q in self._queries.values() if q.client_order_id == client_order_id), None)
        if waiting is None:
            return False
        waiting.answer.resolve(None if report.unknown_order else snapshot_of(report, client_order_id))
        return True

    def _on_cancel_reject(self, message: Message) -> None:
        cancel_id = message.require(Tag.CL_ORD_ID)
        waiting = self._cancels.get(cancel_id)
        if waiting is None:
            return
        if message.text(Tag.ORD_STATUS) == OrdStatus.CANCELED:
            waiting.answer.resolve(None)  # already canceled: what we wanted
        else:
            reason = (
                message.text(Tag.TEXT) or f"cancel rejected (CxlRejReason {message.text(Tag.CXL_REJ_REASON)})"
            )
            waiting.answer.fail(CancelRejected(reason))

    def _on_business_reject(self, message: Message) -> None:
        text = message.text(Tag.TEXT) or f"business reject (380={message.text(Tag.BUSINESS_REJECT_REASON)})"
        ref_seq = message.integer(Tag.REF_SEQ_NUM)
        session = self._session
        reference = session.reference(ref_seq) if session is not None and ref_seq is not None else None
        if reference is not None:
            self._refused(reference.msg_type, reference.key, text)
        else:
            self._refused(
                message.text(Tag.REF_MSG_TYPE) or "", message.text(Tag.BUSINESS_REJECT_REF_ID), text
            )

    def _refused(self, msg_type: str, key: str | None, text: str) -> None:
        """The broker refused one of our requests outright (it was not processed)."""
        if key is None:
            return
        if msg_type == MsgType.NEW_ORDER_SINGLE and key in self._submits:
            self._submits[key].fail(BrokerRejected(text))
        elif msg_type == MsgType.ORDER_CANCEL_REQUEST and key in self._cancels:
            self._cancels[key].answer.fail(CancelRejected(text))
        elif msg_type == MsgType.ORDER_STATUS_REQUEST and key in self._queries:
            self._queries[key].answer.fail(OutcomeUnknown(f"status request refused: {text}"))

    def _emit(self, event: AnyBrokerEvent) -> None:
        outbox = self._outbox
        if outbox is None:  # run is ending: the record keeps it for fills_since
            return
        outbox.send_nowait(event)

    def _fail_waiters(self, reason: str) -> None:
        """Every request still waiting learns the connection is gone (one exception each)."""
        for answer in self._submits.values():
            answer.fail(ConnectionLost(reason))
        for cancel in self._cancels.values():
            cancel.answer.fail(ConnectionLost(reason))
        for query in self._queries.values():
            query.answer.fail(ConnectionLost(reason))

    def _logged_on(self) -> FixSession:
        session = self._session
        if session is None or not session.logged_on:
            raise DeniedLocally(f"{self.broker_id}: not logged on")
        return session

    async def _reports_committed(self) -> None:
        """Until the reports received so far are recorded (each commit is bounded by the store's
        timeout): what a request answered before that commit sees in the record afterwards."""
        while self._recording:
            await self._recorded.wait()

    async def _in_sync(self) -> None:
        session = self._logged_on()
        if not await session.wait_in_sync(self.config.timeouts.sync_s):
            raise OutcomeUnknown(f"{self.broker_id}: a resend is still in progress; the record may be behind")

    async def _await(self, answer: Pending[T], what: str) -> T:
        timeout = self.config.timeouts.answer_s
        with trio.move_on_after(timeout):
            return await answer.wait()
        raise OutcomeUnknown(f"{self.broker_id}: no answer within {timeout}s ({what})")

    def _order(self, client_order_id: str) -> KnownOrder:
        order = self._orders.get(client_order_id)
        if order is None:
            order = self._orders[client_order_id] = KnownOrder()
            while len(self._orders) > _ORDERS_KEPT:
                self._orders.popitem(last=False)
        else:
            self._orders.move_to_end(client_order_id)
        return order

    async def _details(self, client_order_id: str) -> OrderDetails | None:
        """Symbol, side and quantity of an order we sent: memory, else the NewOrderSingle
        recorded in PostgreSQL (after a restart), else None (never sent)."""
        known = self._orders.get(client_order_id)
        if known is not None and known.details is not None:
            return known.details
        stored = await self._store.new_order(client_order_id)
        if stored is None:
            return None
        details = order_details(parse_frame(stored.raw))
        self._order(client_order_id).details = details
        return details

    async def _status(self, client_order_id: str) -> BrokerOrderStatus | None:
        known = self._orders.get(client_order_id)
        if known is not None and known.status is not None:
            return known.status
        await self._reports_committed()
        latest = await self._store.latest_state(client_order_id)
        return None if latest is None else latest.status


def build_fix_broker(config: FixConfig, database_url: str, *, clock: Clock | None = None) -> FixBroker:
    """A FIX broker whose session state lives in the PostgreSQL database at `database_url`
    (migrated: 0005_fix_sessions). Start it with `nursery.start(broker.run, events)`."""
    return FixBroker(config, FixStore(database_url, config), clock=clock)


def _single_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one error a nursery wrapped (cancellations aside), else None."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        elif not isinstance(exc, trio.Cancelled):
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None


async def _forward(
    inbox: trio.MemoryReceiveChannel[AnyBrokerEvent], events: trio.MemorySendChannel[AnyBrokerEvent]
) -> None:
    """Move events from the internal queue to the caller's channel, in order."""
    async for event in inbox:
        await events.send(event)
