"""`sql.roundtrip`: statements sent at once, one Sync, one read — one transaction, psycopg's
errors, parameters as text, the connection marked when a wait is cut short; and the writer
taking that road for the order path's ops."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
import psycopg
import pytest
import trio

from api.enums import BrokerOrderStatus
from sql import roundtrip, trio_pg
from sql.batch_rows import json_rows
from sql.ops import Claim, SaveTransition, UpsertBrokers
from sql.roundtrip import Rows, Statement, numbered, text_array
from sql.trio_pg import TrioConnection
from sql.writer import GroupWriter, WriteOp
from tests.sql import broker_record, execution, new_id, order_claim, outbox_event


@pytest.fixture
async def conn(migrated_database_url: str) -> AsyncIterator[TrioConnection]:
    opened = await trio_pg.connect(migrated_database_url)
    await opened.execute("CREATE TABLE IF NOT EXISTS rt_items (id text PRIMARY KEY, n int NOT NULL)")
    try:
        yield opened
    finally:
        await trio_pg.close(opened)


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many statements each `roundtrip.run` call sent, in order."""
    sent: list[int] = []
    real = roundtrip.run

    async def spy(conn: TrioConnection, statements: Sequence[Statement]) -> list[Rows]:
        sent.append(len(statements))
        return await real(conn, statements)

    monkeypatch.setattr(roundtrip, "run", spy)
    return sent


def key() -> str:
    return uuid.uuid4().hex


async def count(conn: TrioConnection, *ids: str) -> int:
    cur = await conn.execute("SELECT count(*) FROM rt_items WHERE id = ANY(%s)", (list(ids),))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


INSERT = b"INSERT INTO rt_items (id, n) VALUES (%s, %s::int)"


async def test_statements_commit_together_and_see_each_other(conn: TrioConnection) -> None:
    a, b = key(), key()
    rows = await roundtrip.run(
        conn,
        [
            Statement(INSERT, (a, "1")),
            Statement(b"UPDATE rt_items SET n = n + 1 WHERE id = %s RETURNING n", (a,), returns=True),
            Statement(INSERT, (b, "7")),
            Statement(
                b"SELECT id, NULL FROM rt_items WHERE id = ANY(%s::text[]) ORDER BY n", ([a, b],), True
            ),
        ],
    )
    assert rows == [[], [("2",)], [], [(a, None), (b, None)]]
    assert await count(conn, a, b) == 2


async def test_a_failing_statement_rolls_back_the_others_and_leaves_the_connection_usable(
    conn: TrioConnection,
) -> None:
    a, b = key(), key()
    await roundtrip.run(conn, [Statement(INSERT, (b, "1"))])
    with pytest.raises(psycopg.errors.UniqueViolation):
        await roundtrip.run(
            conn,
            [Statement(INSERT, (a, "1")), Statement(INSERT, (b, "2")), Statement(INSERT, (key(), "3"))],
        )
    assert await count(conn, a) == 0  # the first statement went with the second
    assert not conn.interrupted and not conn.broken
    assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert (await roundtrip.run(conn, [Statement(b"SELECT 41 + 1", (), True)])) == [[("42",)]]


async def test_parameters_travel_as_text(conn: TrioConnection) -> None:
    awkward = ["a,b", 'quote " here', "back\\slash", "{braces}", "NULL", " spaced ", "", "é ü 中"]
    rows = await roundtrip.run(
        conn,
        [
            Statement(b"SELECT unnest(%s::text[])", (awkward,), True),
            Statement(
                b"SELECT x->>0, (x->>1)::int FROM jsonb_array_elements(%b::jsonb) x",
                (json_rows([("r", 5)]),),
                True,
            ),
            Statement(b"SELECT %s::bytea, %s::text IS NULL", (b"\\x00ff", None), True),
        ],
    )
    assert [r[0] for r in rows[0]] == awkward
    assert rows[1] == [("r", "5")]
    assert rows[2] == [("\\x00ff", "t")]
    assert text_array(["x"]) == b'{"x"}'


def test_placeholders_are_numbered_and_a_stray_percent_refused() -> None:
    assert numbered(b"SELECT %s, %b::jsonb, %s") == b"SELECT $1, $2::jsonb, $3"
    with pytest.raises(ValueError, match="unsupported %"):
        numbered(b"SELECT '100%' || %s")


async def test_a_wait_cut_short_marks_the_connection(conn: TrioConnection) -> None:
    with trio.move_on_after(0.2):
        await roundtrip.run(conn, [Statement(b"SELECT pg_sleep(5)")])
    assert conn.interrupted


class Counted(WriteOp[int]):
    """An op written as statements: the writer must send its batch in one round trip."""

    def __init__(self, id: str) -> None:
        self.id = id

    @classmethod
    def statements(cls, ops: Sequence[Counted]) -> Sequence[Statement]:
        return [Statement(INSERT + b" RETURNING n", (op.id, "3"), True) for op in ops]

    @classmethod
    async def finish(
        cls, conn: TrioConnection, ops: Sequence[Counted], rows: Sequence[Rows]
    ) -> Sequence[int]:
        return [int(str(r[0][0])) for r in rows]


