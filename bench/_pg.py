"""PostgreSQL probes of the benchmarks: counters, statistics, CPU of the benchmark's own server and
WAL by relation, all through one monitoring connection (`PgProbe`).

What each probe counts, and what it cannot:

- `counters()`: immediate. The next transaction id (every write transaction takes one; read-only
  ones do not) and the WAL insert position (`pg_current_wal_lsn()`, as bytes and as text).
- `db_stats()`: the cumulative statistics of the benchmark's database (`pg_stat_database`:
  xact_commit, xact_rollback; `pg_stat_user_tables`: seq_scan, seq_tup_read, idx_scan). Backends
  publish these lazily: a busy one at most once a second, one that went idle when it next does
  something a second or more after its last report, else after 10 s. `settled_stats()` reads
  them once the counts have stopped moving (fewer than `STATS_QUIET` commits and scans in the
  last second: the daemon's background work goes on) after a quiet stretch; use it before and
  after what is measured. The probe's own queries are counted (`queries`) so a caller can
  subtract them.
- `cpu()`: CPU seconds (user + system, /proc) of the benchmark's server. Embedded server: the
  whole process tree of its postmaster (the postmaster, its live children, and through the
  postmaster's cutime/cstime every child that has exited, autovacuum workers and closed
  connections included). Either server: the client backends connected to the benchmark's
  database (pg_stat_activity pids, read from /proc when the server runs on this machine; a
  backend that exits between two samples loses its CPU). With DATABASE_URL the server's
  background processes (walwriter, checkpointer, background writer, autovacuum launcher) serve
  every database on it and are not counted.
- `wal_breakdown(start, end)`: WAL bytes between two LSNs grouped by relation: with
  pg_walinspect (`CREATE EXTENSION pg_walinspect`, PostgreSQL 15+) when the server has it, else,
  for the embedded server, the `pg_waldump` next to its postgres binary on its pg_wal directory.
  A temporary physical replication slot, held by the monitoring connection, keeps the WAL from
  being recycled until it is read (gone when the connection closes, however the run ends).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
STATS_MIN_WAIT = 1.2  # s: a busy backend publishes its statistics at most once a second
STATS_QUIET = 25  # commits + table scans per second below which the statistics count as settled
STATS_MAX_WAIT = 8.0  # s: an idle backend publishes within 10 s; past this, read them as they are

# A record's bytes go to the relation of its first block reference; records with none are grouped
# by resource manager. Labels of the groups that are not a table of the benchmark's database:
CATALOGS = "(system catalogs)"
COMMITS = "(transaction records: commit/abort)"
NO_RELATION = "(other records, no relation)"
OTHER_DATABASES = "(other databases)"
UNKNOWN = "(relations not found)"
KINDS = ("heap", "index", "toast")


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, own CPU seconds, reaped children's CPU seconds) of a process, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        own = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
        children = (int(fields[13]) + int(fields[14])) / CLK_TCK  # cutime + cstime
        return int(fields[1]), own, children
    except (OSError, IndexError, ValueError):
        return None


def _is_postgres(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip() in ("postgres", "postmaster")
    return False


def postmaster_pid(pgdata: Path) -> int | None:
    """The postmaster's pid from `<pgdata>/postmaster.pid`, if that process is a live postgres."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    return pid if _is_postgres(pid) else None


@dataclass
class CpuSample:
    server: float | None  # the postmaster's whole tree (embedded server only)
    backends: dict[int, float] = field(default_factory=dict)  # client backends of the benchmark's db


@dataclass
class WalBreakdown:
    """WAL bytes between two LSNs: per group (a table, or one of the labels above) and kind."""

    method: str
    lsn_bytes: int  # the LSN difference: records plus page headers and alignment
    groups: dict[str, Counter[str]] = field(default_factory=dict)  # keys: heap/index/toast/fpi/total
    error: str | None = None

    @property
    def records(self) -> int:
        return sum(c["total"] for c in self.groups.values())

    @property
    def fpi(self) -> int:
        return sum(c["fpi"] for c in self.groups.values())


@dataclass(frozen=True)
class _Relation:
    name: str
    kind: str  # heap, index or toast
    group: str


