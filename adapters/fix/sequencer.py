"""Inbound sequence numbers: which received messages to process, in what order, and when to ask
for a resend. Pure: the session driver feeds it every decoded message and acts on the verdict.

Rules (FIX 4.4 session layer, volume 2):

- MsgSeqNum == expected: process it; expected becomes MsgSeqNum + 1, or NewSeqNo for a
  SequenceReset-GapFill. Messages queued behind a gap that now line up are released in order.
- MsgSeqNum > expected: a gap. The message is queued, and a ResendRequest(expected, 0) is asked
  for unless one is already outstanding. Logon, ResendRequest and Logout are *also* processed at
  once (answering a ResendRequest while ours is outstanding is what keeps two sides with gaps
  from waiting on each other); they are not processed again when their turn comes.
- MsgSeqNum < expected: with PossDupFlag=Y a duplicate, ignored; without, fatal: the sequence
  numbers are out of step and the session must log out with the reason and disconnect.
- SequenceReset in Reset mode (GapFill absent or N) ignores MsgSeqNum: expected becomes NewSeqNo,
  which may not go backwards (then the message is rejected and nothing changes).

A resend that stops making progress (ignored, or part of its answer lost) is asked for again
through `reissue`, which the session calls when the expected number has not moved for a while.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adapters.fix.codec import Message
from adapters.fix.tags import MsgType, Tag

__all__ = ["InboundSequencer", "Verdict"]

_EARLY = frozenset({MsgType.LOGON, MsgType.RESEND_REQUEST, MsgType.LOGOUT})


@dataclass
class Verdict:
    """What to do after receiving one message."""

    process: list[Message] = field(default_factory=list)  # in order, each exactly once
    #: through[i]: the expected number once process[i] (and every message before it) has been
    #: handled: what may be persisted when processing stops after process[i].
    through: list[int] = field(default_factory=list)
    resend_from: int | None = None  # send ResendRequest(BeginSeqNo=resend_from, EndSeqNo=0)
    fatal: str | None = None  # log out with this text and disconnect
    reject: str | None = None  # send a session Reject of the message with this text
    duplicate: bool = False  # a PossDup message already processed: ignored


class InboundSequencer:
    """The next expected inbound MsgSeqNum and the messages waiting behind a gap."""

    def __init__(self, next_in: int) -> None:
        if next_in < 1:
            raise ValueError("next_in must be at least 1")
        self.next_in = next_in
        self._queue: dict[int, Message] = {}
        self._handled_early: set[int] = set()
        self._resend_until: int | None = None  # a resend is outstanding up to this MsgSeqNum

    def __repr__(self) -> str:
        gap = f" resend<= {self._resend_until}" if self._resend_until is not None else ""
        return f"<InboundSequencer next_in={self.next_in} queued={len(self._queue)}{gap}>"

    @property
    def in_sync(self) -> bool:
        """No gap: every message the counterparty sent so far has been processed."""
        return self._resend_until is None and not self._queue

    def reissue(self) -> int | None:
        """The BeginSeqNo of a ResendRequest to send again when the outstanding one stopped
        making progress (the counterparty ignored it, or part of its answer was lost), or None
        when nothing is outstanding."""
        if self.in_sync:
            return None
        self._resend_until = max([self.next_in, *self._queue])
        return self.next_in

    def receive(self, message: Message) -> Verdict:
        seq = message.seq
        if message.msg_type == MsgType.SEQUENCE_RESET and not message.flag(Tag.GAP_FILL_FLAG):
            return self._reset(message)
        if seq == self.next_in:
            self._advance(message)
            verdict = Verdict(process=[message], through=[self.next_in])
            self._drain(verdict)
            return verdict
        if seq > self.next_in:
            verdict = Verdict()
            self._queue[seq] = message
            if message.msg_type in _EARLY:
                self._handled_early.add(seq)
                verdict.process.append(message)
                verdict.through.append(self.next_in)  # the gap before it is still open
            if self._resend_until is None:
                verdict.resend_from = self.next_in
                self._resend_until = seq
            else:
                self._resend_until = max(self._resend_until, seq)
            return verdict
        if message.poss_dup:
            return Verdict(duplicate=True)
        return Verdict(fatal=f"MsgSeqNum too low, expecting {self.next_in} but received {seq}")

    def _reset(self, message: Message) -> Verdict:
        new_seq_no = message.integer(Tag.NEW_SEQ_NO)
        if new_seq_no is None or new_seq_no < self.next_in:
            return Verdict(reject=f"SequenceReset NewSeqNo {new_seq_no} is below the expected {self.next_in}")
        self.next_in = new_seq_no
        verdict = Verdict(process=[message], through=[new_seq_no])
        self._drain(verdict)
        return verdict

    def _advance(self, message: Message) -> None:
        if message.msg_type == MsgType.SEQUENCE_RESET:  # GapFill mode here
            new_seq_no = message.integer(Tag.NEW_SEQ_NO)
            self.next_in = max(message.seq + 1, new_seq_no or 0)
        else:
            self.next_in = message.seq + 1

    def _drain(self, verdict: Verdict) -> None:
        """Release queued messages that now line up; forget those a gap fill skipped."""
        while self._queue:
            for stale in [seq for seq in self._queue if seq < self.next_in]:
                del self._queue[stale]
                self._handled_early.discard(stale)
            message = self._queue.pop(self.next_in, None)
            if message is None:
                break
            early = message.seq in self._handled_early
            self._handled_early.discard(message.seq)
            self._advance(message)
            if not early:
                verdict.process.append(message)
                verdict.through.append(self.next_in)
            elif verdict.through:  # handled when it arrived: the last mark may pass it
                verdict.through[-1] = self.next_in
        if self._resend_until is not None and self.next_in > self._resend_until:
            self._resend_until = None
