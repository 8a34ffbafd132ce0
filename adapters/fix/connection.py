"""The FIX store's dedicated PostgreSQL connections: `DedicatedConnection` (a sync connection used
from worker threads) and `TrioLane` (a connection driven by Trio itself, `sql.trio_pg`: no
thread, so the hot statements never contend for the GIL with the Trio thread). Each is used one
call at a time.

Guarantees (both): every call is bounded by `timeout` (trio's deadline on our side; the store sets
`statement_timeout` and libpq's TCP timeouts on the server's). A call that times out or is
cancelled abandons its thread and the connection with it (the next call reconnects; the
abandoned thread closes the old one when it returns) and raises `StoreUnavailable` or
`Cancelled`: the outcome of that call is unknown to the caller. A psycopg error becomes
`StoreUnavailable`; a broken connection is replaced at the next call, after `on_connect` (which
may raise: the new connection is closed and the call fails) has set it up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import trio

from sql import trio_pg
from sql.trio_pg import TrioConnection
from sql.writer import connect as connect_database
from sql.writer import connect_trio

__all__ = ["Connection", "DedicatedConnection", "StoreUnavailable", "TrioConnection", "TrioLane"]

R = TypeVar("R")
Connection = psycopg.Connection[Any]


class StoreUnavailable(Exception):
    """The database did not answer in time or failed: the outcome of the call is unknown."""


class DedicatedConnection:
    """See the module docstring. `label` names it in errors (the FIX session id)."""

    def __init__(
        self,
        url: str,
        *,
        label: str,
        timeout: float,
        on_connect: Callable[[Connection], None] | None = None,
    ) -> None:
        self._url = url
        self._label = label
        self._timeout = timeout
        self._on_connect = on_connect
        self._conn: Connection | None = None
        self._generation = 0
        self._limiter = trio.CapacityLimiter(1)

    def __repr__(self) -> str:
        return f"<DedicatedConnection {self._label} {'open' if self._conn is not None else 'idle'}>"

    async def run(self, work: Callable[[Connection], R]) -> R:
        """`work(connection)` in a worker thread, after any call before it (module docstring)."""
        generation = self._generation

        def call() -> R:
            conn = self._connection()
            try:
                return work(conn)
            finally:
                if self._generation != generation:  # abandoned meanwhile: nobody else will close it
                    conn.close()

        try:
            with trio.fail_after(self._timeout):
                return await trio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=self._limiter)
        except trio.TooSlowError:
            self._discard()
            raise StoreUnavailable(
                f"{self._label}: no answer from PostgreSQL within {self._timeout}s"
            ) from None
        except trio.Cancelled:
            self._discard()
            raise
        except psycopg.Error as exc:
            raise StoreUnavailable(f"{self._label}: PostgreSQL failed: {exc}") from exc

    async def aclose(self) -> None:
        """Close the connection (waiting for a call in flight, bounded by `timeout`)."""
        with trio.move_on_after(self._timeout) as scope:
            async with self._limiter:
                conn, self._conn = self._conn, None
                if conn is not None:
                    await trio.to_thread.run_sync(conn.close)
        if scope.cancelled_caught:
            self._discard()

    def _connection(self) -> Connection:
        """The open connection (worker thread only), reconnecting when it is gone or broken."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = connect_database(self._url, statement_timeout=self._timeout)
            if self._on_connect is not None:
                try:
                    self._on_connect(conn)
                except BaseException:
                    conn.close()
                    raise
            self._conn = conn
        return conn

    def _discard(self) -> None:
        """Forget the connection an abandoned thread still uses; that thread closes it."""
        self._generation += 1
        self._conn = None


class TrioLane:
    """One `TrioConnection`, one call at a time (module docstring). A call interrupted between
    two protocol steps (its deadline, a cancellation) closes the connection: the next call
    reconnects."""

    def __init__(self, url: str, *, label: str, timeout: float) -> None:
        self._url = url
        self._label = label
        self._timeout = timeout
        self._conn: TrioConnection | None = None
        self._lock = trio.Lock()

    def __repr__(self) -> str:
        return f"<TrioLane {self._label} {'open' if self._conn is not None else 'idle'}>"

    async def run(self, work: Callable[[TrioConnection], Awaitable[R]]) -> R:
        async with self._lock:
            try:
                with trio.fail_after(self._timeout):
                    conn = self._conn
                    if conn is None or conn.closed or conn.broken or conn.interrupted:
                        await self._drop()
                        conn = self._conn = await connect_trio(self._url, statement_timeout=self._timeout)
                    return await work(conn)
            except trio.TooSlowError:
                await self._drop()
                raise StoreUnavailable(
                    f"{self._label}: no answer from PostgreSQL in {self._timeout}s"
                ) from None
            except psycopg.Error as exc:
                if self._conn is not None and (self._conn.broken or self._conn.interrupted):
                    await self._drop()
                raise StoreUnavailable(f"{self._label}: PostgreSQL failed: {exc}") from exc
            except BaseException:
                if self._conn is not None and self._conn.interrupted:
                    await self._drop()
                raise

    async def aclose(self) -> None:
        """Close the connection (waiting for a call in flight, bounded by `timeout`)."""
        with trio.move_on_after(self._timeout):
            async with self._lock:
                await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(self._timeout):
                await trio_pg.close(conn)
