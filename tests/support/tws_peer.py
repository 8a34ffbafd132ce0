"""A loopback TWS API peer: enough of TWS / IB Gateway, on the real wire protocol, for ib_async.

Wire protocol (as ib_async's `client.py` and `decoder.py` speak it, 2.x):
- the client opens with `API\\0` and one length-prefixed version range `v157..178[ options]`;
  the peer answers with one frame `<server version>\\0<connection time>\\0` (exactly two
  fields: that is how the client recognises the end of the handshake), the version being the
  highest both sides speak (none in common: the peer closes, as TWS does);
- every later message is a 4-byte big-endian length, then NUL-terminated text fields, the
  first being the message id;
- the client sends startApi (71) with its client id; the peer answers nextValidId (9) and
  managedAccounts (15) — ib_async's `connectAsync` waits for both — and the farm status
  notices TWS sends on connect (2104, 2106, 2158). A client id already connected gets error
  326 and the connection is closed, as TWS does;
- requests handled: placeOrder (3), cancelOrder (4), reqOpenOrders (5), reqAccountUpdates (6),
  reqExecutions (7), reqIds (8), reqContractDetails (9), reqAutoOpenOrders (15),
  reqAllOpenOrders (16), reqCurrentTime (49), reqPositions (61), reqCompletedOrders (99);
  answers use the field layouts of the negotiated server version (errors carry the advanced
  reject JSON from 166, openOrder drops faProfile from 177, execDetails gains
  pendingPriceRevision at 178, ...).

Behaviour. Market orders fill at once at `market_price` (in `partial_fills` executions);
limit and stop orders rest until `fill()`. A quantity above `max_quantity` is rejected the way
IB rejects (error 201, then status Inactive); an unknown symbol gets error 200 (an ambiguous
one, `AMBIG`, two contract details). Each execution is followed by its commissionReport
(IB's fixed pricing: 0.005 per share, at least 1.00). Cancels answer orderStatus Cancelled and
error 202; an unknown order id gets 10147, a final order 10148.

Faults. `lose_next_ack()`: the next order is accepted and kept but its openOrder/orderStatus
are never sent. `connectivity_lost()` sends 1100 and, until `connectivity_restored()` (1101 or
1102), executions are kept but not delivered (what a client loses around a nightly reset).
`restart()` closes every connection (TWS restarting); `outage()` also refuses new ones.
`correct(exec_id, price)` sends a correction (same execution id, next `.NN` suffix).
`deliver = False` keeps executions and status changes from being sent (lost messages);
`withhold_commissions` sends executions without their commissionReport.
`hang_executions` leaves reqExecutions without its execDetailsEnd (ib_async issue #54).
Pacing: more than `pacing_limit` messages within one second from a client gets error 100
and a closed connection, as TWS does; `max_rate` records the highest rate seen.

The peer runs as a Trio task in the test's own loop (the adapter's asyncio side runs in the
same thread through trio-asyncio).
"""

from __future__ import annotations

import itertools
import re
import struct
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import trio

ACCOUNT = "DU1234567"
SERVER_VERSION = 178
MIN_SERVER_VERSION = 157
_CLIENT_ID_IN_USE = "Unable to connect as the client id is already in use. Retry with a unique client id."
_CLOSE = b""  # sentinel in an outbox: close the connection


@dataclass(frozen=True)
class PeerContract:
    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    min_tick: str = "0.01"
    long_name: str = ""


CONTRACTS: tuple[PeerContract, ...] = (
    PeerContract(265598, "AAPL", "STK", "SMART", "NASDAQ", "USD", "AAPL", long_name="APPLE INC"),
    PeerContract(272093, "MSFT", "STK", "SMART", "NASDAQ", "USD", "MSFT", long_name="MICROSOFT CORP"),
    PeerContract(756733, "SPY", "STK", "SMART", "ARCA", "USD", "SPY", long_name="SPDR S&P 500"),
    PeerContract(12087792, "EUR", "CASH", "IDEALPRO", "", "USD", "EUR.USD", "0.00005"),
    PeerContract(479624278, "BTC", "CRYPTO", "PAXOS", "", "USD", "BTC.USD", "0.25"),
    PeerContract(1001, "AMBIG", "STK", "SMART", "NYSE", "USD", "AMBIG"),
    PeerContract(1002, "AMBIG", "STK", "SMART", "NASDAQ", "USD", "AMBIG"),
)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text == "-0" else text
    return str(value)


