"""nursery.ratelimit: sliding-window safety under floods, FIFO, up-front deadline refusal,
cancellation, 429 penalties, headroom, and the unlimited fast path. Time is trio's autojump
MockClock (it starts at 0.0), so grant times are exact."""

from __future__ import annotations

import math
import random

import pytest
import trio
import trio.testing

from adapters.base import DeniedLocally
from api.capabilities import RateLimits
from nursery.ratelimit import RateLimiter, RateLimitExceeded, describe_limits

INF = math.inf


def assert_no_sliding_window_exceeded(grants: list[float], limits: RateLimits) -> None:
    """For sorted grant times t, any interval [s, s + W) holding more than L grants holds
    t[i] .. t[i + L] for some i, i.e. t[i + L] - t[i] < W. So checking every i proves it for
    every window position, not just the ones we happened to sample."""
    ordered = sorted(grants)
    for window, limit in limits.windows():
        for i in range(len(ordered) - limit):
            assert ordered[i + limit] - ordered[i] >= window, (
                f"{limit + 1} grants within {window}s: {ordered[i : i + limit + 1]}"
            )


def now() -> float:
    return trio.current_time()


# --- the window guarantee -------------------------------------------------------------------


def test_gcra_with_burst_equal_to_the_limit_would_exceed_a_sliding_window() -> None:
    """Why the limiter keeps a log: GCRA (burst L, rate L/W) admits L + 1 requests within W."""
    limit, window = 5, 1.0
    interval = window / limit
    tolerance = (limit - 1) * interval
    theoretical_arrival = 0.0
    admitted = []
    for arrival in [0.0] * limit + [interval]:
        if theoretical_arrival - tolerance <= arrival:
            theoretical_arrival = max(theoretical_arrival, arrival) + interval
            admitted.append(arrival)
    assert len(admitted) == limit + 1
    assert admitted[-1] - admitted[0] < window


async def test_the_request_gcra_would_admit_waits_a_full_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(RateLimits(requests_per_second=5))
    for _ in range(5):
        await limiter.acquire(INF)
    await trio.sleep(0.2)
    await limiter.acquire(INF)
    assert now() == 1.0


