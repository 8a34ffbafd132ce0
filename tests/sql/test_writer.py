from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import psycopg
import pytest
import trio
import trio.testing
from psycopg import errors

from sql.trio_pg import TrioConnection
from sql.writer import DatabaseUnavailable, GroupWriter, WriteOp, WriterClosed, WriteTimeout

Conn = TrioConnection


@dataclass(frozen=True, slots=True)
class Insert(WriteOp[int]):
    """Insert `value` into the test table; the result is the value doubled by the database, so
    a caller can tell its own result from another's."""

    table: str
    value: int

    @classmethod
    async def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[int]:
        cur = conn.cursor()
        await cur.executemany(
            f"INSERT INTO {ops[0].table} (value) VALUES (%s) RETURNING value * 2".encode(),
            [(op.value,) for op in ops],
            returning=True,
        )
        rows = [await result.fetchone() async for result in cur.results()]
        return [row[0] for row in rows if row is not None]


@dataclass(frozen=True, slots=True)
class Sleep(WriteOp[int]):
    """Keeps the writer's connection busy; returns its backend pid."""

    seconds: float
    phase: ClassVar[int] = -1

    @classmethod
    async def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[int]:
        cur = await conn.execute(b"SELECT pg_backend_pid(), pg_sleep(%s)", (max(op.seconds for op in ops),))
        row = await cur.fetchone()
        assert row is not None
        return [row[0]] * len(ops)


@dataclass(frozen=True, slots=True)
class Hold(WriteOp[int]):
    """`Sleep`, telling the test when a lane has taken it (`taken`): from then on that lane is
    busy for `seconds`, and what is submitted meanwhile queues up."""

    seconds: float
    taken: trio.Event = field(default_factory=trio.Event, compare=False)
    phase: ClassVar[int] = -1

    @classmethod
    async def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[int]:
        for op in ops:
            op.taken.set()
        return await Sleep.run_batch(conn, [Sleep(op.seconds) for op in ops])


@dataclass(frozen=True, slots=True)
class Count(WriteOp[int]):
    """Counts the test table's rows from inside the transaction (phase 5: after the inserts)."""

    table: str
    phase: ClassVar[int] = 5

    @classmethod
    async def run_batch(cls, conn: Conn, ops: Sequence[Self]) -> Sequence[int]:
        counts = []
        for op in ops:
            row = await (await conn.execute(f"SELECT count(*) FROM {op.table}".encode())).fetchone()
            assert row is not None
            counts.append(row[0])
        return counts


@pytest.fixture
def table(migrated_database_url: str) -> str:
    name = f"writer_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(migrated_database_url) as conn:
        conn.execute(f"CREATE TABLE {name} (value INT PRIMARY KEY CHECK (value >= 0))".encode())
    return name


async def values_in(url: str, table: str) -> set[int]:
    def read() -> set[int]:
        with psycopg.connect(url) as conn:
            return {row[0] for row in conn.execute(f"SELECT value FROM {table}".encode())}

    return await trio.to_thread.run_sync(read)


@pytest.fixture
async def writer(migrated_database_url: str) -> AsyncIterator[GroupWriter]:
    writer = GroupWriter(migrated_database_url, max_batch=64, timeout=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        yield writer
        await writer.aclose()


async def submit_all(writer: GroupWriter, ops: Sequence[WriteOp[Any]]) -> dict[int, Any]:
    """Submit each op from its own task at once; result (or exception) per op index."""
    outcomes: dict[int, Any] = {}

    async def one(i: int, op: WriteOp[Any]) -> None:
        try:
            (outcomes[i],) = await writer.submit([op])
        except Exception as exc:
            outcomes[i] = exc

    async with trio.open_nursery() as nursery:
        for i, op in enumerate(ops):
            nursery.start_soon(one, i, op)
    return outcomes


async def test_concurrent_submissions_share_transactions(
    writer: GroupWriter, table: str, migrated_database_url: str
) -> None:
    outcomes = await submit_all(writer, [Insert(table, i) for i in range(300)])
    assert outcomes == {i: 2 * i for i in range(300)}  # each caller got its own result
    assert await values_in(migrated_database_url, table) == set(range(300))
    stats = writer.stats
    assert stats.submissions == 300 and stats.ops == 300
    assert stats.batches < 300 / 4, stats
    assert 1 < stats.max_batch <= 64, stats


async def test_a_failing_op_fails_alone(writer: GroupWriter, table: str, migrated_database_url: str) -> None:
    hold = Hold(0.3)

    async def hold_writer() -> None:
        await writer.submit([hold])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold_writer)
        await hold.taken.wait()  # the writer's lane is busy: everything below queues up together
        ops = [Insert(table, i) for i in range(20)] + [Insert(table, -1), Insert(table, -2)]
        outcomes = await submit_all(writer, ops)
    assert isinstance(outcomes[20], errors.CheckViolation)
    assert isinstance(outcomes[21], errors.CheckViolation)
    assert {i: outcomes[i] for i in range(20)} == {i: 2 * i for i in range(20)}
    assert await values_in(migrated_database_url, table) == set(range(20))
    assert writer.stats.fallbacks >= 1 and writer.stats.failures == 2


