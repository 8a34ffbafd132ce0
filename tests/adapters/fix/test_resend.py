"""The resend policy: what is sent again, what is gap-filled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.fix.resend import GapFill, Resend, StoredMessage, plan_resend

NOW = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)
MAX_AGE = timedelta(seconds=60)


def stored(seq: int, msg_type: str, age_s: float = 1.0) -> StoredMessage:
    return StoredMessage(seq=seq, msg_type=msg_type, raw=b"", sent_at=NOW - timedelta(seconds=age_s))


def test_session_messages_become_one_gap_fill() -> None:
    assert plan_resend(1, 0, 11, {}, now=NOW, max_age=MAX_AGE) == [GapFill(seq=1, new_seq_no=11)]


def test_new_orders_are_gap_filled_recent_cancels_and_status_requests_resent() -> None:
    messages = {3: stored(3, "D"), 4: stored(4, "F"), 6: stored(6, "H"), 7: stored(7, "D")}
    plan = plan_resend(2, 0, 9, messages, now=NOW, max_age=MAX_AGE)
    assert plan == [
        GapFill(seq=2, new_seq_no=4),
        Resend(messages[4]),
        GapFill(seq=5, new_seq_no=6),
        Resend(messages[6]),
        GapFill(seq=7, new_seq_no=9),
    ]


def test_stale_cancels_are_gap_filled() -> None:
    messages = {2: stored(2, "F", age_s=61), 3: stored(3, "F", age_s=59)}
    plan = plan_resend(2, 3, 10, messages, now=NOW, max_age=MAX_AGE)
    assert plan == [GapFill(seq=2, new_seq_no=3), Resend(messages[3])]


def test_end_beyond_what_we_sent_and_requests_for_the_future() -> None:
    assert plan_resend(4, 100, 6, {}, now=NOW, max_age=MAX_AGE) == [GapFill(seq=4, new_seq_no=6)]
    assert plan_resend(6, 0, 6, {}, now=NOW, max_age=MAX_AGE) == []
    assert plan_resend(2, 3, 6, {}, now=NOW, max_age=MAX_AGE) == [GapFill(seq=2, new_seq_no=4)]
