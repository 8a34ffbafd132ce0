"""Schema migrations: plain `.sql` files in `sql/migrations`, applied in name order, recorded in
`schema_migrations`.

Guarantees of `apply_migrations`:
- each migration runs in its own transaction together with its record, so a migration is either
  applied and recorded or not applied at all;
- a session advisory lock serialises daemons starting together: the second waits, then finds
  nothing left to do;
- an applied migration whose file changed since (checksum mismatch) stops everything with
  `MigrationChecksumMismatch`: the database no longer matches the code that describes it.
Migrations recorded in the database but unknown to this code (a newer daemon ran) are left alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources

import msgspec
import psycopg

__all__ = ["Migration", "MigrationChecksumMismatch", "MigrationError", "apply_migrations", "load_migrations"]

#: Key of the session advisory lock held while migrating (any constant shared by all daemons).
ADVISORY_LOCK_KEY = 0x0B15_0001
#: How long a daemon waits for another one's migrations before giving up.
LOCK_TIMEOUT_S = 120


class MigrationError(Exception):
    """The schema cannot be brought up to date."""


class MigrationChecksumMismatch(MigrationError):
    def __init__(self, version: str, recorded: str, current: str) -> None:
        super().__init__(
            f"migration {version} was applied with checksum {recorded}, but its file now has"
            f" checksum {current}: applied migrations must never be edited (add a new one)"
        )
        self.version = version


class Migration(msgspec.Struct, frozen=True):
    version: str  # the file name without ".sql", e.g. "0001_schema"
    sql: bytes

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql).hexdigest()

    def __repr__(self) -> str:
        return f"<Migration {self.version} sha256={self.checksum[:12]}>"


def load_migrations() -> list[Migration]:
    """The package's migrations (package data `sql/migrations/*.sql`), in name order."""
    folder = resources.files("sql").joinpath("migrations")
    found = [
        Migration(entry.name.removesuffix(".sql"), entry.read_bytes())
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.endswith(".sql")
    ]
    return sorted(found, key=lambda m: m.version)


_CREATE_TABLE = b"""
CREATE TABLE IF NOT EXISTS schema_migrations (
    version TEXT PRIMARY KEY,
    checksum TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


def apply_migrations(conninfo: str, *, migrations: Sequence[Migration] | None = None) -> list[str]:
    """Apply the migrations not yet applied; return their versions (empty when up to date).

    `migrations` defaults to the package's own (tests pass others). Blocking: call it before
    the Trio run, or in `trio.to_thread.run_sync`."""
    wanted = sorted(load_migrations() if migrations is None else migrations, key=lambda m: m.version)
    applied_now: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(b"SELECT set_config('lock_timeout', %s, false)", (f"{LOCK_TIMEOUT_S}s",))
        try:
            conn.execute(b"SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        except psycopg.errors.LockNotAvailable as exc:
            raise MigrationError(
                f"another process held the migration lock for more than {LOCK_TIMEOUT_S}s"
            ) from exc
        conn.execute(b"SET lock_timeout = DEFAULT")
        try:
            conn.execute(_CREATE_TABLE)
            recorded: dict[str, str] = dict(
                conn.execute(b"SELECT version, checksum FROM schema_migrations").fetchall()
            )
            for migration in wanted:
                checksum = recorded.get(migration.version)
                if checksum is not None and checksum != migration.checksum:
                    raise MigrationChecksumMismatch(migration.version, checksum, migration.checksum)
            for migration in wanted:
                if migration.version in recorded:
                    continue
                with conn.transaction():
                    try:
                        conn.execute(migration.sql)
                    except psycopg.Error as exc:
                        raise MigrationError(f"migration {migration.version} failed: {exc}") from exc
                    conn.execute(
                        b"INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                        (migration.version, migration.checksum),
                    )
                applied_now.append(migration.version)
            if applied_now:
                # Fresh tables have no statistics until autovacuum gets to them; meanwhile the
                # planner scans them in full on every write (measured: postgres CPU per order
                # doubled over the first few thousand orders).
                conn.execute(b"ANALYZE")
        finally:
            if not conn.broken:
                conn.execute(b"SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    return applied_now
