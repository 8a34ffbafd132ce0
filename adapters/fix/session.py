"""The FIX 4.4 session layer over one TCP connection: logon, sequence numbers, heartbeats, test
requests, gap recovery, resend answers, logout. The driver around the pure parts (`codec`,
`sequencer`, `resend`); application messages go to an `Application`.

Lifecycle. `FixSession.establish` loads the numbers from PostgreSQL (or resets them when
`reset_on_logon`), connects, sends Logon and waits for the counterparty's (a Logout instead is
`AuthenticationFailed`); a Logon numbered above what we expect is processed, then a
ResendRequest recovers the gap (what the broker sent while we were away). `serve` then runs
until the connection ends, and always ends by raising `ConnectionLost` (EOF, socket error, a
counterparty Logout, silence after a TestRequest, a fatal sequence error): the adapter's
supervisor reconnects. `logout` is the orderly end on our side.

Sending. `send` holds one lock from numbering to the last byte written, so MsgSeqNums reach the
wire in order. The number (and an application message's bytes) is committed to PostgreSQL
before anything is written; that section is shielded from the caller's cancellation (bounded by
the store and send timeouts), so a cancelled caller never leaves a number half-used. A store
failure there leaves the numbers in doubt: the session closes (the reconnect reloads them) and
the caller gets `StoreUnavailable`, with nothing written.

Receiving. Each message is checked (CompIDs), sequenced (`InboundSequencer`), processed, then
the next expected number is committed: a crash in between costs a resend, not a message. When
processing stops early (the counterparty's Logout, a failure), the number is committed up to
the last message fully processed, so the next logon asks for nothing that was processed.
Garbled frames are dropped without touching the numbers (FIX); the gap they leave is recovered
with a ResendRequest when the next good message arrives.

Liveness. A Heartbeat goes out after `HeartBtInt` seconds without sending anything; after
`HeartBtInt + heartbeat_grace_s` without receiving anything a TestRequest goes out, and if
nothing at all arrives within `test_request_s` the connection is declared dead. A resend that
has not moved the expected number for `HeartBtInt` seconds is asked for again.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

import trio

from adapters.base import AuthenticationFailed, ConnectionLost, DeniedLocally
from adapters.fix.codec import (
    FrameDecoder,
    GarbledMessage,
    Message,
    encode_message,
    format_timestamp,
    parse_frame,
    session_header,
)
from adapters.fix.config import FixConfig
from adapters.fix.resend import GapFill, Resend, encode_answer, plan_resend
from adapters.fix.sequencer import InboundSequencer
from adapters.fix.store import FixStore, SessionNumbers, StoreUnavailable
from adapters.fix.tags import (
    ADMIN_MSG_TYPES,
    REJECT_COMP_ID_PROBLEM,
    REJECT_VALUE_INCORRECT,
    MsgType,
    Tag,
)

__all__ = ["Application", "FixSession", "SentReference"]

log = logging.getLogger(__name__)

Field = tuple[int, str]
Clock = Callable[[], datetime]

#: How many of our recent messages a Reject (45=RefSeqNum) can still be traced back to.
_REFERENCES_KEPT = 10_000


class SentReference(NamedTuple):
    """A message we sent, as a Reject of it (45=RefSeqNum) is traced back."""

    msg_type: str
    key: str | None  # the ClOrdID (or request id) it was about


class Application(Protocol):
    """Where the session hands what is not session-level."""

    async def on_application_message(self, message: Message) -> None:
        """One in-sequence application message. Raise ValueError if it is malformed: the session
        answers with a Reject and moves on."""

    async def on_session_reject(self, reference: SentReference | None, text: str) -> None:
        """The counterparty rejected one of our messages at the session level (35=3)."""


class FixSession:
    """One logged-on session. Create with `establish`; see the module docstring."""

    def __init__(
        self,
        config: FixConfig,
        store: FixStore,
        stream: trio.abc.Stream,
        numbers: SessionNumbers,
        application: Application,
        clock: Clock,
    ) -> None:
        self._config = config
        self._store = store
        self._stream = stream
        self._application = application
        self._clock = clock
        self._epoch = numbers.epoch
        self._next_out = numbers.next_out
        self._sequencer = InboundSequencer(numbers.next_in)
        self._persisted_in = numbers.next_in
        self._decoder = FrameDecoder()
        self._send_lock = trio.Lock()
        now = trio.current_time()
        self._last_sent = now
        self._last_received = now
        self._closed: str | None = None
        self._logged_on = False
        self._logging_out = False
        self._logout_received = trio.Event()
        self._progress = trio.Event()
        self._test_requests: dict[str, trio.Event] = {}
        self._references: OrderedDict[int, SentReference] = OrderedDict()
        self._ids = itertools.count(1)
        self._token = secrets.token_hex(3)

    def __repr__(self) -> str:
        state = (
            f"closed ({self._closed})" if self._closed else "logged on" if self._logged_on else "logging on"
        )
        return (
            f"<FixSession {self._config.session_id} {state} next_out={self._next_out}"
            f" next_in={self._sequencer.next_in} in_sync={self._sequencer.in_sync}>"
        )

    # --- lifecycle -----------------------------------------------------------------------

    @classmethod
    async def establish(
        cls, config: FixConfig, store: FixStore, application: Application, clock: Clock
    ) -> FixSession:
        """Connect and log on. Raises ConnectionLost (no connection, no answer, a fatal sequence
        error), AuthenticationFailed (Logout in answer to our Logon) or StoreUnavailable."""
        await store.claim_session()
        numbers = await store.load_session()
        if config.reset_on_logon:
            numbers = await store.reset_session()
        try:
            with trio.fail_after(config.timeouts.connect_s):
                stream = await trio.open_tcp_stream(config.host, config.port)
        except (OSError, trio.TooSlowError) as exc:
            raise ConnectionLost(f"cannot connect to {config.host}:{config.port}: {exc!r}") from exc
        session = cls(config, store, stream, numbers, application, clock)
        try:
            await session._logon()
        except BaseException:
            with trio.CancelScope(shield=True):
                await session._close("logon failed")
            raise
        return session

    @property
    def logged_on(self) -> bool:
        return self._logged_on and self._closed is None

    @property
    def in_sync(self) -> bool:
        return self._sequencer.in_sync

    @property
    def next_out(self) -> int:
        return self._next_out

    @property
    def next_in(self) -> int:
        return self._sequencer.next_in

    async def serve(self) -> None:
        """Receive and process until the connection ends; always raises ConnectionLost (or the
        store's error) in the end."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_heartbeats)
                nursery.start_soon(self._watch_silence)
                nursery.start_soon(self._watch_resend)
                while True:
                    message = await self._receive()
                    await self._on_message(message)
        except Exception as exc:  # not on cancellation: `logout` still needs the connection
            await self._close(_first_reason(exc))
            raise ConnectionLost(f"FIX session ended: {self._closed}") from exc

    async def logout(self, text: str = "") -> None:
        """Our orderly end: send Logout, process what still arrives until the counterparty's
        Logout (or `logout_s`), close. Call it only once `serve` has ended, and shielded."""
        if self._closed is not None:
            return
        self._logging_out = True
        try:
            with trio.move_on_after(self._config.timeouts.logout_s):
                await self.send(MsgType.LOGOUT, [(Tag.TEXT, text)] if text else [])
                while not self._logout_received.is_set():
                    await self._on_message(await self._receive())
        except Exception as exc:
            log.info("logout incomplete", extra={"session": self._config.session_id, "error": repr(exc)})
        finally:
            await self._close("logged out")

    # --- sending -------------------------------------------------------------------------

    async def send(
        self,
        msg_type: str,
        body: Sequence[Field],
        *,
        reference: str | None = None,
        client_order_id: str | None = None,
    ) -> int:
        """Number, persist, then write one message; returns its MsgSeqNum. `reference` (the
        message's own ClOrdID or request id) is what a Reject of it reports; `client_order_id`
        (the order it is about) is stored with an application message.
        Raises DeniedLocally (the session is closed: nothing sent), ConnectionLost (the write
        failed: it may or may not have arrived), StoreUnavailable (nothing written; the session
        closes), DuplicateNewOrder (nothing written)."""
        async with self._send_lock:
            if self._closed is not None:
                raise DeniedLocally(f"session closed: {self._closed}")
            timeouts = self._config.timeouts
            with trio.CancelScope(shield=True):
                seq = self._next_out
                now = self._clock()
                raw = encode_message(msg_type, self._header(seq, now), body)
                admin = msg_type in ADMIN_MSG_TYPES
                try:
                    await self._store.record_outgoing(
                        self._epoch,
                        seq,
                        msg_type=msg_type,
                        raw=None if admin else raw,
                        client_order_id=None if admin else client_order_id,
                        sent_at=now,
                    )
                except StoreUnavailable as exc:
                    await self._close(f"sequence store failed: {exc}")
                    raise
                self._next_out = seq + 1
                self._remember(seq, SentReference(msg_type, reference))
                await self._write(raw, timeouts.send_s)
            return seq

    def reference(self, seq: int) -> SentReference | None:
        """What we sent as MsgSeqNum `seq` (recent messages of this connection only)."""
        return self._references.get(seq)

    async def test_request(self) -> None:
        """Send a TestRequest and wait for the Heartbeat that answers it (`test_request_s`)."""
        test_id = f"T{next(self._ids)}-{self._token}"
        answered = trio.Event()
        self._test_requests[test_id] = answered
        try:
            await self.send(MsgType.TEST_REQUEST, [(Tag.TEST_REQ_ID, test_id)])
            with trio.move_on_after(self._config.timeouts.test_request_s):
                await answered.wait()
            if self._closed is not None:
                raise ConnectionLost(f"session closed: {self._closed}")
            if not answered.is_set():
                raise ConnectionLost(
                    f"TestRequest {test_id} unanswered for {self._config.timeouts.test_request_s}s"
                )
        finally:
            self._test_requests.pop(test_id, None)

    async def wait_in_sync(self, timeout: float) -> bool:
        """Wait (at most `timeout`) until no inbound gap is outstanding. False on timeout."""
        with trio.move_on_after(timeout):
            while not self._sequencer.in_sync:
                if self._closed is not None:
                    raise ConnectionLost(f"session closed: {self._closed}")
                await self._progress.wait()
            return True
        return False

    # --- logon ---------------------------------------------------------------------------

    async def _logon(self) -> None:
        config = self._config
        body: list[Field] = [(Tag.ENCRYPT_METHOD, "0"), (Tag.HEART_BT_INT, str(config.heartbeat_interval))]
        if config.reset_on_logon:
            body.append((Tag.RESET_SEQ_NUM_FLAG, "Y"))
        if config.username is not None:
            body.append((Tag.USERNAME, config.username))
        if config.password_env is not None:
            password = os.environ.get(config.password_env)
            if not password:
                raise AuthenticationFailed(
                    f"environment variable {config.password_env} (the password) is not set"
                )
            body.append((Tag.PASSWORD, password))
        await self.send(MsgType.LOGON, body)
        try:
            with trio.fail_after(config.timeouts.logon_s):
                answer = await self._receive()
        except trio.TooSlowError:
            raise ConnectionLost(f"no Logon answer within {config.timeouts.logon_s}s") from None
        if answer.msg_type == MsgType.LOGOUT:
            raise AuthenticationFailed(f"logon refused: {answer.text(Tag.TEXT) or 'Logout without a reason'}")
        if answer.msg_type != MsgType.LOGON:
            await self._fail(f"expected a Logon, received MsgType {answer.msg_type}")
        problem = self._comp_id_problem(answer)
        if problem is not None:
            await self._fail(problem)
        if answer.flag(Tag.RESET_SEQ_NUM_FLAG) and not config.reset_on_logon:
            # The counterparty starts its numbers again; ours go on (we did not ask for a reset).
            log.warning("counterparty reset its sequence numbers", extra={"session": config.session_id})
            self._sequencer = InboundSequencer(answer.seq)
        verdict = self._sequencer.receive(answer)
        if verdict.fatal is not None:
            await self._fail(verdict.fatal)
        self._logged_on = True
        log.info(
            "FIX session logged on",
            extra={"session": config.session_id, "next_out": self._next_out, "next_in": self.next_in},
        )
        if verdict.resend_from is not None:
            await self._send_resend_request(verdict.resend_from)
        await self._persist_next_in()

    # --- receiving -----------------------------------------------------------------------

    async def _receive(self) -> Message:
        """The next well-formed message (garbled frames are logged and dropped)."""
        while True:
            try:
                frame = self._decoder.next_frame()
                if frame is not None:
                    message = parse_frame(frame)
                    self._last_received = trio.current_time()
                    return message
            except GarbledMessage as exc:
                log.warning(
                    "garbled FIX message dropped",
                    extra={"session": self._config.session_id, "error": str(exc)},
                )
                continue
            try:
                data = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ConnectionLost(f"connection lost: {exc!r}") from exc
            if not data:
                raise ConnectionLost("the counterparty closed the connection")
            self._decoder.feed(data)

    async def _on_message(self, message: Message) -> None:
        problem = self._comp_id_problem(message)
        if problem is not None:
            await self._send_reject(message, problem, REJECT_COMP_ID_PROBLEM)
            await self._fail(problem)
        if message.msg_type == MsgType.LOGON:
            await self._fail("Logon received on a session already logged on")
        verdict = self._sequencer.receive(message)
        if verdict.duplicate:
            log.debug("duplicate ignored", extra={"session": self._config.session_id, "seq": message.seq})
            return
        if verdict.fatal is not None:
            await self._fail(verdict.fatal)
        if verdict.reject is not None:
            await self._send_reject(message, verdict.reject, REJECT_VALUE_INCORRECT)
            return
        if verdict.resend_from is not None:
            await self._send_resend_request(verdict.resend_from)
        through: int | None = None  # the expected number once the messages done so far count
        ended: str | None = None
        try:
            for ready, mark in zip(verdict.process, verdict.through, strict=True):
                ended = await self._process(ready)
                through = mark
                if ended is not None:
                    break
        except Exception:
            if through is not None:
                await self._persist_after_failure(through)
            raise
        if through is not None:
            await self._persist_through(through)
        self._notify()
        if ended is not None:
            raise ConnectionLost(ended)

    async def _process(self, message: Message) -> str | None:
        """Handle one in-sequence message. Returns why the session ends after it (the
        counterparty logged out), else None."""
        msg_type = message.msg_type
        if msg_type == MsgType.HEARTBEAT:
            test_id = message.text(Tag.TEST_REQ_ID)
            answered = self._test_requests.get(test_id) if test_id else None
            if answered is not None:
                answered.set()
        elif msg_type == MsgType.TEST_REQUEST:
            await self.send(MsgType.HEARTBEAT, [(Tag.TEST_REQ_ID, message.text(Tag.TEST_REQ_ID) or "")])
        elif msg_type == MsgType.RESEND_REQUEST:
            await self._answer_resend(message)
        elif msg_type == MsgType.REJECT:
            ref_seq = message.integer(Tag.REF_SEQ_NUM)
            reference = None if ref_seq is None else self._references.get(ref_seq)
            text = message.text(Tag.TEXT) or f"session reject (373={message.text(Tag.SESSION_REJECT_REASON)})"
            log.warning(
                "counterparty rejected our message",
                extra={"session": self._config.session_id, "ref_seq": ref_seq, "reason": text},
            )
            await self._application.on_session_reject(reference, text)
        elif msg_type == MsgType.SEQUENCE_RESET:
            pass  # the sequencer has moved the expected number
        elif msg_type == MsgType.LOGOUT:
            self._logout_received.set()
            if not self._logging_out:
                text = message.text(Tag.TEXT) or ""
                self._logging_out = True
                try:
                    await self.send(MsgType.LOGOUT, [])
                except (ConnectionLost, DeniedLocally, StoreUnavailable):
                    pass  # it is leaving anyway
                return f"logged out by the counterparty: {text}"
        elif msg_type == MsgType.LOGON:
            pass  # a Logon numbered above the expected one comes back here after the gap fill
        else:
            try:
                await self._application.on_application_message(message)
            except ValueError as exc:
                log.warning(
                    "malformed application message rejected",
                    extra={"session": self._config.session_id, "seq": message.seq, "error": str(exc)},
                )
                await self._send_reject(message, str(exc), REJECT_VALUE_INCORRECT)
        return None

    async def _persist_next_in(self) -> None:
        await self._persist_through(self._sequencer.next_in)

    async def _persist_through(self, next_in: int) -> None:
        if next_in != self._persisted_in:
            await self._store.set_next_in(self._epoch, next_in)
            self._persisted_in = next_in

    async def _persist_after_failure(self, next_in: int) -> None:
        """Processing failed after some messages were processed: commit their numbers (best
        effort, never hiding the failure)."""
        try:
            await self._persist_through(next_in)
        except StoreUnavailable as exc:
            log.warning(
                "inbound sequence number not persisted",
                extra={"session": self._config.session_id, "error": str(exc)},
            )

    # --- answering the counterparty --------------------------------------------------------

    async def _answer_resend(self, request: Message) -> None:
        begin = request.integer(Tag.BEGIN_SEQ_NO)
        end = request.integer(Tag.END_SEQ_NO)
        if begin is None or end is None:
            await self._send_reject(
                request, "ResendRequest without BeginSeqNo and EndSeqNo", REJECT_VALUE_INCORRECT
            )
            return
        async with self._send_lock:
            if self._closed is not None:
                raise ConnectionLost(f"session closed: {self._closed}")
            last = self._next_out - 1 if end == 0 or end >= self._next_out else end
            stored = await self._store.outgoing_between(self._epoch, begin, last) if begin <= last else {}
            now = self._clock()
            plan = plan_resend(
                begin,
                end,
                self._next_out,
                stored,
                now=now,
                max_age=timedelta(seconds=self._config.resend_max_age_s),
            )
            log.info(
                "answering ResendRequest",
                extra={
                    "session": self._config.session_id,
                    "begin": begin,
                    "end": end,
                    "resent": sum(isinstance(item, Resend) for item in plan),
                    "gap_filled": sum(isinstance(item, GapFill) for item in plan),
                },
            )
            sending_time = format_timestamp(now)
            for item in plan:
                raw = encode_answer(
                    item,
                    sender=self._config.sender_comp_id,
                    target=self._config.target_comp_id,
                    sending_time=sending_time,
                )
                await self._write(raw, self._config.timeouts.send_s)

    async def _send_resend_request(self, begin: int) -> None:
        log.info("inbound gap: ResendRequest", extra={"session": self._config.session_id, "begin": begin})
        await self.send(MsgType.RESEND_REQUEST, [(Tag.BEGIN_SEQ_NO, str(begin)), (Tag.END_SEQ_NO, "0")])

    async def _send_reject(self, message: Message, text: str, reason: str) -> None:
        await self.send(
            MsgType.REJECT,
            [
                (Tag.REF_SEQ_NUM, str(message.seq)),
                (Tag.REF_MSG_TYPE, message.msg_type),
                (Tag.SESSION_REJECT_REASON, reason),
                (Tag.TEXT, text[:200]),
            ],
        )

    # --- liveness ------------------------------------------------------------------------

    async def _send_heartbeats(self) -> None:
        interval = self._config.heartbeat_interval
        while True:
            idle = trio.current_time() - self._last_sent
            if idle < interval:
                await trio.sleep(interval - idle)
                continue
            await self.send(MsgType.HEARTBEAT, [])

    async def _watch_silence(self) -> None:
        timeouts = self._config.timeouts
        limit = self._config.heartbeat_interval + timeouts.heartbeat_grace_s
        while True:
            silent = trio.current_time() - self._last_received
            if silent < limit:
                await trio.sleep(limit - silent)
                continue
            asked_at = trio.current_time()
            await self.send(MsgType.TEST_REQUEST, [(Tag.TEST_REQ_ID, f"W{next(self._ids)}-{self._token}")])
            await trio.sleep(timeouts.test_request_s)
            if self._last_received < asked_at:
                silent = trio.current_time() - self._last_received
                await self._fail(f"nothing received for {silent:.1f}s, TestRequest unanswered")

    async def _watch_resend(self) -> None:
        """Ask again when a resend has not moved the expected number for HeartBtInt seconds."""
        interval = self._config.heartbeat_interval
        stuck_at, since = self._sequencer.next_in, trio.current_time()
        while True:
            await trio.sleep(interval / 4)
            now = trio.current_time()
            if self._sequencer.in_sync or stuck_at != self._sequencer.next_in:
                stuck_at, since = self._sequencer.next_in, now
            elif now - since >= interval:
                begin = self._sequencer.reissue()
                if begin is not None:
                    log.warning("resend stalled: asking again", extra={"session": self._config.session_id})
                    await self._send_resend_request(begin)
                since = now

    # --- internals -----------------------------------------------------------------------

    def _header(self, seq: int, now: datetime) -> list[Field]:
        config = self._config
        return session_header(config.sender_comp_id, config.target_comp_id, seq, format_timestamp(now))

    def _comp_id_problem(self, message: Message) -> str | None:
        sender, target = message.text(Tag.SENDER_COMP_ID), message.text(Tag.TARGET_COMP_ID)
        if sender != self._config.target_comp_id or target != self._config.sender_comp_id:
            return f"CompID problem: received 49={sender} 56={target}"
        return None

    def _remember(self, seq: int, reference: SentReference) -> None:
        self._references[seq] = reference
        while len(self._references) > _REFERENCES_KEPT:
            self._references.popitem(last=False)

    async def _write(self, raw: bytes, timeout: float) -> None:
        try:
            with trio.fail_after(timeout):
                await self._stream.send_all(raw)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, trio.TooSlowError) as exc:
            await self._close(f"write failed: {exc!r}")
            raise ConnectionLost(f"connection lost while sending: {exc!r}") from exc
        self._last_sent = trio.current_time()

    async def _fail(self, reason: str) -> None:
        """End the session for a protocol error: Logout with the reason (best effort), close,
        raise ConnectionLost."""
        log.error("FIX session error", extra={"session": self._config.session_id, "reason": reason})
        if self._closed is None and not self._logging_out:
            self._logging_out = True
            with trio.move_on_after(self._config.timeouts.send_s):
                try:
                    await self.send(MsgType.LOGOUT, [(Tag.TEXT, reason[:200])])
                except (ConnectionLost, DeniedLocally, StoreUnavailable):
                    pass
        await self._close(reason)
        raise ConnectionLost(reason)

    async def _close(self, reason: str) -> None:
        if self._closed is None:
            self._closed = reason
            for answered in self._test_requests.values():
                answered.set()
            self._notify()
        await trio.aclose_forcefully(self._stream)

    def _notify(self) -> None:
        self._progress.set()
        self._progress = trio.Event()


def _first_reason(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