async def test_ops_of_a_submission_run_in_phase_order(writer: GroupWriter, table: str) -> None:
    ops: list[WriteOp[int]] = [Count(table), Insert(table, 1), Insert(table, 2), Count(table)]
    # the counts (phase 5) ran after both inserts (phase 0), in the same transaction
    assert await writer.submit(ops) == [2, 2, 4, 2]


async def test_cancelled_before_taken_writes_nothing(
    writer: GroupWriter, table: str, migrated_database_url: str
) -> None:
    async with trio.open_nursery() as nursery:
        hold = Hold(0.3)
        nursery.start_soon(writer.submit, [hold])
        await hold.taken.wait()
        with trio.move_on_after(0.05) as scope:
            await writer.submit([Insert(table, 1)])
        assert scope.cancelled_caught
    await writer.submit([Insert(table, 2)])
    assert await values_in(migrated_database_url, table) == {2}


async def test_cancelled_while_committing_is_committed(
    writer: GroupWriter, table: str, migrated_database_url: str
) -> None:
    done = False
    with trio.move_on_after(0.1) as scope:
        await writer.submit([Sleep(0.3), Insert(table, 7)])
        done = True
    assert scope.cancelled_caught and not done
    # Cancelled propagated only after the commit: the row is there already.
    assert await values_in(migrated_database_url, table) == {7}


async def test_queued_work_is_committed_on_close(migrated_database_url: str, table: str) -> None:
    writer = GroupWriter(migrated_database_url)
    committed: set[int] = set()
    refused: set[int] = set()

    async def one(i: int) -> None:
        try:
            await writer.submit([Insert(table, i)])
            committed.add(i)
        except WriterClosed:
            refused.add(i)

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for i in range(10):
            nursery.start_soon(one, i)
        await trio.testing.wait_all_tasks_blocked()  # all queued (or in the writer's hands)
        await writer.aclose()
    assert committed == set(range(10)) and not refused
    assert await values_in(migrated_database_url, table) == committed
    with pytest.raises(WriterClosed):
        await writer.submit([Insert(table, 99)])


async def test_stopped_writer_fails_what_it_did_not_take(migrated_database_url: str, table: str) -> None:
    writer = GroupWriter(migrated_database_url)
    outcomes: dict[int, Any] = {}

    async def one(i: int, op: WriteOp[Any]) -> None:
        try:
            (outcomes[i],) = await writer.submit([op])
        except WriterClosed as exc:
            outcomes[i] = exc

    async with trio.open_nursery() as callers, trio.open_nursery() as service:
        await service.start(writer.run)
        hold = Hold(0.3)
        callers.start_soon(one, 0, hold)
        await hold.taken.wait()
        for i in range(1, 6):
            callers.start_soon(one, i, Insert(table, i))
        await trio.testing.wait_all_tasks_blocked()
        service.cancel_scope.cancel()  # the writer dies with work queued
    assert isinstance(outcomes[0], int)  # taken by the writer when cancelled: completed
    assert all(isinstance(outcomes[i], WriterClosed) for i in range(1, 6))
    assert await values_in(migrated_database_url, table) == set()


async def test_submit_before_start_is_refused(migrated_database_url: str, table: str) -> None:
    with pytest.raises(WriterClosed):
        await GroupWriter(migrated_database_url).submit([Insert(table, 1)])


async def test_lost_connection_is_retried_once_on_a_fresh_one(
    writer: GroupWriter, table: str, migrated_database_url: str
) -> None:
    """The server ended the writer's idle connection (a restart, an idle timeout): the next
    batch fails on it, runs again on a fresh connection, and the caller never sees it."""
    (pid,) = await writer.submit([Sleep(0)])

    def kill() -> None:
        with psycopg.connect(migrated_database_url, autocommit=True) as conn:
            conn.execute(b"SELECT pg_terminate_backend(%s)", (pid,))

    await trio.to_thread.run_sync(kill)
    assert await writer.submit([Insert(table, 1)]) == [2]
    assert await writer.submit([Insert(table, 2)]) == [4]
    assert await values_in(migrated_database_url, table) == {1, 2}
    assert writer.stats.retries == 1
    assert writer.available


