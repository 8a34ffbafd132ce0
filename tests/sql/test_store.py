from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import pytest
import trio

from api.contracts import OrderRoutingResponse
from api.enums import BrokerOrderStatus, RoutingStatus
from api.orders import BrokerOrder, OrderFill
from sql import BrokerRecord, ClaimResult, DuplicateAttempt, OrderClaim, Store
from sql.store import _SELECT_UNPUBLISHED
from tests.sql import T0, broker_record, execution, new_id, order_claim, outbox_event, query


def response(order_id: str, execution_id: str | None, broker_id: str | None) -> OrderRoutingResponse:
    return OrderRoutingResponse(
        routing_id=new_id(),
        order_id=order_id,
        status=RoutingStatus.ACCEPTED if broker_id else RoutingStatus.REJECTED,
        timestamp=T0 + timedelta(milliseconds=3),
        selected_broker=broker_id,
        rejection_reason=None if broker_id else "no eligible broker",
        estimated_execution_time=0.25,
        execution_id=execution_id,
    )


def fill(order: BrokerOrder, broker_fill_id: str, quantity: str, price: str, seconds: int) -> OrderFill:
    return OrderFill(
        id=new_id(),
        broker_fill_id=broker_fill_id,
        quantity=Decimal(quantity),
        price=Decimal(price),
        fees=Decimal("0.01"),
        timestamp=T0 + timedelta(seconds=seconds),
        venue="XNAS",
    )


def with_fill(order: BrokerOrder, new: OrderFill, *, status: BrokerOrderStatus) -> BrokerOrder:
    fills = (*order.fills, new)
    filled = sum((f.quantity for f in fills), Decimal(0))
    average = sum((f.quantity * f.price for f in fills), Decimal(0)) / filled
    return msgspec.structs.replace(
        order,
        status=status,
        fills=fills,
        filled_quantity=filled,
        average_price=average.quantize(Decimal("0.00000001")),
        fees=sum((f.fees for f in fills), Decimal(0)),
        sequence=order.sequence + 1,
        updated_at=new.timestamp,
    )


# --- claims ------------------------------------------------------------------------------------


async def test_first_claim_is_claimed(store: Store, broker_id: str) -> None:
    claim = order_claim(new_id(), broker_id)
    assert claim.execution is not None
    result = await store.claim_order(claim)
    assert result == ClaimResult(True, claim.request_hash, None, claim.execution.id, claim.routing_id)
    assert await store.get_claim(claim.order_id) == ClaimResult(
        False, claim.request_hash, None, claim.execution.id, claim.routing_id
    )
    assert await store.load_execution(claim.execution.id) == claim.execution
    assert await store.execution_events(claim.execution.id) == [claim.event]


async def test_repeat_claim_gets_the_stored_row(store: Store, broker_id: str) -> None:
    order_id = new_id()
    first = order_claim(order_id, broker_id)
    assert first.execution is not None
    assert (await store.claim_order(first)).claimed
    repeat = msgspec.structs.replace(order_claim(order_id, broker_id), request_hash="other")
    result = await store.claim_order(repeat)
    assert result == ClaimResult(False, first.request_hash, None, first.execution.id, first.routing_id)
    assert repeat.execution is not None
    assert await store.load_execution(repeat.execution.id) is None  # the loser's attempt was not written


async def test_claim_race_between_20_tasks_claims_once(
    store: Store, broker_id: str, migrated_database_url: str
) -> None:
    order_id = new_id()
    claims = [order_claim(order_id, broker_id) for _ in range(20)]
    results: list[ClaimResult] = []

    async def claim(c: OrderClaim) -> None:
        results.append(await store.claim_order(c))

    async with trio.open_nursery() as nursery:
        for c in claims:
            nursery.start_soon(claim, c)
    assert sum(r.claimed for r in results) == 1
    assert len({r.execution_id for r in results}) == 1
    rows = await query(
        migrated_database_url, "SELECT count(*) FROM broker_orders WHERE order_id = %s", order_id
    )
    assert rows == [(1,)]


