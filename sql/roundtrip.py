"""A write transaction in one round trip: every statement sent at once, one Sync, one read.

psycopg's pipeline mode sends each statement as it is executed (one send to the server per
statement) and runs its protocol machinery in Python around each one and each result. Measured
on this project's machines, a three-statement transaction cost the client ~300 µs of CPU that
way against ~50 µs here, where the statements are queued in libpq (`PGconn.send_query_params` in
pipeline mode), followed by one Sync, flushed together, and their results read back once.

**One transaction.** No BEGIN or COMMIT is sent: in the extended query protocol the statements
up to a Sync run in one implicit transaction, committed at the Sync if every one of them
succeeded; if one fails, the server skips the rest and rolls back everything since the previous
Sync (PostgreSQL's protocol chapter, "Pipelining", and libpq's "Pipeline Mode"). So the
statements of one `run` commit together or not at all, as between BEGIN and COMMIT, and a later
statement sees what an earlier one wrote. A statement cannot depend on another's *result*: the
results come back only once all of them ran.

**Statements** are written as for psycopg (`%s`/`%b` placeholders, see `Statement`); their
parameters are sent as text, typed by the statement (`%b::jsonb`, `%s::text[]`: a placeholder
whose type the server cannot infer must carry a cast). Rows come back as text (`str`, None for
NULL). Each statement is prepared on the connection the first time it is sent there (in the
same round trip: Parse, then Bind/Execute by name), as psycopg does for statements it sees
often: planning the order path's statements anew each time cost the server more than running
them.

**Errors.** A statement's error is raised as psycopg raises it (`psycopg.errors.error_from_result`)
once the pipeline is drained and left, the connection still usable. A failure of the connection
itself, or a cancellation mid-protocol, marks the connection `interrupted` (as `sql.trio_pg`
does): its owner must close it, since what reached the server is unknown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import trio
from psycopg import errors, pq
from psycopg.types.json import Jsonb

from sql import trio_pg
from sql.trio_pg import TrioConnection

__all__ = ["Rows", "Statement", "numbered", "rows_of", "run", "text_array"]

#: The rows of one statement, each value as text (None: NULL).
Rows = list[tuple[str | None, ...]]

_TOKEN = re.compile(rb"%\((\w+)\)[sb]|%[sb]|%%|%")
#: statement -> (numbered statement, parameter names in $-order or None for positional ones,
#: the name it is prepared under)
_NUMBERED: dict[bytes, tuple[bytes, tuple[str, ...] | None, bytes]] = {}

_SYNC = pq.ExecStatus.PIPELINE_SYNC
_FAILED = pq.ExecStatus.FATAL_ERROR
_ABORTED = pq.ExecStatus.PIPELINE_ABORTED


class Statement(NamedTuple):
    """One statement of a transaction: `sql` with psycopg placeholders — positional (`%s`,
    `%b`, in order) with a tuple of parameters, or named (`%(name)s`) with a mapping — its
    parameters (str; int; bytes, sent as they are: the text form of the value; None; `Jsonb`;
    a sequence of str for a `text[]`), and whether its rows are wanted."""

    sql: bytes
    params: tuple[Any, ...] | Mapping[str, Any] = ()
    returns: bool = False


def numbered(sql: bytes) -> bytes:
    """`sql` with its placeholders as `$1`, `$2`, ... (libpq's); `%%` as `%`. ValueError for a
    lone `%`, or positional and named placeholders mixed."""
    return _compiled(sql)[0]


def _compiled(sql: bytes) -> tuple[bytes, tuple[str, ...] | None, bytes]:
    found = _NUMBERED.get(sql)
    if found is None:
        names: list[str] = []
        positional = 0

        def number(match: re.Match[bytes]) -> bytes:
            nonlocal positional
            token = match.group(0)
            if token == b"%%":
                return b"%"
            if token == b"%":
                raise ValueError(f"unsupported % in statement: {sql[:80]!r}")
            if match.group(1) is None:
                positional += 1
                return b"$%d" % positional
            name = match.group(1).decode()
            if name not in names:
                names.append(name)
            return b"$%d" % (names.index(name) + 1)

        text = _TOKEN.sub(number, sql)
        if positional and names:
            raise ValueError(f"positional and named placeholders mixed: {sql[:80]!r}")
        found = _NUMBERED[sql] = (text, tuple(names) if names else None, b"bis_rt_%d" % len(_NUMBERED))
    return found


def text_array(values: Sequence[str]) -> bytes:
    """`values` as a PostgreSQL array literal, every element quoted (commas, braces, spaces and
    the word NULL are then plain text; `"` and `\\` are escaped)."""
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return ("{" + ",".join(quoted) + "}").encode()


def _param(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int) and not isinstance(value, bool):
        return b"%d" % value
    if isinstance(value, Jsonb):
        dumped = value.dumps(value.obj) if value.dumps is not None else None
        if dumped is None:
            raise TypeError("Jsonb parameters need their dumps function")
        return dumped if isinstance(dumped, bytes) else dumped.encode()
    if isinstance(value, list | tuple):
        return text_array(value)
    raise TypeError(f"unsupported parameter type {type(value).__name__}")


async def run(conn: TrioConnection, statements: Sequence[Statement]) -> list[Rows]:
    """Run `statements` as one transaction in one round trip; the rows of each (empty unless it
    `returns`), in order. See the module docstring for the transaction and errors."""
    pgconn = conn.pgconn
    fileno = pgconn.socket
    prepared = conn.roundtrip_prepared
    if prepared is None:
        prepared = conn.roundtrip_prepared = set()
    # Everything encoded before the connection is touched: a bad statement or parameter raises
    # here, with the connection as it was.
    encoded: list[tuple[bytes, bytes, list[bytes | None]]] = []
    for statement in statements:
        sql, names, name = _compiled(statement.sql)
        params = statement.params
        if isinstance(params, Mapping) != (names is not None):
            raise TypeError(f"named placeholders take a mapping, positional ones a tuple: {sql[:80]!r}")
        values = [params[n] for n in names] if isinstance(params, Mapping) and names else params
        encoded.append((sql, name, [_param(p) for p in values]))
    # What each result answers, in order: a Parse (the name it prepares) or a statement (None).
    expected: list[bytes | None] = []
    finished = False
    try:
        pgconn.enter_pipeline_mode()
        for sql, name, sent in encoded:
            if name not in prepared and name not in expected:
                pgconn.send_prepare(name, sql)
                expected.append(name)
            pgconn.send_query_prepared(name, sent)
            expected.append(None)
        pgconn.pipeline_sync()
        while pgconn.flush():  # 1: more to send once the socket takes it
            # Read while sending: a server whose answers nobody reads stops reading too.
            readable, _ = await trio_pg.readable_or_writable(fileno)
            if readable:
                pgconn.consume_input()
        out: list[Rows] = []
        error: errors.Error | None = None
        answered = 0
        while True:
            if pgconn.is_busy():
                await trio.lowlevel.wait_readable(fileno)
                pgconn.consume_input()
                continue
            result = pgconn.get_result()
            if result is None:  # between two commands' results
                continue
            status = result.status
            if status == _SYNC:
                break
            preparing = expected[answered]
            answered += 1
            if status == _FAILED:
                if error is None:
                    error = errors.error_from_result(result, encoding=conn.info.encoding)
            elif status == _ABORTED:
                pass
            elif preparing is not None:
                prepared.add(preparing)  # prepared statements outlive a rolled-back transaction
            else:
                out.append(rows_of(result) if statements[len(out)].returns else [])
        pgconn.exit_pipeline_mode()
        finished = True
    finally:
        if not finished:
            conn.interrupted = True
    if error is not None:
        raise error
    if len(out) != len(statements):  # pragma: no cover - libpq answers every statement
        raise errors.InternalError(f"{len(out)} results for {len(statements)} statements")
    return out


def rows_of(result: pq.abc.PGresult) -> Rows:
    """The rows of a text-format result, each value as text (None: NULL)."""
    width = result.nfields
    value = result.get_value
    return [
        tuple(None if (v := value(r, c)) is None else v.decode() for c in range(width))
        for r in range(result.ntuples)
    ]