async def test_flood_of_300_never_puts_more_than_5_in_a_second_or_20_in_a_minute(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = RateLimits(requests_per_second=5, requests_per_minute=20)
    limiter = RateLimiter(limits)
    granted: list[float] = []

    async def caller() -> None:
        await limiter.acquire(INF)
        granted.append(now())

    async with trio.open_nursery() as nursery:
        for _ in range(300):
            nursery.start_soon(caller)

    assert len(granted) == 300
    assert_no_sliding_window_exceeded(granted, limits)
    # Safe but not timid: each minute starts with four bursts of five, one second apart.
    assert sorted(granted)[:20] == [0.0] * 5 + [1.0] * 5 + [2.0] * 5 + [3.0] * 5
    assert max(granted) == 14 * 60 + 3
    assert limiter.queued == 0


async def test_window_invariant_survives_refusals_cancellations_and_429s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rng = random.Random(20260302)
    limits = RateLimits(requests_per_second=3, requests_per_minute=12)
    limiter = RateLimiter(limits)
    callers = [
        (rng.uniform(0, 600), rng.uniform(0, 90), rng.uniform(0, 30) if rng.random() < 0.25 else INF)
        for _ in range(200)
    ]
    throttles = [(rng.uniform(0, 600), rng.choice([None, rng.uniform(0.5, 30)])) for _ in range(12)]
    throttles.sort(key=lambda throttle: throttle[0])
    granted: list[float] = []
    refusals: list[tuple[float, float]] = []
    penalties: list[tuple[float, float]] = []
    cancelled = 0

    async def caller(arrive: float, patience: float, cancel_after: float) -> None:
        nonlocal cancelled
        await trio.sleep_until(arrive)
        arrived = now()
        deadline = arrived + patience
        with trio.move_on_after(cancel_after) as scope:
            try:
                await limiter.acquire(deadline)
            except RateLimitExceeded:
                refusals.append((arrived, now()))
                return
            assert now() <= deadline
            granted.append(now())
        cancelled += scope.cancelled_caught

    async def throttler() -> None:
        for at, retry_after in throttles:
            await trio.sleep_until(at)
            limiter.penalize(retry_after)
            assert limiter.penalty_until is not None
            penalties.append((now(), limiter.penalty_until))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(throttler)
        for arrive, patience, cancel_after in callers:
            nursery.start_soon(caller, arrive, patience, cancel_after)

    assert len(granted) + len(refusals) + cancelled == len(callers)
    assert_no_sliding_window_exceeded(granted, limits)
    for issued, until in penalties:
        assert not [t for t in granted if issued <= t < until]
    # Nobody sleeps until a deadline to learn it was missed: refusals come on arrival, or when
    # a 429 pushed the wait past the deadline.
    issued_at = {issued for issued, _ in penalties}
    on_arrival = [refused for arrived, refused in refusals if refused == arrived]
    on_penalty = [refused for arrived, refused in refusals if refused != arrived and refused in issued_at]
    assert len(on_arrival) + len(on_penalty) == len(refusals)
    # The scenario exercises every path (99 granted, 63 + 7 refused, 31 cancelled with this seed).
    assert len(granted) > 50 and len(on_arrival) > 20 and len(on_penalty) > 2 and cancelled > 10
    assert limiter.queued == 0


# --- order --------------------------------------------------------------------------------


async def test_grants_follow_arrival_order(autojump_clock: trio.testing.MockClock) -> None:
    """Nobody is served later than someone who arrived after them. (Callers served at the same
    instant may resume in any order: trio shuffles a batch.)"""
    limiter = RateLimiter(RateLimits(requests_per_second=2, requests_per_minute=10))
    arrived: list[int] = []
    granted_at: dict[int, float] = {}

    async def caller(number: int) -> None:
        arrived.append(number)
        await limiter.acquire(INF)
        granted_at[number] = now()

    async with trio.open_nursery() as nursery:
        for number in range(40):
            nursery.start_soon(caller, number)
    in_arrival_order = [granted_at[number] for number in arrived]
    assert in_arrival_order == sorted(in_arrival_order)
    assert in_arrival_order[:4] == [0.0, 0.0, 1.0, 1.0]
    assert len(set(in_arrival_order)) == 20  # two per instant: the order is fully determined


async def test_a_burst_arriving_as_capacity_frees_does_not_overtake_an_earlier_waiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    order: list[tuple[str, float]] = []

    async def caller(limiter: RateLimiter, name: str, start: float, arrive: float) -> None:
        await trio.sleep_until(start + arrive)
        await limiter.acquire(INF)
        order.append((name, now() - start))

    # Trio shuffles tasks woken at the same instant (the head's timer and the burst's), so
    # repeat to meet both orders.
    for _ in range(20):
        limiter = RateLimiter(RateLimits(requests_per_second=1))
        start = now()
        await limiter.acquire(INF)
        order.clear()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller, limiter, "early", start, 0.5)
            for number in range(5):
                nursery.start_soon(caller, limiter, f"burst{number}", start, 1.0)
        assert order[0] == ("early", 1.0)
        assert [at for _, at in order] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


# --- deadlines ----------------------------------------------------------------------------


async def test_refuses_at_once_when_the_computed_wait_exceeds_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(RateLimits(requests_per_second=5, requests_per_minute=200), broker_id="alpaca")
    for _ in range(5):
        await limiter.acquire(INF)
    with pytest.raises(RateLimitExceeded) as refused:
        await limiter.acquire(0.5)
    assert now() == 0.0
    assert isinstance(refused.value, DeniedLocally)
    assert str(refused.value) == "rate limit: no capacity at alpaca before the deadline (5/s, 200/min)"
    assert refused.value.available_at == 1.0
    assert limiter.queued == 0

    await limiter.acquire(1.0)  # a deadline exactly at the computed time is enough
    assert now() == 1.0


