"""Inbound sequence numbers, as a pure state machine: in order, gaps, duplicates, resets."""

from __future__ import annotations

from adapters.fix.codec import Message, encode_message, parse_frame
from adapters.fix.sequencer import InboundSequencer


def message(seq: int, msg_type: str = "8", *fields: tuple[int, str], poss_dup: bool = False) -> Message:
    header = [(49, "BROKER"), (56, "BIS"), (34, str(seq))]
    if poss_dup:
        header.append((43, "Y"))
    header.append((52, "20240603-14:30:00.000"))
    return parse_frame(encode_message(msg_type, header, list(fields)))


def gap_fill(seq: int, new_seq_no: int, *, poss_dup: bool = True) -> Message:
    return message(seq, "4", (123, "Y"), (36, str(new_seq_no)), poss_dup=poss_dup)


def seqs(messages: list[Message]) -> list[int]:
    return [m.seq for m in messages]


def test_in_order_messages_are_processed_one_by_one() -> None:
    sequencer = InboundSequencer(5)
    for seq in (5, 6, 7):
        verdict = sequencer.receive(message(seq))
        assert seqs(verdict.process) == [seq] and verdict.resend_from is None
    assert sequencer.next_in == 8 and sequencer.in_sync


def test_a_gap_asks_once_queues_and_releases_in_order() -> None:
    sequencer = InboundSequencer(5)
    first = sequencer.receive(message(8))
    assert first.process == [] and first.resend_from == 5
    assert sequencer.receive(message(9)).resend_from is None  # already asked
    assert not sequencer.in_sync
    assert seqs(sequencer.receive(message(5, poss_dup=True)).process) == [5]
    assert seqs(sequencer.receive(gap_fill(6, 8)).process) == [6, 8, 9]
    assert sequencer.next_in == 10 and sequencer.in_sync


def test_gap_fill_beyond_queued_messages_drops_them() -> None:
    sequencer = InboundSequencer(1)
    sequencer.receive(message(3))
    verdict = sequencer.receive(gap_fill(1, 4))
    assert seqs(verdict.process) == [1]  # the gap fill itself; 3 was skipped by it
    assert sequencer.next_in == 4 and sequencer.in_sync


def test_too_low_is_fatal_unless_poss_dup() -> None:
    sequencer = InboundSequencer(10)
    duplicate = sequencer.receive(message(4, poss_dup=True))
    assert duplicate.duplicate and duplicate.process == [] and duplicate.fatal is None
    verdict = sequencer.receive(message(4))
    assert verdict.fatal == "MsgSeqNum too low, expecting 10 but received 4"
    assert sequencer.next_in == 10


def test_logon_resend_request_and_logout_above_the_gap_are_handled_at_once_but_once() -> None:
    sequencer = InboundSequencer(3)
    logon = sequencer.receive(message(6, "A", (98, "0"), (108, "30")))
    assert seqs(logon.process) == [6] and logon.resend_from == 3
    resend_request = sequencer.receive(message(7, "2", (7, "1"), (16, "0")))
    assert seqs(resend_request.process) == [7] and resend_request.resend_from is None
    filled = sequencer.receive(gap_fill(3, 6))
    assert seqs(filled.process) == [3]  # 6 and 7 were processed already
    assert sequencer.next_in == 8 and sequencer.in_sync


def test_sequence_reset_mode_ignores_the_number_and_cannot_go_back() -> None:
    sequencer = InboundSequencer(10)
    verdict = sequencer.receive(message(2, "4", (36, "50")))
    assert seqs(verdict.process) == [2] and sequencer.next_in == 50
    back = sequencer.receive(message(3, "4", (36, "20")))
    assert back.reject is not None and sequencer.next_in == 50


def test_sequence_reset_releases_queued_messages() -> None:
    sequencer = InboundSequencer(1)
    sequencer.receive(message(5))
    verdict = sequencer.receive(message(2, "4", (36, "5")))
    assert seqs(verdict.process) == [2, 5] and sequencer.next_in == 6 and sequencer.in_sync


def test_messages_during_a_resend_wait_for_it() -> None:
    sequencer = InboundSequencer(1)
    assert sequencer.receive(message(3)).resend_from == 1
    assert sequencer.receive(message(6)).resend_from is None  # covered: EndSeqNo 0 is "all"
    verdict = sequencer.receive(gap_fill(1, 3))
    assert seqs(verdict.process) == [1, 3] and sequencer.next_in == 4 and not sequencer.in_sync
    later = sequencer.receive(gap_fill(4, 6))
    assert seqs(later.process) == [4, 6] and sequencer.in_sync


def test_a_stalled_resend_is_reissued_from_the_expected_number() -> None:
    sequencer = InboundSequencer(1)
    assert sequencer.reissue() is None
    sequencer.receive(message(4))
    sequencer.receive(gap_fill(1, 2))  # part of the answer; 2 and 3 never come
    assert sequencer.reissue() == 2
    assert seqs(sequencer.receive(message(2, poss_dup=True)).process) == [2]
    assert seqs(sequencer.receive(message(3, poss_dup=True)).process) == [3, 4]
    assert sequencer.in_sync and sequencer.reissue() is None
