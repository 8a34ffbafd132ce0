"""A FIX 4.4 acceptor for tests: a small broker on loopback that the FIX adapter logs on to.

It is a test oracle, so it shares no code with `adapters.fix`: its own framing (BodyLength and
CheckSum computed on send, verified on receipt: a bad frame from us is recorded in `errors` and
ends the connection), its own sequence numbers (kept for the acceptor's life, across
connections, like a real broker's), its own gap handling (ResendRequest when our numbers jump,
Logout when they go backwards without PossDupFlag) and resend answers (application messages
again with PossDupFlag=Y and OrigSendingTime, session messages gap-filled).

As a broker: a NewOrderSingle gets ExecutionReport New, or Rejected when its quantity exceeds
`reject_quantity` (or its ClOrdID was seen before); market orders then fill at `market_price`
in `partials` parts; limit and stop orders rest until `fill()`; IOC/FOK limit orders are
canceled at once; cancels and status requests are answered as FIX 4.4 says (unknown order:
OrdStatus 8 with OrdRejReason 5). Messages it generates while no one is connected are numbered
and kept, as a real broker's are, and reach us through the ResendRequest of our next logon.

Test hooks: methods `fill`, `skip_outgoing_seq`, `drop_outgoing`, `send_resend_request`,
`send_test_request`, `replay`, `sequence_reset`, `send_garbled`, `repeat_execution`,
`disconnect`, `forget_orders`; switches `muted`, `ignore_new_orders`,
`business_reject_new_orders`, `session_reject_new_orders`, `refuse_cancels`,
`cumulative_commission`, `ignore_resend_requests`, `reset_next_logon`, `password`. Records:
`received` (every message from the client), `sent_of`, `new_order_counts` (NewOrderSingles per
ClOrdID), `orders`, `errors`, `logons`, `discarded` (ExecutionReports a reset threw away).

A reset of the numbers (the client's Logon with ResetSeqNumFlag, or `reset_next_logon`: the
broker resetting unasked) discards everything numbered before it, as a real broker does: reports
numbered while the client was away never reach it, and only a status request still tells what
happened to the order.

`open_fix_adapter` runs a FIX adapter logged on to a fresh acceptor (for the cross-adapter
contract suite); `running`, `keep_running` and `run_until_lost` run an adapter the ways the
tests need (plain, supervised with reconnects, until its connection drops).
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import trio

from adapters.base import ConnectionLost
from adapters.fix import FixBroker, FixConfig, FixTimeouts, build_fix_broker
from api.contracts import CommissionStructure
from api.enums import AssetClass, BrokerFeature, TimeInForce
from api.events import AnyBrokerEvent

__all__ = [
    "AcceptorOrder",
    "FixAcceptor",
    "FixDriver",
    "Received",
    "fix_config_for",
    "fresh_acceptor",
    "open_fix_adapter",
]

SOH = "\x01"
Fields = list[tuple[int, str]]
_ADMIN = frozenset("0123456A")
_FINAL = frozenset("248C")  # filled, canceled, rejected, expired


class AcceptorProtocolError(Exception):
    """What the acceptor received is not valid FIX framing."""


def _now() -> str:
    at = datetime.now(UTC)
    return f"{at:%Y%m%d-%H:%M:%S}.{at.microsecond // 1000:03d}"


def _decimal(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def build_frame(msg_type: str, header: Fields, body: Fields) -> bytes:
    """8, 9, 35, then `header` and `body`, then 10: BodyLength and CheckSum computed here."""
    content = f"35={msg_type}{SOH}" + "".join(f"{tag}={value}{SOH}" for tag, value in [*header, *body])
    data = f"8=FIX.4.4{SOH}9={len(content.encode())}{SOH}{content}".encode()
    return data + f"10={sum(data) % 256:03d}{SOH}".encode()


@dataclass
class Received:
    """One message as the acceptor received it (framing already verified)."""

    msg_type: str
    seq: int
    fields: Fields
    raw: bytes

    def get(self, tag: int) -> str | None:
        return next((value for t, value in self.fields if t == tag), None)


class _FrameReader:
    """Cuts the byte stream into frames, verifying BodyLength and CheckSum (strictly)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def messages(self) -> list[Received]:
        found: list[Received] = []
        while True:
            if not self.buffer:
                return found
            prefix = b"8=FIX.4.4\x019="
            if not self.buffer.startswith(prefix[: len(self.buffer)]):
                raise AcceptorProtocolError(
                    f"frame does not start with 8=FIX.4.4|9=: {bytes(self.buffer[:20])!r}"
                )
            length_end = self.buffer.find(b"\x01", len(prefix))
            if length_end < 0:
                return found
            length = int(self.buffer[len(prefix) : length_end])
            body_start = length_end + 1
            frame_end = body_start + length + 7
            if len(self.buffer) < frame_end:
                return found
            trailer = bytes(self.buffer[body_start + length : frame_end])
            if not (trailer.startswith(b"10=") and trailer.endswith(b"\x01")):
                raise AcceptorProtocolError(f"BodyLength {length} does not end at the CheckSum: {trailer!r}")
            expected = sum(self.buffer[: body_start + length]) % 256
            if int(trailer[3:6]) != expected:
                raise AcceptorProtocolError(f"CheckSum {trailer[3:6]!r}, bytes sum to {expected:03d}")
            raw = bytes(self.buffer[:frame_end])
            del self.buffer[:frame_end]
            pairs = [item.split("=", 1) for item in raw[:-7].decode().split(SOH) if item]
            fields = [(int(tag), value) for tag, value in pairs]
            msg_type = next(value for tag, value in fields if tag == 35)
            seq = int(next(value for tag, value in fields if tag == 34))
            found.append(Received(msg_type, seq, fields, raw))


