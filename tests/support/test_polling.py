"""tests.support.polling: returns the first value that is done, fails naming what and the last
value seen, retries only the exceptions it is told to."""

from __future__ import annotations

import itertools
import re

import psycopg
import pytest
import trio

from tests.chaos.ledger import poll as chaos_poll
from tests.support.polling import NotReached, condition, poll_until, wait_until


def test_poll_until_returns_the_first_done_value() -> None:
    counter = itertools.count()
    assert poll_until(lambda: next(counter), lambda n: n >= 3, what="three", interval=0) == 3


def test_poll_until_fails_with_what_and_the_last_value() -> None:
    with pytest.raises(
        AssertionError, match=r"status FILLED: not reached within 0.05 s; last seen: 'PENDING'"
    ):
        poll_until(
            lambda: "PENDING", lambda s: s == "FILLED", what="status FILLED", timeout=0.05, interval=0.01
        )


def test_poll_until_retries_only_the_named_exceptions() -> None:
    def refused() -> int:
        raise ConnectionRefusedError("down")

    with pytest.raises(AssertionError, match="last error: ConnectionRefusedError"):
        poll_until(refused, what="up", timeout=0.05, interval=0.01, retry_on=(OSError,))
    with pytest.raises(ConnectionRefusedError):
        poll_until(refused, what="up", timeout=0.05, interval=0.01)


async def test_wait_until_returns_once_another_task_makes_it_true() -> None:
    box: list[int] = []

    async def later() -> None:
        await trio.sleep(0.02)
        box.append(7)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later)
        assert await wait_until(lambda: condition(lambda: list(box)), what="box filled") == [7]


async def test_wait_until_fails_with_the_last_value_and_a_hanging_probe_times_out() -> None:
    with pytest.raises(AssertionError, match=re.escape("never: not reached within 0.05 s; last seen: 0")):
        await wait_until(lambda: condition(lambda: 0), what="never", timeout=0.05)
    with pytest.raises(
        AssertionError, match=re.escape("hang: not reached within 0.05 s; the probe never returned")
    ):
        await wait_until(trio.sleep_forever, what="hang", timeout=0.05)


def test_a_timeout_is_a_not_reached_and_a_failing_probe_is_not() -> None:
    with pytest.raises(NotReached):
        poll_until(lambda: 0, what="never", timeout=0.02, interval=0.01)

    def broken() -> int:
        raise AssertionError("the probe's own failure")

    with pytest.raises(AssertionError, match="the probe's own failure") as failure:
        poll_until(broken, what="never", timeout=0.02, interval=0.01)
    assert not isinstance(failure.value, NotReached)


def test_the_chaos_poll_waits_through_poll_until_and_reports_a_timeout_as_none() -> None:
    calls = itertools.count()

    def database_back_on_the_third_call() -> str | None:
        n = next(calls)
        if n == 0:
            raise psycopg.OperationalError("connection refused")  # still down: not yet
        return "settled" if n >= 2 else None

    result, waited = chaos_poll(database_back_on_the_third_call, timeout=5.0, interval=0.01)
    assert result == "settled" and next(calls) == 3 and 0.0 < waited < 5.0
    result, waited = chaos_poll(lambda: None, timeout=0.05, interval=0.01)
    assert result is None and waited >= 0.05
