"""nursery.breaker: every transition of the circuit breaker, driven by a hand-moved clock."""

from __future__ import annotations

import pytest

from nursery.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock, **settings: float) -> CircuitBreaker:
    return CircuitBreaker(clock=clock, **settings)  # type: ignore[arg-type]


def opened(clock: Clock, **settings: float) -> CircuitBreaker:
    subject = breaker(clock, **settings)
    for _ in range(subject.failure_threshold):
        subject.record_failure()
    assert subject.state is BreakerState.OPEN
    return subject


# --- CLOSED -------------------------------------------------------------------------------


def test_starts_closed_and_allows_everything(clock: Clock) -> None:
    subject = breaker(clock)
    assert subject.state is BreakerState.CLOSED
    assert subject.opened_at is None
    assert all(subject.allow() for _ in range(100))
    assert subject.would_allow()


def test_opens_on_the_threshold_th_consecutive_failure(clock: Clock) -> None:
    subject = breaker(clock, failure_threshold=3, min_calls=100)
    subject.record_failure()
    subject.record_failure()
    assert subject.state is BreakerState.CLOSED
    clock.advance(1.0)
    subject.record_failure()
    assert subject.state is BreakerState.OPEN
    assert subject.opened_at == 1001.0
    assert not subject.allow()


def test_a_success_breaks_the_run_of_failures(clock: Clock) -> None:
    subject = breaker(clock, failure_threshold=3, min_calls=100)
    for _ in range(10):
        subject.record_failure()
        subject.record_failure()
        subject.record_success()
    assert subject.state is BreakerState.CLOSED
    assert subject.consecutive_failures == 0


def test_opens_when_the_failure_rate_reaches_the_limit_without_a_run(clock: Clock) -> None:
    subject = breaker(clock, failure_threshold=5, failure_rate=0.5, min_calls=10)
    for _ in range(4):
        subject.record_success()
        subject.record_failure()  # never two in a row
    subject.record_success()
    assert subject.state is BreakerState.CLOSED  # 4 of 9: below the rate and below min_calls
    subject.record_failure()
    assert subject.state is BreakerState.OPEN  # 5 of 10 = 0.5 >= 0.5
    assert subject.consecutive_failures == 1


def test_the_rate_rule_waits_for_min_calls(clock: Clock) -> None:
    subject = breaker(clock, failure_threshold=5, failure_rate=0.5, min_calls=10)
    for _ in range(4):
        subject.record_failure()
    assert subject.window_counts() == (4, 4)
    assert subject.state is BreakerState.CLOSED  # 100% failing, but only 4 calls
    subject.record_failure()
    assert subject.state is BreakerState.OPEN  # the consecutive rule needs no minimum


def test_a_rate_below_the_limit_stays_closed(clock: Clock) -> None:
    subject = breaker(clock, failure_threshold=50, failure_rate=0.3, min_calls=10)
    for index in range(100):
        if index % 4 == 3:
            subject.record_failure()  # 25% failing, at every failure
        else:
            subject.record_success()
    assert subject.state is BreakerState.CLOSED


def test_successes_alone_never_open_it(clock: Clock) -> None:
    subject = breaker(clock, failure_threshold=50, failure_rate=0.5, min_calls=10)
    for _ in range(5):
        subject.record_failure()
    for _ in range(5):
        subject.record_success()  # 5 of 10 failed, but the rule is checked on a failure
    assert subject.state is BreakerState.CLOSED


def test_old_calls_leave_the_window(clock: Clock) -> None:
    subject = breaker(clock, failure_threshold=50, failure_rate=0.5, window=30.0, min_calls=10)
    for _ in range(9):
        subject.record_failure()
    clock.advance(29.9)
    assert subject.window_counts() == (9, 9)
    clock.advance(0.1)  # exactly `window` seconds old: gone
    assert subject.window_counts() == (0, 0)
    for _ in range(8):
        subject.record_success()
    subject.record_failure()
    assert subject.state is BreakerState.CLOSED  # 1 of 9 (the 9 old failures no longer count)
    subject.record_failure()
    assert subject.state is BreakerState.CLOSED  # 2 of 10
    assert subject.window_counts() == (10, 2)


def test_the_window_slides_call_by_call(clock: Clock) -> None:
    subject = breaker(clock, failure_threshold=50, failure_rate=0.5, window=10.0, min_calls=4)
    subject.record_failure()  # t=0
    clock.advance(5)
    subject.record_failure()  # t=5
    clock.advance(5)
    subject.record_success()  # t=10: the first failure has left
    subject.record_success()
    assert subject.window_counts() == (3, 1)
    subject.record_failure()  # 2 of 4 in (0, 10]
    assert subject.state is BreakerState.OPEN


# --- OPEN -> HALF_OPEN --------------------------------------------------------------------