@dataclass
class AcceptorOrder:
    cl_ord_id: str
    order_id: str
    symbol: str
    side: str
    quantity: Decimal
    ord_type: str
    time_in_force: str
    status: str = "0"
    cum_qty: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    commission: Decimal = Decimal(0)
    reject_reason: str | None = None

    @property
    def leaves(self) -> Decimal:
        return Decimal(0) if self.status in _FINAL else self.quantity - self.cum_qty

    @property
    def avg_px(self) -> Decimal:
        return self.notional / self.cum_qty if self.cum_qty else Decimal(0)


@dataclass
class _Sent:
    msg_type: str
    body: Fields
    sending_time: str


@dataclass
class FixAcceptor:
    """See the module docstring. Start with `await nursery.start(acceptor.serve)`."""

    comp_id: str = "BROKER"
    client_comp_id: str = "BIS"
    market_price: Decimal = Decimal("100")
    partials: int = 1
    reject_quantity: Decimal = Decimal("1000")
    commission_rate: Decimal = Decimal("0.001")
    last_market: str = "XTST"
    password: str | None = None
    # test hooks (set directly)
    ignore_new_orders: bool = False  # take no action on NewOrderSingle (as if lost inside)
    business_reject_new_orders: str | None = None  # answer them with BusinessMessageReject
    session_reject_new_orders: str | None = None  # answer them with a session Reject (35=3)
    refuse_cancels: str | None = None  # answer cancels of open orders with OrderCancelReject
    cumulative_commission: bool = False  # Commission (12) as the order's running total
    muted: bool = False  # send nothing unasked, answer no TestRequest
    ignore_resend_requests: int = 0  # leave this many of the client's ResendRequests unanswered
    reset_next_logon: bool = False  # answer the next Logon with 141=Y, MsgSeqNum 1, unasked
    # state and records
    port: int = 0
    next_out: int = 1
    next_in: int = 1
    logged_on: bool = False
    logons: int = 0
    received: list[Received] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    new_order_counts: Counter[str] = field(default_factory=Counter)
    orders: dict[str, AcceptorOrder] = field(default_factory=dict)
    discarded: list[Fields] = field(default_factory=list)
    heartbeat_interval: float = 30.0
    _sent: dict[int, _Sent] = field(default_factory=dict)
    _dropping: int = 0
    _queue: dict[int, Received] = field(default_factory=dict)
    _resend_pending: bool = False
    _stream: trio.SocketStream | None = None
    _logging_out: bool = False
    _changed: trio.Event = field(default_factory=trio.Event)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _token: str = field(default_factory=lambda: secrets.token_hex(2))
    _send_lock: trio.Lock = field(default_factory=trio.Lock)
    _last_sent: float = 0.0
    _cancel_ids: set[str] = field(default_factory=set)

    def __repr__(self) -> str:
        state = "logged on" if self.logged_on else "connected" if self._stream else "idle"
        numbers = f"next_out={self.next_out} next_in={self.next_in}"
        return f"<FixAcceptor {self.comp_id} :{self.port} {state} {numbers}>"

    # --- running ---------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._connection, listeners)
            task_status.started()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 2.0) -> None:
        """Wait until `predicate()` holds (re-checked after every change); fail the test after
        `timeout` seconds."""
        with trio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()

    def received_of(self, msg_type: str) -> list[Received]:
        return [m for m in self.received if m.msg_type == msg_type]

    def sent_of(self, msg_type: str) -> list[Fields]:
        """The bodies of the messages of this type the acceptor numbered, in order."""
        return [sent.body for _, sent in sorted(self._sent.items()) if sent.msg_type == msg_type]

    # --- test hooks ------------------------------------------------------------------------

    def skip_outgoing_seq(self, n: int) -> None:
        """Jump our outgoing numbers by `n` (nothing stored for them): the client sees a gap at
        the next message, asks for a resend, and gets a SequenceReset-GapFill."""
        self.next_out += n

    def drop_outgoing(self, n: int) -> None:
        """Number and keep the next `n` messages but do not write them: the client recovers
        them (PossDupFlag=Y) through a ResendRequest."""
        self._dropping += n

    async def send_resend_request(self, begin: int, end: int) -> None:
        await self._send("2", [(7, str(begin)), (16, str(end))])

    async def send_test_request(self, test_id: str) -> None:
        await self._send("1", [(112, test_id)])

    async def replay(self, begin: int, end: int) -> None:
        """Send messages begin..end again, PossDupFlag=Y and their old numbers, unasked."""
        await self._answer_resend(Received("2", 0, [(7, str(begin)), (16, str(end))], b""))

    async def sequence_reset(self, new_seq_no: int) -> None:
        """SequenceReset in Reset mode (no GapFillFlag): our numbers jump to `new_seq_no`."""
        await self._send("4", [(36, str(new_seq_no))])
        self.next_out = new_seq_no

    async def send_garbled(self) -> None:
        """Number a TestRequest but write it with a wrong CheckSum (the client must drop it,
        then recover the number with a ResendRequest)."""
        async with self._send_lock:
            number = self.next_out
            self.next_out += 1
            sending_time = _now()
            self._sent[number] = _Sent("1", [(112, "garbled")], sending_time)
            frame = build_frame("1", self._header(number, sending_time), [(112, "garbled")])
            checksum = int(frame[-4:-1])
            await self._write(frame[:-4] + f"{(checksum + 1) % 256:03d}".encode() + b"\x01")

    async def repeat_execution(self, exec_id: str) -> None:
        """Send the ExecutionReport with this ExecID again as a new message (a broker repeating
        itself): the client must not emit it twice. One a reset discarded is found too (it
        arrives after all, late)."""
        bodies = [sent.body for sent in self._sent.values() if sent.msg_type == "8"]
        for body in [*bodies, *self.discarded]:
            if (17, exec_id) in body:
                await self._send("8", list(body))
                return
        raise KeyError(exec_id)

    def forget_orders(self) -> None:
        """The broker lost its orders (a restart without its book): status requests of them are
        answered "unknown order" (OrdStatus 8, OrdRejReason 5), cancels refused as unknown."""
        self.orders.clear()

    async def disconnect(self) -> None:
        """Drop the TCP connection without a Logout."""
        stream = self._stream
        if stream is not None:
            await trio.aclose_forcefully(stream)

    async def fill(self, cl_ord_id: str, quantity: Decimal, price: Decimal) -> None:
        """Fill (part of) a resting order: one ExecutionReport Trade."""
        order = self.orders[cl_ord_id]
        if order.status in _FINAL or quantity <= 0 or quantity > order.leaves:
            raise ValueError(f"cannot fill {quantity} of {order}")
        await self._execute(order, quantity, price)

    # --- connection ------------------------------------------------------------------------

    async def _connection(self, stream: trio.SocketStream) -> None:
        if self._stream is not None:
            self.errors.append("a second connection while one is active")
            await stream.aclose()
            return
        self._stream = stream
        self._logging_out = False
        reader = _FrameReader()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._heartbeats)
                while True:
                    try:
                        data = await stream.receive_some(65536)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        break
                    if not data:
                        break
                    reader.buffer += data
                    try:
                        messages = reader.messages()
                    except (AcceptorProtocolError, ValueError, StopIteration) as exc:
                        self.errors.append(f"bad framing from the client: {exc}")
                        break
                    for message in messages:
                        self.received.append(message)
                        self._notify()
                        await self._on_message(message)
                        if self._stream is None:
                            break
                nursery.cancel_scope.cancel()
        finally:
            self._stream = None
            self.logged_on = False
            self._queue.clear()
            self._resend_pending = False
            await trio.aclose_forcefully(stream)
            self._notify()

    async def _heartbeats(self) -> None:
        while True:
            await trio.sleep(0.05)
            if (
                self.logged_on
                and not self.muted
                and trio.current_time() - self._last_sent >= self.heartbeat_interval
            ):
                await self._send("0", [])

    async def _close(self) -> None:
        stream = self._stream
        self._stream = None
        self.logged_on = False
        if stream is not None:
            await trio.aclose_forcefully(stream)

    async def _send(self, msg_type: str, body: Fields, *, seq: int | None = None) -> int:
        """Number (unless resending `seq`), keep, and write one message (unless dropping or
        nobody is connected: then it waits for a ResendRequest)."""
        async with self._send_lock:
            number = self.next_out
            self.next_out += 1
            sending_time = _now()
            self._sent[number] = _Sent(msg_type, body, sending_time)
            if self._dropping:
                self._dropping -= 1
                return number
            await self._write(
                build_frame(msg_type, self._header(number, sending_time), body), admin=msg_type == "A"
            )
            return number

    async def _write(self, frame: bytes, *, admin: bool = False) -> None:
        stream = self._stream
        if stream is None or not (self.logged_on or admin):
            return
        try:
            await stream.send_all(frame)
            self._last_sent = trio.current_time()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def _header(self, seq: int, sending_time: str, orig_sending_time: str | None = None) -> Fields:
        header: Fields = [(49, self.comp_id), (56, self.client_comp_id), (34, str(seq))]
        if orig_sending_time is not None:
            header.append((43, "Y"))
        header.append((52, sending_time))
        if orig_sending_time is not None:
            header.append((122, orig_sending_time))
        return header

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # --- session layer ---------------------------------------------------------------------

    async def _on_message(self, message: Received) -> None:
        if message.get(49) != self.client_comp_id or message.get(56) != self.comp_id:
            self.errors.append(f"CompID problem: {message.fields}")
            await self._logout("CompID problem")
            return
        if not self.logged_on:
            await self._logon(message)
            return
        if message.msg_type == "4" and message.get(123) != "Y":
            self.next_in = int(message.get(36) or self.next_in)
            return
        if message.seq > self.next_in:
            self._queue[message.seq] = message
            if message.msg_type == "2":
                await self._answer_resend(message)  # answer at once: both sides may have gaps
            if not self._resend_pending:
                self._resend_pending = True
                await self._send("2", [(7, str(self.next_in)), (16, "0")])
            return
        if message.seq < self.next_in:
            if message.get(43) != "Y":
                self.errors.append(f"MsgSeqNum too low: expected {self.next_in}, got {message.seq}")
                await self._logout(f"MsgSeqNum too low, expecting {self.next_in} but received {message.seq}")
            return
        await self._process_in_order(message)
        while self.next_in in self._queue:
            queued = self._queue.pop(self.next_in)
            if queued.msg_type == "2":
                self._advance(queued)  # answered when it arrived
            else:
                await self._process_in_order(queued)
        for stale in [seq for seq in self._queue if seq < self.next_in]:
            del self._queue[stale]
        if not self._queue:
            self._resend_pending = False
        self._notify()

    async def _process_in_order(self, message: Received) -> None:
        self._advance(message)
        await self._process(message)

    def _advance(self, message: Received) -> None:
        if message.msg_type == "4":
            self.next_in = max(message.seq + 1, int(message.get(36) or 0))
        else:
            self.next_in = message.seq + 1

    async def _logon(self, message: Received) -> None:
        if message.msg_type != "A":
            self.errors.append(f"first message is not a Logon: {message.msg_type}")
            await self._close()
            return
        if self.password is not None and message.get(554) != self.password:
            await self._logout("invalid password", logon=True)
            return
        self.heartbeat_interval = float(message.get(108) or 30)
        reset = message.get(141) == "Y"
        if reset:
            self.next_in, self.next_out = 1, 1
            self._discard_sent()
        elif self.reset_next_logon:  # the broker starts its own numbers again; the client's go on
            self.reset_next_logon = False
            reset, self.next_out = True, 1
            self._discard_sent()
        if message.seq < self.next_in:
            self.errors.append(f"Logon MsgSeqNum too low: expected {self.next_in}, got {message.seq}")
            await self._logout(
                f"MsgSeqNum too low, expecting {self.next_in} but received {message.seq}", logon=True
            )
            return
        body: Fields = [(98, "0"), (108, message.get(108) or "30")]
        if reset:
            body.append((141, "Y"))
        await self._send("A", body)
        self.logged_on = True
        self.logons += 1
        if message.seq > self.next_in:
            self._resend_pending = True
            self._queue[message.seq] = message
            await self._send("2", [(7, str(self.next_in)), (16, "0")])
        else:
            self.next_in = message.seq + 1
        self._notify()

    def _discard_sent(self) -> None:
        """Forget every message numbered so far (a reset): resend requests can no longer reach
        them. The ExecutionReports among them are kept in `discarded`, for the tests."""
        self.discarded.extend(sent.body for _, sent in sorted(self._sent.items()) if sent.msg_type == "8")
        self._sent.clear()

    async def _logout(self, text: str, *, logon: bool = False) -> None:
        if logon:  # refusing a logon: answer outside the session, then hang up
            async with self._send_lock:
                await self._write(
                    build_frame("5", self._header(self.next_out, _now()), [(58, text)]), admin=True
                )
                self.next_out += 1
        else:
            await self._send("5", [(58, text)])
        await self._close()

    async def _process(self, message: Received) -> None:
        kind = message.msg_type
        if kind == "1":
            if not self.muted:
                await self._send("0", [(112, message.get(112) or "")])
        elif kind == "2":
            await self._answer_resend(message)
        elif kind == "5":
            if not self._logging_out:
                self._logging_out = True
                await self._send("5", [])
            await self._close()
        elif kind == "D":
            await self._new_order(message)
        elif kind == "F":
            await self._cancel(message)
        elif kind == "H":
            await self._status(message)
        elif kind not in _ADMIN:
            await self._send("j", [(45, str(message.seq)), (372, kind), (380, "3"), (58, "unsupported")])

    async def _answer_resend(self, message: Received) -> None:
        if self.ignore_resend_requests and message.raw:
            self.ignore_resend_requests -= 1
            return
        begin, end = int(message.get(7) or 1), int(message.get(16) or 0)
        async with self._send_lock:
            last = self.next_out - 1 if end == 0 or end >= self.next_out else end
            gap_start: int | None = None
            for seq in range(begin, last + 2):
                sent = self._sent.get(seq) if seq <= last else None
                resend = sent is not None and sent.msg_type not in _ADMIN
                if (resend or seq > last) and gap_start is not None:
                    header = self._header(gap_start, _now(), _now())
                    await self._write(build_frame("4", header, [(123, "Y"), (36, str(seq))]))
                    gap_start = None
                if resend:
                    assert sent is not None
                    header = self._header(seq, _now(), sent.sending_time)
                    await self._write(build_frame(sent.msg_type, header, sent.body))
                elif seq <= last and gap_start is None:
                    gap_start = seq

    # --- the broker ------------------------------------------------------------------------

    def _exec_id(self) -> str:
        return f"X{self._token}-{next(self._ids)}"

    async def _report(
        self,
        order: AcceptorOrder,
        exec_type: str,
        extra: Sequence[tuple[int, str]] = (),
        *,
        cl_ord_id: str = "",
    ) -> None:
        body: Fields = [
            (37, order.order_id),
            (11, cl_ord_id or order.cl_ord_id),
            (17, self._exec_id()),
            (150, exec_type),
            (39, order.status),
            (55, order.symbol),
            (54, order.side),
            (38, _decimal(order.quantity)),
            (151, _decimal(order.leaves)),
            (14, _decimal(order.cum_qty)),
            (6, _decimal(order.avg_px)),
            (60, _now()),
            *extra,
        ]
        await self._send("8", body)

    async def _new_order(self, message: Received) -> None:
        cl_ord_id = message.get(11) or ""
        self.new_order_counts[cl_ord_id] += 1
        if self.ignore_new_orders:
            return
        if self.business_reject_new_orders is not None:
            body: Fields = [(45, str(message.seq)), (372, "D"), (379, cl_ord_id), (380, "0")]
            await self._send("j", [*body, (58, self.business_reject_new_orders)])
            return
        if self.session_reject_new_orders is not None:
            body = [(45, str(message.seq)), (372, "D"), (373, "5"), (58, self.session_reject_new_orders)]
            await self._send("3", body)
            return
        order = AcceptorOrder(
            cl_ord_id=cl_ord_id,
            order_id=f"O{self._token}-{next(self._ids)}",
            symbol=message.get(55) or "",
            side=message.get(54) or "",
            quantity=Decimal(message.get(38) or "0"),
            ord_type=message.get(40) or "",
            time_in_force=message.get(59) or "0",
        )
        if cl_ord_id in self.orders:
            order.status = "8"
            await self._report(order, "8", [(103, "6"), (58, "duplicate ClOrdID")])
            return
        self.orders[cl_ord_id] = order
        if order.quantity > self.reject_quantity or order.quantity <= 0:
            order.status, order.reject_reason = "8", "3"
            text = f"quantity {_decimal(order.quantity)} exceeds the limit {_decimal(self.reject_quantity)}"
            await self._report(order, "8", [(103, "3"), (58, text)])
            return
        await self._report(order, "0")
        if order.ord_type == "1":
            parts = max(1, self.partials)
            each = (order.quantity / parts).quantize(Decimal("0.00000001"))
            for part in range(parts):
                quantity = order.leaves if part == parts - 1 else each
                if quantity > 0:
                    await self._execute(order, quantity, self.market_price)
        elif order.time_in_force in ("3", "4"):
            order.status = "4"
            await self._report(order, "4", [(58, "nothing matched")])

    async def _execute(self, order: AcceptorOrder, quantity: Decimal, price: Decimal) -> None:
        order.cum_qty += quantity
        order.notional += quantity * price
        order.status = "2" if order.cum_qty >= order.quantity else "1"
        commission = (quantity * price * self.commission_rate).quantize(Decimal("0.01"))
        order.commission += commission
        if self.cumulative_commission:
            commission = order.commission
        extra: Fields = [
            (32, _decimal(quantity)),
            (31, _decimal(price)),
            (12, _decimal(commission)),
            (13, "3"),
            (30, self.last_market),
        ]
        await self._report(order, "F", extra)

    async def _cancel(self, message: Received) -> None:
        cancel_id, orig = message.get(11) or "", message.get(41) or ""
        if cancel_id in self._cancel_ids:  # a PossDup resend of a cancel already handled
            return
        self._cancel_ids.add(cancel_id)
        order = self.orders.get(orig)
        if order is None or order.status in _FINAL or self.refuse_cancels is not None:
            reason, text = (
                ("1", "unknown order") if order is None else ("0", f"too late to cancel: {order.status}")
            )
            if order is not None and self.refuse_cancels is not None and order.status not in _FINAL:
                reason, text = "2", self.refuse_cancels
            body: Fields = [
                (37, order.order_id if order else "NONE"),
                (11, cancel_id),
                (41, orig),
                (39, order.status if order else "8"),
                (434, "1"),
                (102, reason),
                (58, text),
            ]
            await self._send("9", body)
            return
        order.status = "4"
        await self._report(order, "4", [(41, orig)], cl_ord_id=cancel_id)

    async def _status(self, message: Received) -> None:
        cl_ord_id, request_id = message.get(11) or "", message.get(790) or ""
        order = self.orders.get(cl_ord_id)
        if order is None:
            body: Fields = [
                (37, "NONE"),
                (11, cl_ord_id),
                (17, self._exec_id()),
                (150, "I"),
                (39, "8"),
                (103, "5"),
                (58, "unknown order"),
                (55, message.get(55) or ""),
                (54, message.get(54) or ""),
                (151, "0"),
                (14, "0"),
                (6, "0"),
                (790, request_id),
            ]
            await self._send("8", body)
            return
        await self._report(order, "I", [(790, request_id)])