async def test_claim_race_between_two_stores_claims_once(
    store: Store, broker_id: str, migrated_database_url: str
) -> None:
    order_ids = [new_id() for _ in range(10)]
    results: dict[str, list[bool]] = {order_id: [] for order_id in order_ids}

    async def claim(target: Store, order_id: str) -> None:
        results[order_id].append((await target.claim_order(order_claim(order_id, broker_id))).claimed)

    async with Store.open(migrated_database_url, pool_size=2) as other, trio.open_nursery() as nursery:
        for order_id in order_ids:
            for target in (store, other, store, other):
                nursery.start_soon(claim, target, order_id)
    assert all(sorted(flags) == [False, False, False, True] for flags in results.values()), results


async def test_claim_with_known_answer_replays_it(store: Store) -> None:
    order_id = new_id()
    answer = response(order_id, None, None)
    claim = msgspec.structs.replace(order_claim(order_id, None), response=answer)
    assert await store.claim_order(claim) == ClaimResult(
        True, claim.request_hash, answer, None, claim.routing_id
    )
    again = await store.claim_order(order_claim(order_id, None))
    assert again == ClaimResult(False, claim.request_hash, answer, None, claim.routing_id)


async def test_claims_that_cannot_be_stored_exactly_are_refused(store: Store, broker_id: str) -> None:
    claim = order_claim(new_id(), broker_id)
    with pytest.raises(ValueError, match="asset_class"):
        await store.claim_order(msgspec.structs.replace(claim, asset_class=None))
    with pytest.raises(ValueError, match="event"):
        await store.claim_order(msgspec.structs.replace(claim, execution=None, asset_class=None))
    with pytest.raises(ValueError, match="decimal places"):
        await store.claim_order(msgspec.structs.replace(claim, arrival_price=Decimal("1.123456789")))
    assert await store.get_claim(claim.order_id) is None


# --- transitions -------------------------------------------------------------------------------


async def test_transitions_load_back_exactly(store: Store, broker_id: str) -> None:
    claim = order_claim(new_id(), broker_id)
    assert claim.execution is not None
    await store.claim_order(claim)
    accepted = msgspec.structs.replace(
        claim.execution,
        status=BrokerOrderStatus.ACCEPTED,
        broker_order_id="B-1",
        sequence=2,
        updated_at=T0 + timedelta(milliseconds=1),
    )
    await store.save_changes([(accepted, None, outbox_event(accepted, 2))])
    partial = with_fill(
        accepted, fill(accepted, "F-1", "40.25", "187.11", 2), status=BrokerOrderStatus.PARTIALLY_FILLED
    )
    await store.save_changes([(partial, partial.fills[-1], outbox_event(partial, 3))])
    done = with_fill(
        partial, fill(partial, "F-2", "60.25", "187.10000001", 1), status=BrokerOrderStatus.FILLED
    )
    await store.save_changes([(done, done.fills[-1], outbox_event(done, 4))])

    loaded = await store.load_execution(done.id)
    assert loaded is not None
    # fills come back by timestamp: F-2 happened before F-1
    assert loaded == msgspec.structs.replace(done, fills=(done.fills[1], done.fills[0]))
    assert loaded.filled_quantity == Decimal("100.5")
    assert str(loaded.filled_quantity) == "100.5"  # no trailing zeros from DECIMAL(20, 8)
    assert loaded.average_price == done.average_price
    assert loaded.created_at.tzinfo is UTC and loaded.updated_at == done.updated_at
    assert [e.sequence for e in await store.execution_events(done.id)] == [1, 2, 3, 4]
    assert await store.load_latest_execution(claim.order_id) == loaded


