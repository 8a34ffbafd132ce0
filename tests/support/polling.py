"""Waiting for something a test cannot be told about: one polling implementation, bounded,
with a failure message that says what was awaited and what was last seen.

Use it only where no event exists to wait on (another process's state, a row in PostgreSQL, a
reply over the network); inside one Trio program prefer a `trio.Event`, a channel receipt or the
engine's own waits (`ExecutionEngine.wait_settled`).

    reply = poll_until(lambda: oms.get_execution(url, orderId=oid), lambda r: r.body["status"] == "FILLED",
                       what=f"execution of {oid} FILLED")                    # blocking (e2e)
    row = await wait_until(lambda: store.load_latest_execution(oid), lambda e: e is not None,
                           what="the execution row")                         # Trio

Contract: the probe is called at once and then every `interval` seconds until `done(value)` is
true, which returns that value; past `timeout` seconds an `AssertionError` names `what`, the
timeout and the last value seen (or the last exception the probe raised, when `retry_on` lets it
count as "not yet"). Exceptions not in `retry_on` propagate at once. The `AssertionError` is a
`NotReached`, so a caller that measures how long a wait took (the chaos scenarios) can tell a
timeout from a failing probe.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

__all__ = ["NotReached", "condition", "poll_until", "wait_until"]

T = TypeVar("T")

_NOTHING = object()


class NotReached(AssertionError):
    """A wait's condition did not come true within its timeout (the message says what and the
    last value or error seen)."""


def _failure(what: str, timeout: float, last: object, error: BaseException | None) -> NotReached:
    if last is not _NOTHING:
        seen = f"last seen: {last!r}"
    elif error is not None:
        seen = f"last error: {error!r}"
    else:
        seen = "the probe never returned"
    return NotReached(f"{what}: not reached within {timeout:g} s; {seen}")


def _truthy(value: object) -> bool:
    return bool(value)


def poll_until(
    probe: Callable[[], T],
    done: Callable[[T], bool] = _truthy,
    *,
    what: str,
    timeout: float = 10.0,
    interval: float = 0.05,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Blocking: for tests that drive other processes (e2e). See the module docstring."""
    deadline = time.monotonic() + timeout
    last: object = _NOTHING
    error: BaseException | None = None
    while True:
        try:
            value = probe()
        except retry_on as exc:
            error = exc
        else:
            if done(value):
                return value
            last = value
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, last, error)
        time.sleep(interval)


async def wait_until(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool] = _truthy,
    *,
    what: str,
    timeout: float = 10.0,
    interval: float = 0.01,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Trio: the same, with an async probe; a probe that hangs counts against `timeout`."""
    last: object = _NOTHING
    error: BaseException | None = None
    try:
        with trio.fail_after(timeout):
            while True:
                try:
                    value = await probe()
                except retry_on as exc:
                    error = exc
                else:
                    if done(value):
                        return value
                    last = value
                await trio.sleep(interval)
    except trio.TooSlowError:
        raise _failure(what, timeout, last, error) from None


async def condition(check: Callable[[], T]) -> T:
    """An async probe of a synchronous check, for `wait_until(lambda: condition(...))`."""
    await trio.lowlevel.checkpoint()
    return check()