# --- the adapter against an acceptor ----------------------------------------------------------


def fix_config_for(acceptor: FixAcceptor, **overrides: object) -> FixConfig:
    """A FixConfig for `acceptor` with short timers (1 s heartbeats, sub-second timeouts)."""
    values: dict[str, object] = {
        "broker_id": "fix-test",
        "name": "FIX test broker",
        "host": "127.0.0.1",
        "port": acceptor.port,
        "sender_comp_id": acceptor.client_comp_id,
        "target_comp_id": acceptor.comp_id,
        "commission": CommissionStructure(base_rate=Decimal("0.001")),
        "account": "ACC-1",
        "heartbeat_interval": 1,
        "asset_classes": tuple(AssetClass),
        "features": (
            BrokerFeature.MARKET_ORDERS,
            BrokerFeature.LIMIT_ORDERS,
            BrokerFeature.STOP_ORDERS,
            BrokerFeature.STOP_LIMIT_ORDERS,
        ),
        "time_in_force": tuple(TimeInForce),
        "timeouts": FixTimeouts(
            connect_s=2.0,
            logon_s=2.0,
            logout_s=0.5,
            send_s=2.0,
            store_s=5.0,
            answer_s=2.0,
            heartbeat_grace_s=0.2,
            test_request_s=0.5,
            sync_s=1.0,
        ),
    }
    values.update(overrides)
    return FixConfig(**values)  # type: ignore[arg-type]


