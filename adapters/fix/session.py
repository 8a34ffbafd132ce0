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

Sending (group commit). `send` queues the message and waits until it is on the wire. Whoever
finds the wire free takes every message queued so far (a burst: what arrived while the previous
burst was being written), numbers them consecutively, commits all their numbers and the
application messages' bytes to PostgreSQL in one statement (`FixStore.record_outgoing`), and only
then writes them, in order, in one write; the others wait for their message's outcome. So every
message is durable before any byte of it is sent, numbers reach the wire in order and are never
reused, and a burst costs one commit. Once a message is taken into a burst, its caller's
cancellation no longer stops it (the burst is shielded, bounded by the store and send timeouts):
a number is never left half-used; a caller cancelled while still queued takes its message out,
and nothing is sent. A store failure leaves the numbers in doubt: the session closes (the
reconnect reloads them) and every message of the burst fails with `StoreUnavailable`, none
written. A NewOrderSingle whose ClOrdID was already recorded fails alone (`DuplicateNewOrder`),
and the rest of its burst is numbered again without it.

Receiving (batches). Every complete message already received is taken at once (up to
`_BATCH_MAX`). Each is checked (CompIDs) and sequenced (`InboundSequencer`); consecutive
application messages are handed to the `Application` together, which records what they change
in one commit (`FixStore.record_executions`) before acting on them; session messages between
them are processed in order, after the application messages before them. The next expected
number (the mark) is committed only after the messages before it were processed and their
effects committed, and at most every `_MARK_INTERVAL_S` while traffic flows (with a batch's
reports when due, else on its own), so inbound batches rarely touch the session's row that
outbound bursts update: a crash costs a resend of what was processed since the last mark (the
ExecIDs already recorded are recognised and dropped), never a message. When the session ends
(the counterparty's Logout, a failure, our logout), the mark is committed up to the last message
fully processed, so the next logon asks for as little as possible. At logon it is set exactly
(it goes down when the counterparty started its numbers again). Garbled frames are dropped
without touching the numbers (FIX); the gap they leave is recovered with a ResendRequest when
the next good message arrives.

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
from dataclasses import dataclass, field
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
from adapters.fix.store import (
    DuplicateNewOrder,
    FixStore,
    InboundMark,
    OutgoingRecord,
    SessionNumbers,
    StoreUnavailable,
)
from adapters.fix.tags import (
    ADMIN_MSG_TYPES,
    REJECT_COMP_ID_PROBLEM,
    REJECT_VALUE_INCORRECT,
    MsgType,
    Tag,
)

__all__ = ["Application", "FixSession", "InboundMark", "Rejection", "SentReference"]

log = logging.getLogger(__name__)

Field = tuple[int, str]
Clock = Callable[[], datetime]

#: How many of our recent messages a Reject (45=RefSeqNum) can still be traced back to.
_REFERENCES_KEPT = 10_000
#: At most this many received messages are processed as one batch.
_BATCH_MAX = 1024
#: The next expected inbound number is committed at least this often while it moves (and at
#: once when the session ends); in between, a crash costs a resend of what was processed since.
_MARK_INTERVAL_S = 1.0


class SentReference(NamedTuple):
    """A message we sent, as a Reject of it (45=RefSeqNum) is traced back."""

    msg_type: str
    key: str | None  # the ClOrdID (or request id) it was about


class Rejection(NamedTuple):
    """A received application message that is malformed, and why (answered with a Reject)."""

    message: Message
    text: str


@dataclass(eq=False)
class _Outgoing:
    """A message waiting in `send` for its burst to be committed and written."""

    msg_type: str
    body: Sequence[Field]
    reference: str | None
    client_order_id: str | None
    taken: bool = False  # in a burst: it goes out (or fails) whatever its caller does now
    seq: int = 0
    error: Exception | None = None
    done: trio.Event = field(default_factory=trio.Event)
    #: Set when it is done, or when it is first in the queue as the wire frees: only that one
    #: sender wakes to lead the next burst (not every sender waiting).
    turn: trio.Event = field(default_factory=trio.Event)

    def finish(self, error: Exception | None = None) -> None:
        self.error = error
        self.done.set()
        self.turn.set()


class Application(Protocol):
    """Where the session hands what is not session-level."""

    async def on_application_messages(
        self, messages: Sequence[Message], mark: InboundMark | None
    ) -> list[Rejection]:
        """In-sequence application messages, in order. Commit what they change, and `mark`
        (unless None: the next expected number once they are processed) in the same
        transaction (`FixStore.record_executions`), before acting on any of them; raise
        (StoreUnavailable) if that fails: nothing of the batch counts as processed. Returns the
        malformed ones, which the session answers with a Reject."""

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
        self._persisted_in = numbers.next_in  # the inbound mark last committed
        self._processed_in = numbers.next_in  # the inbound mark once what was processed counts
        self._persisted_at = trio.current_time()
        self._decoder = FrameDecoder()
        self._outgoing: list[_Outgoing] = []  # queued for the next burst
        self._wire_busy = False  # a burst (or a resend answer) is being committed / written
        self._wire_free = trio.Event()  # set whenever the wire is released
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
                nursery.start_soon(self._keep_mark)
                while True:
                    await self._on_messages(await self._receive_batch())
        except Exception as exc:  # not on cancellation: `logout` still needs the connection
            await self._persist_processed()
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
                    await self._on_messages(await self._receive_batch())
        except Exception as exc:
            log.info("logout incomplete", extra={"session": self._config.session_id, "error": repr(exc)})
        finally:
            await self._persist_processed()
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
        """Number, persist, then write one message (in a burst: module docstring); returns its
        MsgSeqNum. `reference` (the message's own ClOrdID or request id) is what a Reject of it
        reports; `client_order_id` (the order it is about) is stored with an application message.
        Raises DeniedLocally (the session is closed: nothing sent), ConnectionLost (the write
        failed: it may or may not have arrived), StoreUnavailable (nothing written; the session
        closes), DuplicateNewOrder (nothing written)."""
        if self._closed is not None:
            raise DeniedLocally(f"session closed: {self._closed}")
        item = _Outgoing(msg_type, body, reference, client_order_id)
        self._outgoing.append(item)
        try:
            while not item.done.is_set():
                if self._wire_busy:
                    await item.turn.wait()
                    if not item.done.is_set():
                        item.turn = trio.Event()
                else:
                    await self._flush_burst()
        except trio.Cancelled:
            if not item.taken:
                self._outgoing.remove(item)
                self._pass_turn()
                raise
            with trio.CancelScope(shield=True):  # its burst is bounded by the store and send timeouts
                await item.done.wait()
            # the cancellation reaches the caller at its next checkpoint
        if item.error is not None:
            raise item.error
        return item.seq

    async def _flush_burst(self) -> None:
        """Take the wire and every queued message; number, commit, write them (shielded)."""
        self._take_wire()
        burst, self._outgoing = self._outgoing, []
        for item in burst:
            item.taken = True
        try:
            with trio.CancelScope(shield=True):
                await self._send_burst(burst)
        except BaseException as exc:  # a bug: every sender of the burst must still learn it
            for item in burst:
                if not item.done.is_set():
                    item.finish(ConnectionLost(f"sending failed: {exc!r}"))
            raise
        finally:
            self._release_wire()

    async def _send_burst(self, burst: list[_Outgoing]) -> None:
        while burst:
            if self._closed is not None:
                error = DeniedLocally(f"session closed: {self._closed}")
                for item in burst:
                    item.finish(error)
                return
            burst = self._drop_repeated(burst)
            now = self._clock()
            header_time = format_timestamp(now)
            config = self._config
            raws: list[bytes] = []
            records: list[OutgoingRecord] = []
            for seq, item in enumerate(burst, start=self._next_out):
                item.seq = seq
                header = session_header(config.sender_comp_id, config.target_comp_id, seq, header_time)
                raw = encode_message(item.msg_type, header, item.body)
                raws.append(raw)
                admin = item.msg_type in ADMIN_MSG_TYPES
                records.append(
                    OutgoingRecord(
                        seq,
                        item.msg_type,
                        None if admin else raw,
                        None if admin else item.client_order_id,
                        now,
                    )
                )
            try:
                refused = await self._store.record_outgoing(self._epoch, records)
            except StoreUnavailable as exc:
                await self._close(f"sequence store failed: {exc}")
                for item in burst:
                    item.finish(exc)
                return
            if refused:
                burst = self._drop_refused(burst, set(refused))
                continue
            self._next_out += len(burst)
            for item in burst:
                self._remember(item.seq, SentReference(item.msg_type, item.reference))
            try:
                await self._write(b"".join(raws), self._config.timeouts.send_s)
            except ConnectionLost as exc:
                for item in burst:
                    item.finish(exc)
                return
            for item in burst:
                item.finish()
            return

    def _drop_repeated(self, burst: list[_Outgoing]) -> list[_Outgoing]:
        """A second NewOrderSingle of one ClOrdID in the same burst fails (the first goes)."""
        seen: set[str | None] = set()
        kept = []
        for item in burst:
            if item.msg_type == MsgType.NEW_ORDER_SINGLE:
                if item.client_order_id in seen:
                    item.finish(DuplicateNewOrder(f"ClOrdID {item.client_order_id} twice in one burst"))
                    continue
                seen.add(item.client_order_id)
            kept.append(item)
        return kept

    def _drop_refused(self, burst: list[_Outgoing], refused: set[str]) -> list[_Outgoing]:
        """Fail the NewOrderSingles whose ClOrdID was already recorded; the rest go again."""
        kept = []
        for item in burst:
            if item.msg_type == MsgType.NEW_ORDER_SINGLE and item.client_order_id in refused:
                item.finish(
                    DuplicateNewOrder(
                        f"a NewOrderSingle with ClOrdID {item.client_order_id} was already sent"
                        f" on {self._config.session_id}"
                    )
                )
            else:
                kept.append(item)
        return kept

    def _take_wire(self) -> None:
        assert not self._wire_busy
        self._wire_busy = True

    def _release_wire(self) -> None:
        self._wire_busy = False
        self._wire_free.set()  # a resend answer waiting for the wire
        self._wire_free = trio.Event()
        self._pass_turn()

    def _pass_turn(self) -> None:
        """Wake the first queued sender to lead the next burst, if the wire is free."""
        if not self._wire_busy and self._outgoing:
            self._outgoing[0].turn.set()

    async def _wait_for_wire(self) -> None:
        """Take the wire once it is free (to write a resend answer between bursts)."""
        while self._wire_busy:
            await self._wire_free.wait()
        self._take_wire()

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
            message = self._buffered()
            if message is not None:
                return message
            try:
                data = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ConnectionLost(f"connection lost: {exc!r}") from exc
            if not data:
                raise ConnectionLost("the counterparty closed the connection")
            self._decoder.feed(data)

    async def _receive_batch(self) -> list[Message]:
        """The next message, and every one after it already received (at most `_BATCH_MAX`)."""
        batch = [await self._receive()]
        while len(batch) < _BATCH_MAX and (message := self._buffered()) is not None:
            batch.append(message)
        return batch

    def _buffered(self) -> Message | None:
        """The next well-formed message already received, or None."""
        while True:
            try:
                frame = self._decoder.next_frame()
                if frame is None:
                    return None
                message = parse_frame(frame)
            except GarbledMessage as exc:
                log.warning(
                    "garbled FIX message dropped",
                    extra={"session": self._config.session_id, "error": str(exc)},
                )
                continue
            self._last_received = trio.current_time()
            return message

    async def _on_messages(self, messages: Sequence[Message]) -> None:
        """Check, sequence and process a batch (module docstring): consecutive application
        messages go to the application together; session messages in order between them."""
        run: list[Message] = []  # in-sequence application messages not handed over yet
        run_mark = 0  # the expected number once `run` is processed
        done: int | None = None  # the expected number once everything handled so far counts
        ended: str | None = None

        async def hand_over() -> None:
            nonlocal done
            if not run:
                return
            batch = run.copy()
            run.clear()
            due = self._mark_due()
            rejections = await self._application.on_application_messages(
                batch, InboundMark(self._epoch, run_mark) if due else None
            )
            done = run_mark
            if due:
                self._marked(run_mark)
            for rejection in rejections:
                log.warning(
                    "malformed application message rejected",
                    extra={
                        "session": self._config.session_id,
                        "seq": rejection.message.seq,
                        "error": rejection.text,
                    },
                )
                await self._send_reject(rejection.message, rejection.text, REJECT_VALUE_INCORRECT)

        try:
            for message in messages:
                problem = self._comp_id_problem(message)
                if problem is not None:
                    await hand_over()
                    await self._send_reject(message, problem, REJECT_COMP_ID_PROBLEM)
                    await self._fail(problem)
                if message.msg_type == MsgType.LOGON:
                    await hand_over()
                    await self._fail("Logon received on a session already logged on")
                verdict = self._sequencer.receive(message)
                if verdict.duplicate:
                    log.debug(
                        "duplicate ignored", extra={"session": self._config.session_id, "seq": message.seq}
                    )
                    continue
                if verdict.fatal is not None:
                    await hand_over()
                    await self._fail(verdict.fatal)
                if verdict.reject is not None:
                    await hand_over()
                    await self._send_reject(message, verdict.reject, REJECT_VALUE_INCORRECT)
                    continue
                if verdict.resend_from is not None:
                    await self._send_resend_request(verdict.resend_from)
                for ready, mark in zip(verdict.process, verdict.through, strict=True):
                    if ready.msg_type not in ADMIN_MSG_TYPES:
                        run.append(ready)
                        run_mark = mark
                        continue
                    await hand_over()
                    ended = await self._process(ready)
                    done = mark
                    if ended is not None:
                        break
                if ended is not None:
                    break
            await hand_over()
        except Exception:
            if done is not None:
                self._processed_in = done
                await self._persist_after_failure(done)
            raise
        if done is not None:
            self._processed_in = done
            if ended is not None or self._mark_due():
                await self._persist_through(done)
        self._notify()
        if ended is not None:
            raise ConnectionLost(ended)

    async def _process(self, message: Message) -> str | None:
        """Handle one in-sequence session message. Returns why the session ends after it (the
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
        return None

    async def _persist_next_in(self) -> None:
        """At logon: set the number exactly (it goes down when the counterparty reset)."""
        next_in = self._sequencer.next_in
        await self._store.set_next_in(self._epoch, next_in)
        self._processed_in = next_in
        self._marked(next_in, exact=True)

    async def _persist_through(self, next_in: int) -> None:
        if next_in > self._persisted_in:
            await self._store.record_executions([], InboundMark(self._epoch, next_in))
            self._marked(next_in)

    def _mark_due(self) -> bool:
        return trio.current_time() - self._persisted_at >= _MARK_INTERVAL_S

    def _marked(self, next_in: int, *, exact: bool = False) -> None:
        self._persisted_in = next_in if exact else max(self._persisted_in, next_in)
        self._persisted_at = trio.current_time()

    async def _persist_processed(self) -> None:
        """The session ends: commit the mark of what was processed (best effort, briefly)."""
        with trio.move_on_after(min(1.0, self._config.timeouts.store_s)):
            await self._persist_after_failure(self._processed_in)

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
        await self._wait_for_wire()
        try:
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
        finally:
            self._release_wire()

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

    async def _keep_mark(self) -> None:
        """Commit the inbound mark when it has not been for `_MARK_INTERVAL_S` (quiet spells)."""
        while True:
            await trio.sleep(_MARK_INTERVAL_S)
            if self._processed_in > self._persisted_in and self._mark_due():
                await self._persist_through(self._processed_in)

    # --- internals -----------------------------------------------------------------------

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
