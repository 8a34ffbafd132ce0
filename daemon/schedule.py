"""Periodic duties of the daemon: closing the simulated trading day and refreshing read models."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, time, timedelta

import trio

from sql.store import Store

log = logging.getLogger(__name__)


def next_daily(now: datetime, hhmm: str) -> datetime:
    """The next moment strictly after `now` (aware) whose UTC time of day is `hhmm`."""
    hour, minute = (int(part) for part in hhmm.split(":"))
    now = now.astimezone(UTC)
    candidate = datetime.combine(now.date(), time(hour, minute), tzinfo=UTC)
    return candidate if candidate > now else candidate + timedelta(days=1)


async def close_sessions_daily(
    closers: Sequence[Callable[[], None]],
    hhmm: str,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """At `hhmm` UTC every day, call each closer (a venue's `end_of_day`: DAY orders expire)."""
    while True:
        now = clock()
        await trio.sleep((next_daily(now, hhmm) - now).total_seconds())
        log.info("session close: expiring DAY orders", extra={"venues": len(closers)})
        for close in closers:
            try:
                close()
            except Exception:
                log.exception("session close failed for a venue")


async def refresh_views_every(store: Store, every: float) -> None:
    while True:
        await trio.sleep(every)
        try:
            await store.refresh_views()
        except Exception as exc:
            log.warning("refreshing read models failed", extra={"error": repr(exc)})