async def test_the_writer_sends_a_batch_of_statement_ops_in_one_round_trip(
    conn: TrioConnection, migrated_database_url: str, trips: list[int]
) -> None:
    writer = GroupWriter(migrated_database_url, timeout=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        ops: list[Any] = [Counted(key()), Counted(key())]
        assert await writer.submit(ops) == [3, 3]
        await writer.aclose()
    assert trips == [2]


async def test_statements_are_prepared_once_per_connection_even_across_failures(conn: TrioConnection) -> None:
    """A Parse before a failing statement stays (prepared statements are not transactional); one
    after it is skipped: either way the next run finds the connection's statements as recorded."""
    before, after = (f"SELECT %s::int + 1 /* {key()} */".encode() for _ in range(2))
    taken = key()
    await roundtrip.run(conn, [Statement(INSERT, (taken, "1"))])
    with pytest.raises(psycopg.errors.UniqueViolation):
        await roundtrip.run(
            conn,
            [
                Statement(before, ("1",), returns=True),
                Statement(INSERT, (taken, "2")),
                Statement(after, ("1",), returns=True),
            ],
        )
    for _ in range(2):
        rows = await roundtrip.run(
            conn, [Statement(before, ("2",), returns=True), Statement(after, ("3",), returns=True)]
        )
        assert rows == [[("3",)], [("4",)]]
    cur = await conn.execute("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'bis_rt_%%'")
    row = await cur.fetchone()
    assert row is not None and row[0] == len(conn.roundtrip_prepared or ())


class Aside(WriteOp[None]):
    """A write with `run_batch` only: a batch holding one goes the psycopg way, every op in it."""

    @classmethod
    async def run_batch(cls, conn: TrioConnection, ops: Sequence[Aside]) -> Sequence[None]:
        await conn.execute("SELECT 1")
        return [None] * len(ops)


@pytest.mark.parametrize("form", ["one round trip", "psycopg pipeline"])
async def test_both_forms_give_the_order_path_the_same_answers(
    migrated_database_url: str, form: str, trips: list[int]
) -> None:
    aside: list[Any] = [Aside()] if form == "psycopg pipeline" else []
    writer = GroupWriter(migrated_database_url, timeout=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        broker = broker_record()
        await writer.submit([UpsertBrokers((broker,))])
        first = order_claim(new_id(), broker.broker_id)
        again = order_claim(first.order_id, broker.broker_id)  # the same order, another routing id
        *_, won, lost = await writer.submit([*aside, Claim(first), Claim(again)])
        assert won.claimed and won.routing_id == first.routing_id
        assert not lost.claimed and lost.routing_id == first.routing_id
        assert first.execution is not None
        twice = order_claim(new_id(), broker.broker_id)  # one claim submitted twice: it wins once
        *_, once, repeat = await writer.submit([*aside, Claim(twice), Claim(twice)])
        assert once.claimed and not repeat.claimed and repeat.routing_id == twice.routing_id
        filled = msgspec.structs.replace(first.execution, status=BrokerOrderStatus.FILLED, sequence=2)
        await writer.submit([*aside, SaveTransition(filled, None, outbox_event(filled, 2))])
        ghost = execution(new_id(), broker.broker_id)
        with pytest.raises(LookupError, match=ghost.id):
            await writer.submit([*aside, SaveTransition(ghost, None, None)])
        await writer.aclose()
    assert bool(trips) == (form == "one round trip")


async def test_answers_are_read_while_a_large_batch_is_still_being_sent(conn: TrioConnection) -> None:
    """The first statement answers ~4 MB while the next one's 8 MB parameter is still going out:
    a client that only sends until it has sent everything and the server that only reads until
    it could write its answers would wait for each other forever."""
    big = "y" * (8 << 20)
    with trio.fail_after(60):
        rows = await roundtrip.run(
            conn,
            [
                Statement(b"SELECT g, repeat('x', 2000) FROM generate_series(1, 2000) g", returns=True),
                Statement(b"SELECT length(%s::text)", (big,), returns=True),
            ],
        )
    assert len(rows[0]) == 2000 and rows[1] == [(str(len(big)),)]


async def test_a_parameter_it_cannot_send_is_refused_before_the_connection_is_touched(
    conn: TrioConnection,
) -> None:
    with pytest.raises(TypeError, match="unsupported parameter type"):
        await roundtrip.run(conn, [Statement(INSERT, (key(), "1")), Statement(INSERT, (key(), 2.5))])
    assert not conn.interrupted
    assert (await roundtrip.run(conn, [Statement(b"SELECT 1", (), True)])) == [[("1",)]]


async def test_named_placeholders_integers_and_escaped_percent(conn: TrioConnection) -> None:
    rows = await roundtrip.run(
        conn,
        [Statement(b"SELECT %(a)s::int + %(b)s::int, %(a)s::int, '100%%'", {"a": 2, "b": 3}, returns=True)],
    )
    assert rows == [[("5", "2", "100%")]]
    assert numbered(b"SELECT %(x)s, %(y)s, %(x)s") == b"SELECT $1, $2, $1"
    with pytest.raises(ValueError, match="mixed"):
        numbered(b"SELECT %(x)s, %s")
    with pytest.raises(TypeError, match="mapping"):
        await roundtrip.run(conn, [Statement(b"SELECT %(a)s::int", ("1",))])
    assert not conn.interrupted