def frame(fields: Sequence[object]) -> bytes:
    """One TWS API message: 4-byte big-endian length, then NUL-terminated fields."""
    body = "".join(f"{_text(value)}\0" for value in fields).encode()
    return struct.pack(">I", len(body)) + body


def ib_time(at: datetime) -> str:
    """How TWS writes an execution time (ib_async's parseIBDatetime reads the zone)."""
    return at.astimezone(UTC).strftime("%Y%m%d %H:%M:%S") + " UTC"


def parse_filter_time(text: str) -> datetime | None:
    """An ExecutionFilter time: `yyyymmdd-hh:mm:ss` (UTC) or `yyyymmdd hh:mm:ss[ zone]`."""
    text = text.strip()
    if not text:
        return None
    stamp = text.replace("-", " ", 1) if re.match(r"^\d{8}-", text) else text
    return datetime.strptime(stamp[:17], "%Y%m%d %H:%M:%S").replace(tzinfo=UTC)


@dataclass
class PeerOrder:
    order_id: int
    client_id: int
    perm_id: int
    contract: PeerContract
    action: str
    quantity: Decimal
    order_type: str
    limit_price: Decimal | None
    aux_price: Decimal | None
    tif: str
    account: str
    order_ref: str
    status: str = "Submitted"
    filled: Decimal = Decimal(0)
    average_price: Decimal = Decimal(0)
    last_fill_price: Decimal = Decimal(0)
    completed_at: datetime | None = None

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled

    @property
    def is_open(self) -> bool:
        return self.status in ("PreSubmitted", "Submitted", "PendingCancel")


@dataclass
class PeerExecution:
    exec_id: str
    order: PeerOrder
    shares: Decimal
    price: Decimal
    at: datetime
    cumulative: Decimal
    average_price: Decimal
    commission: Decimal

    @property
    def side(self) -> str:
        return "BOT" if self.order.action == "BUY" else "SLD"


@dataclass
class _Connection:
    outbox: trio.MemorySendChannel[bytes]
    client_id: int = -1
    version: int = 0
    ready: bool = False
    received: deque[float] = field(default_factory=deque)


def _limit(price: Decimal | None) -> str:
    return "" if price is None else _text(price)


