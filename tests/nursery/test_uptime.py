"""nursery.uptime: exact figures from constructed histories, and a property check against a
minute-by-minute count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.enums import ConnectionStatus
from nursery.uptime import DAY, uptime_percent
from sql.records import StatusChange

CONNECTED = ConnectionStatus.CONNECTED
DISCONNECTED = ConnectionStatus.DISCONNECTED
DEGRADED = ConnectionStatus.DEGRADED
MAINTENANCE = ConnectionStatus.MAINTENANCE

NOW = datetime(2024, 3, 2, 12, 0, tzinfo=UTC)


def ago(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


def history(*changes: tuple[float, ConnectionStatus]) -> list[StatusChange]:
    """(hours before NOW, status) pairs."""
    return [StatusChange("brk", status, ago(hours)) for hours, status in changes]


# --- nothing known -----------------------------------------------------------------------------


def test_empty_history_without_start_is_zero() -> None:
    assert uptime_percent([], NOW) == 0.0


def test_empty_history_since_start_is_down() -> None:
    assert uptime_percent([], NOW, started=ago(6)) == 0.0  # never connected since it was added


# --- a change before the window ----------------------------------------------------------------


def test_connected_before_the_window_and_since_is_100() -> None:
    assert uptime_percent(history((30, CONNECTED)), NOW) == 100.0


def test_change_before_the_window_is_the_state_at_its_start() -> None:
    # DISCONNECTED from -30 h, so also from the window's start (-24 h) until -18 h: 18 of 24 h up
    assert uptime_percent(history((30, DISCONNECTED), (18, CONNECTED)), NOW) == 75.0


def test_only_the_last_change_before_the_window_matters() -> None:
    changes = history((40, DISCONNECTED), (30, CONNECTED), (25, DISCONNECTED), (12, CONNECTED))
    assert uptime_percent(changes, NOW) == 50.0


def test_change_exactly_at_the_window_start_counts_from_there() -> None:
    assert uptime_percent(history((24, CONNECTED), (6, DISCONNECTED)), NOW) == 75.0


def test_started_does_not_clip_when_history_reaches_before_the_window() -> None:
    # the daemon restarted 6 h ago, but the persisted history covers the whole window:
    # up -24..-12 and -6..now = 18 of 24 h
    changes = history((30, CONNECTED), (12, DISCONNECTED), (6, CONNECTED))
    assert uptime_percent(changes, NOW, started=ago(6)) == 75.0


# --- history inside the window only ------------------------------------------------------------


def test_without_start_the_first_change_begins_the_count() -> None:
    # known from -12 h: up -12..-6 and -3..now = 9 of 12 h
    changes = history((12, CONNECTED), (6, DISCONNECTED), (3, CONNECTED))
    assert uptime_percent(changes, NOW) == 75.0


def test_time_before_start_does_not_count_and_connecting_is_down() -> None:
    # added 12 h ago, connected 3 h later: 9 of 12 h
    assert uptime_percent(history((9, CONNECTED)), NOW, started=ago(12)) == 75.0


def test_broker_added_an_hour_ago_and_connected_since_is_100() -> None:
    assert uptime_percent(history((1, CONNECTED)), NOW, started=ago(1)) == 100.0


def test_start_before_the_window_is_clipped_to_it() -> None:
    # added 2 days ago, first change 6 h ago: the whole window counts, 6 of 24 h up
    assert uptime_percent(history((6, CONNECTED)), NOW, started=ago(48)) == 25.0


def test_history_before_start_moves_the_beginning_back() -> None:
    # started is the daemon's start (2 h ago); the broker's history goes back to -20 h:
    # up -20..-4 and -1..now = 17 of 20 h
    changes = history((20, CONNECTED), (4, DISCONNECTED), (1, CONNECTED))
    assert uptime_percent(changes, NOW, started=ago(2)) == 85.0


# --- what counts as up -------------------------------------------------------------------------


def test_degraded_counts_as_up_and_maintenance_does_not() -> None:
    changes = history((30, CONNECTED), (12, DEGRADED), (6, MAINTENANCE), (3, CONNECTED))
    # connected 12 h + degraded 6 h + maintenance 0 + connected 3 h = 21 of 24 h
    assert uptime_percent(changes, NOW) == 87.5


def test_maintenance_through_the_window_is_zero() -> None:
    assert uptime_percent(history((30, MAINTENANCE)), NOW) == 0.0


def test_degraded_through_the_window_is_100() -> None:
    assert uptime_percent(history((30, DEGRADED)), NOW) == 100.0


# --- the current (open-ended) status -----------------------------------------------------------


def test_current_status_holds_until_now() -> None:
    assert uptime_percent(history((30, DISCONNECTED), (6, CONNECTED)), NOW) == 25.0
    assert uptime_percent(history((30, CONNECTED), (6, DISCONNECTED)), NOW) == 75.0


def test_changes_after_now_are_ignored() -> None:
    changes = [*history((30, CONNECTED)), StatusChange("brk", DISCONNECTED, NOW + timedelta(hours=1))]
    assert uptime_percent(changes, NOW) == 100.0


def test_change_at_now_adds_no_time() -> None:
    assert uptime_percent(history((30, DISCONNECTED), (0, CONNECTED)), NOW) == 0.0


def test_broker_that_began_at_now_reports_its_current_status() -> None:
    assert uptime_percent(history((0, CONNECTED)), NOW) == 100.0
    assert uptime_percent([], NOW, started=NOW) == 0.0


# --- input handling ----------------------------------------------------------------------------


def test_unsorted_history_is_sorted_and_same_instant_keeps_the_later() -> None:
    changes = history((6, CONNECTED), (30, DISCONNECTED), (12, CONNECTED), (12, DISCONNECTED))
    # at -12 h: CONNECTED then DISCONNECTED (the later in the sequence wins): up -6..now only
    assert uptime_percent(changes, NOW) == 25.0


def test_other_window() -> None:
    changes = history((2, CONNECTED), (0.75, DISCONNECTED), (0.5, CONNECTED))
    assert uptime_percent(changes, NOW, window=timedelta(hours=1)) == 75.0
    assert uptime_percent(changes, NOW, window=timedelta(hours=2)) == 87.5


def test_fractions_are_exact_to_the_microsecond() -> None:
    assert uptime_percent(history((30, DISCONNECTED), (8, CONNECTED)), NOW) == 100 / 3
    one_us = [*history((30, DISCONNECTED)), StatusChange("brk", CONNECTED, NOW - timedelta(microseconds=1))]
    assert uptime_percent(one_us, NOW) == 100 / (DAY / timedelta(microseconds=1))


@pytest.mark.parametrize("window", [timedelta(0), timedelta(hours=-1)])
def test_window_must_be_positive(window: timedelta) -> None:
    with pytest.raises(ValueError, match="window must be positive"):
        uptime_percent([], NOW, window=window)


# --- property: equals a minute-by-minute count --------------------------------------------------

WINDOW_MINUTES = 120
statuses = st.sampled_from(list(ConnectionStatus))
changes_st = st.lists(st.tuples(st.integers(-200, 10), statuses), max_size=12)


def minute_count(changes: list[tuple[int, ConnectionStatus]], started: int | None) -> tuple[int, int] | None:
    """(up minutes, counted minutes) over the window [-WINDOW_MINUTES, 0), stepping minutes."""
    known = sorted((c for c in changes if c[0] <= 0), key=lambda c: c[0])  # stable, as the function
    if any(m <= -WINDOW_MINUTES for m, _ in known):
        begin = -WINDOW_MINUTES
    else:
        origins = [t for t in (started, known[0][0] if known else None) if t is not None]
        if not origins:
            return None
        begin = max(-WINDOW_MINUTES, min(origins))
    up = counted = 0
    for minute in range(begin, 0):
        status = DISCONNECTED
        for m, s in known:
            if m <= minute:
                status = s
        counted += 1
        up += status in (CONNECTED, DEGRADED)
    return up, counted


@given(changes_st, st.one_of(st.none(), st.integers(-300, 10)))
def test_matches_a_minute_by_minute_count(
    changes: list[tuple[int, ConnectionStatus]], started: int | None
) -> None:
    history_ = [StatusChange("brk", s, NOW + timedelta(minutes=m)) for m, s in changes]
    started_at = None if started is None else NOW + timedelta(minutes=started)
    result = uptime_percent(history_, NOW, window=timedelta(minutes=WINDOW_MINUTES), started=started_at)
    assert 0.0 <= result <= 100.0
    expected = minute_count(changes, started)
    if expected is None:
        assert result == 0.0
    elif expected[1] > 0:
        assert result == 100 * expected[0] / expected[1]
    else:  # the broker began at now: its current status
        current = [s for m, s in sorted(changes, key=lambda c: c[0]) if m <= 0]
        assert result == (100.0 if current and current[-1] in (CONNECTED, DEGRADED) else 0.0)
