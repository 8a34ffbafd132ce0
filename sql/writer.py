"""Group commit: many writers, a few connections ("lanes"), one transaction per burst.

    submit(ops) ──> queue ──> writer task: take the first submission, drain every other one
    already queued (up to `max_batch` ops), hand them to a free lane, which runs them all in
    ONE transaction (psycopg driven by Trio itself: `sql.trio_pg`), commits, and wakes each caller
    with its own results.

One commit (one fsync) then carries every write that arrived while the previous one was in
flight: throughput grows with load while each caller still returns only after its own writes
are committed (write-before-send relies on this). With `lanes` > 1, the next batch is formed
and committed while the previous one is still in flight (its fsync, the round trips of its
pipeline): batches may then commit in any order. Nothing relies on the order of commits of
different submissions: a caller whose writes depend on an earlier write of its own awaits that
one first (an execution's transitions are applied one after the other), and statements that
touch shared rows take their locks in key order, so two lanes wait for each other but never
deadlock; should the server still detect one, the batch is re-run one submission at a time.

Lingering: a submission made with `urgent=False` (nobody's reply waits on it: execution
updates after the broker's answer, publication marks, reports) waits up to `linger` (2 ms) for
company before its batch goes, and goes at once with the first urgent one (a claim) to arrive.
At one order at a time this folds the previous order's post-trade write into the next order's
claim: one commit per order instead of two; under load it only makes batches larger.

Urgent first. A batch is led by the urgent submissions queued (claims: a reply waits on them)
and carries at most `fold_ops` (32) ops of non-urgent ones; the rest wait in a backlog for the
next free lane, oldest first. So a claim never waits behind a burst of post-trade writes (a few
hundred ops of one round of fills take tens of milliseconds), while at one order at a time the
previous order's write still rides along with the next claim. A batch that left waiting ones
behind is followed by one that takes them (with whatever urgent ones are queued, in arrival
order), so under a steady stream of claims the backlog still goes every other batch; with two
lanes (the default) that batch commits beside the next claims' instead of in front of them.

A write is a `WriteOp`. Ops of the same class in a batch run together, classes in `phase`
order; so the ops of one submission run in phase order, and ops of the same class in submission
order. When every class of a batch states its writes as statements (`WriteOp.statements`: the
order path's claims, transitions, answers, marks and reports), the whole batch is one round
trip (`sql.roundtrip`: every statement sent at once, one Sync, one read) and each class reads
its results afterwards (`finish`); otherwise each class's `run_batch` runs in a psycopg
pipeline inside BEGIN ... COMMIT.

Failures: if the batch transaction fails, it is rolled back and each submission is re-run alone
in its own transaction, so one bad submission cannot fail the others; the bad one gets its
exception. If the connection breaks (the server restarted, the network dropped, a statement
outlived the server's timeout), the batch is run once more on a fresh connection: every op is
idempotent (`WriteOp`), so this is safe even when the broken COMMIT had in fact gone through.
If that fails too, or no connection can be made, the database is *unavailable*: the batch and
everything queued get `DatabaseUnavailable` (a 503 for the API: "retry with the same orderId"),
later submissions get it at once without waiting, and a probe reconnects with capped
exponential backoff and jitter. `available` and `wait_available()` tell callers when writing
works again; nothing here ever raises into the writer's nursery because the database failed.

Cancellation: a caller cancelled before the writer takes its submission writes nothing. Once
taken, the submission is committed or rolled back regardless: the cancelled caller waits
(shielded, bounded by `timeout`) for that outcome before `Cancelled` propagates, so no write is
left half-known inside this process. Every wait is bounded: `timeout` for callers, the server's
`statement_timeout` and TCP timeouts for the connection.

No thread: the lanes' connections are `sql.trio_pg.TrioConnection`s, so a batch's Python work
runs in the Trio thread between the loop's other tasks instead of contending for the GIL with it
(which made every system call of the Trio thread wait for the interpreter's switch interval).
A batch interrupted mid-protocol (the writer stopping) leaves its connection to be closed.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Self, TypeVar

import psycopg
import trio
from psycopg.conninfo import conninfo_to_dict

from api.errors import Unavailable
from sql import roundtrip, trio_pg
from sql.roundtrip import Rows, Statement
from sql.trio_pg import TrioConnection

__all__ = [
    "DatabaseUnavailable",
    "GroupWriter",
    "WriteOp",
    "WriteTimeout",
    "WriterClosed",
    "WriterStats",
    "configure_session",
    "connect",
    "connection_failed",
    "connection_kwargs",
]

R = TypeVar("R")

log = logging.getLogger(__name__)


class WriteOp(Generic[R]):
    """One write whose result is an `R`, executed with every op of its class in a batch, inside
    the batch's transaction; one result per op, in order. A lower `phase` runs earlier in the
    transaction. A subclass implements either:

    - `statements` (the writes of the ops, none depending on another's rows: see
      `sql.roundtrip`) and `finish` (the results, from the rows the statements returned; it
      may read more, on `conn`, after the commit in the one-round-trip form); `run_batch` then
      runs them in the psycopg form; or
    - `run_batch` alone, for writes that need a statement's rows before the next statement.

    Either must be idempotent: after a connection broke mid-batch, the writer runs the batch
    again on a fresh connection, and the first run may have committed. Running it again must
    leave the same rows and return the same results (an insert recognises its own row). An op
    that finds a row missing raises LookupError; in SQL, `bis_missing` (migration 0014) raises
    no_data_found, which the writer turns into LookupError."""

    __slots__ = ()
    phase: ClassVar[int] = 0

    @classmethod
    def statements(cls, ops: Sequence[Self]) -> Sequence[Statement] | None:
        """The statements writing `ops`, or None: this class writes with `run_batch` only."""
        return None

    @classmethod
    async def finish(cls, conn: TrioConnection, ops: Sequence[Self], rows: Sequence[Rows]) -> Sequence[R]:
        """The results of `ops` from the rows of `statements(ops)` (one entry per statement)."""
        raise NotImplementedError

    @classmethod
    async def run_batch(cls, conn: TrioConnection, ops: Sequence[Self]) -> Sequence[R]:
        statements = cls.statements(ops)
        if statements is None:
            raise NotImplementedError(f"{cls.__name__} implements neither statements nor run_batch")
        return await cls.finish(conn, ops, await _executed(conn, statements))


async def _executed(conn: TrioConnection, statements: Sequence[Statement]) -> list[Rows]:
    """`statements` run one by one through psycopg (in the caller's pipeline and transaction);
    their rows as `sql.roundtrip` gives them: the server's text, read from the same results."""
    cur = conn.cursor()
    rows: list[Rows] = []
    for statement in statements:
        await cur.execute(statement.sql, statement.params)
        if statement.returns:
            await cur.fetchall()  # in a pipeline, the result arrives here
            result = cur.pgresult
            rows.append(roundtrip.rows_of(result) if result is not None else [])
        else:
            rows.append([])
    return rows


class WriterClosed(RuntimeError):
    """The writer is not running (not started yet, or shut down)."""


class WriteTimeout(TimeoutError):
    """A submission did not complete within the writer's timeout."""


class DatabaseUnavailable(Unavailable):
    """PostgreSQL cannot be reached (or stopped answering): nothing was written by this call,
    or — when a broken COMMIT was retried and failed again — its outcome is unknown and the
    caller reconciles. A 503 for the API; retry once the database is back."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("database unavailable; retry with the same orderId")
        self.detail = detail

    def __repr__(self) -> str:
        return f"DatabaseUnavailable({self.detail!r})"


#: How long a submission nobody's reply waits on may wait for others to share its commit.
LINGER_S = 0.002

#: Ops of non-urgent submissions that may ride along in a batch led by urgent ones.
FOLD_OPS = 32

#: Reconnect probes while the database is unavailable: the first after this long, doubling.
PROBE_FIRST_S = 0.1
PROBE_MAX_S = 2.0


@dataclass
class WriterStats:
    batches: int = 0  # transactions committed or attempted
    ops: int = 0
    submissions: int = 0
    max_batch: int = 0  # most ops in one transaction
    fallbacks: int = 0  # batches re-run one submission at a time
    failures: int = 0  # submissions that got an exception
    retries: int = 0  # batches run again on a fresh connection after the first one broke
    outages: int = 0  # times the database became unavailable
    reconnects: int = 0  # times it became available again
    #: Told each batch's ops and commit duration (s) as it ends (metrics); must be quick.
    on_batch: Callable[[int, float], None] | None = None

    @property
    def mean_batch(self) -> float:
        return self.ops / self.batches if self.batches else 0.0


class _Submission:
    __slots__ = ("abandoned", "done", "error", "ops", "results", "taken", "urgent")

    def __init__(self, ops: list[WriteOp[Any]], urgent: bool = True) -> None:
        self.ops = ops
        self.urgent = urgent  # a reply waits on it: never held back for company
        self.taken = False  # the writer has it: it will be committed or rolled back
        self.abandoned = False  # the caller left before the writer took it: skip it
        self.done = trio.Event()
        self.results: list[Any] = []
        self.error: BaseException | None = None


def connection_kwargs(conninfo: str, *, statement_timeout: float) -> dict[str, Any]:
    """libpq settings that bound every wait on the network (connect, a dead peer, unacknowledged
    data), unless `conninfo` sets them itself."""
    defaults: dict[str, Any] = {
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": int(max(10.0, 2 * statement_timeout) * 1000),
    }
    given = conninfo_to_dict(conninfo)
    return {key: value for key, value in defaults.items() if key not in given}


def configure_session(conn: psycopg.Connection[Any], *, statement_timeout: float) -> None:
    """UTC session time zone (timestamps come back in UTC; a naive one would be read as UTC) and
    a server-side bound on each statement."""
    conn.execute(_CONFIGURE, (_statement_timeout(statement_timeout),))


_CONFIGURE = b"SELECT set_config('TimeZone', 'UTC', false), set_config('statement_timeout', %s, false)"


def _statement_timeout(seconds: float) -> str:
    return f"{max(1, int(seconds * 1000))}ms"


def connect(conninfo: str, *, statement_timeout: float) -> psycopg.Connection[Any]:
    """An autocommit connection set up the way the store expects."""
    conn = psycopg.connect(
        conninfo, autocommit=True, **connection_kwargs(conninfo, statement_timeout=statement_timeout)
    )
    try:
        configure_session(conn, statement_timeout=statement_timeout)
    except BaseException:
        conn.close()
        raise
    return conn


class GroupWriter:
    """Owns `lanes` dedicated connections. Start `run` with `nursery.start`; `close()` stops
    intake and lets `run` finish what is queued, then disconnect."""

    def __init__(
        self,
        conninfo: str,
        *,
        max_batch: int = 512,
        timeout: float = 30.0,
        statement_timeout: float = 10.0,
        queue_size: int | None = None,
        lanes: int = 1,
        linger: float = LINGER_S,
        fold_ops: int = FOLD_OPS,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if lanes < 1:
            raise ValueError("lanes must be at least 1")
        self._conninfo = conninfo
        self._max_batch = max_batch
        self._timeout = timeout
        self._statement_timeout = statement_timeout
        self._send, self._receive = trio.open_memory_channel[_Submission](
            queue_size if queue_size is not None else 4 * max_batch
        )
        self._lanes = [_Lane(i) for i in range(lanes)]
        self._linger = linger
        self._fold_ops = fold_ops
        #: Submissions received but not taken yet: non-urgent ones waiting for room in a batch
        #: (and, rarely, urgent ones put back so that these get their turn).
        self._backlog: deque[_Submission] = deque()
        #: The last batch was led by urgent submissions and left waiting ones in the backlog.
        self._passed_over = False
        self._running = False
        self._stopped = trio.Event()
        #: Set while writing works; replaced by an unset event for the length of an outage.
        self._back = trio.Event()
        self._back.set()
        self._outage_error = ""
        self._probing = False
        self._nursery: trio.Nursery | None = None
        self.stats = WriterStats()

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        if self._running and not self.available:
            state = "unavailable"
        return f"<GroupWriter {state} batches={self.stats.batches} ops={self.stats.ops}>"

    # --- availability ---------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False from the moment a connection could not be made or re-made until a probe
        reconnects."""
        return self._back.is_set()

    async def wait_available(self) -> None:
        """Return once the database is available (at once if it is)."""
        await self._back.wait()

    def report_lost(self, detail: str) -> None:
        """Someone else (a reader) found the database gone: fail fast from now on and probe."""
        if self.available:
            self._outage_error = detail
            self._back = trio.Event()
            self.stats.outages += 1
            log.error("database unavailable; retrying with backoff", extra={"error": detail})
        if not self._probing and self._nursery is not None:
            self._probing = True
            self._nursery.start_soon(self._probe)

    async def _probe(self) -> None:
        """Reconnect a lane with capped exponential backoff and jitter until it works."""
        delay = PROBE_FIRST_S
        lane = self._lanes[0]
        try:
            while not self.available:
                await trio.sleep(delay * (0.5 + random.random()))
                delay = min(PROBE_MAX_S, delay * 2)
                try:
                    async with lane.lock:
                        await lane.drop()
                        await lane.usable(self._connect)
                except psycopg.Error as exc:
                    self._outage_error = repr(exc)
                    continue
                self.stats.reconnects += 1
                self._back.set()
                log.warning("database available again")
        finally:
            self._probing = False

    # --- caller side ----------------------------------------------------------------------

    async def submit(self, ops: Sequence[WriteOp[R]], *, urgent: bool = True) -> list[R]:
        """Run `ops` in one transaction (shared with other submissions) and return their results
        once committed. `urgent=False`: nobody's reply waits on this write, so it may wait up
        to `linger` for other submissions to share its commit (see "Lingering"). Raises the
        op's exception if this submission failed alone, `WriterClosed` if the writer is not
        running, `DatabaseUnavailable` at once during an outage (nothing
        written) or when the connection broke twice under this batch (outcome unknown),
        `WriteTimeout` past `timeout` (before the writer took the submission: nothing written;
        after: outcome unknown)."""
        if not ops:
            return []
        if not self._running:
            raise WriterClosed("the writer is not running")
        if not self.available:
            raise DatabaseUnavailable(self._outage_error)
        sub = _Submission(list(ops), urgent)
        deadline = trio.current_time() + self._timeout
        try:
            with trio.move_on_at(deadline):
                try:
                    try:
                        self._send.send_nowait(sub)  # no trip through the scheduler when there is room
                    except trio.WouldBlock:
                        await self._send.send(sub)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    raise WriterClosed("the writer is shutting down") from None
                await sub.done.wait()
        except trio.Cancelled:
            await self._settle_cancelled(sub)
            raise
        if not sub.done.is_set():
            if sub.taken:
                raise WriteTimeout(f"write not confirmed within {self._timeout}s: outcome unknown")
            sub.abandoned = True
            raise WriteTimeout(f"writer queue did not drain within {self._timeout}s: nothing written")
        if sub.error is not None:
            raise sub.error
        return sub.results

    async def _settle_cancelled(self, sub: _Submission) -> None:
        if not sub.taken:
            sub.abandoned = True
            return
        with trio.move_on_after(self._timeout) as scope:
            scope.shield = True
            await sub.done.wait()

    # --- writer side ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, report started, then commit batches until `close()` (or cancellation)."""
        for lane in self._lanes:
            lane.conn = await self._connect()
        self._running = True
        try:
            task_status.started()
            await self._loop()
        finally:
            self._running = False
            self._fail_queued()  # then close: later senders get WriterClosed
            self._receive.close()
            with trio.CancelScope(shield=True), trio.move_on_after(self._timeout):
                for lane in self._lanes:
                    await lane.drop()
            self._stopped.set()

    def close(self) -> None:
        """Stop taking submissions; `run` commits what is already queued and returns."""
        self._send.close()

    async def aclose(self) -> None:
        """`close()`, then wait until `run` has committed the queue and disconnected (returns at
        once if `run` never started)."""
        self.close()
        if self._running:
            await self._stopped.wait()

    async def _loop(self) -> None:
        free_send, free_receive = trio.open_memory_channel[_Lane](len(self._lanes))
        for lane in self._lanes:
            free_send.send_nowait(lane)
        async with trio.open_nursery() as in_flight:  # returns once every lane has committed
            self._nursery = in_flight
            while True:
                received: list[_Submission] = []
                if not self._backlog:
                    try:
                        first = await self._receive.receive()
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        return
                    received = [first]
                try:
                    if received:
                        received = await self._company(received[0])
                    lane = await free_receive.receive()  # meanwhile the queue keeps filling
                except BaseException:  # stopped while holding these: they were never taken
                    self._fail(received, WriterClosed("the writer stopped before this write was taken"))
                    raise
                batch = self._take(received)
                if batch and not self.available:  # queued before the outage: fail fast, unwritten
                    self._fail(batch, DatabaseUnavailable(self._outage_error))
                    batch = []
                if batch:
                    in_flight.start_soon(self._commit_on, lane, batch, free_send)
                else:
                    free_send.send_nowait(lane)

    async def _commit_on(
        self, lane: _Lane, batch: list[_Submission], free: trio.MemorySendChannel[_Lane]
    ) -> None:
        try:
            await self._commit(batch, lane)
        finally:
            free.send_nowait(lane)

    async def _company(self, first: _Submission) -> list[_Submission]:
        """`first` and, if it is not urgent, what arrives within `linger` of it: until an urgent
        submission comes (it goes at once, with them), `max_batch` ops are waiting, or the writer
        is closed. Nothing received here is taken yet: a caller may still leave."""
        received = [first]
        if first.urgent or self._linger <= 0:
            return received
        size = len(first.ops)
        with trio.move_on_after(self._linger):
            while size < self._max_batch:
                try:
                    sub = await self._receive.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    break
                received.append(sub)
                size += len(sub.ops)
                if sub.urgent:
                    break
        return received

    def _take(self, received: list[_Submission]) -> list[_Submission]:
        """The next batch, from `received`, everything queued and the backlog (see "Urgent
        first"): the urgent submissions (up to `max_batch` ops) with at most `fold_ops` ops of
        waiting ones folded in; or, when there is no urgent one — or the previous batch left
        waiting ones behind (so that they are never starved) — everything in arrival order
        from the backlog's oldest, up to `max_batch` ops. The rest stays in the backlog."""
        urgent: list[_Submission] = []
        size = 0
        for sub in received:
            if sub.urgent:
                urgent.append(sub)
                size += len(sub.ops)
            else:
                self._backlog.append(sub)
        while size < self._max_batch:
            try:
                sub = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if sub.urgent:
                urgent.append(sub)
                size += len(sub.ops)
            else:
                self._backlog.append(sub)
        backlog = self._backlog
        if urgent and backlog and self._passed_over:
            # the previous batch went without the waiting ones: this one is theirs too
            backlog.extendleft(reversed(urgent))
            urgent, size = [], 0
        budget = min(self._fold_ops, self._max_batch - size) if urgent else self._max_batch
        batch: list[_Submission] = []
        for sub in urgent:
            if not sub.abandoned:
                batch.append(sub)
        while backlog and (len(backlog[0].ops) <= budget or not batch):
            sub = backlog.popleft()
            if sub.abandoned:
                continue
            batch.append(sub)
            budget -= len(sub.ops)
        self._passed_over = bool(urgent) and bool(backlog)
        for sub in batch:
            sub.taken = True
        return batch

    async def _commit(self, batch: list[_Submission], lane: _Lane) -> None:
        """Run `batch` to its end even if the writer is being stopped (a taken submission is
        committed or rolled back, never left half-known), bounded by `timeout`."""
        done = None
        started = trio.current_time()
        try:
            with trio.CancelScope(shield=True, deadline=started + self._timeout):
                async with lane.lock:
                    done = await self._run_batch(batch, lane)
        except BaseException as exc:  # a bug in this module: never leave a caller waiting
            for sub in batch:
                sub.error = exc if isinstance(exc, Exception) else WriterClosed("the writer failed")
                sub.done.set()
            raise
        if done is None:  # past the deadline, mid-protocol: the lane's connection is closed next time
            self._fail(batch, WriteTimeout(f"write not confirmed within {self._timeout}s: outcome unknown"))
            return
        outcomes, fell_back, lost = done
        if lost is not None:
            self.report_lost(lost)
        stats = self.stats
        size = sum(len(sub.ops) for sub in batch)
        stats.batches += 1
        stats.ops += size
        stats.submissions += len(batch)
        stats.max_batch = max(stats.max_batch, size)
        if stats.on_batch is not None:
            stats.on_batch(size, trio.current_time() - started)
        stats.fallbacks += fell_back
        for sub, (results, error) in zip(batch, outcomes, strict=True):
            sub.results = results
            sub.error = error
            if error is not None:
                stats.failures += 1
            sub.done.set()

    @staticmethod
    def _fail(batch: list[_Submission], error: BaseException) -> None:
        for sub in batch:
            sub.error = error
            sub.done.set()

    def _fail_queued(self) -> None:
        while self._backlog:
            sub = self._backlog.popleft()
            sub.error = WriterClosed("the writer stopped before this write was taken")
            sub.done.set()
        while True:
            try:
                sub = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            sub.error = WriterClosed("the writer stopped before this write was taken")
            sub.done.set()

    # --- one batch on one lane -----------------------------------------------------------

    async def _connect(self) -> TrioConnection:
        return await connect_trio(self._conninfo, statement_timeout=self._statement_timeout)

    async def _run_batch(
        self, batch: list[_Submission], lane: _Lane
    ) -> tuple[list[tuple[list[Any], BaseException | None]], bool, str | None]:
        """Outcomes per submission, whether the batch fell back to one submission at a time,
        and why the database is unavailable (None: it is not)."""
        for attempt in (1, 2):
            try:
                conn = await lane.usable(self._connect)
            except psycopg.Error as exc:
                return self._unavailable(batch, exc)
            try:
                return [(results, None) for results in await _transact(conn, batch)], False, None
            except Exception as exc:
                if connection_failed(exc, conn):
                    await lane.drop()
                    if attempt == 1:  # every op is idempotent: once more on a fresh connection
                        self.stats.retries += 1
                        continue
                    return self._unavailable(batch, exc)
                if len(batch) == 1:
                    return [([], exc)], False, None
                break
        outcomes: list[tuple[list[Any], BaseException | None]] = []
        lost: str | None = None
        for sub in batch:
            if lost is not None:
                outcomes.append(([], DatabaseUnavailable(lost)))
                continue
            try:
                conn = await lane.usable(self._connect)
                outcomes.append(((await _transact(conn, [sub]))[0], None))
            except Exception as exc:
                broken = lane.conn is None or connection_failed(exc, lane.conn)
                if isinstance(exc, psycopg.Error) and broken:
                    await lane.drop()
                    lost = repr(exc)
                    outcomes.append(([], DatabaseUnavailable(lost)))
                else:
                    outcomes.append(([], exc))
        return outcomes, True, lost

    @staticmethod
    def _unavailable(
        batch: list[_Submission], exc: BaseException
    ) -> tuple[list[tuple[list[Any], BaseException | None]], bool, str]:
        detail = repr(exc)
        return [([], DatabaseUnavailable(detail)) for _ in batch], False, detail


def connection_failed(
    exc: BaseException, conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any] | None = None
) -> bool:
    """The failure is the connection's (or the server's going away), not the statements': worth
    one more try on a fresh connection. Client-side errors carry no SQLSTATE; the server's own
    "going away" states are class 08 (connection exception) and 57P01-57P03 (shutdown, crash,
    starting up). A deadlock or a statement timeout is the statements' and is not retried here."""
    if conn is not None and (conn.broken or conn.closed or getattr(conn, "interrupted", False)):
        return True
    if isinstance(exc, psycopg.InterfaceError):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


