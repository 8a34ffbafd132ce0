"""psycopg's `AsyncConnection` driven by Trio's own I/O: no thread, no asyncio loop.

psycopg does all of its protocol work in generators that yield "wait until the socket is
readable/writable" and are resumed with what is ready; its async connection hands them to
asyncio. `TrioConnection` hands them to Trio instead (`wait`), so cursors, pipelines and
transactions run in the Trio thread, with Trio's cancellation:

- A wait first asks the socket with a zero-timeout poll (in pipeline mode the answer is often
  there already) and only then parks the task on `trio.lowlevel.wait_readable/_writable`.
- Cancellation can interrupt a wait between two protocol steps: the connection is then in an
  unknown state and `interrupted` is set; its owner must close it (the group writer does).
- The connection must be used by one task at a time (psycopg's asyncio lock is only ever taken
  uncontended, which needs no event loop).
- Opening a connection (`connect`) runs libpq's blocking connect — name resolution included — in a
  worker thread, bounded by libpq's `connect_timeout`; everything after it runs in Trio.

Why: a writer thread running psycopg's Python code holds the GIL in turns with the Trio thread;
every system call of the Trio thread (each loop pass, each socket send) could then wait for the
interpreter's switch interval. Measured on the order path (bench/route.py), this cost more than
the database itself.
"""

from __future__ import annotations

import select
from collections.abc import Generator
from typing import Any, TypeVar

import psycopg
import trio
from psycopg import errors, generators, pq, waiting

__all__ = ["TrioConnection", "close", "connect", "readable_or_writable"]

RV = TypeVar("RV")

_READ, _WRITE = int(waiting.Wait.R), int(waiting.Wait.W)
_POLL_MASK = {_READ: select.POLLIN, _WRITE: select.POLLOUT, _READ | _WRITE: select.POLLIN | select.POLLOUT}


class TrioConnection(psycopg.AsyncConnection[Any]):
    """An `AsyncConnection` whose waits are Trio's (see the module docstring)."""

    #: A wait was interrupted (cancelled, timed out) mid-protocol: close this connection.
    interrupted: bool = False
    #: The statements `sql.roundtrip` has prepared on this connection (by name).
    roundtrip_prepared: set[bytes] | None = None

    async def wait(
        self, gen: Generator[Any, Any, RV], interval: float = 0.1, timeout: float | None = None
    ) -> RV:
        fileno = self.pgconn.socket
        try:
            if timeout is None:
                return await _drive(gen, fileno)
            with trio.fail_after(timeout):
                return await _drive(gen, fileno)
        except trio.TooSlowError:
            self.interrupted = True
            raise errors.OperationalError(f"no answer from the server within {timeout}s") from None
        except BaseException:
            if not _finished(gen):
                self.interrupted = True
            raise


def _finished(gen: Generator[Any, Any, Any]) -> bool:
    return getattr(gen, "gi_frame", None) is None


async def _drive(gen: Generator[Any, Any, RV], fileno: int) -> RV:
    try:
        state = next(gen)
        while True:
            ready = _ready_now(fileno, state)
            if not ready:
                ready = await _wait(fileno, state)
            state = gen.send(ready)
    except StopIteration as done:
        result: RV = done.value
        return result
    except OSError as exc:
        raise errors.OperationalError("connection socket closed") from exc


def _ready_now(fileno: int, state: int) -> int:
    poller = select.poll()
    poller.register(fileno, _POLL_MASK[state])
    ready = 0
    for _, event in poller.poll(0):
        if event & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
            return state  # libpq finds out what is wrong when it tries
        if event & select.POLLIN:
            ready |= _READ
        if event & select.POLLOUT:
            ready |= _WRITE
    return ready & state


async def readable_or_writable(fileno: int) -> tuple[bool, bool]:
    """Wait until the socket can be read or written; (readable, writable), as far as known."""
    ready = _ready_now(fileno, _READ | _WRITE) or await _wait(fileno, _READ | _WRITE)
    return bool(ready & _READ), bool(ready & _WRITE)


async def _wait(fileno: int, state: int) -> int:
    if state == _READ:
        await trio.lowlevel.wait_readable(fileno)
        return _READ
    if state == _WRITE:
        await trio.lowlevel.wait_writable(fileno)
        return _WRITE
    ready = 0
    async with trio.open_nursery() as nursery:  # both: whichever comes first

        async def on(event: int) -> None:
            nonlocal ready
            if event == _READ:
                await trio.lowlevel.wait_readable(fileno)
            else:
                await trio.lowlevel.wait_writable(fileno)
            ready |= event
            nursery.cancel_scope.cancel()

        nursery.start_soon(on, _READ)
        nursery.start_soon(on, _WRITE)
    return ready


async def connect(conninfo: str, **kwargs: Any) -> TrioConnection:
    """An autocommit `TrioConnection` to `conninfo` (libpq keywords in `kwargs` override it).
    Raises `psycopg.OperationalError` when no connection can be made."""
    dsn = psycopg.conninfo.make_conninfo(conninfo, **kwargs)
    timeout = psycopg.conninfo.timeout_from_conninfo(psycopg.conninfo.conninfo_to_dict(dsn))

    def blocking() -> pq.abc.PGconn:
        pgconn: pq.abc.PGconn = waiting.wait_conn(generators.connect(dsn), interval=0.1, timeout=timeout)
        return pgconn

    try:
        pgconn = await trio.to_thread.run_sync(blocking, abandon_on_cancel=True)
    except errors.Error:
        raise
    except Exception as exc:  # psycopg's private wait timeout
        raise errors.OperationalError(f"connection failed: {exc!r}") from None
    conn = TrioConnection(pgconn)
    try:
        await conn.set_autocommit(True)
    except BaseException:
        pgconn.finish()
        raise
    return conn


async def close(conn: TrioConnection) -> None:
    """Close without waiting on the server: tell Trio first (a task may be parked on the socket)."""
    if not conn.closed:
        try:
            trio.lowlevel.notify_closing(conn.pgconn.socket)
        except (psycopg.OperationalError, OSError, ValueError):
            pass
        await conn.close()
