"""Broker supervision in the store (migration 0002): status history, maintenance, runtime figures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from typing import Any

import msgspec
import psycopg
import pytest
import trio
import trio.testing
from psycopg import errors

from api.contracts import LatencyStats
from api.enums import ConnectionStatus
from sql import StatusChange, Store
from tests.sql import T0, broker_record, query

CONNECTED = ConnectionStatus.CONNECTED
DISCONNECTED = ConnectionStatus.DISCONNECTED
DEGRADED = ConnectionStatus.DEGRADED
MAINTENANCE = ConnectionStatus.MAINTENANCE


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


@asynccontextmanager
async def broker_row_locked(url: str, broker_id: str) -> AsyncIterator[None]:
    """Hold the broker's row FOR UPDATE from another connection: a write that touches or
    references it waits (and the writer with it) until the block exits."""

    def lock() -> psycopg.Connection[Any]:
        conn = psycopg.connect(url)
        conn.execute("SELECT 1 FROM broker_connections WHERE broker_id = %s FOR UPDATE", (broker_id,))
        return conn

    conn = await trio.to_thread.run_sync(lock)
    try:
        yield
    finally:
        await trio.to_thread.run_sync(conn.close)  # rolls back: the lock goes


async def as_one_batch(
    store: Store, url: str, broker_id: str, writes: list[Callable[[], Awaitable[object]]]
) -> None:
    """Run `writes`, the first alone (or, lingering for company, with the others), all the
    others queued in order behind it (the broker's row held meanwhile), so they reach the writer
    together: one batch, in submission order."""
    batches = store.writer_stats.batches
    async with trio.open_nursery() as nursery, broker_row_locked(url, broker_id):
        for write in writes:
            nursery.start_soon(write)
            await trio.testing.wait_all_tasks_blocked()  # queued before the next one starts
    # The first alone, then all the others; or all together (status writes linger for company).
    assert store.writer_stats.batches in (batches + 1, batches + 2)


# --- status history ----------------------------------------------------------------------------


async def test_status_history_round_trip_includes_the_change_before_since(
    store: Store, broker_id: str
) -> None:
    other = broker_record()
    await store.upsert_brokers([other])
    changes = [
        StatusChange(broker_id, DISCONNECTED, minutes(0), "starting"),
        StatusChange(broker_id, CONNECTED, minutes(1)),
        StatusChange(broker_id, DEGRADED, minutes(10), "p99 above 250 ms"),
        StatusChange(broker_id, MAINTENANCE, minutes(20), "operator: exchange upgrade"),
        StatusChange(broker_id, CONNECTED, minutes(30)),
    ]
    for change in changes:
        await store.record_status(change.broker_id, change.status, change.at, change.reason)
    await store.record_status(other.broker_id, DISCONNECTED, minutes(15), "not mine")

    # since inside: the change before it (DEGRADED at 10) is the status at 15
    assert await store.status_history(broker_id, minutes(15)) == changes[2:]
    # since exactly on a change: that change is inside, the one before it comes too
    assert await store.status_history(broker_id, minutes(20)) == changes[2:]
    assert await store.status_history(broker_id, minutes(-5)) == changes  # nothing before
    assert await store.status_history(broker_id, minutes(60)) == changes[-1:]  # the current status
    assert await store.status_history(other.broker_id, minutes(0)) == [
        StatusChange(other.broker_id, DISCONNECTED, minutes(15), "not mine")
    ]
    assert await store.status_history(broker_record().broker_id, minutes(0)) == []


async def test_status_history_times_come_back_in_utc(store: Store, broker_id: str) -> None:
    paris = timezone(timedelta(hours=1))
    at = datetime(2024, 3, 1, 15, 30, 0, 5, tzinfo=paris)
    await store.record_status(broker_id, "CONNECTED", at)  # a ConnectionStatus value will do
    (change,) = await store.status_history(broker_id, at)
    assert change.at == at and change.at.tzinfo is UTC
    assert change.status is CONNECTED


async def test_changes_at_the_same_instant_keep_their_order(
    store: Store, broker_id: str, migrated_database_url: str
) -> None:
    at = minutes(5)
    statuses = [DISCONNECTED, CONNECTED, DEGRADED, CONNECTED]
    for status in statuses:  # one after the other
        await store.record_status(broker_id, status, at)
    assert [c.status for c in await store.status_history(broker_id, at)] == statuses

    other = broker_record()
    await store.upsert_brokers([other])
    later = minutes(6)
    await as_one_batch(  # together: one batch
        store,
        migrated_database_url,
        other.broker_id,
        [partial(store.record_status, other.broker_id, s, later, f"#{n}") for n, s in enumerate(statuses)],
    )
    history = await store.status_history(other.broker_id, later)
    assert [(c.status, c.reason) for c in history] == [(s, f"#{n}") for n, s in enumerate(statuses)]


async def test_status_of_unknown_broker_fails_alone(store: Store, broker_id: str) -> None:
    ghost = broker_record().broker_id

    async def record_ghost() -> None:
        with pytest.raises(LookupError, match=f"broker {ghost} does not exist"):
            await store.record_status(ghost, CONNECTED, minutes(0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(record_ghost)
        nursery.start_soon(store.record_status, broker_id, CONNECTED, minutes(0), "fine")
    assert await store.status_history(broker_id, minutes(0)) == [
        StatusChange(broker_id, CONNECTED, minutes(0), "fine")
    ]
    with pytest.raises(ValueError, match="ONLINE"):
        await store.record_status(broker_id, "ONLINE", minutes(1))


async def test_bad_status_rows_are_refused_by_the_database(
    migrated_database_url: str, broker_id: str
) -> None:
    with psycopg.connect(migrated_database_url) as conn:
        with pytest.raises(errors.CheckViolation), conn.transaction():
            conn.execute(
                "INSERT INTO broker_status_transitions (broker_id, status, at) VALUES (%s, 'ONLINE', now())",
                (broker_id,),
            )
        with pytest.raises(errors.ForeignKeyViolation), conn.transaction():
            conn.execute(
                "INSERT INTO broker_status_transitions (broker_id, status, at)"
                " VALUES ('nobody', 'CONNECTED', now())"
            )
        with pytest.raises(errors.NotNullViolation), conn.transaction():
            conn.execute(
                "INSERT INTO broker_status_transitions (broker_id, status) VALUES (%s, 'CONNECTED')",
                (broker_id,),
            )


# --- pruning -----------------------------------------------------------------------------------

# Far before every other test's timestamps: the prune here deletes only this test's rows.
OLD = datetime(2001, 1, 1, tzinfo=UTC)


def old(hours: float) -> datetime:
    return OLD + timedelta(hours=hours)


async def test_prune_keeps_the_last_change_before_the_cut_off(store: Store) -> None:
    busy, quiet, recent = broker_record(), broker_record(), broker_record()
    await store.upsert_brokers([busy, quiet, recent])
    busy_changes = [
        StatusChange(busy.broker_id, CONNECTED, old(0)),
        StatusChange(busy.broker_id, DISCONNECTED, old(1), "reset"),
        StatusChange(busy.broker_id, CONNECTED, old(2)),
        StatusChange(busy.broker_id, DEGRADED, old(2)),  # same instant: the later one is kept
        StatusChange(busy.broker_id, CONNECTED, old(30)),
    ]
    quiet_changes = [StatusChange(quiet.broker_id, CONNECTED, old(-100))]
    recent_changes = [StatusChange(recent.broker_id, CONNECTED, old(25))]
    for change in [*busy_changes, *quiet_changes, *recent_changes]:
        await store.record_status(change.broker_id, change.status, change.at, change.reason)
    cut_off = old(24)
    window = {b.broker_id: await store.status_history(b.broker_id, cut_off) for b in (busy, quiet, recent)}

    assert await store.prune_status_history(cut_off) == 3  # busy's first three
    assert await store.status_history(busy.broker_id, OLD - timedelta(days=365)) == busy_changes[3:]
    assert await store.status_history(quiet.broker_id, OLD - timedelta(days=365)) == quiet_changes
    assert await store.status_history(recent.broker_id, OLD - timedelta(days=365)) == recent_changes
    # any window starting at the cut-off or later reads exactly what it read before
    for b in (busy, quiet, recent):
        assert await store.status_history(b.broker_id, cut_off) == window[b.broker_id]
    assert await store.prune_status_history(cut_off) == 0  # nothing more to take


# --- maintenance -------------------------------------------------------------------------------


async def test_maintenance_survives_upsert_and_restart(
    store: Store, broker_id: str, migrated_database_url: str
) -> None:
    assert broker_id not in await store.maintenance_flags()
    await store.set_maintenance(broker_id, True, "exchange upgrade", minutes(0))
    assert (await store.maintenance_flags())[broker_id] == ("exchange upgrade", minutes(0))

    # a configuration reload rewrites every other column
    reloaded = msgspec.structs.replace(broker_record(broker_id), name="Renamed", status="CONNECTED")
    await store.upsert_brokers([reloaded])
    flags = await store.maintenance_flags()
    assert flags[broker_id] == ("exchange upgrade", minutes(0))
    assert flags[broker_id][1].tzinfo is UTC
    assert {r.broker_id: r for r in await store.list_broker_records()}[broker_id].name == "Renamed"

    async with Store.open(migrated_database_url, pool_size=1) as restarted:
        assert (await restarted.maintenance_flags())[broker_id] == ("exchange upgrade", minutes(0))


async def test_maintenance_on_again_keeps_its_start_and_off_clears_it(
    store: Store, broker_id: str, migrated_database_url: str
) -> None:
    await store.set_maintenance(broker_id, True, None, minutes(0))
    assert (await store.maintenance_flags())[broker_id] == (None, minutes(0))
    await store.set_maintenance(broker_id, True, "extended: vendor ticket 42", minutes(30))
    assert (await store.maintenance_flags())[broker_id] == ("extended: vendor ticket 42", minutes(0))
    await store.set_maintenance(broker_id, False, "ignored", minutes(60))
    assert broker_id not in await store.maintenance_flags()
    rows = await query(
        migrated_database_url,
        "SELECT maintenance, maintenance_reason, maintenance_since FROM broker_connections"
        " WHERE broker_id = %s",
        broker_id,
    )
    assert rows == [(False, None, None)]
    await store.set_maintenance(broker_id, True, "again", minutes(90))  # a new one starts anew
    assert (await store.maintenance_flags())[broker_id] == ("again", minutes(90))


async def test_maintenance_changes_in_one_batch_apply_in_order(
    store: Store, broker_id: str, migrated_database_url: str
) -> None:
    changes = [
        (False, None, -1),
        (True, "a", 0),
        (True, "b", 1),
        (False, None, 2),
        (True, "c", 3),
        (True, "d", 4),
    ]
    await as_one_batch(
        store,
        migrated_database_url,
        broker_id,
        [partial(store.set_maintenance, broker_id, on, reason, minutes(at)) for on, reason, at in changes],
    )
    assert (await store.maintenance_flags())[broker_id] == ("d", minutes(3))


async def test_maintenance_of_unknown_broker_is_refused(store: Store) -> None:
    with pytest.raises(LookupError, match="does not exist"):
        await store.set_maintenance(broker_record().broker_id, True, "x", minutes(0))


async def test_inconsistent_maintenance_rows_are_refused_by_the_database(
    migrated_database_url: str, broker_id: str
) -> None:
    with psycopg.connect(migrated_database_url) as conn:
        for assignments in (
            "maintenance = true",  # without since
            "maintenance_since = now()",  # since without maintenance
            "maintenance_reason = 'why'",  # a reason out of maintenance
        ):
            with pytest.raises(errors.CheckViolation), conn.transaction():
                conn.execute(
                    f"UPDATE broker_connections SET {assignments} WHERE broker_id = %s".encode(), (broker_id,)
                )


# --- runtime figures ---------------------------------------------------------------------------


async def test_runtime_figures_are_written_back(store: Store, migrated_database_url: str) -> None:
    record = broker_record()
    await store.upsert_brokers([record])
    (before,) = await query(
        migrated_database_url,
        "SELECT updated_at FROM broker_connections WHERE broker_id = %s",
        record.broker_id,
    )
    stats = LatencyStats(average_ms=2.5, p95_ms=11.125, p99_ms=40.0)
    await store.update_broker_runtime(record.broker_id, DEGRADED, stats, minutes(3))
    stored = {r.broker_id: r for r in await store.list_broker_records()}[record.broker_id]
    assert stored == msgspec.structs.replace(
        record, status="DEGRADED", latency_stats=stats, last_connected_at=minutes(3)
    )
    (after,) = await query(
        migrated_database_url,
        "SELECT updated_at FROM broker_connections WHERE broker_id = %s",
        record.broker_id,
    )
    assert after[0] > before[0]

    # None keeps the last connection time (the broker has not connected again)
    await store.update_broker_runtime(record.broker_id, DISCONNECTED, LatencyStats(), None)
    stored = {r.broker_id: r for r in await store.list_broker_records()}[record.broker_id]
    assert (stored.status, stored.latency_stats, stored.last_connected_at) == (
        "DISCONNECTED",
        LatencyStats(),
        minutes(3),
    )


async def test_runtime_updates_in_one_batch_last_wins(
    store: Store, broker_id: str, migrated_database_url: str
) -> None:
    updates = [
        (DISCONNECTED, LatencyStats(), None),  # alone: holds the writer
        (CONNECTED, LatencyStats(1.0, 2.0, 3.0), minutes(1)),
        (DEGRADED, LatencyStats(4.0, 5.0, 6.0), minutes(2)),
        (DISCONNECTED, LatencyStats(7.0, 8.0, 9.0), None),  # keeps the 2nd's connection time
    ]
    await as_one_batch(
        store,
        migrated_database_url,
        broker_id,
        [partial(store.update_broker_runtime, broker_id, *update) for update in updates],
    )
    stored = {r.broker_id: r for r in await store.list_broker_records()}[broker_id]
    assert (stored.status, stored.latency_stats, stored.last_connected_at) == (
        "DISCONNECTED",
        LatencyStats(7.0, 8.0, 9.0),
        minutes(2),
    )


async def test_runtime_update_of_unknown_broker_or_status_is_refused(store: Store, broker_id: str) -> None:
    with pytest.raises(LookupError, match="does not exist"):
        await store.update_broker_runtime(broker_record().broker_id, CONNECTED, LatencyStats(), None)
    with pytest.raises(ValueError, match="ONLINE"):
        await store.update_broker_runtime(broker_id, "ONLINE", LatencyStats(), None)


async def test_runtime_update_leaves_maintenance_alone(store: Store, broker_id: str) -> None:
    await store.set_maintenance(broker_id, True, "upgrade", minutes(0))
    await store.update_broker_runtime(broker_id, CONNECTED, LatencyStats(1.0, 1.0, 1.0), minutes(1))
    assert (await store.maintenance_flags())[broker_id] == ("upgrade", minutes(0))
