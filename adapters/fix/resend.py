"""How we answer the counterparty's ResendRequest: which of our messages are sent again and
which are skipped with a SequenceReset-GapFill. Pure: `plan_resend` decides, `encode_answer`
frames each step, the session writes them.

Policy, message by message in the requested range:

- Session (admin) messages: Heartbeat, TestRequest, ResendRequest, Reject, SequenceReset, Logon,
  Logout are never resent: they are gap-filled (FIX requires it; a stale heartbeat or logon means
  nothing). They are not even stored, so any number without a stored message is gap-filled.
- NewOrderSingle (D): **gap-filled, never resent.** Resending would place an order the caller may
  have given up on long ago: `submit` already told it OutcomeUnknown when the answer did not
  come, and the daemon reconciles that order itself with `query` (OrderStatusRequest) by
  ClOrdID, then adopts it, cancels it, or fails over. A blind PossDup resend could instead create
  the order after the daemon routed it elsewhere (PITFALLS: submission is not idempotent).
- OrderCancelRequest (F) and OrderStatusRequest (H) younger than `max_age`: resent with
  PossDupFlag=Y and OrigSendingTime (122) = their first SendingTime. Both are safe to repeat: a
  cancel keeps its ClOrdID (the broker recognises the duplicate, and cancelling twice cannot do
  harm the first did not), a status request only asks. Older ones are gap-filled: whoever waited
  for their answer is gone, and the daemon asks again if it still cares.
- Anything else stored (no other application message is sent today): gap-filled.

Consecutive skipped numbers become one SequenceReset-GapFill (MsgSeqNum = the first, NewSeqNo =
the next number not skipped). EndSeqNo 0, or past our last message, means "up to the last".
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import msgspec

from adapters.fix.codec import encode_message, parse_frame, session_header
from adapters.fix.tags import HEADER_TAGS, MsgType, Tag

__all__ = ["RESENDABLE", "GapFill", "Resend", "StoredMessage", "encode_answer", "plan_resend"]

#: Application messages that may be resent with PossDupFlag=Y (younger than the max age).
RESENDABLE = frozenset({MsgType.ORDER_CANCEL_REQUEST, MsgType.ORDER_STATUS_REQUEST})


class StoredMessage(msgspec.Struct, frozen=True):
    """One application message as we first sent it (fix_outbound_messages)."""

    seq: int
    msg_type: str
    raw: bytes
    sent_at: datetime
    client_order_id: str | None = None


class GapFill(msgspec.Struct, frozen=True):
    """SequenceReset-GapFill sent as MsgSeqNum `seq`, telling the next number is `new_seq_no`."""

    seq: int
    new_seq_no: int


class Resend(msgspec.Struct, frozen=True):
    message: StoredMessage


def plan_resend(
    begin: int,
    end: int,
    next_out: int,
    stored: Mapping[int, StoredMessage],
    *,
    now: datetime,
    max_age: timedelta,
) -> list[GapFill | Resend]:
    """The answer to ResendRequest(BeginSeqNo=begin, EndSeqNo=end), given that our next outgoing
    number is `next_out` and `stored` holds our application messages by MsgSeqNum. Empty when
    nothing in the range was sent (a request beyond what we sent is not answered)."""
    last = next_out - 1 if end == 0 or end >= next_out else end
    begin = max(begin, 1)
    plan: list[GapFill | Resend] = []
    gap_start: int | None = None
    for seq in range(begin, last + 1):
        message = stored.get(seq)
        if message is not None and _resendable(message, now, max_age):
            if gap_start is not None:
                plan.append(GapFill(seq=gap_start, new_seq_no=seq))
                gap_start = None
            plan.append(Resend(message))
        elif gap_start is None:
            gap_start = seq
    if gap_start is not None:
        plan.append(GapFill(seq=gap_start, new_seq_no=last + 1))
    return plan


def encode_answer(item: GapFill | Resend, *, sender: str, target: str, sending_time: str) -> bytes:
    """The wire bytes of one step of the answer: a SequenceReset-GapFill, or the stored message
    again under its old MsgSeqNum with PossDupFlag=Y, OrigSendingTime = its first SendingTime,
    a new SendingTime, and its body unchanged."""
    if isinstance(item, GapFill):
        header = session_header(sender, target, item.seq, sending_time, orig_sending_time=sending_time)
        body: list[tuple[int, str]] = [(Tag.GAP_FILL_FLAG, "Y"), (Tag.NEW_SEQ_NO, str(item.new_seq_no))]
        return encode_message(MsgType.SEQUENCE_RESET, header, body)
    original = parse_frame(item.message.raw)
    first_sent = original.text(Tag.SENDING_TIME) or sending_time
    header = session_header(sender, target, item.message.seq, sending_time, orig_sending_time=first_sent)
    body = [(tag, value) for tag, value in original.fields() if tag not in HEADER_TAGS]
    return encode_message(original.msg_type, header, body)


def _resendable(message: StoredMessage, now: datetime, max_age: timedelta) -> bool:
    return message.msg_type in RESENDABLE and now - message.sent_at <= max_age
