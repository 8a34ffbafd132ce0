"""FIX framing: bytes on the wire <-> messages. Pure: no sockets, no clocks.

Encoding uses simplefix, which places 8/9/35 first and computes BodyLength (9) and CheckSum (10).
Decoding is ours: simplefix's parser splits tag=value pairs but checks neither BodyLength nor
CheckSum, so `FrameDecoder` cuts frames by BodyLength and verifies both before simplefix sees
the bytes:

- a frame whose CheckSum is wrong, whose BodyLength does not land on `10=nnn<SOH>`, or whose
  fields do not parse is *garbled*: it is consumed and reported as `GarbledMessage`, and the
  session ignores it (FIX: a garbled message is dropped without touching sequence numbers; the
  next good message then shows the gap and a ResendRequest recovers it);
- bytes before `8=FIX` are skipped; a BodyLength above `max_body` is garbled too, so a corrupt
  length never makes the decoder buffer without bound.

`Message` is a typed, read-only view over one decoded message (simplefix values are bytes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import simplefix

from adapters.fix.tags import BEGIN_STRING, Tag

__all__ = [
    "FrameDecoder",
    "GarbledMessage",
    "Message",
    "checksum",
    "encode_message",
    "format_decimal",
    "format_timestamp",
    "parse_frame",
    "parse_timestamp",
    "session_header",
]

SOH = b"\x01"
_BEGIN = b"8=FIX"
_LENGTH = re.compile(rb"8=[^\x01]{1,16}\x019=(\d{1,9})\x01")
_TRAILER = re.compile(rb"10=(\d{3})\x01")
_TRAILER_SIZE = 7  # b"10=nnn\x01"

Field = tuple[int, str]


class GarbledMessage(Exception):
    """A frame that failed validation (it has been consumed; the session ignores it)."""


def checksum(data: bytes | bytearray) -> int:
    """The FIX CheckSum of `data`: the sum of its bytes modulo 256."""
    return sum(data) % 256


class FrameDecoder:
    """Accumulates bytes from a stream and returns complete, validated frames in order."""

    def __init__(self, *, max_body: int = 1 << 20) -> None:
        self._buffer = bytearray()
        self._max_body = max_body

    def __repr__(self) -> str:
        return f"<FrameDecoder buffered={len(self._buffer)}>"

    def feed(self, data: bytes | bytearray) -> None:
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next complete frame (from `8=` to the trailer's SOH), or None until more bytes
        arrive. Raises GarbledMessage for a bad frame, after consuming it."""
        start = self._buffer.find(_BEGIN)
        if start < 0:
            # keep a tail that may be the start of a split "8=FIX"
            del self._buffer[: max(0, len(self._buffer) - len(_BEGIN) + 1)]
            return None
        if start:
            del self._buffer[:start]
        match = _LENGTH.match(self._buffer)
        if match is None:
            if self._buffer.count(SOH) >= 2:  # both leading fields are complete, and wrong
                self._skip_frame()
                raise GarbledMessage("BodyLength (9) missing or not the second field")
            return None  # the header is not complete yet
        body_length = int(match.group(1))
        if body_length > self._max_body:
            self._skip_frame()
            raise GarbledMessage(f"BodyLength {body_length} exceeds the {self._max_body} byte limit")
        body_end = match.end() + body_length
        frame_end = body_end + _TRAILER_SIZE
        if len(self._buffer) < frame_end:
            return None
        trailer = _TRAILER.fullmatch(self._buffer, body_end, frame_end)
        if trailer is None:
            self._skip_frame()
            raise GarbledMessage(f"BodyLength {body_length} does not end at the CheckSum field")
        received = int(trailer.group(1))  # before the buffer changes: the match reads it lazily
        expected = checksum(self._buffer[:body_end])
        frame = bytes(self._buffer[:frame_end])
        del self._buffer[:frame_end]
        if received != expected:
            raise GarbledMessage(f"CheckSum {received:03d} but the bytes sum to {expected:03d}")
        return frame

    def _skip_frame(self) -> None:
        """Drop the bad frame's start, so that the search resumes at the next `8=FIX`."""
        del self._buffer[: len(_BEGIN)]