async def test_refusal_counts_the_callers_queued_ahead(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(RateLimits(requests_per_second=1))
    await limiter.acquire(INF)
    granted: list[float] = []

    async def caller(deadline: float) -> None:
        await limiter.acquire(deadline)
        granted.append(now())

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(caller, INF)  # served at 1, 2 and 3
        await trio.sleep(0.1)
        assert limiter.queued == 3
        with pytest.raises(RateLimitExceeded) as refused:
            await limiter.acquire(3.5)
        assert now() == 0.1
        assert refused.value.available_at == 4.0
        nursery.start_soon(caller, 4.0)
    assert granted == [1.0, 2.0, 3.0, 4.0]


async def test_a_request_that_can_go_now_goes_even_past_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The deadline bounds waiting; it is not a second clock check on the hot path."""
    await trio.sleep(10)
    limiter = RateLimiter(RateLimits(requests_per_second=1))
    await limiter.acquire(5.0)
    with pytest.raises(RateLimitExceeded):
        await limiter.acquire(5.0)


# --- cancellation -------------------------------------------------------------------------


async def test_cancelled_head_waiter_gives_its_slot_to_the_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(RateLimits(requests_per_second=1))
    await limiter.acquire(INF)
    granted: list[tuple[str, float]] = []

    async def caller(name: str, scope: trio.CancelScope) -> None:
        with scope:
            await limiter.acquire(INF)
            granted.append((name, now()))

    head = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, "head", head)
        await trio.sleep(0.1)
        nursery.start_soon(caller, "next", trio.CancelScope())
        await trio.sleep(0.4)
        assert limiter.queued == 2
        head.cancel()
        await trio.sleep(0.1)
        assert limiter.queued == 1
    assert granted == [("next", 1.0)]


async def test_cancelled_middle_waiter_leaves_the_queue(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(RateLimits(requests_per_second=1))
    await limiter.acquire(INF)
    granted: list[tuple[str, float]] = []
    scopes = {name: trio.CancelScope() for name in ("a", "b", "c")}

    async def caller(name: str) -> None:
        with scopes[name]:
            await limiter.acquire(INF)
            granted.append((name, now()))

    async with trio.open_nursery() as nursery:
        for name in scopes:
            nursery.start_soon(caller, name)
            await trio.sleep(0.1)
        scopes["b"].cancel()
    assert granted == [("a", 1.0), ("c", 2.0)]
    assert limiter.queued == 0


async def test_acquire_in_a_cancelled_scope_takes_no_capacity(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(RateLimits(requests_per_second=1))
    with trio.CancelScope() as scope:
        scope.cancel()
        await limiter.acquire(INF)
    assert scope.cancelled_caught
    assert limiter.headroom() == 100.0
    await limiter.acquire(0.0)  # the one slot is still there
    assert now() == 0.0


# --- 429 penalties ------------------------------------------------------------------------


async def test_penalize_blocks_every_grant_then_recovers(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(RateLimits(requests_per_second=10))
    limiter.penalize(2.5)
    assert limiter.headroom() == 0.0
    with pytest.raises(RateLimitExceeded, match=r"broker throttling \(429\) until 2\.500"):
        await limiter.acquire(2.0)
    for _ in range(10):
        await limiter.acquire(INF)
        assert now() == 2.5
    assert limiter.penalty_until is None
    await limiter.acquire(INF)
    assert now() == 3.5  # the ordinary window applies again


async def test_default_penalty_doubles_on_consecutive_429s_up_to_60s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(RateLimits())  # a broker with no published limits can still say 429
    waits = []
    for _ in range(8):
        start = now()
        limiter.penalize(None)
        await limiter.acquire(INF)
        waits.append(now() - start)
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]

    limiter.record_success()
    start = now()
    limiter.penalize(None)
    await limiter.acquire(INF)
    assert now() - start == 1


async def test_429s_answering_requests_sent_before_the_penalty_do_not_double_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(RateLimits())
    limiter.penalize(None)
    await trio.sleep(0.5)
    limiter.penalize(None)
    limiter.penalize(None)
    assert limiter.penalty_until == 1.5
    await limiter.acquire(INF)
    limiter.penalize(None)
    assert limiter.penalty_until == 1.5 + 2


async def test_a_penalty_is_never_shortened(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(RateLimits(requests_per_minute=100))
    limiter.penalize(10.0)
    limiter.penalize(1.0)
    limiter.penalize(-3.0)  # nonsense from the broker: the default backoff, still not shorter
    await limiter.acquire(INF)
    assert now() == 10.0


async def test_penalize_refuses_at_once_the_waiters_it_pushes_past_their_deadlines(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(RateLimits(requests_per_second=10))
    limiter.penalize(1.0)
    outcomes: dict[str, object] = {}

    async def caller(name: str, deadline: float) -> None:
        try:
            await limiter.acquire(deadline)
        except RateLimitExceeded as exc:
            outcomes[name] = ("refused", now(), exc.available_at)
        else:
            outcomes[name] = ("granted", now())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, "patient", 30.0)
        await trio.sleep(0.1)
        nursery.start_soon(caller, "hurried", 5.0)
        await trio.sleep(0.4)
        assert limiter.queued == 2
        limiter.penalize(10.0)
    assert outcomes == {"hurried": ("refused", 0.5, 10.5), "patient": ("granted", 10.5)}


# --- views --------------------------------------------------------------------------------


async def test_headroom_is_the_tightest_windows_share_left(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(RateLimits(requests_per_second=5, requests_per_minute=20))
    assert limiter.headroom() == 100.0
    await limiter.acquire(INF)
    assert limiter.headroom() == 80.0  # 4/5 left this second, 19/20 this minute
    for _ in range(4):
        await limiter.acquire(INF)
    assert limiter.headroom() == 0.0
    await trio.sleep(1.0)
    assert limiter.headroom() == 75.0  # the second is fresh; 15/20 left this minute

    for _ in range(15):
        await limiter.acquire(INF)  # five each at t=1, 2, 3
    assert limiter.headroom() == 0.0
    await trio.sleep(57.0)  # t=60: the first five leave the minute
    assert limiter.headroom() == 25.0
    await limiter.acquire(INF)
    await limiter.acquire(INF)
    assert limiter.headroom() == 15.0  # 3/20 this minute (3/5 this second)


async def test_headroom_counts_the_queued_waiters(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(RateLimits(requests_per_minute=10))
    for _ in range(10):
        await limiter.acquire(INF)
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(limiter.acquire, INF)
        await trio.sleep(30)
        assert limiter.queued == 3
        assert limiter.headroom() == 0.0
        await trio.sleep(30)  # t=60: all ten leave the minute; the three take theirs
    assert limiter.headroom() == 70.0


async def test_headroom_without_limits_is_100_except_under_a_penalty(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(RateLimits())
    assert limiter.headroom() == 100.0
    limiter.penalize(3.0)
    assert limiter.headroom() == 0.0
    await trio.sleep(3.0)
    assert limiter.headroom() == 100.0


async def test_repr_shows_limits_queue_and_penalty(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(
        RateLimits(requests_per_second=1, requests_per_minute=200, requests_per_hour=1000), broker_id="ib"
    )
    assert repr(limiter) == "<RateLimiter ib 1/s, 200/min, 1000/h queued=0 penalty=none strikes=0>"
    await limiter.acquire(INF)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limiter.acquire, INF)
        await trio.sleep(0.5)
        limiter.penalize(None)
        assert repr(limiter) == "<RateLimiter ib 1/s, 200/min, 1000/h queued=1 penalty=until 1.500 strikes=1>"
    assert describe_limits(RateLimits()) == "unlimited"


# --- the hot path -------------------------------------------------------------------------


def unreadable_clock() -> float:
    raise AssertionError("the unlimited path must not read the clock")


async def test_without_limits_acquire_is_a_cancel_point_not_a_schedule_point() -> None:
    limiter = RateLimiter(RateLimits(), clock=unreadable_clock)
    for _ in range(1000):
        await limiter.acquire(-INF)  # no clock read, no deadline check, no bookkeeping
    assert limiter.queued == 0

    with trio.CancelScope() as scope:  # still a cancellation point ...
        scope.cancel()
        await limiter.acquire(INF)
        pytest.fail("acquire must be a cancel point")

    steps: list[str] = []

    async def other() -> None:
        steps.append("other ran")

    async with trio.open_nursery() as nursery:  # ... but no trip through the scheduler
        nursery.start_soon(other)
        await limiter.acquire(INF)
        steps.append("acquired")
    assert steps == ["acquired", "other ran"]


async def test_the_margin_widens_every_window(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(RateLimits(requests_per_second=1), margin=0.01)
    times = []
    for _ in range(3):
        await limiter.acquire(INF)
        times.append(now())
    assert times == [0.0, pytest.approx(1.01), pytest.approx(2.02)]


async def test_incremental_headroom_equals_a_recount_at_every_step(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`headroom` keeps a cursor per window instead of recounting the grants on each call; at
    random times, with grants leaving the windows between looks, it matches a plain recount."""
    limits = RateLimits(requests_per_second=7, requests_per_minute=40)
    limiter = RateLimiter(limits)
    rng = random.Random(11)
    granted: list[float] = []
    for _ in range(400):
        if rng.random() < 0.5:
            try:
                await limiter.acquire(now() + rng.choice((0.0, 0.5, 2.0)))
                granted.append(now())
            except DeniedLocally:
                pass
        else:
            await trio.sleep(rng.choice((0.01, 0.2, 1.0, 7.0)))
        expected = 100.0
        for window, limit in limits.windows():
            used = sum(1 for t in granted if now() - t < window)
            expected = min(expected, 100.0 * max(0, limit - used) / limit)
        assert limiter.headroom() == expected