def test_stays_open_until_the_cooldown_passes(clock: Clock) -> None:
    subject = opened(clock, cooldown=10.0)
    clock.advance(9.999)
    assert not subject.allow()
    assert not subject.would_allow()
    assert subject.state is BreakerState.OPEN
    clock.advance(0.001)
    assert subject.would_allow()
    assert subject.state is BreakerState.OPEN  # would_allow only looks
    assert subject.allow()
    assert subject.state is BreakerState.HALF_OPEN


def test_half_open_lets_exactly_one_probe_through_at_a_time(clock: Clock) -> None:
    subject = opened(clock, cooldown=10.0)
    clock.advance(10.0)
    assert subject.allow()
    assert [subject.allow() for _ in range(5)] == [False] * 5
    assert not subject.would_allow()
    clock.advance(60.0)  # time alone does not free the probe
    assert not subject.allow()


def test_a_released_probe_lets_another_go(clock: Clock) -> None:
    subject = opened(clock, cooldown=10.0)
    clock.advance(10.0)
    assert subject.allow()
    subject.release_probe()  # e.g. the probe's order task was cancelled
    assert subject.state is BreakerState.HALF_OPEN
    assert subject.allow()
    assert not subject.allow()


def test_release_probe_elsewhere_is_a_no_op(clock: Clock) -> None:
    subject = breaker(clock)
    subject.release_probe()
    assert subject.state is BreakerState.CLOSED
    subject = opened(clock)
    subject.release_probe()
    assert subject.state is BreakerState.OPEN
    assert not subject.allow()


# --- HALF_OPEN -> CLOSED / OPEN -----------------------------------------------------------


def test_a_successful_probe_closes_it_and_resets_the_counts(clock: Clock) -> None:
    subject = opened(clock, failure_threshold=3, cooldown=10.0)
    clock.advance(10.0)
    assert subject.allow()
    subject.record_success()
    assert subject.state is BreakerState.CLOSED
    assert subject.opened_at is None
    assert subject.consecutive_failures == 0
    assert subject.window_counts() == (0, 0)
    assert all(subject.allow() for _ in range(10))
    subject.record_failure()
    subject.record_failure()
    assert subject.state is BreakerState.CLOSED  # the old run does not carry over


def test_a_failed_probe_reopens_it_and_restarts_the_cooldown(clock: Clock) -> None:
    subject = opened(clock, cooldown=10.0)
    clock.advance(12.0)
    assert subject.allow()
    clock.advance(3.0)
    subject.record_failure()
    assert subject.state is BreakerState.OPEN
    assert subject.opened_at == 1015.0
    clock.advance(9.0)
    assert not subject.allow()  # 9 s since the reopening, though 24 s since the first opening
    clock.advance(1.0)
    assert subject.allow()
    assert subject.state is BreakerState.HALF_OPEN


def test_verdicts_arriving_while_open_are_ignored(clock: Clock) -> None:
    """Calls already in flight when it opened report late; they must not close it or push the
    cooldown back."""
    subject = opened(clock, cooldown=10.0)
    clock.advance(5.0)
    subject.record_success()
    assert subject.state is BreakerState.OPEN
    subject.record_failure()
    assert subject.opened_at == 1000.0
    clock.advance(5.0)
    assert subject.allow()


def test_full_cycle(clock: Clock) -> None:
    subject = breaker(clock, failure_threshold=2, cooldown=5.0)
    states = [subject.state]
    subject.record_failure()
    subject.record_failure()
    states.append(subject.state)
    clock.advance(5.0)
    subject.allow()
    states.append(subject.state)
    subject.record_failure()
    states.append(subject.state)
    clock.advance(5.0)
    subject.allow()
    states.append(subject.state)
    subject.record_success()
    states.append(subject.state)
    assert states == ["CLOSED", "OPEN", "HALF_OPEN", "OPEN", "HALF_OPEN", "CLOSED"]


# --- views and settings -------------------------------------------------------------------


def test_repr_shows_state_and_counts(clock: Clock) -> None:
    subject = breaker(clock, failure_threshold=3, min_calls=100)
    subject.record_success()
    subject.record_failure()
    assert repr(subject) == "<CircuitBreaker CLOSED consecutive_failures=1 window=1/2 failed>"
    subject.record_failure()
    subject.record_failure()
    assert repr(subject) == (
        "<CircuitBreaker OPEN consecutive_failures=3 window=3/4 failed opened_at=1000.000>"
    )
    clock.advance(10.0)
    subject.allow()
    assert repr(subject) == (
        "<CircuitBreaker HALF_OPEN consecutive_failures=3 window=3/4 failed opened_at=1000.000 "
        "probe_in_flight=True>"
    )


def test_state_spells_like_the_wire() -> None:
    assert [str(state) for state in BreakerState] == ["CLOSED", "OPEN", "HALF_OPEN"]


@pytest.mark.parametrize(
    "settings",
    [
        {"failure_threshold": 0},
        {"failure_rate": 0.0},
        {"failure_rate": 1.5},
        {"window": 0.0},
        {"min_calls": 0},
        {"cooldown": -1.0},
    ],
)
def test_nonsense_settings_are_refused(clock: Clock, settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        breaker(clock, **settings)