class Message:
    """One decoded FIX message, read-only, with typed accessors."""

    __slots__ = ("_fix", "msg_type", "raw", "seq")

    def __init__(self, fix: Any, raw: bytes) -> None:
        self._fix = fix
        self.raw = raw
        self.msg_type = self.text(Tag.MSG_TYPE) or ""
        seq = self.integer(Tag.MSG_SEQ_NUM)
        self.seq = 0 if seq is None else seq

    def __repr__(self) -> str:
        return f"<Message 35={self.msg_type} 34={self.seq}>"

    def text(self, tag: int) -> str | None:
        value = self._fix.get(tag)
        return None if value is None else bytes(value).decode("utf-8", errors="replace")

    def require(self, tag: int) -> str:
        value = self.text(tag)
        if value is None:
            raise ValueError(f"35={self.msg_type}: required tag {tag} is missing")
        return value

    def integer(self, tag: int) -> int | None:
        value = self.text(tag)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"35={self.msg_type}: tag {tag} is not an integer: {value!r}") from None

    def decimal(self, tag: int) -> Decimal | None:
        value = self.text(tag)
        if value is None:
            return None
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"35={self.msg_type}: tag {tag} is not a number: {value!r}") from None
        if not number.is_finite():
            raise ValueError(f"35={self.msg_type}: tag {tag} is not a finite number: {value!r}")
        return number

    def flag(self, tag: int) -> bool:
        return self.text(tag) == "Y"

    def timestamp(self, tag: int) -> datetime | None:
        value = self.text(tag)
        return None if value is None else parse_timestamp(value)

    @property
    def poss_dup(self) -> bool:
        return self.flag(Tag.POSS_DUP_FLAG)

    def fields(self) -> list[Field]:
        """Every tag=value pair, in wire order."""
        return [(int(tag), bytes(value).decode("utf-8", errors="replace")) for tag, value in self._fix.pairs]


def parse_frame(frame: bytes) -> Message:
    """Decode one validated frame (see FrameDecoder). Raises GarbledMessage if its fields do
    not parse or it is not FIX.4.4 with a MsgType and a MsgSeqNum."""
    parser = simplefix.FixParser()
    parser.append_buffer(frame)
    try:
        fix = parser.get_message()
        message = None if fix is None else Message(fix, frame)
        if message is not None and message.text(Tag.BEGIN_STRING) != BEGIN_STRING:
            raise GarbledMessage(f"BeginString {message.text(Tag.BEGIN_STRING)!r}, expected {BEGIN_STRING}")
        if message is None or not message.msg_type or message.seq < 1:
            raise GarbledMessage("MsgType (35) or MsgSeqNum (34) missing")
    except (simplefix.errors.ParsingError, ValueError) as exc:
        raise GarbledMessage(f"unparseable fields: {exc}") from exc
    return message


def encode_message(msg_type: str, header: Iterable[Field], body: Iterable[Field]) -> bytes:
    """The wire bytes of one message: 8, 9 and 35 first, then `header`, then `body`, then the
    CheckSum. Values must already be strings in FIX format."""
    fix = simplefix.FixMessage()
    fix.append_pair(Tag.BEGIN_STRING, BEGIN_STRING, header=True)
    fix.append_pair(Tag.MSG_TYPE, msg_type, header=True)
    for tag, value in header:
        fix.append_pair(tag, value, header=True)
    for tag, value in body:
        fix.append_pair(tag, value)
    raw: bytes = fix.encode()
    return raw


def session_header(
    sender: str, target: str, seq: int, sending_time: str, *, orig_sending_time: str | None = None
) -> list[Field]:
    """The standard header after 8/9/35. With `orig_sending_time` it is a resend:
    PossDupFlag=Y (43) and OrigSendingTime (122)."""
    header: list[Field] = [
        (Tag.SENDER_COMP_ID, sender),
        (Tag.TARGET_COMP_ID, target),
        (Tag.MSG_SEQ_NUM, str(seq)),
    ]
    if orig_sending_time is not None:
        header.append((Tag.POSS_DUP_FLAG, "Y"))
    header.append((Tag.SENDING_TIME, sending_time))
    if orig_sending_time is not None:
        header.append((Tag.ORIG_SENDING_TIME, orig_sending_time))
    return header


def format_timestamp(at: datetime) -> str:
    """UTCTimestamp with milliseconds: YYYYMMDD-HH:MM:SS.sss."""
    at = at.astimezone(UTC)
    return f"{at:%Y%m%d-%H:%M:%S}.{at.microsecond // 1000:03d}"


def parse_timestamp(value: str) -> datetime:
    """A UTCTimestamp (seconds, milliseconds, micro- or nanoseconds) as an aware datetime."""
    date_time, _, fraction = value.partition(".")
    try:
        at = datetime.strptime(date_time, "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"not a UTCTimestamp: {value!r}") from None
    if fraction:
        if not fraction.isdigit():
            raise ValueError(f"not a UTCTimestamp: {value!r}")
        at = at.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    return at


def format_decimal(value: Decimal) -> str:
    """A FIX Qty/Price: plain notation, never an exponent (Decimal("1E+2") -> "100")."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