class TwsPeer:
    """The peer's state and behaviour; `serve` listens on 127.0.0.1 (a free port)."""

    def __init__(
        self,
        *,
        market_price: Decimal = Decimal("100.00"),
        max_quantity: Decimal = Decimal(10_000),
        partial_fills: int = 1,
        max_version: int = SERVER_VERSION,
        pacing_limit: int = 50,
        account: str = ACCOUNT,
    ) -> None:
        self.market_price = market_price
        self.max_quantity = max_quantity
        self.partial_fills = partial_fills
        self.max_version = max_version
        self.pacing_limit = pacing_limit
        self.account = account
        self.port = 0
        self.orders: dict[tuple[int, int], PeerOrder] = {}
        self.executions: list[PeerExecution] = []
        #: Every message a client sent after the handshake, as its fields.
        self.received: list[list[str]] = []
        self.connections: list[_Connection] = []
        self.connects = 0
        self.max_rate = 0
        self.pacing_violations = 0
        self.hang_executions = False
        #: False: executions and status changes happen but are not sent (lost on the way).
        self.deliver = True
        self.withhold_commissions = False
        self._perm_ids = itertools.count(1_000_001)
        self._exec_ids = itertools.count(1)
        self._next_order_id: dict[int, int] = {}
        self._lose_acks = 0
        self._refusing = False
        self._session = 0x65A1B2C3

    def __repr__(self) -> str:
        return (
            f"<TwsPeer :{self.port} v{self.max_version} clients={len(self.connections)} "
            f"orders={len(self.orders)} executions={len(self.executions)}>"
        )

    # --- what a test does --------------------------------------------------------------------

    def order(self, order_ref: str) -> PeerOrder:
        found = [o for o in self.orders.values() if o.order_ref == order_ref]
        if len(found) != 1:
            raise KeyError(f"{len(found)} orders with orderRef {order_ref!r}")
        return found[0]

    def orders_with_ref(self, order_ref: str) -> list[PeerOrder]:
        return [o for o in self.orders.values() if o.order_ref == order_ref]

    def fill(self, order_ref: str, quantity: Decimal, price: Decimal) -> PeerExecution:
        return self._execute(self.order(order_ref), quantity, price)

    def cancel_at_venue(self, order_ref: str) -> None:
        order = self.order(order_ref)
        self._finish(order, "Cancelled")
        for connection in self._owners(order):
            connection.outbox.send_nowait(
                self._error_frame(order.order_id, 202, "Order Canceled - reason:", connection)
            )

    def correct(self, exec_id: str, price: Decimal) -> PeerExecution:
        """IB's correction of an execution: the same execution under the next suffix."""
        original = next(e for e in self.executions if e.exec_id == exec_id)
        base, _, suffix = exec_id.rpartition(".")
        corrected = PeerExecution(
            exec_id=f"{base}.{int(suffix) + 1:02d}",
            order=original.order,
            shares=original.shares,
            price=price,
            at=original.at,
            cumulative=original.cumulative,
            average_price=price,
            commission=original.commission,
        )
        self.executions.append(corrected)
        self._deliver_execution(corrected)
        return corrected

    def lose_next_ack(self, count: int = 1) -> None:
        self._lose_acks += count

    def connectivity_lost(self) -> None:
        self.deliver = False
        self._broadcast(-1, 1100, "Connectivity between IB and Trader Workstation has been lost.")

    def connectivity_restored(self, *, data_lost: bool) -> None:
        self.deliver = True
        if data_lost:
            self._broadcast(-1, 1101, "Connectivity between IB and TWS has been restored- data lost.")
        else:
            self._broadcast(-1, 1102, "Connectivity between IB and TWS has been restored- data maintained.")

    def farm_status(self, code: int, message: str) -> None:
        self._broadcast(-1, code, message)

    def restart(self) -> None:
        """Close every connection, as a TWS restart does; executions and orders are kept."""
        for connection in self.connections:
            connection.outbox.send_nowait(_CLOSE)

    @contextmanager
    def outage(self) -> Iterator[None]:
        """TWS is down: connections are closed and new ones refused until the block ends."""
        self._refusing = True
        self.restart()
        try:
            yield
        finally:
            self._refusing = False

    def messages(self, message_id: int) -> list[list[str]]:
        return [m for m in self.received if m and m[0] == str(message_id)]

    # --- serving -----------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(self._connection, listeners, handler_nursery=nursery)

    async def _connection(self, stream: trio.SocketStream) -> None:
        if self._refusing:
            await stream.aclose()
            return
        send, receive = trio.open_memory_channel[bytes](10_000)
        connection = _Connection(send)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, stream, receive, nursery.cancel_scope)
                try:
                    await self._read(stream, connection)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    nursery.cancel_scope.cancel()  # the client went away
                else:  # the peer ends it: what is queued (a 326, a 100) goes out first
                    connection.outbox.send_nowait(_CLOSE)
        finally:
            if connection in self.connections:
                self.connections.remove(connection)
            await stream.aclose()

    async def _writer(
        self, stream: trio.SocketStream, outbox: trio.MemoryReceiveChannel[bytes], scope: trio.CancelScope
    ) -> None:
        try:
            async for data in outbox:
                if data == _CLOSE:
                    break
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    async def _read(self, stream: trio.SocketStream, connection: _Connection) -> None:
        buffer = bytearray()

        async def exactly(n: int) -> bytes:
            while len(buffer) < n:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise trio.BrokenResourceError("client closed")
                buffer.extend(chunk)
            data = bytes(buffer[:n])
            del buffer[:n]
            return data

        async def message() -> list[str]:
            (size,) = struct.unpack(">I", await exactly(4))
            fields = (await exactly(size)).decode().split("\0")
            return fields[:-1] if fields and fields[-1] == "" else fields

        if await exactly(4) != b"API\0":
            return
        versions = "\0".join(await message())
        match = re.match(r"v(\d+)(?:\.\.(\d+))?", versions)
        if match is None:
            return
        low = int(match.group(1))
        high = int(match.group(2) or match.group(1))
        version = min(high, self.max_version)
        if version < max(low, MIN_SERVER_VERSION):
            return  # no version in common: TWS closes the socket
        connection.version = version
        connection.outbox.send_nowait(frame([version, ib_time(datetime.now(UTC))]))
        while True:
            fields = await message()
            if not self._pace(connection):
                return
            self.received.append(fields)
            if not self._handle(connection, fields):
                return

    def _pace(self, connection: _Connection) -> bool:
        now = trio.current_time()
        window = connection.received
        window.append(now)
        while window and now - window[0] >= 1.0:
            window.popleft()
        self.max_rate = max(self.max_rate, len(window))
        if len(window) > self.pacing_limit:
            self.pacing_violations += 1
            connection.outbox.send_nowait(
                self._error_frame(-1, 100, "Max rate of messages per second has been exceeded", connection)
            )
            connection.outbox.send_nowait(_CLOSE)
            return False
        return True

    # --- requests ----------------------------------------------------------------------------

    def _handle(self, connection: _Connection, fields: list[str]) -> bool:
        """Answer one client message; False ends the connection."""
        message_id = int(fields[0])
        out = connection.outbox.send_nowait
        if message_id == 71:  # startApi: version, clientId, optional capabilities
            client_id = int(fields[2])
            if any(c.client_id == client_id and c.ready for c in self.connections):
                out(
                    self._error_frame(
                        -1,
                        326,
                        _CLIENT_ID_IN_USE,
                        connection,
                    )
                )
                out(_CLOSE)
                return False
            connection.client_id = client_id
            connection.ready = True
            self.connections.append(connection)
            self.connects += 1
            out(frame([9, 1, self._valid_id(client_id)]))
            out(frame([15, 1, self.account]))
            for code, text in (
                (2104, "Market data farm connection is OK:usfarm"),
                (2106, "HMDS data farm connection is OK:ushmds"),
                (2158, "Sec-def data farm connection is OK:secdefil"),
            ):
                out(self._error_frame(-1, code, text, connection))
        elif message_id == 3:
            self._place(connection, fields)
        elif message_id == 4:
            self._cancel(connection, int(fields[2]))
        elif message_id in (5, 16):
            for order in self.orders.values():
                if order.is_open and (message_id == 16 or order.client_id == connection.client_id):
                    out(self._open_order_frame(order, connection))
                    out(self._status_frame(order))
            out(frame([53, 1]))
        elif message_id == 6:
            out(frame([54, 1, fields[3] if len(fields) > 3 else self.account]))
        elif message_id == 7:
            self._executions(connection, fields)
        elif message_id == 8:
            out(frame([9, 1, self._valid_id(connection.client_id)]))
        elif message_id == 9:
            self._contract_details(connection, fields)
        elif message_id == 49:
            out(frame([49, 1, int(datetime.now(UTC).timestamp())]))
        elif message_id == 61:
            out(frame([62, 1]))
        elif message_id == 99:
            api_only = fields[1] == "1"
            for order in self.orders.values():
                if not order.is_open and (order.order_ref or not api_only):
                    out(self._completed_order_frame(order, connection))
            out(frame([102]))
        return True

    def _valid_id(self, client_id: int) -> int:
        used = [o.order_id for o in self.orders.values() if o.client_id == client_id]
        return max([self._next_order_id.get(client_id, 1), *(i + 1 for i in used)])

    def _find_contract(self, symbol: str, sec_type: str, con_id: int = 0) -> list[PeerContract]:
        if con_id:
            return [c for c in CONTRACTS if c.con_id == con_id]
        return [c for c in CONTRACTS if c.symbol == symbol and (not sec_type or c.sec_type == sec_type)]

    def _contract_details(self, connection: _Connection, fields: list[str]) -> None:
        # 9, 8, reqId, conId, symbol, secType, lastTrade, strike, right, multiplier, exchange,
        # primaryExchange, currency, localSymbol, tradingClass, includeExpired, secIdType, secId
        req_id = int(fields[2])
        con_id = int(fields[3] or 0)
        matches = self._find_contract(fields[4], fields[5], con_id)
        out = connection.outbox.send_nowait
        if not matches:
            out(
                self._error_frame(
                    req_id, 200, "No security definition has been found for the request", connection
                )
            )
            return
        for contract in matches:
            out(self._details_frame(req_id, contract, connection.version))
        out(frame([52, 1, req_id]))

    def _details_frame(self, req_id: int, c: PeerContract, version: int) -> bytes:
        head: list[object] = [10, 8] if version < 164 else [10]
        fields: list[object] = [
            *head,
            req_id,
            c.symbol,
            c.sec_type,
            "",
            0.0,
            "",
            c.exchange,
            c.currency,
            c.local_symbol,
            c.symbol,
            c.symbol,
            c.con_id,
            c.min_tick,
        ]
        if version < 164:
            fields.append(1)  # mdSizeMultiplier
        fields += [
            "",
            "ACTVTIM,LMT,MKT,STP,STPLMT",
            f"{c.exchange},{c.primary_exchange}",
            1,
            0,
            c.long_name,
            c.primary_exchange,
            "",
            "",
            "",
            "",
            "US/Eastern",
            "",
            "",
            "",
            "",
            0,
            "1",
            "",
            "",
            "26",
            "",
            "COMMON",
        ]
        if version == 163:
            fields.append("1")
        if version >= 164:
            fields += ["1", "1", "1"]
        return frame(fields)

    def _place(self, connection: _Connection, fields: list[str]) -> None:
        # 3, orderId, conId, symbol, secType, lastTrade, strike, right, multiplier, exchange,
        # primaryExchange, currency, localSymbol, tradingClass, secIdType, secId, action,
        # totalQuantity, orderType, lmtPrice, auxPrice, tif, ocaGroup, account, openClose,
        # origin, orderRef, transmit, ...
        order_id = int(fields[1])
        out = connection.outbox.send_nowait
        matches = self._find_contract(fields[3], fields[4], int(fields[2] or 0))
        if len(matches) != 1:
            out(
                self._error_frame(
                    order_id, 200, "No security definition has been found for the request", connection
                )
            )
            return
        order = PeerOrder(
            order_id=order_id,
            client_id=connection.client_id,
            perm_id=next(self._perm_ids),
            contract=matches[0],
            action=fields[16],
            quantity=Decimal(fields[17]),
            order_type=fields[18],
            limit_price=Decimal(fields[19]) if fields[19] else None,
            aux_price=Decimal(fields[20]) if fields[20] else None,
            tif=fields[21],
            account=fields[23] or self.account,
            order_ref=fields[26],
        )
        self.orders[(order.client_id, order_id)] = order
        self._next_order_id[order.client_id] = max(self._next_order_id.get(order.client_id, 1), order_id + 1)
        if order.quantity > self.max_quantity:
            order.status = "Inactive"
            order.completed_at = datetime.now(UTC)
            out(
                self._error_frame(
                    order_id,
                    201,
                    "Order rejected - reason:YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE DESIRED "
                    "POSITION YOUR EQUITY WITH LOAN VALUE MUST EXCEED THE INITIAL MARGIN",
                    connection,
                )
            )
            out(self._open_order_frame(order, connection))
            out(self._status_frame(order))
            return
        order.status = "PreSubmitted" if order.order_type in ("STP", "STP LMT") else "Submitted"
        if self._lose_acks:
            self._lose_acks -= 1
        else:
            out(self._open_order_frame(order, connection))
            out(self._status_frame(order))
        if order.order_type == "MKT":
            parts = max(1, self.partial_fills)
            base = (
                (order.quantity / parts).quantize(Decimal(1)) if order.quantity >= parts else order.quantity
            )
            left = order.quantity
            for i in range(parts):
                shares = left if i == parts - 1 else min(base, left)
                if shares <= 0:
                    break
                self._execute(order, shares, self.market_price)
                left -= shares
        elif order.tif in ("IOC", "FOK"):
            self._finish(order, "Cancelled")

    def _cancel(self, connection: _Connection, order_id: int) -> None:
        order = self.orders.get((connection.client_id, order_id))
        out = connection.outbox.send_nowait
        if order is None:
            out(
                self._error_frame(
                    order_id,
                    10147,
                    f"OrderId {order_id} that needs to be cancelled is not found.",
                    connection,
                )
            )
            return
        if not order.is_open:
            out(
                self._error_frame(
                    order_id,
                    10148,
                    f"OrderId {order_id} that needs to be cancelled cannot be cancelled, "
                    f"state: {order.status}.",
                    connection,
                )
            )
            return
        self._finish(order, "Cancelled")
        out(self._error_frame(order_id, 202, "Order Canceled - reason:", connection))

    def _executions(self, connection: _Connection, fields: list[str]) -> None:
        # 7, 3, reqId, clientId, acctCode, time, symbol, secType, exchange, side
        req_id = int(fields[2])
        client_id = int(fields[3] or 0)
        account, since, symbol, sec_type, exchange, side = fields[4:10]
        start = parse_filter_time(since)
        out = connection.outbox.send_nowait
        for execution in self.executions:
            order = execution.order
            if client_id and order.client_id != client_id:
                continue
            if account and order.account != account:
                continue
            if start is not None and execution.at.replace(microsecond=0) < start:
                continue
            if symbol and order.contract.symbol != symbol:
                continue
            if sec_type and order.contract.sec_type != sec_type:
                continue
            if exchange and order.contract.exchange != exchange:
                continue
            if side and execution.side != side:
                continue
            out(self._exec_frame(req_id, execution, connection.version))
            out(self._commission_frame(execution))
        if not self.hang_executions:
            out(frame([55, 1, req_id]))

    # --- the venue ---------------------------------------------------------------------------

    def _execute(self, order: PeerOrder, quantity: Decimal, price: Decimal) -> PeerExecution:
        if not order.is_open or quantity <= 0 or quantity > order.remaining:
            raise ValueError(f"cannot fill {quantity} of {order}")
        now = datetime.now(UTC)
        cost = order.average_price * order.filled + price * quantity
        order.filled += quantity
        order.average_price = cost / order.filled
        order.last_fill_price = price
        if order.filled == order.quantity:
            order.status = "Filled"
            order.completed_at = now
        execution = PeerExecution(
            exec_id=f"{self._session:08x}.{next(self._exec_ids):08x}.01.01",
            order=order,
            shares=quantity,
            price=price,
            at=now,
            cumulative=order.filled,
            average_price=order.average_price,
            commission=max(Decimal("1.00"), Decimal("0.005") * quantity),
        )
        self.executions.append(execution)
        self._deliver_execution(execution)
        return execution

    def _deliver_execution(self, execution: PeerExecution) -> None:
        if not self.deliver:
            return  # the client was not listening: only reqExecutions will tell
        for connection in self._owners(execution.order):
            out = connection.outbox.send_nowait
            out(self._exec_frame(-1, execution, connection.version))
            out(self._status_frame(execution.order))
            if not self.withhold_commissions:
                out(self._commission_frame(execution))

    def _finish(self, order: PeerOrder, status: str) -> None:
        order.status = status
        order.completed_at = datetime.now(UTC)
        if not self.deliver:
            return
        for connection in self._owners(order):
            connection.outbox.send_nowait(self._status_frame(order))

    def _owners(self, order: PeerOrder) -> list[_Connection]:
        return [c for c in self.connections if c.ready and c.client_id == order.client_id]

    def _broadcast(self, req_id: int, code: int, message: str) -> None:
        for connection in self.connections:
            connection.outbox.send_nowait(self._error_frame(req_id, code, message, connection))

    # --- messages ----------------------------------------------------------------------------

    @staticmethod
    def _error_frame(req_id: int, code: int, message: str, connection: _Connection) -> bytes:
        fields: list[object] = [4, 2, req_id, code, message]
        if connection.version >= 166:
            fields.append("")
        return frame(fields)

    @staticmethod
    def _status_frame(order: PeerOrder) -> bytes:
        return frame(
            [
                3,
                order.order_id,
                order.status,
                order.filled,
                order.remaining,
                order.average_price if order.filled else 0,
                order.perm_id,
                0,
                order.last_fill_price,
                order.client_id,
                "",
                0,
            ]
        )

    @staticmethod
    def _contract_fields(order: PeerOrder) -> list[object]:
        c = order.contract
        return [
            c.con_id,
            c.symbol,
            c.sec_type,
            "",
            0.0,
            "",
            "",
            c.exchange,
            c.currency,
            c.local_symbol,
            c.symbol,
        ]

    def _open_order_frame(self, order: PeerOrder, connection: _Connection) -> bytes:
        version = connection.version
        fields: list[object] = [
            5,
            order.order_id,
            *self._contract_fields(order),
            order.action,
            order.quantity,
            order.order_type,
            _limit(order.limit_price),
            _limit(order.aux_price),
            order.tif,
            "",
            order.account,
            "",
            0,
            order.order_ref,
            order.client_id,
            order.perm_id,
            0,
            0,
            0,
            "",
            "",
            "",
            "",
            "",
        ]
        if version < 177:
            fields.append("")  # faProfile
        fields += [
            "",
            "",
            "",
            "",
            "",
            0,
            "",
            -1,
            0,
            "",
            "",
            "",
            "",
            "",
            "",
            0,
            0,
            0,
            "",
            0,
            0,
            0,
            "",
            0,
            0,
            "",
            0,
            "",
            "",
        ]
        fields += [0, 0, "", "", "", "", ""]  # continuousUpdate .. comboLegsDescrip
        fields += [0, 0, 0]  # combo legs, order combo legs, smart combo routing params
        fields += ["", "", ""]  # scale init/subs level size, price increment
        fields += [""]  # hedgeType
        fields += [0, "", "", 0, 0]  # optOutSmartRouting, clearing, notHeld, no delta neutral
        fields += [""]  # algoStrategy
        fields += [0, 0, order.status, *([""] * 14), 0, 0]  # solicited, whatIf, order state
        fields += [0]  # conditions
        fields += ["", "", "", "", "", "", "", 0, "", "", "", "", 0, 0, 0, 0]
        if version >= 159:
            fields.append("")
        if version >= 160:
            fields.append("")
        if version >= 162:
            fields.append(0)
        if version >= 170:
            fields += ["", "", "", "", ""]
        return frame(fields)

    def _completed_order_frame(self, order: PeerOrder, connection: _Connection) -> bytes:
        version = connection.version
        completed = ib_time(order.completed_at or datetime.now(UTC))
        fields: list[object] = [
            101,
            *self._contract_fields(order),
            order.action,
            order.quantity,
            order.order_type,
            _limit(order.limit_price),
            _limit(order.aux_price),
            order.tif,
            "",
            order.account,
            "",
            0,
            order.order_ref,
            order.perm_id,
            0,
            0,
            0,
            "",
            "",
            "",
            "",
        ]
        if version < 177:
            fields.append("")
        fields += ["", "", "", "", "", 0, "", -1, "", "", "", "", "", "", 0, 0, "", 0, 0, "", 0, "", ""]
        fields += [0, 0, "", "", ""]
        fields += [0, 0, 0]
        fields += ["", "", ""]
        fields += [""]
        fields += ["", "", 0, 0]
        fields += [""]
        fields += [0, order.status, 0, 0]
        fields += [0]
        fields += [
            "",
            "",
            "",
            0,
            0,
            "",
            order.filled,
            "",
            0,
            "",
            0,
            0,
            "",
            completed,
            order.status,
        ]
        if version >= 170:
            fields += ["", "", "", "", ""]
        return frame(fields)

    def _exec_frame(self, req_id: int, e: PeerExecution, version: int) -> bytes:
        order = e.order
        fields: list[object] = [
            11,
            req_id,
            order.order_id,
            *self._contract_fields(order),
            e.exec_id,
            ib_time(e.at),
            order.account,
            order.contract.primary_exchange or order.contract.exchange,
            e.side,
            e.shares,
            e.price,
            order.perm_id,
            order.client_id,
            0,
            e.cumulative,
            e.average_price,
            order.order_ref,
            "",
            "",
            "",
            1,
        ]
        if version >= 178:
            fields.append(0)
        return frame(fields)

    @staticmethod
    def _commission_frame(e: PeerExecution) -> bytes:
        return frame([59, 1, e.exec_id, e.commission, "USD", "", "", ""])