async def test_unreachable_database_fails_fast_then_recovers(migrated_database_url: str, table: str) -> None:
    """No connection can be made: the batch gets DatabaseUnavailable (a 503), later submissions
    get it at once without waiting, and once the server answers again the probe reconnects."""
    writer = GroupWriter(migrated_database_url, timeout=10)
    async with trio.open_nursery() as service:
        await service.start(writer.run)
        real_connect = writer._connect
        refused = True

        async def connect() -> Any:
            if refused:
                raise psycopg.OperationalError("connection refused (test)")
            return await real_connect()

        writer._connect = connect  # type: ignore[method-assign]
        for lane in writer._lanes:
            await lane.drop()
        with pytest.raises(DatabaseUnavailable):
            await writer.submit([Insert(table, 1)])
        assert not writer.available
        started = trio.current_time()
        with pytest.raises(DatabaseUnavailable):
            await writer.submit([Insert(table, 2)])
        assert trio.current_time() - started < 0.05  # fail fast: no connect attempt per caller
        refused = False
        with trio.fail_after(10):
            await writer.wait_available()
        assert await writer.submit([Insert(table, 3)]) == [6]
        assert writer.stats.outages == 1 and writer.stats.reconnects == 1
        await writer.aclose()
        service.cancel_scope.cancel()
    assert await values_in(migrated_database_url, table) == {3}


async def test_lanes_commit_batches_side_by_side(migrated_database_url: str, table: str) -> None:
    """With two lanes, a batch does not wait for the previous one's commit: two slow
    submissions take about one sleep, not two; every result still comes back to its caller."""
    writer = GroupWriter(migrated_database_url, lanes=2)
    results: dict[int, Any] = {}

    async def one(i: int, op: WriteOp[Any]) -> None:
        (results[i],) = await writer.submit([op])

    async with trio.open_nursery() as service:
        await service.start(writer.run)
        started = trio.current_time()
        async with trio.open_nursery() as callers:
            callers.start_soon(one, 0, Sleep(0.4))
            await trio.testing.wait_all_tasks_blocked()
            callers.start_soon(one, 1, Sleep(0.4))
            await trio.testing.wait_all_tasks_blocked()
            for i in range(2, 8):
                callers.start_soon(one, i, Insert(table, i))
        elapsed = trio.current_time() - started
        await writer.aclose()
        service.cancel_scope.cancel()
    assert elapsed < 0.75, elapsed  # side by side (one lane would need 0.8 s)
    assert results[0] != results[1]  # two connections (backend pids)
    assert {results[i] for i in range(2, 8)} == {2 * i for i in range(2, 8)}
    assert await values_in(migrated_database_url, table) == set(range(2, 8))


# --- lingering ------------------------------------------------------------------------------------


async def test_a_write_no_reply_waits_on_shares_the_next_urgent_commit(
    migrated_database_url: str, table: str
) -> None:
    """A non-urgent submission lingers for company: an urgent one arriving meanwhile takes it
    along in one transaction at once; the urgent one itself is never held back."""
    writer = GroupWriter(migrated_database_url, timeout=10, linger=5.0)
    async with trio.open_nursery() as service:
        await service.start(writer.run)
        results: dict[str, Any] = {}

        async def deferrable() -> None:
            results["late"] = await writer.submit([Insert(table, 1)], urgent=False)

        async with trio.open_nursery() as callers:
            callers.start_soon(deferrable)
            await trio.testing.wait_all_tasks_blocked()
            assert writer.stats.batches == 0  # lingering: nothing committed yet
            started = trio.current_time()
            results["urgent"] = await writer.submit([Insert(table, 2)])
            assert trio.current_time() - started < 2.0  # not held for the 5 s linger
        assert results == {"late": [2], "urgent": [4]}
        assert writer.stats.batches == 1 and writer.stats.submissions == 2
        await writer.aclose()
        service.cancel_scope.cancel()