_HEAD = re.compile(r"rmgr: (\S+)\s+len \(rec/tot\):\s*(\d+)/\s*(\d+),")
_REL = re.compile(r"rel \d+/(\d+)/(\d+)")


class PgProbe:
    """One autocommit connection to the benchmark's database, for everything above."""

    def __init__(self, database_url: str, *, pgdata: Path | None = None) -> None:
        import psycopg

        self.url = database_url
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.queries = 0
        row = self._one(
            "SELECT pg_backend_pid(), oid, current_setting('server_version_num')::int"
            " FROM pg_database WHERE datname = current_database()"
        )
        self.pid, self.dboid, self.version_num = int(row[0]), int(row[1]), int(row[2])
        self.postmaster = postmaster_pid(pgdata) if pgdata is not None else None
        self.pgdata = pgdata
        self.wal_method, self.wal_note = self._wal_method()
        self.slot_note = self._reserve_wal() if self.wal_method else ""

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()  # also drops the temporary replication slot

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        self.queries += 1
        return self.conn.execute(sql, params).fetchall()

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
        rows = self._all(sql, params)
        assert rows, sql
        return rows[0]

    # --- counters and statistics --------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        row = self._one(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, pg_current_wal_lsn()::text"
        )
        return {"next_xid": int(row[0]), "wal_bytes": int(row[1]), "lsn": str(row[2])}

    def db_stats(self) -> dict[str, Any]:
        """Cumulative statistics of the benchmark's database (see the module docstring);
        `tables`: table -> (seq_scan, seq_tup_read, idx_scan)."""
        queries = self.queries  # before this one: the caller subtracts the probe's own commits
        row = self._one(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datid = %s", (self.dboid,)
        )
        tables = {
            str(name): (int(seq), int(tup), int(idx or 0))
            for name, seq, tup, idx in self._all(
                "SELECT relname, seq_scan, seq_tup_read, idx_scan FROM pg_stat_user_tables"
            )
        }
        return {
            "xact_commit": int(row[0]),
            "xact_rollback": int(row[1]),
            "seq_scan": sum(t[0] for t in tables.values()),
            "seq_tup_read": sum(t[1] for t in tables.values()),
            "idx_scan": sum(t[2] for t in tables.values()),
            "tables": tables,
            "probe_queries": queries,
        }

    def settled_stats(self) -> tuple[dict[str, Any], float]:
        """`db_stats()` once the backends have published what they did (see the module
        docstring), and the seconds it took; call it when the load has stopped."""
        started = time.perf_counter()
        time.sleep(STATS_MIN_WAIT)
        samples = [(time.perf_counter(), self.db_stats())]
        while True:
            time.sleep(0.5)
            now, stats = time.perf_counter(), self.db_stats()
            samples.append((now, stats))
            if now - started >= STATS_MAX_WAIT:
                return stats, now - started
            earlier = [s for t, s in samples if now - t >= 0.99]
            if earlier:
                old = earlier[-1]
                moved = (
                    (stats["xact_commit"] - old["xact_commit"])
                    - (stats["probe_queries"] - old["probe_queries"])
                    + (stats["seq_scan"] - old["seq_scan"])
                    + (stats["idx_scan"] - old["idx_scan"])
                )
                if moved < STATS_QUIET:
                    return stats, now - started

    def unpublished_updates(self) -> int:
        return int(self._one("SELECT count(*) FROM unpublished_events")[0])

    def analyze(self) -> float:
        """`ANALYZE` the whole database; seconds. Dependent cached plans (prepared statements,
        foreign-key checks) are invalidated and re-planned at their next use. On a connection of
        its own: ANALYZE commits once per relation, and a backend that exits publishes its
        statistics at once (this one's might otherwise land in a later measurement)."""
        import psycopg

        started = time.perf_counter()
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("ANALYZE")
        return time.perf_counter() - started

    # --- CPU ----------------------------------------------------------------------------

    def cpu(self) -> CpuSample:
        pids = [
            int(r[0])
            for r in self._all(
                "SELECT pid FROM pg_stat_activity WHERE datid = %s AND backend_type = 'client backend'"
                " AND pid <> pg_backend_pid()",
                (self.dboid,),
            )
        ]
        backends = {}
        for pid in pids:
            stat = _stat(pid) if _is_postgres(pid) else None
            if stat is not None:
                backends[pid] = stat[1]
        return CpuSample(server=self._tree_cpu(), backends=backends)

    def _tree_cpu(self) -> float | None:
        if self.postmaster is None:
            return None
        root = _stat(self.postmaster)
        if root is None:
            return None
        total = root[1] + root[2]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                stat = _stat(int(entry.name))
                if stat is not None and stat[0] == self.postmaster:
                    total += stat[1]
        return total

    def cpu_local(self) -> bool:
        """Whether backend CPU can be read here (the server runs on this machine, same pids)."""
        return self.postmaster is not None or bool(self.cpu().backends)

    @staticmethod
    def cpu_diff(before: CpuSample, after: CpuSample) -> tuple[float | None, float | None]:
        """(server seconds, benchmark-database backend seconds) between two samples."""
        server = None
        if before.server is not None and after.server is not None:
            server = after.server - before.server
        backends = sum(cpu - before.backends.get(pid, 0.0) for pid, cpu in after.backends.items())
        return server, (backends if after.backends else None)

    # --- WAL ----------------------------------------------------------------------------

    def _wal_method(self) -> tuple[str | None, str]:
        import psycopg

        if self.version_num >= 150000:
            try:
                self.queries += 1
                self.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
                allowed = self._one(
                    "SELECT has_function_privilege("
                    "'pg_get_wal_records_info(pg_lsn, pg_lsn)'::regprocedure, 'EXECUTE')"
                )[0]
                if allowed:
                    return "pg_walinspect", "pg_walinspect"
                reason = "pg_walinspect: no EXECUTE privilege"
            except psycopg.Error as exc:
                reason = str(exc).strip().splitlines()[0]
        else:
            reason = f"server {self.version_num} < 15: no pg_walinspect"
        waldump = self._waldump()
        if waldump is not None:
            return "pg_waldump", f"pg_waldump ({reason})"
        return None, f"total only ({reason}; no pg_waldump for this server)"

    def _waldump(self) -> Path | None:
        if self.postmaster is None or self.pgdata is None:
            return None
        with contextlib.suppress(OSError):
            binary = Path(os.readlink(f"/proc/{self.postmaster}/exe")).with_name("pg_waldump")
            if binary.exists() and (self.pgdata / "pg_wal").is_dir():
                return binary
        return None

    def _reserve_wal(self) -> str:
        import psycopg

        try:
            self._one(
                "SELECT pg_create_physical_replication_slot(%s, immediately_reserve => true,"
                " temporary => true)",
                (f"bis_bench_{os.getpid()}_{self.pid}",),
            )
            return "WAL held by a temporary replication slot until read"
        except psycopg.Error as exc:
            return f"no replication slot ({str(exc).strip().splitlines()[0]}): WAL may be recycled"

    def wal_breakdown(self, start_lsn: str, end_lsn: str, lsn_bytes: int) -> WalBreakdown:
        result = WalBreakdown(method=self.wal_method or "LSN difference", lsn_bytes=lsn_bytes)
        if self.wal_method is None:
            return result
        try:
            raw = (
                self._walinspect(start_lsn, end_lsn)
                if self.wal_method == "pg_walinspect"
                else (self._pg_waldump(start_lsn, end_lsn))
            )
        except Exception as exc:  # the figures stay without it; say why
            result.error = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
            return result
        relations = self._relations()
        for (rmgr, db, filenode), (total, fpi) in raw.items():
            if filenode is None:
                group, kind = (COMMITS if rmgr == "Transaction" else NO_RELATION), "heap"
            elif db == 0:
                group, kind = CATALOGS, "heap"
            elif db != self.dboid:
                group, kind = OTHER_DATABASES, "heap"
            else:
                relation = relations.get(filenode)
                group, kind = (relation.group, relation.kind) if relation else (UNKNOWN, "heap")
            counter = result.groups.setdefault(group, Counter())
            counter[kind] += total
            counter["total"] += total
            counter["fpi"] += fpi
        return result

    def _walinspect(
        self, start_lsn: str, end_lsn: str
    ) -> dict[tuple[str, int | None, int | None], list[int]]:
        rows = self._all(
            "SELECT resource_manager, m[1]::bigint, m[2]::bigint, sum(record_length)::bigint,"
            " sum(fpi_length)::bigint FROM (SELECT resource_manager, record_length, fpi_length,"
            "   regexp_match(block_ref, 'rel \\d+/(\\d+)/(\\d+)') AS m"
            "   FROM pg_get_wal_records_info(%s::pg_lsn, least(%s::pg_lsn, pg_current_wal_flush_lsn()))) r"
            " GROUP BY 1, 2, 3",
            (start_lsn, end_lsn),
        )
        return {
            (str(r[0]), None if r[1] is None else int(r[1]), None if r[2] is None else int(r[2])): [
                int(r[3]),
                int(r[4]),
            ]
            for r in rows
        }

    def _pg_waldump(
        self, start_lsn: str, end_lsn: str
    ) -> dict[tuple[str, int | None, int | None], list[int]]:
        binary = self._waldump()
        assert binary is not None and self.pgdata is not None
        # The end must be flushed for pg_waldump to read it: it is once the caller has waited.
        command = [str(binary), "--path", str(self.pgdata / "pg_wal"), "--start", start_lsn, "--end", end_lsn]
        out: dict[tuple[str, int | None, int | None], list[int]] = {}
        head, rel = _HEAD.match, _REL.search
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            for line in proc.stdout:
                m = head(line)
                if m is None:
                    continue
                rec, tot = int(m.group(2)), int(m.group(3))
                at = line.find("blkref #", m.end())
                r = rel(line, at) if at >= 0 else None
                key = (m.group(1), int(r.group(1)), int(r.group(2))) if r else (m.group(1), None, None)
                slot = out.get(key)
                if slot is None:
                    out[key] = [tot, tot - rec]
                else:
                    slot[0] += tot
                    slot[1] += tot - rec
            err = proc.stderr.read()
        if proc.returncode != 0 and not out:
            raise RuntimeError(f"pg_waldump exited with {proc.returncode}: {err.strip()[-300:]}")
        return out

    def _relations(self) -> dict[int, _Relation]:
        """filenode -> relation of the benchmark's database, grouped under the table it serves."""
        rows = self._all(
            """
            SELECT pg_relation_filenode(c.oid), c.oid, c.relname, c.relkind, n.nspname,
                   coalesce(i.indrelid, 0),
                   coalesce((SELECT o.oid FROM pg_class o WHERE o.reltoastrelid = c.oid LIMIT 1), 0),
                   coalesce((SELECT d.refobjid FROM pg_depend d
                             WHERE c.relkind = 'S' AND d.classid = 'pg_class'::regclass
                               AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
                               AND d.deptype IN ('a', 'i') LIMIT 1), 0)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_index i ON i.indexrelid = c.oid
            WHERE pg_relation_filenode(c.oid) IS NOT NULL
            """
        )
        info = {int(r[1]): r for r in rows}

        def owner(oid: int) -> tuple[int, bool]:
            """(the table that `oid` ultimately serves, whether through a TOAST table)."""
            row = info.get(oid)
            if row is None:
                return oid, False
            if row[5]:  # an index: of its table (which may be a TOAST table)
                return owner(int(row[5]))
            if row[6]:  # a TOAST table: of its table
                return int(row[6]), True
            if row[7]:  # a sequence owned by a column
                return int(row[7]), False
            return oid, False

        out = {}
        for filenode, oid, name, relkind, _nsp, *_ in rows:
            table, toast = owner(int(oid))
            table_row = info.get(table)
            if table_row is None or table_row[4] in ("pg_catalog", "information_schema", "pg_toast"):
                group = CATALOGS
            else:
                group = str(table_row[2]) if table_row[4] == "public" else f"{table_row[4]}.{table_row[2]}"
            kind = "toast" if toast else ("index" if relkind == "i" else "heap")
            out[int(filenode)] = _Relation(str(name), kind, group)
        return out
