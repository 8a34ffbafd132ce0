"""FIX framing: bytes on the wire <-> messages. Pure: no sockets, no clocks.

Encoding writes 8/9/35 first, then the header and body fields, and computes BodyLength (9) and
CheckSum (10): byte for byte what simplefix's `FixMessage.encode` writes, without its per-field
objects. Decoding is ours: `FrameDecoder` cuts frames by BodyLength and verifies it and the
CheckSum; `parse_frame` then splits the fields at SOH and `=` (simplefix's parser, which walks
the bytes one at a time in Python, is kept for the frames the split does not take: a raw data
field such as RawData (96) may contain SOH, and anything malformed gets simplefix's verdict):

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
_CANONICAL_TIME = re.compile(r"[0-9]{8}-[0-9]{2}:[0-9]{2}:[0-9]{2}")

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


#: Length tags of simplefix's raw data fields (whose values may hold SOH): such frames are parsed
#: by simplefix.
_RAW_LENGTH_TAGS = frozenset(length for length, _ in simplefix.data.RAW_DATA)
#: Tags `encode_message` writes itself.
_FRAMING_TAGS = frozenset({8, 9, 35, 10})


class Message:
    """One decoded FIX message, read-only, with typed accessors."""

    __slots__ = ("_pairs", "_values", "msg_type", "raw", "seq")

    def __init__(self, pairs: list[tuple[int, bytes]], raw: bytes) -> None:
        self._pairs = pairs
        self._values = dict(reversed(pairs))  # the first occurrence of a repeated tag wins
        self.raw = raw
        self.msg_type = self.text(Tag.MSG_TYPE) or ""
        seq = self.integer(Tag.MSG_SEQ_NUM)
        self.seq = 0 if seq is None else seq

    def __repr__(self) -> str:
        return f"<Message 35={self.msg_type} 34={self.seq}>"

    def text(self, tag: int) -> str | None:
        value = self._values.get(tag)
        return None if value is None else value.decode("utf-8", errors="replace")

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
        return [(tag, value.decode("utf-8", errors="replace")) for tag, value in self._pairs]


def parse_frame(frame: bytes) -> Message:
    """Decode one validated frame (see FrameDecoder). Raises GarbledMessage if its fields do
    not parse or it is not FIX.4.4 with a MsgType and a MsgSeqNum."""
    try:
        pairs = _split_fields(frame)
        if pairs is None:
            parser = simplefix.FixParser()
            parser.append_buffer(frame)
            fix = parser.get_message()
            pairs = None if fix is None else [(int(tag), bytes(value)) for tag, value in fix.pairs]
        message = None if pairs is None else Message(pairs, frame)
        if message is not None and message.text(Tag.BEGIN_STRING) != BEGIN_STRING:
            raise GarbledMessage(f"BeginString {message.text(Tag.BEGIN_STRING)!r}, expected {BEGIN_STRING}")
        if message is None or not message.msg_type or message.seq < 1:
            raise GarbledMessage("MsgType (35) or MsgSeqNum (34) missing")
    except (simplefix.errors.ParsingError, ValueError) as exc:
        raise GarbledMessage(f"unparseable fields: {exc}") from exc
    return message


def _split_fields(frame: bytes) -> list[tuple[int, bytes]] | None:
    """The frame's (tag, value) pairs split at SOH and `=`, or None when simplefix must parse it:
    a raw data length tag, a field without `=`, a tag that is not a number, an empty value."""
    pairs: list[tuple[int, bytes]] = []
    for item in frame[:-1].split(SOH):
        tag, equals, value = item.partition(b"=")
        if not equals or not value or not tag.isdigit():
            return None
        number = int(tag)
        if number in _RAW_LENGTH_TAGS:
            return None
        pairs.append((number, value))
    return pairs


def encode_message(msg_type: str, header: Iterable[Field], body: Iterable[Field]) -> bytes:
    """The wire bytes of one message: 8, 9 and 35 first, then `header`, then `body`, then the
    CheckSum. Values must already be strings in FIX format; BeginString, BodyLength, MsgType and
    CheckSum are ours to write (ValueError if given among the fields)."""
    fields = [*header, *body]
    if any(tag in _FRAMING_TAGS for tag, _ in fields):
        raise ValueError("8, 9, 35 and 10 are written by encode_message, not given as fields")
    content = "".join([f"35={msg_type}\x01"] + [f"{int(tag)}={value}\x01" for tag, value in fields]).encode()
    data = b"8=" + BEGIN_STRING.encode() + b"\x019=" + str(len(content)).encode() + b"\x01" + content
    return data + b"10=" + f"{sum(data) % 256:03d}".encode() + b"\x01"


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
        if _CANONICAL_TIME.fullmatch(date_time):  # what strptime reads, without its cost
            d = date_time
            at = datetime(
                int(d[0:4]), int(d[4:6]), int(d[6:8]), int(d[9:11]), int(d[12:14]), int(d[15:17]), tzinfo=UTC
            )
        else:
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
