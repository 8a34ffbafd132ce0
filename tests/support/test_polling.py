"""tests.support.polling: returns the first value that is done, fails naming what and the last
value seen, retries only the exceptions it is told to."""

from __future__ import annotations

import itertools
import re

import pytest
import trio

from tests.support.polling import condition, poll_until, wait_until


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
