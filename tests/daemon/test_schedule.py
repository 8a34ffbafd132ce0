from datetime import UTC, datetime, timedelta, timezone

import trio

from daemon.schedule import (
    BACKFILL_AT_START,
    BACKFILL_EVERY_S,
    BACKFILL_RECENT,
    BACKFILL_SETTLE,
    REFRESH_DUTY,
    Prompt,
    backfill_reports,
    close_sessions_daily,
    next_daily,
    refresh_views_every,
)


def test_next_daily_is_later_today_or_tomorrow() -> None:
    assert next_daily(datetime(2026, 3, 2, 20, 59, tzinfo=UTC), "21:00") == datetime(
        2026, 3, 2, 21, 0, tzinfo=UTC
    )
    assert next_daily(datetime(2026, 3, 2, 21, 0, tzinfo=UTC), "21:00") == datetime(
        2026, 3, 3, 21, 0, tzinfo=UTC
    )
    assert next_daily(datetime(2026, 12, 31, 23, 0, tzinfo=UTC), "00:30") == datetime(
        2027, 1, 1, 0, 30, tzinfo=UTC
    )


def test_next_daily_reads_the_time_in_utc_whatever_the_zone_of_now() -> None:
    new_york = timezone(timedelta(hours=-5))
    now = datetime(2026, 3, 2, 15, 30, tzinfo=new_york)  # 20:30 UTC
    assert next_daily(now, "21:00") == datetime(2026, 3, 2, 21, 0, tzinfo=UTC)


async def test_closers_run_at_the_close_and_a_failing_one_does_not_stop_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
    calls: list[str] = []

    def clock() -> datetime:
        return start + timedelta(seconds=trio.current_time())

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("venue gone")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_sessions_daily, [broken, lambda: calls.append("ok")], "21:00", clock)
        await trio.sleep(3599)
        assert calls == []
        await trio.sleep(2)
        assert calls == ["broken", "ok"]
        await trio.sleep(24 * 3600)
        assert calls == ["broken", "ok", "broken", "ok"]
        nursery.cancel_scope.cancel()


async def test_reports_are_backfilled_at_start_then_periodically_over_recent_history(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
    passes: list[tuple[float, datetime, datetime | None]] = []

    def clock() -> datetime:
        return start + timedelta(seconds=trio.current_time())

    async def backfill(since: datetime, until: datetime | None) -> int:
        passes.append((trio.current_time(), since, until))
        return 0

    with trio.move_on_after(BACKFILL_EVERY_S * 2 + 1):
        await backfill_reports(backfill, clock)
    first, second = (start + timedelta(seconds=BACKFILL_EVERY_S * n) for n in (1, 2))
    assert passes == [
        (0.0, start - BACKFILL_AT_START, None),  # at start: up to now (a crash just before)
        (BACKFILL_EVERY_S, first - BACKFILL_RECENT, first - BACKFILL_SETTLE),
        (BACKFILL_EVERY_S * 2, second - BACKFILL_RECENT, second - BACKFILL_SETTLE),
    ]


async def test_a_prompt_brings_the_next_backfill_forward_once(autojump_clock: trio.testing.MockClock) -> None:
    start = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
    passes: list[float] = []
    prompt = Prompt()

    async def backfill(since: datetime, until: datetime | None) -> int:
        passes.append(trio.current_time())
        if len(passes) == 2:  # prompted again while this pass runs: one more pass, at once
            prompt.set()
            prompt.set()
        await trio.sleep(1)
        return 0

    async def prompt_at(seconds: float) -> None:
        await trio.sleep(seconds)
        prompt.set()

    with trio.move_on_after(BACKFILL_EVERY_S + 100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(prompt_at, 30.0)
            await backfill_reports(
                backfill, lambda: start + timedelta(seconds=trio.current_time()), prompt=prompt
            )
    assert passes == [0.0, 30.0, 31.0, 32.0 + BACKFILL_EVERY_S]


class SlowViews:
    """Read models whose refresh takes `took[i]` seconds the i-th time (the last one after)."""

    def __init__(self, took: list[float]) -> None:
        self.took = took
        self.started: list[float] = []

    async def refresh_views(self) -> None:
        self.started.append(trio.current_time())
        await trio.sleep(self.took[min(len(self.started), len(self.took)) - 1])


async def test_read_models_are_refreshed_less_often_while_a_refresh_is_slow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    views = SlowViews([1.0, 20.0, 1.0, 1.0])
    with trio.move_on_after(400):
        await refresh_views_every(views, 60.0)
    # 60 s apart (plus the refresh itself) while quick; after one of 20 s, the next waits
    # 20 * (1 / REFRESH_DUTY - 1) = 180 s; quick again, 60 s again.
    assert views.started == [60.0, 121.0, 141.0 + 20 * (1 / REFRESH_DUTY - 1), 322.0 + 60.0]