async def test_a_lingering_write_alone_commits_after_the_linger(
    migrated_database_url: str, table: str
) -> None:
    writer = GroupWriter(migrated_database_url, timeout=10, linger=0.2)
    async with trio.open_nursery() as service:
        await service.start(writer.run)
        started = trio.current_time()
        assert await writer.submit([Insert(table, 3)], urgent=False) == [6]
        assert 0.2 <= trio.current_time() - started < 5.0
        assert await values_in(migrated_database_url, table) == {3}
        await writer.aclose()
        service.cancel_scope.cancel()


# --- urgent first -------------------------------------------------------------------------------


class Recorded:
    """A one-lane writer that commits what it has at once (no linger) and folds at most 4 ops
    of waiting writes into a claim's batch; `batches` lists each batch's ops as it commits."""

    def __init__(self, writer: GroupWriter, table: str) -> None:
        self.writer, self.table = writer, table
        self.batches: list[int] = []
        writer.stats.on_batch = lambda ops, seconds: self.batches.append(ops)

    async def hold_lane(self, seconds: float, nursery: trio.Nursery) -> None:
        """Keep the only lane busy for `seconds` (so that what follows queues up)."""
        hold = Hold(seconds)
        nursery.start_soon(self.writer.submit, [hold])
        await hold.taken.wait()

    async def queue_burst(self, nursery: trio.Nursery) -> None:
        """Ten inserts in one non-urgent submission (post-trade writes), queued."""
        burst = [Insert(self.table, 100 + i) for i in range(10)]
        nursery.start_soon(lambda: self.writer.submit(burst, urgent=False))
        await trio.testing.wait_all_tasks_blocked()


@pytest.fixture
async def recorded(migrated_database_url: str, table: str) -> AsyncIterator[Recorded]:
    writer = GroupWriter(migrated_database_url, timeout=10, linger=0, fold_ops=4)
    async with trio.open_nursery() as service:
        await service.start(writer.run)
        yield Recorded(writer, table)
        await writer.aclose()
        service.cancel_scope.cancel()


async def test_a_claim_does_not_wait_behind_a_burst_of_post_trade_writes(
    recorded: Recorded, migrated_database_url: str, table: str
) -> None:
    """Queued together, an urgent submission commits in a batch of its own (with at most
    `fold_ops` ops of waiting ones); the big non-urgent one goes in the next batch."""
    async with trio.open_nursery() as callers:
        await recorded.hold_lane(0.3, callers)
        await recorded.queue_burst(callers)
        assert await recorded.writer.submit([Insert(table, 1)]) == [2]
        assert recorded.batches == [1, 1], recorded.batches  # the hold, then the claim alone
    assert recorded.batches == [1, 1, 10], recorded.batches
    assert await values_in(migrated_database_url, table) == {1, *range(100, 110)}


async def test_waiting_writes_are_not_starved_by_a_stream_of_claims(
    recorded: Recorded, migrated_database_url: str, table: str
) -> None:
    """A claim is always queued when the lane frees (each queued while the previous batch is
    committing): the non-urgent burst passed over once goes in the very next batch anyway."""
    async with trio.open_nursery() as callers:
        await recorded.hold_lane(0.2, callers)
        await recorded.queue_burst(callers)
        slow_claim = Hold(0.2)  # urgent, and it keeps the lane while the next claim queues
        callers.start_soon(recorded.writer.submit, [slow_claim])
        await slow_claim.taken.wait()  # its batch passed the burst over
        await recorded.writer.submit([Insert(table, 1)])
    # the hold; the slow claim alone; then the next claim with the burst, not after it
    assert recorded.batches == [1, 1, 11], recorded.batches
    assert await values_in(migrated_database_url, table) == {1, *range(100, 110)}


async def test_a_batch_past_the_timeout_leaves_a_connection_that_is_replaced(
    migrated_database_url: str, table: str
) -> None:
    """A batch still running at `timeout` is interrupted mid-protocol: its callers learn the
    outcome is unknown, and the lane's connection (in an unknown state) is closed and replaced
    before the next batch, which commits normally."""
    writer = GroupWriter(migrated_database_url, timeout=0.5, statement_timeout=10)
    async with trio.open_nursery() as service:
        await service.start(writer.run)
        (pid,) = await writer.submit([Sleep(0)])
        with pytest.raises(WriteTimeout, match="outcome unknown"):
            await writer.submit([Sleep(3)])
        assert await writer.submit([Insert(table, 5)]) == [10]
        (again,) = await writer.submit([Sleep(0)])
        assert again != pid  # a fresh connection (backend)
        assert await values_in(migrated_database_url, table) == {5}
        await writer.aclose()
        service.cancel_scope.cancel()