async def test_a_fill_is_stored_once(store: Store, broker_id: str) -> None:
    claim = order_claim(new_id(), broker_id)
    assert claim.execution is not None
    await store.claim_order(claim)
    partial = with_fill(
        claim.execution,
        fill(claim.execution, "F-dup", "1", "10", 1),
        status=BrokerOrderStatus.PARTIALLY_FILLED,
    )
    await store.save_changes([(partial, partial.fills[0], outbox_event(partial, 2))])
    await store.save_changes([(partial, partial.fills[0], outbox_event(partial, 2))])  # replayed
    replay = msgspec.structs.replace(partial.fills[0], id=new_id())  # same broker fill id, other id
    await store.save_changes([(partial, replay, None)])
    loaded = await store.load_execution(partial.id)
    assert loaded is not None and loaded.fills == partial.fills
    assert len(await store.execution_events(partial.id)) == 2


async def test_transition_of_unknown_execution_fails_alone(store: Store, broker_id: str) -> None:
    ghost = execution(new_id(), broker_id)
    claim = order_claim(new_id(), broker_id)
    assert claim.execution is not None
    await store.claim_order(claim)
    accepted = msgspec.structs.replace(claim.execution, status=BrokerOrderStatus.ACCEPTED, sequence=2)

    async def save_ghost() -> None:
        with pytest.raises(LookupError, match=ghost.id):
            await store.save_changes([(ghost, None, None)])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(save_ghost)
        nursery.start_soon(store.save_changes, [(accepted, None, None)])
    assert await store.load_execution(accepted.id) == accepted


async def test_failover_attempt_becomes_the_latest(store: Store, broker_id: str) -> None:
    claim = order_claim(new_id(), broker_id)
    assert claim.execution is not None
    await store.claim_order(claim)
    first = msgspec.structs.replace(claim.execution, status=BrokerOrderStatus.CANCELED, sequence=2)
    await store.save_changes([(first, None, outbox_event(first, 2))])
    second = execution(claim.order_id, broker_id, at=T0 + timedelta(seconds=1), attempt=2)
    await store.start_attempt(second, "EQUITY", outbox_event(second, 1))
    assert await store.load_latest_execution(claim.order_id) == second
    assert (await store.get_claim(claim.order_id)) == ClaimResult(
        False, claim.request_hash, None, second.id, claim.routing_id
    )
    open_ids = {o.id for o in await store.load_open_executions()}
    assert second.id in open_ids and first.id not in open_ids
    assert await store.execution_events(second.id) == [outbox_event(second, 1)]


# --- attempt numbers ---------------------------------------------------------------------------


async def claimed(store: Store, broker_id: str, *, attempt: int = 1) -> BrokerOrder:
    claim = order_claim(new_id(), broker_id)
    assert claim.execution is not None
    claim = msgspec.structs.replace(
        claim, execution=msgspec.structs.replace(claim.execution, attempt=attempt)
    )
    assert (await store.claim_order(claim)).claimed
    assert claim.execution is not None
    return claim.execution


async def test_claim_stores_the_callers_attempt_number(
    store: Store, broker_id: str, migrated_database_url: str
) -> None:
    first = await claimed(store, broker_id, attempt=3)  # whatever the engine derived its ids from
    rows = await query(migrated_database_url, "SELECT attempt FROM broker_orders WHERE id = %s", first.id)
    assert rows == [(3,)]
    loaded = await store.load_execution(first.id)
    assert loaded == first and loaded.attempt == 3


async def test_attempt_is_inserted_with_the_given_number_not_the_next_one(
    store: Store, broker_id: str
) -> None:
    first = await claimed(store, broker_id)
    fifth = execution(first.order_id, broker_id, at=T0 + timedelta(seconds=1), attempt=5)
    await store.start_attempt(fifth, "EQUITY")
    third = execution(first.order_id, broker_id, at=T0 + timedelta(seconds=2), attempt=3)
    await store.start_attempt(third, "EQUITY")  # a lower number after a higher one: as given
    assert [(o.id, o.attempt) for o in await store.load_attempts(first.order_id)] == [
        (first.id, 1),
        (third.id, 3),
        (fifth.id, 5),
    ]
    assert await store.load_latest_execution(first.order_id) == fifth  # the highest number