def fresh_acceptor(**settings: object) -> FixAcceptor:
    """An acceptor with comp ids of its own, so its session never meets another test's rows."""
    token = secrets.token_hex(4).upper()
    return FixAcceptor(comp_id=f"BRK{token}", client_comp_id=f"BIS{token}", **settings)  # type: ignore[arg-type]


@dataclass
class FixDriver:
    """The broker side of `open_fix_adapter`, for a contract suite: `fill` a resting order;
    orders above `reject_quantity` are rejected; market orders fill at once at `market_price`.
    `events` receives what the adapter's `run` emits."""

    acceptor: FixAcceptor
    events: trio.MemoryReceiveChannel[AnyBrokerEvent]

    @property
    def reject_quantity(self) -> Decimal:
        return self.acceptor.reject_quantity

    @property
    def market_price(self) -> Decimal:
        return self.acceptor.market_price

    async def fill(self, client_order_id: str, quantity: Decimal, price: Decimal) -> None:
        await self.acceptor.fill(client_order_id, quantity, price)


@asynccontextmanager
async def open_fix_adapter(
    database_url: str, **config_overrides: object
) -> AsyncIterator[tuple[FixBroker, FixDriver]]:
    """A FIX adapter whose `run` is started (logged on) against a fresh acceptor on loopback,
    with its session in the migrated database at `database_url`. On exit `run` is cancelled
    (Logout exchange) and the acceptor stops."""
    acceptor = fresh_acceptor()
    async with trio.open_nursery() as servers:
        await servers.start(acceptor.serve)
        adapter = build_fix_broker(fix_config_for(acceptor, **config_overrides), database_url)
        send, receive = trio.open_memory_channel[AnyBrokerEvent](math.inf)
        try:
            async with trio.open_nursery() as connection:
                await connection.start(adapter.run, send)
                try:
                    yield adapter, FixDriver(acceptor, receive)
                finally:
                    connection.cancel_scope.cancel()  # run logs out while the acceptor still answers
        finally:
            servers.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await adapter.aclose()


