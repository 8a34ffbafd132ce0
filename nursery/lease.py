"""This daemon's lease (`sql.leases`): registered at start, renewed every `RENEW_S`, ended on a
clean stop.

Other daemons take over what a daemon leaves once its lease is `LEASE_S` old. Judging another
daemon's lease is only fair after this daemon has itself renewed its own without a break for
`LEASE_S`: after a database outage every lease looks stale, and the others need that long to
renew theirs. `vouched_for()` says how long that has been.

A renewal that fails (the database is unavailable) breaks the run; the task waits for the
database and goes on. Nothing here raises into the caller's nursery because PostgreSQL failed.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from pathlib import Path

import psycopg
import trio

from sql.leases import DaemonSeat
from sql.store import Store
from sql.writer import DatabaseUnavailable, WriterClosed, WriteTimeout

log = logging.getLogger(__name__)

#: How often the lease is renewed, and how old it must be before others take over (s).
RENEW_S = 2.0
LEASE_S = 10.0
#: A clean stop ends the lease within this long, or leaves it to lapse.
END_TIMEOUT_S = 5.0

#: What a write raises when the database is not answering (the callers wait for it and go on).
DATABASE_FAILURES = (DatabaseUnavailable, WriteTimeout, psycopg.Error)


def new_seat(instance_id: str, state_dir: Path | str) -> DaemonSeat:
    """This process run's identity: a fresh id, where it runs."""
    return DaemonSeat(
        id=str(uuid.uuid4()),
        instance_id=instance_id,
        host=socket.gethostname(),
        pid=os.getpid(),
        state_dir=str(Path(state_dir).resolve()),
    )


class Lease:
    def __init__(
        self, store: Store, seat: DaemonSeat, *, renew_s: float = RENEW_S, lease_s: float = LEASE_S
    ) -> None:
        self._store = store
        self.seat = seat
        self.renew_s = renew_s
        self.lease_s = lease_s
        #: trio time since which every renewal succeeded (None: the last one failed).
        self._unbroken_since: float | None = None
        self.renewals = 0
        self.failures = 0

    def __repr__(self) -> str:
        return f"<Lease {self.seat.id} vouched_for={self.vouched_for():.1f}s>"

    @property
    def id(self) -> str:
        return self.seat.id

    def vouched_for(self) -> float:
        """Seconds this daemon has renewed its lease without a break (0: it is broken now)."""
        if self._unbroken_since is None:
            return 0.0
        return trio.current_time() - self._unbroken_since

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register (waiting for the database if it is down), report started, renew until
        cancelled, then end the lease (bounded)."""
        await self._register()
        task_status.started()
        try:
            while True:
                await trio.sleep(self.renew_s)
                await self._renew()
        finally:
            with trio.move_on_after(END_TIMEOUT_S) as scope:
                scope.shield = True
                try:
                    await self._store.end_lease(self.seat.id)
                except (*DATABASE_FAILURES, WriterClosed) as exc:
                    log.warning("lease not ended; it will lapse", extra={"error": repr(exc)})

    async def _register(self) -> None:
        while True:
            try:
                ended = await self._store.register_daemon(self.seat)
            except DATABASE_FAILURES as exc:
                log.warning("cannot register the daemon's lease yet", extra={"error": repr(exc)})
                await self._store.wait_available()
                await trio.sleep(self.renew_s / 4)
                continue
            self._unbroken_since = trio.current_time()
            log.info(
                "lease registered",
                extra={"daemon_id": self.seat.id, "predecessors_ended": len(ended)},
            )
            return

    async def _renew(self) -> None:
        try:
            seen_at = await self._store.renew_lease(self.seat.id)
        except DATABASE_FAILURES as exc:
            self.failures += 1
            if self._unbroken_since is not None:
                log.warning("lease not renewed", extra={"error": repr(exc)})
            self._unbroken_since = None
            await self._store.wait_available()
            return
        if seen_at is None:  # ended by someone (it had lapsed and was pruned, or ended)
            log.warning("lease had ended; registering again", extra={"daemon_id": self.seat.id})
            self._unbroken_since = None
            await self._register()
            return
        self.renewals += 1
        if self._unbroken_since is None:
            self._unbroken_since = trio.current_time()
