"""One ib_async connection, driven from Trio: the only module of the adapter that touches asyncio.

ib_async is asyncio code. It runs on the daemon's one trio-asyncio loop (`trio_asyncio.open_loop()`
in `daemon.app`, the bridge nats-py already uses): no second event loop, no thread. Calls go
through `aio_as_trio` (an ib_async request and its `asyncio.wait_for` timeout run as one asyncio
task; a Trio cancellation cancels it). ib_async's events (orderStatus, execDetails,
commissionReport, errors, disconnect) arrive in asyncio callbacks, which only copy what they
report into frozen messages (`adapters.ib.wire`) and `send_nowait` them into a Trio memory
channel; the adapter's Trio task does the work. A full channel (the adapter stopped reading)
sets `overflowed`: the adapter then drops the connection and recovers from IB.

Start-up. `connectAsync` synchronises positions, open orders and completed orders (what it
needs to recognise later updates of orders from a previous session). It is *not* asked for
executions or account updates: its own `reqExecutions` has no filter and can hang (ib_async
issues #54, #82); the adapter asks for executions itself, with a filter and a timeout. An
error 326 (client id in use) ends the attempt at once instead of waiting out the handshake.

Pacing: every message the adapter sends waits for `Pacer` (a sliding window with a margin,
see PACING_WINDOW), below ib_async's own throttle, so IB's 50 messages per second is never
exceeded as TWS measures it.

Failures map at this boundary: a timeout is `RequestTimedOut` (OutcomeUnknown), a closed or
refused socket `ConnectionLost`, 326 `ClientIdInUse` (AuthenticationFailed).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio
from ib_async import IB, CommissionReport, Contract, ExecutionFilter, Fill, Order, Trade
from ib_async.ib import StartupFetch
from trio_asyncio import aio_as_trio

from adapters.base import AuthenticationFailed, ConnectionLost, OutcomeUnknown
from adapters.ib.codes import CLIENT_ID_IN_USE
from adapters.ib.config import IbConfig
from adapters.ib.translate import ContractSpec, OrderSpec
from adapters.ib.wire import (
    IbCommission,
    IbDisconnected,
    IbError,
    IbExecution,
    IbMessage,
    IbOrderState,
    commission,
    execution,
    order_state,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_STARTUP = StartupFetch.POSITIONS | StartupFetch.ORDERS_OPEN | StartupFetch.ORDERS_COMPLETE


#: Pacing window: `max_messages_per_second` messages per this many seconds. Longer than IB's
#: one second so that network and scheduling jitter cannot squeeze two full windows of ours
#: into one of IB's (ib_async's own throttle, a plain one-second window, has no such margin).
PACING_WINDOW = 1.25


class Pacer:
    """At most `limit` messages in any `window` seconds, oldest first (a sliding window)."""

    def __init__(self, limit: int, window: float = PACING_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._sent: deque[float] = deque()

    def __repr__(self) -> str:
        return f"<Pacer {len(self._sent)}/{self.limit} per {self.window:g}s>"

    async def acquire(self) -> None:
        """Wait until one more message fits, then count it."""
        while True:
            now = trio.current_time()
            while self._sent and now - self._sent[0] >= self.window:
                self._sent.popleft()
            if len(self._sent) < self.limit:
                self._sent.append(now)
                return
            await trio.sleep_until(self._sent[0] + self.window)


class ClientIdInUse(AuthenticationFailed):
    """TWS refused the API connection: another client is connected with this client id."""


class RequestTimedOut(OutcomeUnknown):
    pass


class IbSession:
    """One API connection: an `ib_async.IB`, its event handlers and its calls."""

    def __init__(self, config: IbConfig, messages: trio.MemorySendChannel[IbMessage]) -> None:
        self.config = config
        self.ib = IB()
        self.ib.RaiseRequestErrors = False
        self.ib.client.MaxRequests = config.max_messages_per_second
        self.overflowed = False
        self.pacer = Pacer(config.max_messages_per_second)
        self._messages = messages
        self._refusal: asyncio.Future[str] | None = None
        self.ib.orderStatusEvent += self._on_order
        self.ib.openOrderEvent += self._on_order
        self.ib.execDetailsEvent += self._on_execution
        self.ib.commissionReportEvent += self._on_commission
        self.ib.errorEvent += self._on_error
        self.ib.disconnectedEvent += self._on_disconnected

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<IbSession {self.config.host}:{self.config.port} client={self.config.client_id} {state}>"

    @property
    def connected(self) -> bool:
        return bool(self.ib.isConnected())

    # --- asyncio callbacks: copy, hand over, nothing else ---------------------------------------

    def _send(self, message: IbMessage) -> None:
        try:
            self._messages.send_nowait(message)
        except trio.WouldBlock:
            self.overflowed = True
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the adapter is gone: this connection is being closed

    def _on_order(self, trade: Trade) -> None:
        self._send(order_state(trade))

    def _on_execution(self, trade: Trade, fill: Fill) -> None:
        self._send(execution(fill, trade.order.orderRef or ""))

    def _on_commission(self, trade: Trade, fill: Fill, report: CommissionReport) -> None:
        found = commission(report)
        if found is not None:
            self._send(found)

    def _on_error(self, req_id: int, code: int, message: str, contract: Contract | None = None) -> None:
        if code == CLIENT_ID_IN_USE and self._refusal is not None and not self._refusal.done():
            self._refusal.set_result(message)
        self._send(IbError(req_id=req_id, code=code, message=message))

    def _on_disconnected(self) -> None:
        self._send(IbDisconnected(reason="TWS closed the API connection"))

    # --- calls ---------------------------------------------------------------------------------

    async def connect(self) -> list[str]:
        """Connect, handshake and synchronise within `connect_timeout`; the managed accounts."""
        config = self.config

        async def attempt() -> list[str]:
            loop = asyncio.get_running_loop()
            self._refusal = refusal = loop.create_future()
            connecting = asyncio.ensure_future(
                self.ib.connectAsync(
                    config.host,
                    config.port,
                    config.client_id,
                    timeout=config.connect_timeout,
                    fetchFields=_STARTUP,
                )
            )
            try:
                await asyncio.wait({connecting, refusal}, return_when=asyncio.FIRST_COMPLETED)
                if refusal.done():
                    raise ClientIdInUse(
                        f"TWS refused client id {config.client_id} (error 326: {refusal.result()}): "
                        f"another API client uses it; give this broker a unique client_id"
                    )
                connecting.result()
                return list(self.ib.client.getAccounts())
            finally:
                self._refusal = None
                if not connecting.done():
                    connecting.cancel()

        try:
            with trio.fail_after(config.connect_timeout + 1.0):
                accounts: list[str] = await aio_as_trio(attempt)()
                return accounts
        except trio.TooSlowError:
            self.disconnect()
            raise ConnectionLost(f"no API connection within {config.connect_timeout:g}s") from None
        except ClientIdInUse:
            self.disconnect()
            raise
        except (TimeoutError, OSError, ConnectionError) as exc:
            self.disconnect()
            raise ConnectionLost(
                f"could not connect to TWS at {config.host}:{config.port}: {exc!r}"
            ) from None

    def disconnect(self) -> None:
        try:
            self.ib.disconnect()
        except Exception as exc:  # closing must never raise into a cleanup path
            log.debug("ib disconnect failed", extra={"error": repr(exc)})

    async def request(self, make: Callable[[], Awaitable[T]], timeout: float, what: str) -> T:
        """`await make()` in asyncio within `timeout`. Raises RequestTimedOut or ConnectionLost."""

        async def run() -> T:
            return await asyncio.wait_for(make(), timeout)

        if not self.connected:
            raise ConnectionLost(f"{what}: not connected to TWS")
        await self.pacer.acquire()
        try:
            with trio.fail_after(timeout + 1.0):
                result: T = await aio_as_trio(run)()
                return result
        except (TimeoutError, trio.TooSlowError):
            raise RequestTimedOut(f"{what}: no answer from TWS within {timeout:g}s") from None
        except ConnectionError as exc:
            raise ConnectionLost(f"{what}: {exc}") from None

    async def call(self, fn: Callable[[], T], what: str, *, paced: bool = False) -> T:
        """`fn()` (a synchronous ib_async call that sends) inside asyncio. `paced`: the caller
        already acquired the pacer for it."""

        async def run() -> T:
            return fn()

        if not self.connected:
            raise ConnectionLost(f"{what}: not connected to TWS")
        if not paced:
            await self.pacer.acquire()
        try:
            result: T = await aio_as_trio(run)()
            return result
        except ConnectionError as exc:
            raise ConnectionLost(f"{what}: {exc}") from None

    # --- the requests the adapter makes ----------------------------------------------------------

    async def contract_details(self, spec: ContractSpec) -> list[Contract]:
        contract = Contract(
            secType=spec.sec_type, symbol=spec.symbol, exchange=spec.exchange, currency=spec.currency
        )
        details = await self.request(
            lambda: self.ib.reqContractDetailsAsync(contract), self.config.request_timeout, "contract details"
        )
        found: list[Contract] = []
        for detail in details:
            if detail.contract is not None:
                if spec.exchange == "SMART":
                    detail.contract.exchange = "SMART"
                found.append(detail.contract)
        return found

    async def place(self, contract: Contract, spec: OrderSpec, account: str) -> IbOrderState:
        """Send the order (once); the state ib_async created for it (PendingSubmit). The
        caller has acquired the pacer (so that nothing waits between its bookkeeping and the
        send)."""
        order = Order(
            action=spec.action,
            totalQuantity=spec.quantity,
            orderType=spec.order_type,
            tif=spec.tif,
            orderRef=spec.order_ref,
            account=account,
            transmit=True,
        )
        if spec.limit_price is not None:
            order.lmtPrice = spec.limit_price
        if spec.aux_price is not None:
            order.auxPrice = spec.aux_price
        trade = await self.call(lambda: self.ib.placeOrder(contract, order), "placeOrder", paced=True)
        return order_state(trade)

    async def cancel(self, state: IbOrderState) -> None:
        order = Order(orderId=state.order_id, clientId=state.client_id, permId=state.perm_id)
        await self.call(lambda: self.ib.cancelOrder(order), "cancelOrder")

    async def open_orders(self) -> list[IbOrderState]:
        """Every open order of every client of this TWS (reqAllOpenOrders)."""
        trades = await self.request(
            lambda: self.ib.reqAllOpenOrdersAsync(), self.config.request_timeout, "open orders"
        )
        return [order_state(trade) for trade in trades]

    async def completed_orders(self) -> list[IbOrderState]:
        """API orders IB completed (filled, cancelled, rejected) in its current window."""
        trades = await self.request(
            lambda: self.ib.reqCompletedOrdersAsync(True), self.config.request_timeout, "completed orders"
        )
        return [order_state(trade, completed=True) for trade in trades]

    async def executions(self, account: str, since: str) -> list[tuple[IbExecution, IbCommission | None]]:
        """This client's executions since `since` (a filter time), each with its commission
        report when IB sent one before the end of the answer."""
        flt = ExecutionFilter(clientId=self.config.client_id, acctCode=account, time=since)
        fills = await self.request(
            lambda: self.ib.reqExecutionsAsync(flt), self.config.executions_timeout, "reqExecutions"
        )
        known = self.ib.wrapper.fills
        found: list[tuple[IbExecution, IbCommission | None]] = []
        for fill in fills:
            stored = known.get(fill.execution.execId, fill)
            found.append((execution(fill), commission(stored.commissionReport)))
        return found

    async def current_time(self) -> None:
        await self.request(lambda: self.ib.reqCurrentTimeAsync(), self.config.request_timeout, "current time")

    def known_orders(self) -> list[IbOrderState]:
        """What ib_async learned at start-up and since (open and completed orders)."""
        return [order_state(trade) for trade in self.ib.trades()]
