"""Batches of rows as one statement per table: the rows travel as one JSON document (`json_rows`,
encoded by msgspec) that `rows_from` turns back into rows on the server.

Per-row statements (executemany) cost the server twice as much; one binary array per column
(an earlier form) cost the daemon more than everything else it wrote: psycopg dumps arrays
element by element in Python. The write ops of `sql.ops`, `sql.status` and `sql.reports` build
their statements with these helpers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from api.codec import encode
from sql.roundtrip import Statement

__all__ = [
    "json_rows",
    "last_per_key",
    "params",
    "raw_json",
    "returned",
    "rows_from",
    "statement",
    "to_json",
    "write",
]


def rows_from(columns: str) -> bytes:
    """A FROM item `x` reading the statement's parameter — a JSON array of rows (`json_rows`) —
    as a table: `columns` is "name type, ..." in row order, and `n` numbers the rows from 1.
    One parameter per statement: the rows are encoded at C speed (msgspec) instead of one
    Python-dumped array per column, and the server parses them once. A `json` column takes its
    document as a JSON string (`to_json`), stored as sent; a `jsonb` one an embedded document."""
    selects = []
    for i, column in enumerate(columns.split(",")):
        name, kind = column.split()
        if kind == "jsonb":
            expr = f"nullif(r->{i}, 'null')"  # JSON null: SQL NULL
        elif kind == "json":
            expr = f"(r->>{i})::json"  # the text as sent: not jsonb's spaced, key-sorted form
        elif kind == "bytea":
            expr = f"decode(r->>{i}, 'base64')"
        else:
            expr = f"(r->>{i})::{kind}"
        selects.append(f"{expr} AS {name}")
    rows = "jsonb_array_elements(%b::jsonb) WITH ORDINALITY AS j(r, n)"
    return f"(SELECT {', '.join(selects)}, n FROM {rows}) AS x".encode()


def to_json(value: Any) -> str:
    """`value` as JSON text: a `json` column's value in `json_rows`, or a `%s::jsonb` parameter."""
    return encode(value).decode()


_rows_encoder = msgspec.json.Encoder()


def json_rows(rows: Sequence[tuple[Any, ...]]) -> Jsonb:
    """The parameter of a `rows_from` statement: the rows as one JSON array (Decimal as exact
    strings, datetimes as RFC 3339, bytes as base64, `msgspec.Raw` embedded as JSON)."""
    return Jsonb(rows, dumps=_rows_encoder.encode)


def raw_json(value: Any) -> msgspec.Raw:
    """`value` encoded once, to be embedded as JSON in `json_rows` (a jsonb column)."""
    return msgspec.Raw(encode(value))


async def returned(
    cur: psycopg.AsyncCursor[Any], statement: bytes, rows: Sequence[tuple[Any, ...]], *, keyed: bool = False
) -> set[Any]:
    """Run a `rows_from` statement; the first column of the rows it returned. `keyed`: the
    statement joins its rows to a table by their first column, and takes those keys again as
    an array (see `params`)."""
    await cur.execute(statement, params(rows, keyed=keyed))
    return {row[0] for row in await cur.fetchall()}


async def write(
    cur: psycopg.AsyncCursor[Any], statement: bytes, rows: Sequence[tuple[Any, ...]], *, keyed: bool = False
) -> None:
    """Run a `rows_from` statement, unless there are no rows (`keyed`: as for `returned`)."""
    if rows:
        await cur.execute(statement, params(rows, keyed=keyed))


def statement(
    sql: bytes, rows: Sequence[tuple[Any, ...]], *, keyed: bool = False, returns: bool = False
) -> list[Statement]:
    """The `rows_from` statement writing `rows` (`keyed`: as for `returned`), or none if there
    are no rows: a list to splice into `WriteOp.statements`."""
    return [Statement(sql, params(rows, keyed=keyed), returns)] if rows else []


def params(rows: Sequence[tuple[Any, ...]], *, keyed: bool) -> tuple[Any, ...]:
    """The JSON rows, and with `keyed` their first column as an array. The planner expects 100
    rows from `jsonb_array_elements` (10 from an array parameter): joined to a table of a few
    thousand rows, it hashes the whole table instead of looking the rows up. `key = ANY(keys)`
    gives it the index lookup."""
    if keyed:
        return json_rows(rows), [row[0] for row in rows]
    return (json_rows(rows),)


def last_per_key(rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """One row per key (the first column), the last one given: an UPDATE ... FROM joining
    two rows to one target would apply an arbitrary one of them."""
    return list({row[0]: row for row in rows}.values())
