"""FIX framing: BodyLength and CheckSum on the way out, validated frames on the way in."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import simplefix

from adapters.fix.codec import (
    FrameDecoder,
    GarbledMessage,
    checksum,
    encode_message,
    format_decimal,
    format_timestamp,
    parse_frame,
    parse_timestamp,
)
from adapters.fix.tags import Tag

HEADER = [(49, "BIS"), (56, "BROKER"), (34, "7"), (52, "20240603-14:30:00.000")]


def heartbeat(seq: int = 7) -> bytes:
    return encode_message(
        "0", [(49, "BIS"), (56, "BROKER"), (34, str(seq)), (52, "20240603-14:30:00.000")], []
    )


def test_encoding_computes_body_length_and_checksum() -> None:
    raw = encode_message("D", HEADER, [(11, "ord-1"), (38, "100")])
    body = b"35=D\x0149=BIS\x0156=BROKER\x0134=7\x0152=20240603-14:30:00.000\x0111=ord-1\x0138=100\x01"
    head = b"8=FIX.4.4\x019=" + str(len(body)).encode() + b"\x01"
    total = sum(head + body) % 256
    assert raw == head + body + f"10={total:03d}\x01".encode()


def test_checksum_is_the_byte_sum_modulo_256() -> None:
    assert checksum(b"") == 0
    assert checksum(b"\xff\x02") == 1
    assert checksum(bytearray(b"8=FIX.4.4\x01")) == sum(b"8=FIX.4.4\x01") % 256


def test_frames_split_across_reads_and_glued_together() -> None:
    stream = heartbeat(1) + heartbeat(2) + heartbeat(3)
    decoder = FrameDecoder()
    frames: list[bytes] = []
    for i in range(len(stream)):  # one byte at a time
        decoder.feed(stream[i : i + 1])
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    assert [parse_frame(f).seq for f in frames] == [1, 2, 3]
    assert b"".join(frames) == stream


def test_bad_checksum_is_garbled_and_the_next_frame_still_decodes() -> None:
    good = heartbeat(8)
    bad = heartbeat(7)[:-4] + b"000\x01"
    decoder = FrameDecoder()
    decoder.feed(bad + good)
    with pytest.raises(GarbledMessage, match="CheckSum"):
        decoder.next_frame()
    frame = decoder.next_frame()
    assert frame == good and parse_frame(frame).seq == 8


def test_wrong_body_length_is_garbled_and_resynchronises() -> None:
    raw = heartbeat(7)
    length_end = raw.index(b"\x01", raw.index(b"9=")) + 1
    length = int(raw[raw.index(b"9=") + 2 : length_end - 1])
    short = raw.replace(f"9={length}".encode(), f"9={length - 3}".encode(), 1)
    decoder = FrameDecoder()
    decoder.feed(short + heartbeat(8))
    with pytest.raises(GarbledMessage, match="BodyLength"):
        decoder.next_frame()
    frame = decoder.next_frame()
    assert frame is not None and parse_frame(frame).seq == 8


def test_junk_before_begin_string_is_skipped_and_oversized_bodies_refused() -> None:
    decoder = FrameDecoder(max_body=64)
    decoder.feed(b"\x00garbage" + heartbeat(3))
    frame = decoder.next_frame()
    assert frame is not None and parse_frame(frame).seq == 3
    decoder.feed(b"8=FIX.4.4\x019=100000\x0135=0\x01")
    with pytest.raises(GarbledMessage, match="exceeds"):
        decoder.next_frame()


def test_incomplete_frame_waits_for_more_bytes() -> None:
    raw = heartbeat(4)
    decoder = FrameDecoder()
    decoder.feed(raw[:-1])
    assert decoder.next_frame() is None
    decoder.feed(raw[-1:])
    assert decoder.next_frame() == raw


def test_parse_frame_refuses_other_versions_and_missing_numbers() -> None:
    other = heartbeat(5).replace(b"FIX.4.4", b"FIX.4.2")
    with pytest.raises(GarbledMessage, match="BeginString"):
        parse_frame(other)
    no_seq = encode_message("0", [(49, "A"), (56, "B")], [])
    with pytest.raises(GarbledMessage, match="MsgSeqNum"):
        parse_frame(no_seq)


def test_message_accessors() -> None:
    message = parse_frame(
        encode_message("8", HEADER, [(Tag.LAST_QTY, "12.5"), (Tag.POSS_DUP_FLAG, "Y"), (Tag.TEXT, "ok")])
    )
    assert message.msg_type == "8" and message.seq == 7
    assert message.decimal(Tag.LAST_QTY) == Decimal("12.5")
    assert message.poss_dup
    assert message.text(Tag.TEXT) == "ok" and message.text(Tag.LAST_PX) is None
    assert message.timestamp(Tag.SENDING_TIME) == datetime(2024, 6, 3, 14, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="required tag 31"):
        message.require(Tag.LAST_PX)
    bad = parse_frame(encode_message("8", HEADER, [(Tag.LAST_QTY, "NaN")]))
    with pytest.raises(ValueError, match="finite"):
        bad.decimal(Tag.LAST_QTY)


def test_timestamps_and_decimals_in_fix_format() -> None:
    at = datetime(2024, 6, 3, 14, 30, 5, 123456, tzinfo=UTC)
    assert format_timestamp(at) == "20240603-14:30:05.123"
    assert parse_timestamp("20240603-14:30:05.123") == at.replace(microsecond=123000)
    assert parse_timestamp("20240603-14:30:05.123456789") == at
    assert parse_timestamp("20240603-14:30:05") == at.replace(microsecond=0)
    with pytest.raises(ValueError):
        parse_timestamp("2024-06-03T14:30:05")
    assert format_decimal(Decimal("1E+2")) == "100"
    assert format_decimal(Decimal("1.2500")) == "1.25"
    assert format_decimal(Decimal("0.00000001")) == "0.00000001"
    assert format_decimal(Decimal("0.000")) == "0"


# --- the fast paths give simplefix's answers -----------------------------------------------------


def _simplefix_encoding(msg_type: str, header: list[tuple[int, str]], body: list[tuple[int, str]]) -> bytes:
    message = simplefix.FixMessage()
    message.append_pair(8, "FIX.4.4", header=True)
    message.append_pair(35, msg_type, header=True)
    for tag, value in header:
        message.append_pair(tag, value, header=True)
    for tag, value in body:
        message.append_pair(tag, value)
    return bytes(message.encode())


def _simplefix_fields(frame: bytes) -> list[tuple[int, str]]:
    parser = simplefix.FixParser()
    parser.append_buffer(frame)
    message = parser.get_message()
    return [(int(tag), bytes(value).decode()) for tag, value in message.pairs]


def test_encoding_and_parsing_match_simplefix_byte_for_byte() -> None:
    rng = random.Random(7)
    values = ["x", "é ü ß", "12.5", "a=b", "0", "ORDER-0001", "20240603-14:30:00.123"]
    tags = [11, 55, 38, 44, 58, 1, 60]
    for seq in range(1, 300):
        header = [(49, "BIS"), (56, "BROKER"), (34, str(seq)), (52, "20240603-14:30:00.000")]
        body = [(rng.choice(tags), rng.choice(values)) for _ in range(rng.randint(0, 9))]
        msg_type = rng.choice(["D", "8", "0", "F"])
        raw = encode_message(msg_type, header, body)
        assert raw == _simplefix_encoding(msg_type, header, body)
        assert parse_frame(raw).fields() == _simplefix_fields(raw)
    for framing in (8, 9, 10, 35):
        with pytest.raises(ValueError, match="written by encode_message"):
            encode_message("D", HEADER, [(framing, "x")])


def test_a_raw_data_field_holding_soh_is_parsed_by_simplefix() -> None:
    raw = encode_message("8", HEADER, [(95, "5"), (96, "a\x01b=c"), (58, "after")])
    message = parse_frame(raw)
    assert message.text(96) == "a\x01b=c" and message.text(58) == "after"


def test_timestamps_outside_the_canonical_form_still_follow_strptime() -> None:
    assert parse_timestamp("20240603-14:30:05") == datetime(2024, 6, 3, 14, 30, 5, tzinfo=UTC)
    for bad in ("20241303-14:30:05", "20240603-24:00:00", "20240603 14:30:05", "2024060-14:30:05"):
        with pytest.raises(ValueError):
            parse_timestamp(bad)