async def test_duplicate_attempt_is_refused_and_nothing_of_it_is_written(
    store: Store, broker_id: str
) -> None:
    first = await claimed(store, broker_id)
    second = execution(first.order_id, broker_id, attempt=2)
    await store.start_attempt(second, "EQUITY")
    again = execution(first.order_id, broker_id, attempt=2)  # other ids, same number
    with pytest.raises(DuplicateAttempt, match=f"order {first.order_id} already has attempt 2") as caught:
        await store.start_attempt(again, "EQUITY", outbox_event(again, 1))
    assert (caught.value.order_id, caught.value.attempt, caught.value.existing) == (
        first.order_id,
        2,
        second.id,
    )
    assert await store.load_execution(again.id) is None
    assert await store.execution_events(again.id) == []  # its event was rolled back with it

    retried = msgspec.structs.replace(second, attempt=3)  # same execution id, other number
    with pytest.raises(DuplicateAttempt, match=f"execution {second.id} already exists"):
        await store.start_attempt(retried, "EQUITY")
    stolen = msgspec.structs.replace(
        execution(first.order_id, broker_id, attempt=4), client_order_id=second.client_order_id
    )
    with pytest.raises(DuplicateAttempt, match=f"client order id {second.client_order_id} is already used"):
        await store.start_attempt(stolen, "EQUITY")
    assert [o.attempt for o in await store.load_attempts(first.order_id)] == [1, 2]


async def test_duplicate_attempts_in_one_batch_only_the_first_is_written(
    store: Store, broker_id: str
) -> None:
    first = await claimed(store, broker_id)
    rivals = [execution(first.order_id, broker_id, attempt=2) for _ in range(5)]
    bystander = await claimed(store, broker_id)
    bystander_second = execution(bystander.order_id, broker_id, attempt=2)
    outcomes: dict[str, bool] = {}

    async def start(order: BrokerOrder) -> None:
        try:
            await store.start_attempt(order, "EQUITY")
            outcomes[order.id] = True
        except DuplicateAttempt:
            outcomes[order.id] = False

    async with trio.open_nursery() as nursery:  # the writer takes them as one batch
        for order in [*rivals, bystander_second]:
            nursery.start_soon(start, order)
    assert outcomes[bystander_second.id] is True
    assert sum(outcomes[r.id] for r in rivals) == 1
    attempts = await store.load_attempts(first.order_id)
    assert [o.attempt for o in attempts] == [1, 2] and outcomes[attempts[1].id]
    assert [o.attempt for o in await store.load_attempts(bystander.order_id)] == [1, 2]


async def test_attempt_of_an_unclaimed_order_or_bad_number_is_refused(store: Store, broker_id: str) -> None:
    orphan = execution(new_id(), broker_id, attempt=2)
    with pytest.raises(LookupError, match=f"order {orphan.order_id} was never claimed"):
        await store.start_attempt(orphan, "EQUITY")
    first = await claimed(store, broker_id)
    for bad in (0, -1, 32768):
        with pytest.raises(ValueError, match=f"attempt {bad} is not in 1..32767"):
            await store.start_attempt(execution(first.order_id, broker_id, attempt=bad), "EQUITY")


async def test_load_attempts_by_number_with_fills(store: Store, broker_id: str) -> None:
    first = await claimed(store, broker_id)
    canceled = msgspec.structs.replace(first, status=BrokerOrderStatus.CANCELED, sequence=2)
    await store.save_changes([(canceled, None, None)])
    second = execution(first.order_id, broker_id, at=T0 + timedelta(seconds=5), attempt=2)
    await store.start_attempt(second, "EQUITY")
    partial = with_fill(
        second, fill(second, "F-2", "40", "187.5", 7), status=BrokerOrderStatus.PARTIALLY_FILLED
    )
    await store.save_changes([(partial, partial.fills[-1], None)])
    done = with_fill(partial, fill(partial, "F-1", "60.5", "187.4", 6), status=BrokerOrderStatus.FILLED)
    await store.save_changes([(done, done.fills[-1], None)])

    attempts = await store.load_attempts(first.order_id)
    assert attempts == [canceled, msgspec.structs.replace(done, fills=(done.fills[1], done.fills[0]))]
    assert [a.attempt for a in attempts] == [1, 2]
    assert [f.broker_fill_id for f in attempts[1].fills] == ["F-1", "F-2"]  # by timestamp
    assert await store.load_attempts(new_id()) == []
    assert [a.attempt for a in await store.load_open_executions() if a.order_id == first.order_id] == []


