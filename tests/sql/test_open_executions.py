"""`open_executions` (migration 0013): the executions whose status is not final, kept by
triggers on broker_orders whatever writes it; and status changes as HOT updates, the reason the
status index gave way to it."""

from __future__ import annotations

import msgspec
import psycopg

from api.enums import BrokerOrderStatus
from api.orders import BrokerOrder
from sql import Store
from tests.sql import new_id, order_claim, outbox_event, query


async def is_open(url: str, execution_id: str) -> bool:
    rows = await query(url, "SELECT 1 FROM open_executions WHERE execution_id = %s", execution_id)
    return bool(rows)


async def claimed(store: Store, broker_id: str) -> BrokerOrder:
    claim = order_claim(new_id(), broker_id)
    assert claim.execution is not None
    await store.claim_order(claim)
    return claim.execution


async def test_an_execution_is_open_from_its_insert_until_a_final_status(
    store: Store, broker_id: str, migrated_database_url: str
) -> None:
    pending = await claimed(store, broker_id)
    assert await is_open(migrated_database_url, pending.id)
    accepted = msgspec.structs.replace(pending, status=BrokerOrderStatus.ACCEPTED, sequence=2)
    await store.save_changes([(accepted, None, outbox_event(accepted, 2))])
    assert await is_open(migrated_database_url, pending.id)
    assert pending.id in {o.id for o in await store.load_open_executions()}

    canceled = msgspec.structs.replace(accepted, status=BrokerOrderStatus.CANCELED, sequence=3)
    await store.save_changes([(canceled, None, outbox_event(canceled, 3))])
    assert not await is_open(migrated_database_url, pending.id)
    assert pending.id not in {o.id for o in await store.load_open_executions()}


async def test_a_final_status_taken_back_reopens_and_a_final_insert_never_opens(
    store: Store, broker_id: str, migrated_database_url: str
) -> None:
    execution = await claimed(store, broker_id)
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        conn.execute("UPDATE broker_orders SET status = 'EXPIRED' WHERE id = %s", (execution.id,))
        assert not await is_open(migrated_database_url, execution.id)
        conn.execute("UPDATE broker_orders SET status = 'ACCEPTED' WHERE id = %s", (execution.id,))
        assert await is_open(migrated_database_url, execution.id)
        # several rows in one statement, some leaving and some staying open
        other = await claimed(store, broker_id)
        conn.execute(
            "UPDATE broker_orders SET status = CASE WHEN id = %s THEN 'FILLED' ELSE 'PARTIALLY_FILLED' END"
            " WHERE id IN (%s, %s)",
            (execution.id, execution.id, other.id),
        )
    assert not await is_open(migrated_database_url, execution.id)
    assert await is_open(migrated_database_url, other.id)

    rejected = order_claim(new_id(), broker_id)
    assert rejected.execution is not None
    rejected = msgspec.structs.replace(
        rejected,
        execution=msgspec.structs.replace(
            rejected.execution, status=BrokerOrderStatus.REJECTED, rejection_reason="refused"
        ),
    )
    await store.claim_order(rejected)
    assert rejected.execution is not None
    sql = "SELECT status FROM broker_orders WHERE id = %s"
    status = await query(migrated_database_url, sql, rejected.execution.id)
    assert status == [("REJECTED",)]
    assert not await is_open(migrated_database_url, rejected.execution.id)


async def test_a_status_change_is_a_heap_only_update(
    store: Store, broker_id: str, migrated_database_url: str
) -> None:
    """No index of broker_orders covers what an execution update changes (status, filled quantity,
    prices, fees, sequence, updated_at): each change is HOT, no index entry is written."""
    execution = await claimed(store, broker_id)
    with psycopg.connect(migrated_database_url) as conn:  # one transaction: its own counters
        conn.execute(
            "UPDATE broker_orders SET status = 'FILLED', filled_quantity = quantity, average_price = 1,"
            " fees = 2, sequence = sequence + 1, updated_at = now(), broker_order_id = 'B-1' WHERE id = %s",
            (execution.id,),
        )
        ((updated, hot),) = conn.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'broker_orders'"
        ).fetchall()
    assert (updated, hot) == (1, 1)