class _Lane:
    """One connection of the writer and the lock that keeps it to one task at a time."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.conn: TrioConnection | None = None
        self.lock = trio.Lock()

    def __repr__(self) -> str:
        return f"<_Lane {self.index} {'connected' if self.conn is not None else 'idle'}>"

    async def usable(self, connect: Callable[[], Awaitable[TrioConnection]]) -> TrioConnection:
        conn = self.conn
        if conn is None or conn.closed or conn.broken or conn.interrupted:
            await self.drop()
            self.conn = conn = await connect()
        return conn

    async def drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with trio.CancelScope(shield=True):
                await trio_pg.close(conn)


#: A writing session also runs with enable_seqscan off. Every statement a writer runs finds its
#: rows by key, but a plan is made once per connection (prepared statements) and kept until the
#: table is next analyzed: made while a table was nearly empty (a new database, a new session's
#: first minute before autovacuum's ANALYZE), it scans the table on every execution as it grows.
#: Measured in bench/fix.py: 2,304 scans reading 4.2 million rows of fix_outbound_messages and
#: 1,294 reading 644,000 of broker_orders for 1,365 orders. A statement with no usable index
#: still scans; a small table's index lookup costs about what its scan does.
_CONFIGURE_WRITER = _CONFIGURE + b", set_config('enable_seqscan', 'off', false)"


async def connect_trio(conninfo: str, *, statement_timeout: float) -> TrioConnection:
    """`connect`, as a `TrioConnection`, for writing (see `_CONFIGURE_WRITER`)."""
    conn = await trio_pg.connect(conninfo, **connection_kwargs(conninfo, statement_timeout=statement_timeout))
    try:
        await conn.execute(_CONFIGURE_WRITER, (_statement_timeout(statement_timeout),))
    except BaseException:
        await trio_pg.close(conn)
        raise
    return conn


async def _transact(conn: TrioConnection, batch: Sequence[_Submission]) -> list[list[Any]]:
    """Run every op of `batch` in one transaction; results per submission. One round trip when
    every class of the batch has `statements`, else a psycopg pipeline (see the module)."""
    groups: dict[type[WriteOp[Any]], list[tuple[int, int, WriteOp[Any]]]] = {}
    for s, sub in enumerate(batch):
        for o, op in enumerate(sub.ops):
            groups.setdefault(type(op), []).append((s, o, op))
    results: list[list[Any]] = [[None] * len(sub.ops) for sub in batch]
    ordered = sorted(groups.items(), key=lambda item: item[0].phase)  # stable: ties keep arrival order

    def keep(cls: type[WriteOp[Any]], items: list[tuple[int, int, WriteOp[Any]]], out: Sequence[Any]) -> None:
        if len(out) != len(items):
            raise RuntimeError(f"{cls.__name__}: {len(out)} results for {len(items)} ops")
        for (s, o, _), result in zip(items, out, strict=True):
            results[s][o] = result

    try:
        plans = [(cls, items, cls.statements([op for _, _, op in items])) for cls, items in ordered]
        if all(statements is not None for _, _, statements in plans):
            every = [statement for _, _, statements in plans for statement in statements or ()]
            rows = await roundtrip.run(conn, every) if every else []
            start = 0
            for cls, items, statements in plans:
                end = start + len(statements or ())
                keep(cls, items, await cls.finish(conn, [op for _, _, op in items], rows[start:end]))
                start = end
            return results
        async with conn.pipeline(), conn.transaction():
            for cls, items, statements in plans:  # statements as planned above, not made twice
                ops = [op for _, _, op in items]
                if statements is None:
                    keep(cls, items, await cls.run_batch(conn, ops))
                else:
                    keep(cls, items, await cls.finish(conn, ops, await _executed(conn, statements)))
    except psycopg.errors.NoDataFound as exc:  # `bis_missing`: a row the op expected is not there
        raise LookupError(exc.diag.message_primary or str(exc)) from exc
    return results