# --- responses, outbox, brokers ----------------------------------------------------------------


async def test_response_is_set_only_once(store: Store, broker_id: str) -> None:
    claim = order_claim(new_id(), broker_id)
    assert claim.execution is not None
    await store.claim_order(claim)
    first = response(claim.order_id, claim.execution.id, broker_id)
    accepted = msgspec.structs.replace(claim.execution, status=BrokerOrderStatus.ACCEPTED, sequence=2)
    await store.save_changes([(accepted, None, None)], (claim.order_id, first))
    second = msgspec.structs.replace(first, routing_id=new_id())
    assert not await store.save_response(claim.order_id, second)
    await store.save_changes([(accepted, None, None)], (claim.order_id, second))
    stored = await store.get_claim(claim.order_id)
    assert stored is not None and stored.response == first

    other = order_claim(new_id(), None)
    await store.claim_order(other)
    assert await store.save_response(other.order_id, first)
    assert not await store.save_response(other.order_id, second)


async def test_outbox_events_until_published(store: Store, broker_id: str) -> None:
    claim = order_claim(new_id(), broker_id)
    assert claim.execution is not None and claim.event is not None
    await store.claim_order(claim)
    accepted = msgspec.structs.replace(claim.execution, status=BrokerOrderStatus.ACCEPTED, sequence=2)
    await store.save_changes([(accepted, None, outbox_event(accepted, 2))])
    pending = [e for e in await store.unpublished_events(100_000) if e.execution_id == accepted.id]
    assert [e.sequence for e in pending] == [1, 2]
    assert pending[0] == claim.event
    await store.mark_published([claim.event.key])
    pending = [e for e in await store.unpublished_events(100_000) if e.execution_id == accepted.id]
    assert [e.sequence for e in pending] == [2]
    await store.mark_published([pending[0].key])
    assert not [e for e in await store.unpublished_events(100_000) if e.execution_id == accepted.id]
    assert len(await store.execution_events(accepted.id)) == 2  # the audit trail keeps them


async def test_outbox_page_older_than_a_cutoff_and_depth(store: Store, broker_id: str) -> None:
    claim = order_claim(new_id(), broker_id, with_event=False)
    assert claim.execution is not None
    await store.claim_order(claim)
    before, _ = await store.outbox_depth(10_000_000)
    old_at = datetime(2001, 1, 1, tzinfo=UTC)  # older than every other test's updates
    accepted = msgspec.structs.replace(claim.execution, status=BrokerOrderStatus.ACCEPTED, sequence=2)
    first, second = (
        outbox_event(accepted, 1, at=old_at),
        outbox_event(accepted, 2, at=old_at + timedelta(hours=1)),
    )
    await store.save_changes([(accepted, None, first), (accepted, None, second)])

    def mine(events: list[Any]) -> list[int]:
        return [e.sequence for e in events if e.execution_id == accepted.id]

    assert mine(await store.unpublished_events(100_000)) == [1, 2]
    assert mine(await store.unpublished_events(100_000, older_than=old_at)) == [1]
    assert mine(await store.unpublished_events(1, older_than=old_at + timedelta(hours=1))) == [
        1
    ]  # oldest first
    depth, oldest = await store.outbox_depth(10_000_000)
    assert depth == before + 2 and oldest == old_at
    assert (await store.outbox_depth(1))[0] == 1  # counted up to the limit: "at least that many"
    await store.mark_published([first.key, second.key])
    assert (await store.outbox_depth(10_000_000))[0] == before