@asynccontextmanager
async def running(adapter: FixBroker) -> AsyncIterator[trio.MemoryReceiveChannel[AnyBrokerEvent]]:
    """`adapter.run` started (logged on) in a nursery of its own; cancelled (Logout) on exit.
    Yields the channel its events arrive on. A `run` that ends with an error fails the test."""
    send, receive = trio.open_memory_channel[AnyBrokerEvent](math.inf)
    async with trio.open_nursery() as nursery:
        await nursery.start(adapter.run, send)
        try:
            yield receive
        finally:
            nursery.cancel_scope.cancel()


async def keep_running(
    adapter: FixBroker,
    events: trio.MemorySendChannel[AnyBrokerEvent],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """What the daemon's supervisor does, in small: restart `run` whenever it raises (after
    50 ms); started once the first logon succeeded."""
    first = True
    while True:
        try:
            async with trio.open_nursery() as connection:
                await connection.start(adapter.run, events)
                if first:
                    first = False
                    task_status.started()
        except Exception:
            if first:
                raise
        await trio.sleep(0.05)


async def run_until_lost(
    adapter: FixBroker,
    events: trio.MemorySendChannel[AnyBrokerEvent],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`adapter.run` until its connection is lost (what a crash of our side looks like to the
    broker, when the test drops the connection): ConnectionLost ends it quietly."""
    try:
        await adapter.run(events, task_status=task_status)
    except ConnectionLost:
        pass
