"""Interactive Brokers (TWS or IB Gateway) as a `BrokerAdapter`, through ib_async.

The asyncio side (ib_async itself) lives in `adapters.ib.session`; translation in
`adapters.ib.translate`; error codes in `adapters.ib.codes`; fills in `adapters.ib.ledger`;
orders by client order id in `adapters.ib.orders`.

Connection. `run` opens one API connection (handshake, nextValidId, managed accounts, open and
completed orders), picks the account, recovers what the previous connection missed, reports
started (connected means caught up), then applies every message from TWS until the socket
closes (ConnectionLost: the supervisor restarts `run` with its backoff). Error 326 (client id
in use) raises AuthenticationFailed, and `run` refuses to try again for `client_id_retry`
seconds: a configuration error, not a reconnect loop. Codes 1100/1101/1102 and the farm
codes set the connection status (`status_listener`); while TWS has lost IB (1100) orders are
refused locally; after 1101/1102 the recovery runs again.

Recovery, on every (re)connect and after 1101/1102 (PITFALLS: fills around a 1100 can be
lost): `reqExecutions` filtered by this client id, the account and a time `recovery_overlap`
before the newest fill booked (first connect: `recovery_lookback` before the adapter was
built), under `executions_timeout`; a timeout is "recovery incomplete" and ends the
connection (retried by the supervisor), never "no fills". Then every order last known open is
looked up among IB's open and completed orders, and its missed terminal event is emitted.
The ledger books every fill id once, so the overlap with the live stream costs nothing.

Submission is never repeated. Our client order id travels as `orderRef`. `submit` records the
order before placeOrder; a second submit of the same id returns the first order's ack (or its
rejection), never a second order, and the same holds across restarts for every order IB still
reports (open and completed orders are loaded at connect). Without IB's acknowledgement
within `submit_timeout`, the order is looked up by orderRef among open and completed orders:
found, it is adopted; not found, OutcomeUnknown (the daemon reconciles with `query`). A
disconnect while waiting is ConnectionLost. An unknown or ambiguous contract (error 200) and
any order error before an acknowledgement (201, Inactive with an error) are BrokerRejected.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import trio
from ib_async import Contract

from adapters.base import (
    AuthenticationFailed,
    BrokerAck,
    BrokerError,
    BrokerOrderSnapshot,
    BrokerRejected,
    CancelRejected,
    Capabilities,
    ConnectionLost,
    DeniedLocally,
    OutcomeUnknown,
    SubmitRequest,
)
from adapters.ib import codes
from adapters.ib.config import IbConfig
from adapters.ib.ledger import FillLedger, Verdict
from adapters.ib.orders import OrderBook, OrderRecord
from adapters.ib.session import ClientIdInUse, IbSession
from adapters.ib.translate import (
    ORDER_TYPES,
    UnknownIbWord,
    broker_status,
    contract_spec,
    fill_id,
    filter_time,
    order_problem,
    order_spec,
    rejection,
    snapshot,
)
from adapters.ib.wire import (
    IbCommission,
    IbDisconnected,
    IbError,
    IbExecution,
    IbMessage,
    IbOrderState,
)
from api.commission import commission
from api.enums import AssetClass, BrokerOrderStatus, ConnectionStatus
from api.events import AnyBrokerEvent, OrderFilled

log = logging.getLogger(__name__)

#: Messages from ib_async waiting for the adapter; past it the connection is dropped and
#: recovered (a stuck consumer must not grow memory without bound).
MESSAGE_BUFFER = 50_000

StatusListener = Callable[[ConnectionStatus, str], None]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class IbBroker:
    """One TWS / IB Gateway API client, driven through the `BrokerAdapter` interface."""

    def __init__(self, config: IbConfig, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self.config = config
        self.broker_id = config.broker_id
        self.name = config.name
        self.capabilities = Capabilities(
            asset_classes=frozenset(config.asset_classes),
            features=frozenset(order_type.feature for order_type in ORDER_TYPES),
            time_in_force=frozenset(config.time_in_force),
            rate_limits=config.rate_limits,
        )
        self.commission = config.commission
        self.outlives_daemon = True
        #: Told every change of the connection status the TWS codes imply (the daemon sets it).
        self.status_listener: StatusListener | None = None
        self._clock = clock
        self._born = clock()
        self._orders = OrderBook()
        self._ledger = FillLedger()
        self._contracts: dict[tuple[str, AssetClass], Contract] = {}
        self._session: IbSession | None = None
        self._account = config.account
        self._link = codes.LinkState()
        self._running = False
        self._connected = False
        self._refused_until: float | None = None
        self._refused_reason = ""
        self._lookups = trio.Lock()
        self._changed = trio.Event()
        self._cancel_answers: dict[int, IbError] = {}
        self._events: trio.MemorySendChannel[AnyBrokerEvent] | None = None
        #: Successful connections so far (each one ran a recovery).
        self.connections = 0

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return (
            f"<IbBroker {self.broker_id} {self.config.host}:{self.config.port} "
            f"client={self.config.client_id} {state} {self._link.status} connections={self.connections}>"
        )

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def account(self) -> str:
        return self._account

    # --- connection --------------------------------------------------------------------------

    async def run(
        self,
        events: trio.MemorySendChannel[AnyBrokerEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect, recover, report started, then apply TWS's messages until the connection
        ends (ConnectionLost) or `run` is cancelled. One `run` at a time."""
        if self._running:
            raise RuntimeError(f"{self.broker_id}: run() is already active")
        if self._refused_until is not None and trio.current_time() < self._refused_until:
            raise AuthenticationFailed(self._refused_reason)
        self._running = True
        send, receive = trio.open_memory_channel[IbMessage](MESSAGE_BUFFER)
        session = IbSession(self.config, send)
        try:
            try:
                accounts = await session.connect()
            except ClientIdInUse as exc:
                self._refused_until = trio.current_time() + self.config.client_id_retry
                self._refused_reason = exc.reason
                log.error("ib client id in use", extra={"broker_id": self.broker_id, "why": exc.reason})
                raise
            self._account = self._choose_account(accounts)
            self._session = session
            self._events = events
            self._link = codes.LinkState()
            for state in session.known_orders():
                self._orders.update(state, self._clock())  # orders of earlier sessions, by orderRef
            await self._recover(events)
            self._connected = True
            self.connections += 1
            self._tell_status(ConnectionStatus.CONNECTED, "connected")
            log.info(
                "ib connected",
                extra={
                    "broker_id": self.broker_id,
                    "account": self._account,
                    "client_id": self.config.client_id,
                },
            )
            task_status.started()
            await self._pump(session, receive, events)
        finally:
            self._connected = False
            self._session = None
            self._events = None
            self._running = False
            session.disconnect()
            send.close()
            self._wake()

    def _choose_account(self, accounts: list[str]) -> str:
        if self.config.account:
            if accounts and self.config.account not in accounts:
                raise AuthenticationFailed(
                    f"account {self.config.account} is not managed by this TWS login (it manages {accounts})"
                )
            return self.config.account
        if len(accounts) == 1:
            return accounts[0]
        raise AuthenticationFailed(f"TWS manages {len(accounts)} accounts {accounts}: set `account`")

    async def heartbeat(self) -> None:
        """reqCurrentTime: a round trip through TWS. Raises ConnectionLost when not connected."""
        session = self._session
        if session is None or not self._connected:
            raise ConnectionLost(f"{self.broker_id}: not connected")
        await session.current_time()

    # --- orders ------------------------------------------------------------------------------

    async def submit(self, request: SubmitRequest) -> BrokerAck:
        """Place one order, sent once. Raises DeniedLocally (not connected, TWS without IB, an
        order IB cannot take, no contract answer in time: nothing sent), BrokerRejected (IB
        refused: nothing lives there) or OutcomeUnknown (it may exist: not found by orderRef)."""
        session = self._usable_session()
        problem = order_problem(request, self.capabilities.asset_classes, self.capabilities.time_in_force)
        if problem is not None:
            raise DeniedLocally(problem)
        known = self._orders.get(request.client_order_id)
        if known is not None:
            return self._answer_known(known, request)
        contract = await self._qualify(session, request)
        await session.pacer.acquire()  # a wait here is before anything is recorded or sent
        known = self._orders.get(request.client_order_id)
        if known is not None:  # the same id submitted concurrently while this one waited
            return self._answer_known(known, request)
        record = OrderRecord(request.client_order_id, request.quantity, self._clock())
        self._orders.add(record)
        try:
            state = await session.place(contract, order_spec(request), self._account)
        except ConnectionLost as exc:
            raise ConnectionLost(f"{exc.reason} (placeOrder may not have been sent)") from None
        if record.state is None:
            record.state = state
        return await self._await_ack(session, record)

    def _answer_known(self, record: OrderRecord, request: SubmitRequest) -> BrokerAck:
        if record.quantity != request.quantity:
            raise OutcomeUnknown(
                f"orderRef {request.client_order_id} is held by an order of {record.quantity}, "
                f"not {request.quantity}"
            )
        if record.status is BrokerOrderStatus.REJECTED:
            raise BrokerRejected(self._rejection(record) or "rejected by IB")
        broker_order_id = record.broker_order_id
        if broker_order_id is None:
            raise OutcomeUnknown(f"order {request.client_order_id} was sent; IB has not acknowledged it yet")
        return BrokerAck(broker_order_id=broker_order_id, at=record.sent_at)

    async def _await_ack(self, session: IbSession, record: OrderRecord) -> BrokerAck:
        with trio.move_on_after(self.config.submit_timeout):
            while True:
                if record.status is BrokerOrderStatus.REJECTED:
                    raise BrokerRejected(self._rejection(record) or "rejected by IB")
                broker_order_id = record.broker_order_id
                if broker_order_id is not None:
                    return BrokerAck(broker_order_id=broker_order_id, at=record.sent_at)
                if self._session is not session:
                    raise ConnectionLost(
                        f"connection to TWS lost before order {record.client_order_id} was acknowledged"
                    )
                await self._wait_change()
        return await self._adopt(record)

    async def _adopt(self, record: OrderRecord) -> BrokerAck:
        """No acknowledgement in time: the order if IB has it under our orderRef, else unknown."""
        coid = record.client_order_id
        failure = OutcomeUnknown(f"no acknowledgement from IB within {self.config.submit_timeout:g}s")
        try:
            state = await self._lookup(coid)
        except BrokerError as exc:
            log.warning(
                "ib lookup after an unacknowledged submit failed",
                extra={"broker_id": self.broker_id, "client_order_id": coid, "why": exc.reason},
            )
            raise failure from None
        if state is None:
            raise failure
        if record.status is BrokerOrderStatus.REJECTED:
            raise BrokerRejected(self._rejection(record) or "rejected by IB")
        broker_order_id = record.broker_order_id
        if broker_order_id is None:
            raise failure
        log.info(
            "ib order adopted after a lost acknowledgement",
            extra={"broker_id": self.broker_id, "client_order_id": coid, "broker_order_id": broker_order_id},
        )
        return BrokerAck(broker_order_id=broker_order_id, at=record.sent_at)

    async def cancel(self, client_order_id: str) -> None:
        """cancelOrder, answered within `cancel_timeout`: cancelled (now or before) returns;
        unknown (10147) or final otherwise (10148, filled, rejected) raises CancelRejected;
        no answer raises OutcomeUnknown. Idempotent."""
        session = self._usable_session()
        record = self._orders.get(client_order_id)
        if record is None or record.state is None or not record.acknowledged:
            await self._lookup(client_order_id)
            record = self._orders.get(client_order_id)
        if record is None or record.state is None or not record.acknowledged:
            raise CancelRejected(f"unknown order {client_order_id}")
        status = record.status
        if status is BrokerOrderStatus.CANCELED:
            return
        if status.is_final:
            raise CancelRejected(f"order is {status}")
        state = record.state
        if state.client_id != self.config.client_id:
            raise CancelRejected(f"order {client_order_id} belongs to API client {state.client_id}")
        self._cancel_answers.pop(state.order_id, None)
        await session.cancel(state)
        with trio.move_on_after(self.config.cancel_timeout):
            while True:
                if record.status is BrokerOrderStatus.CANCELED:
                    return
                answer = self._cancel_answers.pop(state.order_id, None)
                if answer is not None:
                    return await self._cancel_refused(client_order_id, answer)
                if record.status.is_final:
                    raise CancelRejected(f"order is {record.status}")
                if self._session is not session:
                    raise ConnectionLost("connection to TWS lost before the cancel was answered")
                await self._wait_change()
        raise OutcomeUnknown(f"no answer to the cancel within {self.config.cancel_timeout:g}s")

    async def _cancel_refused(self, client_order_id: str, answer: IbError) -> None:
        if answer.code == codes.CANCEL_NOT_ALLOWED:
            state = await self._lookup(client_order_id)
            if state is not None and broker_status(state) is BrokerOrderStatus.CANCELED:
                return
        raise CancelRejected(f"IB {answer.code}: {answer.message}")

    async def query(self, client_order_id: str) -> BrokerOrderSnapshot | None:
        """IB's view of the order, found by orderRef among its open and completed orders (a
        final state known from this connection is answered without asking)."""
        record = self._orders.get(client_order_id)
        if record is not None and record.state is not None and record.status.is_final and self._connected:
            return self._snapshot(record.state)
        state = await self._lookup(client_order_id)
        return None if state is None else self._snapshot(state)

    async def open_orders(self) -> list[BrokerOrderSnapshot]:
        """Every open order of this TWS that carries an orderRef (ours), this account's."""
        session = self._any_session()
        async with self._lookups:
            states = await session.open_orders()
        found: list[BrokerOrderSnapshot] = []
        for state in states:
            if state.order_ref:
                await self._emit(self._orders.update(state, self._clock()))
                snap = self._snapshot(state)
                if not snap.status.is_final:
                    found.append(snap)
        return found

    async def fills_since(self, since: datetime) -> list[OrderFilled]:
        """This client's executions at or after `since` (to the second), oldest first, one per
        fill id (a corrected execution appears once, as first reported). Raises OutcomeUnknown
        when IB does not finish answering within `executions_timeout`."""
        session = self._any_session()
        answers = await session.executions(self._account, filter_time(since.timestamp()))
        fills: dict[str, OrderFilled] = {}
        for execution, report in sorted(answers, key=lambda a: (a[0].at, a[0].exec_id)):
            if not execution.order_ref:
                continue  # not placed by this service (a manual or other client's order)
            fill = self._fill(execution, report)
            fills.setdefault(fill.fill_id, fill)
        return sorted(fills.values(), key=lambda f: f.at)

    # --- messages from TWS -------------------------------------------------------------------

    async def _pump(
        self,
        session: IbSession,
        receive: trio.MemoryReceiveChannel[IbMessage],
        events: trio.MemorySendChannel[AnyBrokerEvent],
    ) -> None:
        while True:
            if session.overflowed:
                raise ConnectionLost("messages from TWS arrived faster than they were applied")
            due = self._ledger.next_due()
            with trio.move_on_at(math.inf if due is None else due):
                message = await receive.receive()
                await self._apply(message, events)
                self._wake()
                continue
            for execution in self._ledger.due(trio.current_time()):
                log.warning(
                    "ib commission report missing: fee computed from the configured commission",
                    extra={"broker_id": self.broker_id, "exec_id": execution.exec_id},
                )
                await self._book(self._fill(execution, None), execution, events)

    async def _apply(self, message: IbMessage, events: trio.MemorySendChannel[AnyBrokerEvent]) -> None:
        if isinstance(message, IbOrderState):
            await self._on_order(message, events)
        elif isinstance(message, IbExecution):
            await self._on_execution(message, events)
        elif isinstance(message, IbCommission):
            ready = self._ledger.commission(message)
            if ready is not None:
                execution, report = ready
                await self._book(self._fill(execution, report), execution, events)
            elif not self._ledger.waiting(message.exec_id) and self._ledger.is_booked(message.exec_id):
                log.info("ib commission report after its fill was booked", extra={"exec_id": message.exec_id})
        elif isinstance(message, IbError):
            await self._on_error(message, events)
        elif isinstance(message, IbDisconnected):
            raise ConnectionLost(message.reason)

    async def _on_order(self, state: IbOrderState, events: trio.MemorySendChannel[AnyBrokerEvent]) -> None:
        try:
            found = self._orders.update(state, self._clock())
        except UnknownIbWord as exc:
            log.warning("ib order in an unknown status", extra={"broker_id": self.broker_id, "why": str(exc)})
            return
        for event in found:
            await events.send(event)

    async def _on_execution(
        self, execution: IbExecution, events: trio.MemorySendChannel[AnyBrokerEvent]
    ) -> None:
        if not execution.order_ref:
            return
        verdict = self._ledger.execution(execution, trio.current_time() + self.config.commission_wait)
        if verdict is Verdict.CORRECTION:
            log.warning(
                "ib corrected an execution already booked; the booked fill stands",
                extra={
                    "broker_id": self.broker_id,
                    "exec_id": execution.exec_id,
                    "shares": str(execution.shares),
                    "price": str(execution.price),
                },
            )
            return
        if verdict is Verdict.NEW:
            ready = self._ledger.early_commission(execution.exec_id)
            if ready is not None:
                await self._book(self._fill(ready[0], ready[1]), ready[0], events)

    async def _on_error(self, error: IbError, events: trio.MemorySendChannel[AnyBrokerEvent]) -> None:
        kind = codes.classify(error.code)
        if kind is codes.CodeKind.CANCEL_ANSWER:
            self._cancel_answers[error.req_id] = error
        elif kind in (codes.CodeKind.CONNECTIVITY, codes.CodeKind.FARM):
            status = self._link.apply(error.code, error.message)
            if status is not None:
                self._tell_status(status, f"IB {error.code}: {error.message}")
            if error.code in (codes.RESTORED_DATA_LOST, codes.RESTORED_DATA_KEPT):
                try:
                    await self._recover(events)
                except OutcomeUnknown as exc:
                    raise ConnectionLost(f"recovery after IB {error.code} incomplete: {exc.reason}") from None
        elif kind is codes.CodeKind.PACING:
            log.error("ib pacing violation", extra={"broker_id": self.broker_id, "why": error.message})
        elif kind is codes.CodeKind.ERROR and error.req_id == -1:
            log.warning(
                "ib error", extra={"broker_id": self.broker_id, "code": error.code, "why": error.message}
            )

    # --- recovery ----------------------------------------------------------------------------

    async def _recover(self, events: trio.MemorySendChannel[AnyBrokerEvent]) -> None:
        overlap = timedelta(seconds=self.config.recovery_overlap)
        start = self._ledger.newest_fill or self._born - timedelta(seconds=self.config.recovery_lookback)
        recovered = 0
        for fill in await self.fills_since(start - overlap):
            if await self._book(fill, None, events):
                recovered += 1
        if self._orders.open():
            for state in await self._lookup_all():
                for event in self._orders.update(state, self._clock()):
                    recovered += 1
                    await events.send(event)
        log.info(
            "ib recovery done",
            extra={"broker_id": self.broker_id, "recovered": recovered, "since": start - overlap},
        )

    # --- internals ---------------------------------------------------------------------------

    async def _book(
        self, fill: OrderFilled, execution: IbExecution | None, events: trio.MemorySendChannel[AnyBrokerEvent]
    ) -> bool:
        if not self._ledger.book(fill, execution):
            return False
        await events.send(fill)
        return True

    def _fill(self, execution: IbExecution, report: IbCommission | None) -> OrderFilled:
        if report is not None:
            fee = abs(report.commission)
        else:
            fee = commission(self.commission, execution.shares * execution.price, self._ledger.volume)
        return OrderFilled(
            client_order_id=execution.order_ref,
            at=execution.at,
            fill_id=fill_id(execution.exec_id),
            quantity=execution.shares,
            price=execution.price,
            fee=fee,
            venue=execution.exchange or self.config.venue,
            broker_order_id=str(execution.perm_id) if execution.perm_id else None,
            cumulative_quantity=execution.cumulative or None,
        )

    async def _qualify(self, session: IbSession, request: SubmitRequest) -> Contract:
        key = (request.symbol, request.asset_class)
        cached = self._contracts.get(key)
        if cached is not None:
            return cached
        spec = contract_spec(request.symbol, request.asset_class)
        try:
            found = await session.contract_details(spec)
        except OutcomeUnknown as exc:
            raise DeniedLocally(
                f"contract {request.symbol} not qualified ({exc.reason}); order not sent"
            ) from None
        if not found:
            raise BrokerRejected(
                f"IB {codes.NO_SECURITY_DEFINITION}: no security definition for {spec.symbol} "
                f"{spec.sec_type} {spec.exchange} {spec.currency}"
            )
        if len(found) > 1:
            raise BrokerRejected(f"ambiguous contract {request.symbol}: IB knows {len(found)} matches")
        self._contracts[key] = found[0]
        return found[0]

    async def _lookup(self, client_order_id: str) -> IbOrderState | None:
        """IB's state of the order with this orderRef (open orders first, then completed)."""
        matches = [s for s in await self._lookup_all() if s.order_ref == client_order_id]
        if not matches:
            return None
        for state in matches:
            await self._emit(self._orders.update(state, self._clock()))
        record = self._orders.get(client_order_id)
        return record.state if record is not None and record.state is not None else matches[-1]

    async def _lookup_all(self) -> list[IbOrderState]:
        session = self._any_session()
        async with self._lookups:  # ib_async keys these requests by name: one at a time
            opened = await session.open_orders()
            completed = await session.completed_orders()
        return [s for s in (*completed, *opened) if s.order_ref]

    def _snapshot(self, state: IbOrderState) -> BrokerOrderSnapshot:
        try:
            return snapshot(state)
        except UnknownIbWord as exc:
            raise OutcomeUnknown(str(exc)) from None

    @staticmethod
    def _rejection(record: OrderRecord) -> str | None:
        return None if record.state is None else rejection(record.state)

    def _usable_session(self) -> IbSession:
        session = self._session
        if session is None or not self._connected:
            raise DeniedLocally(f"{self.broker_id}: not connected")
        if not self._link.ib_reachable:
            raise DeniedLocally(f"{self.broker_id}: TWS has lost its connection to IB (1100)")
        return session

    def _any_session(self) -> IbSession:
        session = self._session
        if session is None:
            raise ConnectionLost(f"{self.broker_id}: not connected")
        return session

    def _tell_status(self, status: ConnectionStatus, message: str) -> None:
        if status is not ConnectionStatus.CONNECTED:
            log.warning(
                "ib connection status", extra={"broker_id": self.broker_id, "status": status, "why": message}
            )
        if self.status_listener is not None:
            self.status_listener(status, message)

    async def _emit(self, found: list[AnyBrokerEvent]) -> None:
        """Events a lookup revealed (an acknowledgement or a terminal state the stream had not
        brought), sent on the running connection's channel."""
        events = self._events
        if events is None:
            return
        for event in found:
            await events.send(event)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_change(self) -> None:
        await self._changed.wait()


def build_ib_broker(config: IbConfig, *, clock: Callable[[], datetime] = _utc_now) -> IbBroker:
    """The adapter for `config` (TWS holds the login: no credentials to read)."""
    return IbBroker(config, clock=clock)


__all__ = ["MESSAGE_BUFFER", "IbBroker", "StatusListener", "build_ib_broker"]