async def test_outbox_page_reads_events_by_key_whatever_the_backlog(
    store: Store, migrated_database_url: str
) -> None:
    """A page of a backlog of thousands is found in unpublished_events and its events are looked
    up by key: execution_events (the audit trail, which only grows) is never scanned whole."""
    tag = f"plan-{new_id()[:8]}"

    def run(*statements: tuple[str, tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        with psycopg.connect(migrated_database_url, autocommit=True) as conn:
            for sql, params in statements:
                cursor = conn.execute(sql.encode(), params)
                rows = cursor.fetchall() if cursor.description else []
        return rows

    backlog = """
        WITH e AS (
            INSERT INTO execution_events (execution_id, sequence, subject, payload, created_at)
            SELECT %s || '-' || i, 1, 'trading.broker.v1.executions.x.EXECUTING.o',
                   convert_to('{}', 'UTF8'), TIMESTAMPTZ '2002-01-01' + i * INTERVAL '1 second'
            FROM generate_series(1, 5000) AS i
            RETURNING execution_id, sequence, created_at)
        INSERT INTO unpublished_events SELECT * FROM e"""
    await trio.to_thread.run_sync(
        run, (backlog, (tag,)), ("ANALYZE execution_events, unpublished_events", ())
    )
    try:
        plan = await trio.to_thread.run_sync(
            run, ("EXPLAIN " + _SELECT_UNPUBLISHED.decode(), (datetime(9999, 1, 1, tzinfo=UTC), 512))
        )
        text = "\n".join(row[0] for row in plan)
        assert "Seq Scan on execution_events" not in text, text
        assert len(await store.unpublished_events(512)) == 512
    finally:
        await trio.to_thread.run_sync(
            run,
            ("DELETE FROM unpublished_events WHERE execution_id LIKE %s", (f"{tag}-%",)),
            ("DELETE FROM execution_events WHERE execution_id LIKE %s", (f"{tag}-%",)),
        )


async def test_brokers_upsert_keeps_created_at_and_no_credentials(
    store: Store, migrated_database_url: str
) -> None:
    record = broker_record()
    await store.upsert_brokers([record])
    (created,) = await query(
        migrated_database_url,
        "SELECT created_at FROM broker_connections WHERE broker_id = %s",
        record.broker_id,
    )
    changed = msgspec.structs.replace(
        record, name="Renamed", status="DEGRADED", rate_limits={"requestsPerSecond": 5}
    )
    await store.upsert_brokers([changed])
    stored = {r.broker_id: r for r in await store.list_broker_records()}
    assert stored[record.broker_id] == changed
    assert stored[record.broker_id].commission_structure.base_rate == Decimal("0.00050")
    rows = await query(
        migrated_database_url,
        "SELECT created_at, credentials::text, updated_at >= created_at FROM broker_connections"
        " WHERE broker_id = %s",
        record.broker_id,
    )
    assert rows == [(created[0], "{}", True)]


async def test_unknown_broker_status_is_refused(store: Store) -> None:
    bad: BrokerRecord = msgspec.structs.replace(broker_record(), status="ONLINE")
    with pytest.raises(ValueError, match="ONLINE"):
        await store.upsert_brokers([bad])


# --- read model --------------------------------------------------------------------------------


async def test_views_refresh_and_idle_broker_has_performance_row(
    store: Store, migrated_database_url: str
) -> None:
    idle, busy = broker_record(), broker_record()
    now = datetime.now(UTC)
    await store.upsert_brokers([idle, busy])
    for status in (BrokerOrderStatus.FILLED, BrokerOrderStatus.CANCELED):
        claim = order_claim(new_id(), busy.broker_id, at=now)
        assert claim.execution is not None
        await store.claim_order(claim)
        finished = msgspec.structs.replace(
            claim.execution, status=status, sequence=2, updated_at=now + timedelta(milliseconds=20)
        )
        await store.save_changes([(finished, None, None)])
    await store.refresh_views()
    await store.refresh_views()  # populated now: CONCURRENTLY

    rows = await query(
        migrated_database_url,
        "SELECT broker_id, total_executions, fill_rate_percent FROM broker_performance"
        " WHERE broker_id = ANY(%s)",
        [idle.broker_id, busy.broker_id],
    )
    assert dict((r[0], (r[1], r[2])) for r in rows) == {
        idle.broker_id: (0, None),
        busy.broker_id: (0, Decimal(50)),
    }
    quality = await query(
        migrated_database_url,
        "SELECT asset_class, total_executions, fill_rate_percent FROM execution_quality_by_asset_class"
        " WHERE broker_id = %s",
        busy.broker_id,
    )
    assert quality == [("EQUITY", 0, Decimal(50))]
    latency = await query(
        migrated_database_url,
        "SELECT total_orders, rejected_orders FROM broker_latency_stats WHERE broker_id = %s",
        busy.broker_id,
    )
    assert latency == [(2, 0)]


# --- reruns after a broken COMMIT ----------------------------------------------------------------


async def _run_twice(url: str, ops: list[Any]) -> tuple[Any, Any]:
    """Each op batch in its own committed transaction, twice: what the writer does when the
    connection broke after a COMMIT that in fact went through."""
    from sql.trio_pg import close
    from sql.writer import connect_trio

    conn = await connect_trio(url, statement_timeout=10)
    try:
        outcomes = []
        for _ in range(2):
            async with conn.transaction():
                outcomes.append(await type(ops[0]).run_batch(conn, ops))
    finally:
        await close(conn)
    return outcomes[0], outcomes[1]


async def test_a_rerun_claim_is_still_claimed_and_writes_nothing_twice(
    broker_id: str, migrated_database_url: str, store: Store
) -> None:
    from sql.ops import Claim

    claim = order_claim(new_id(), broker_id)
    assert claim.execution is not None
    first, again = await _run_twice(migrated_database_url, [Claim(claim)])
    assert (
        first == again == [ClaimResult(True, claim.request_hash, None, claim.execution.id, claim.routing_id)]
    )
    assert await store.load_attempts(claim.order_id) == [claim.execution]
    assert await store.execution_events(claim.execution.id) == [claim.event]


async def test_a_rerun_attempt_is_not_a_duplicate(
    broker_id: str, migrated_database_url: str, store: Store
) -> None:
    from sql.ops import StartAttempt

    first = await claimed(store, broker_id)
    second = execution(first.order_id, broker_id, at=T0 + timedelta(seconds=1), attempt=2)
    await _run_twice(migrated_database_url, [StartAttempt(second, "EQUITY", None)])
    assert [o.id for o in await store.load_attempts(first.order_id)] == [first.id, second.id]
    other = msgspec.structs.replace(second, broker_id="someone-else")
    with pytest.raises(DuplicateAttempt):  # the same number for another broker is still refused
        await store.start_attempt(other, "EQUITY")


async def test_daemons_starting_together_register_the_same_new_brokers(migrated_database_url: str) -> None:
    """Two daemons upserting the same brokers at once, on a database that has none of them yet
    (both daemons of a fresh deployment starting): both succeed, one row per broker. The upsert's
    conflict target is broker_id; without serialising the upserts, the loser tripped over the
    primary key (derived from broker_id) instead and its daemon died at start."""
    async with (
        Store.open(migrated_database_url, pool_size=2) as a,
        Store.open(migrated_database_url, pool_size=2) as b,
    ):
        for _ in range(15):
            records = [broker_record() for _ in range(4)]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.upsert_brokers, records)
                nursery.start_soon(b.upsert_brokers, list(reversed(records)))
            ids = [r.broker_id for r in records]
            rows = await query(
                migrated_database_url,
                "SELECT count(*) FROM broker_connections WHERE broker_id = ANY(%s)",
                ids,
            )
            assert rows == [(4,)]
