"""Periodic duties of the daemon: closing the simulated trading day, refreshing read models and
writing the execution reports a crash or an outage cut short."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Protocol

import trio

from nursery.brokers import BrokerHandle
from sql.records import StatusChange
from sql.store import Store
from sql.writer import DatabaseUnavailable

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


async def restore_broker_state(store: Store, handles: Sequence[BrokerHandle], now: datetime) -> None:
    """What a previous run left: each broker's status history of the last day (its uptime) and
    maintenance set by an operator."""
    flags = await store.maintenance_flags()
    for handle in handles:
        history = await store.status_history(handle.broker_id, now - timedelta(days=1))
        handle.load_history(history, started=history[0].at if history else None)
        if handle.broker_id in flags:
            reason, _since = flags[handle.broker_id]
            handle.set_maintenance(True, reason)


async def record_status_changes(
    store: Store, changes: trio.MemoryReceiveChannel[StatusChange], done: trio.Event
) -> None:
    """Persist every broker status change (uptime survives restarts), until the channel closes;
    then set `done`. During a database outage the changes wait (in the channel) for its end."""
    try:
        await _record(store, changes)
    finally:
        done.set()


async def _record(store: Store, changes: trio.MemoryReceiveChannel[StatusChange]) -> None:
    async with changes:
        async for change in changes:
            while True:
                try:
                    await store.record_status(change.broker_id, change.status, change.at, change.reason)
                except DatabaseUnavailable:  # kept (the channel buffers the rest) until it is back
                    await store.wait_available()
                    continue
                except Exception as exc:
                    log.warning(
                        "status change not persisted",
                        extra={"broker_id": change.broker_id, "error": repr(exc)},
                    )
                break


async def persist_broker_runtime(store: Store, handles: Sequence[BrokerHandle], every: float) -> None:
    """Write each broker's live figures (status, measured latency) back to broker_connections."""
    while True:
        await trio.sleep(every)
        for handle in handles:
            try:
                await store.update_broker_runtime(
                    handle.broker_id, handle.effective_status, handle.latency_stats(), handle.last_connected
                )
            except Exception as exc:
                log.warning(
                    "broker figures not persisted", extra={"broker_id": handle.broker_id, "error": repr(exc)}
                )


#: The materialized views aggregate the whole history, so a refresh grows with it: it may take
#: at most this share of the time (the next one waits that much longer than `every` if need be).
REFRESH_DUTY = 0.1


class _Refreshes(Protocol):
    async def refresh_views(self) -> None: ...


async def refresh_views_every(store: _Refreshes, every: float) -> None:
    """Refresh the read models every `every` seconds, or less often when a refresh takes more
    than `REFRESH_DUTY` of that: years of history must not keep a core and a pooled connection
    busy most of the time. A failed refresh is logged and tried again at the next turn."""
    pause = every
    while True:
        await trio.sleep(pause)
        started = trio.current_time()
        try:
            await store.refresh_views()
        except Exception as exc:
            log.warning("refreshing read models failed", extra={"error": repr(exc)})
        took = trio.current_time() - started
        pause = max(every, took * (1 / REFRESH_DUTY - 1))
        if pause > every:
            log.warning(
                "read models are slow to refresh; refreshing less often",
                extra={"took_s": round(took, 3), "next_in_s": round(pause, 1), "configured_s": every},
            )


#: Executions finished without a report (a crash, a database outage while reporting) are
#: reported by a pass over this much history at start, then every `BACKFILL_EVERY_S` over
#: the last `BACKFILL_RECENT`, and at once when the orphan sweeper took over a dead daemon's
#: orders (`Prompt`): its reports died with it.
BACKFILL_AT_START = timedelta(days=7)
BACKFILL_EVERY_S = 600.0
BACKFILL_RECENT = timedelta(days=1)
#: After start, a pass leaves the executions finished this recently to this daemon's own report
#: tasks (which wait for the market data to cover the execution's end; a backfill cannot). A
#: dead daemon's executions are older than that by the time its lease lapsed (`nursery.lease`).
BACKFILL_SETTLE = timedelta(seconds=5)


class Prompt:
    """Wakes a periodic duty early: `set` (from any task, never blocks) ends its current or
    next `wait` at once; several sets before a wait ends count once."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def __repr__(self) -> str:
        return f"<Prompt set={self._event.is_set()}>"

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        """Until `set` was called (before or during the wait) or `timeout` seconds passed."""
        with trio.move_on_after(timeout):
            await self._event.wait()
        self._event = trio.Event()


async def backfill_reports(
    backfill: Callable[[datetime, datetime | None], Awaitable[int]],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    every: float = BACKFILL_EVERY_S,
    prompt: Prompt | None = None,
) -> None:
    """Run `backfill` (the reporter's: it never raises) at start over `BACKFILL_AT_START`,
    then every `every` seconds, or as soon as `prompt` is set, over `BACKFILL_RECENT` up to
    `BACKFILL_SETTLE` ago: a report lost to an outage is written within `every`, not at the
    next start, and one a dead peer left is written once its orders are taken over."""
    await backfill(clock() - BACKFILL_AT_START, None)
    prompt = prompt if prompt is not None else Prompt()
    while True:
        await prompt.wait(every)
        now = clock()
        await backfill(now - BACKFILL_RECENT, now - BACKFILL_SETTLE)
