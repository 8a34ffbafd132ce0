"""PostgreSQL: the schema's migrations and the store (every query of the daemon)."""

from sql.migrate import (
    Migration,
    MigrationChecksumMismatch,
    MigrationError,
    apply_migrations,
    load_migrations,
)
from sql.records import (
    BrokerRecord,
    ClaimResult,
    ClaimTakenOver,
    DuplicateAttempt,
    OrderClaim,
    OutboxEvent,
    StatusChange,
)
from sql.store import Store, broker_row_id
from sql.writer import GroupWriter, WriteOp, WriterClosed, WriterStats, WriteTimeout

__all__ = [
    "BrokerRecord",
    "ClaimResult",
    "ClaimTakenOver",
    "DuplicateAttempt",
    "GroupWriter",
    "Migration",
    "MigrationChecksumMismatch",
    "MigrationError",
    "OrderClaim",
    "OutboxEvent",
    "StatusChange",
    "Store",
    "WriteOp",
    "WriteTimeout",
    "WriterClosed",
    "WriterStats",
    "apply_migrations",
    "broker_row_id",
    "load_migrations",
]
