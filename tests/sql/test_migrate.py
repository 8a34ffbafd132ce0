from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from sql.migrate import (
    Migration,
    MigrationChecksumMismatch,
    MigrationError,
    apply_migrations,
    load_migrations,
)
from tests.sql import new_id
from tests.support.databases import fresh_database


@pytest.fixture
def empty_database_url(tmp_path: Path) -> Iterator[str]:
    """A database of its own (the session's is shared and already migrated by other tests)."""
    with fresh_database(tmp_path) as url:
        yield url


def test_package_ships_its_migrations() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations][:2] == ["0001_schema", "0002_supervision"]
    assert all(m.sql.strip() for m in migrations)


def test_applies_once_then_nothing(empty_database_url: str) -> None:
    versions = [m.version for m in load_migrations()]
    assert apply_migrations(empty_database_url) == versions
    assert apply_migrations(empty_database_url) == []
    with psycopg.connect(empty_database_url) as conn:
        rows = conn.execute("SELECT version, checksum FROM schema_migrations ORDER BY version").fetchall()
    assert rows == [(m.version, m.checksum) for m in load_migrations()]


def test_later_migration_is_applied_alone(empty_database_url: str) -> None:
    apply_migrations(empty_database_url)
    extra = Migration("9000_extra", b"CREATE TABLE extra_table (id INT PRIMARY KEY);")
    assert apply_migrations(empty_database_url, migrations=[*load_migrations(), extra]) == ["9000_extra"]
    assert apply_migrations(empty_database_url, migrations=[*load_migrations(), extra]) == []


def test_edited_applied_migration_is_refused(empty_database_url: str) -> None:
    apply_migrations(empty_database_url)
    first, *rest = load_migrations()
    tampered = Migration(first.version, first.sql + b"\n-- edited after release\n")
    with pytest.raises(MigrationChecksumMismatch, match=first.version):
        apply_migrations(empty_database_url, migrations=[tampered, *rest])


def test_failed_migration_leaves_nothing_behind(empty_database_url: str) -> None:
    apply_migrations(empty_database_url)
    broken = Migration("9001_broken", b"CREATE TABLE half_done (id INT); SELECT no_such_function();")
    with pytest.raises(MigrationError, match="9001_broken"):
        apply_migrations(empty_database_url, migrations=[*load_migrations(), broken])
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
        recorded = conn.execute("SELECT count(*) FROM schema_migrations WHERE version = '9001_broken'")
        assert recorded.fetchone() == (0,)


def test_concurrent_apply_from_two_threads_is_safe(empty_database_url: str) -> None:
    barrier = threading.Barrier(2)
    results: list[list[str]] = []
    failures: list[BaseException] = []

    def apply() -> None:
        barrier.wait()
        try:
            results.append(apply_migrations(empty_database_url))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=apply) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert sorted(results, key=len) == [[], [m.version for m in load_migrations()]]


SPEC_INDEXES = {
    "idx_broker_connections_broker_id",
    "idx_broker_connections_status",
    "idx_broker_orders_order_id",
    "idx_broker_orders_broker_id",
    "idx_broker_orders_account_id",
    "idx_broker_orders_symbol",
    # idx_broker_orders_status: dropped by 0013 (status changes are HOT updates; open_executions
    # lists the open ones, tests/sql/test_open_executions.py)
    "idx_broker_orders_created_at",
    "idx_order_fills_broker_order_id",
    "idx_order_fills_timestamp",
    "idx_execution_reports_order_id",
    "idx_execution_reports_broker_id",
    "idx_execution_reports_symbol",
    "idx_execution_reports_execution_start",
    "idx_execution_quality_broker_asset",
    "idx_broker_latency_stats_broker_id",
}


def test_every_spec_table_index_and_view_exists(migrated_database_url: str) -> None:
    with psycopg.connect(migrated_database_url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
        views = {r[0] for r in conn.execute("SELECT viewname FROM pg_views WHERE schemaname = 'public'")}
        matviews = {r[0] for r in conn.execute("SELECT matviewname FROM pg_matviews")}
        unique = {
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indisunique"
            )
        }
    assert {
        "broker_connections",
        "broker_orders",
        "order_fills",
        "execution_reports",
        "routed_orders",
        "execution_events",
        "unpublished_events",
        "broker_status_transitions",
        "schema_migrations",
    } <= tables
    assert indexes >= SPEC_INDEXES | {
        "idx_broker_status_transitions_broker_at",
    }
    assert "broker_performance" in views
    assert {"execution_quality_by_asset_class", "broker_latency_stats"} <= matviews
    # CONCURRENTLY needs a unique index on each materialized view
    assert {"idx_execution_quality_broker_asset", "idx_broker_latency_stats_broker_id"} <= unique


def test_every_timestamp_is_timestamptz(migrated_database_url: str) -> None:
    with psycopg.connect(migrated_database_url) as conn:
        naive = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND data_type = 'timestamp without time zone'"
        ).fetchall()
    assert naive == []


def _insert_routed(conn: psycopg.Connection[tuple[object, ...]], order_id: str) -> None:
    conn.execute(
        "INSERT INTO routed_orders (order_id, routing_id, request_hash, request, received_at)"
        " VALUES (%s, %s, 'h', '{}', now())",
        (order_id, new_id()),
    )


def _insert_order(
    conn: psycopg.Connection[tuple[object, ...]], order_id: str, broker_id: str, **overrides: object
) -> None:
    row: dict[str, object] = {
        "id": new_id(),
        "order_id": order_id,
        "broker_id": broker_id,
        "client_order_id": new_id(),
        "account_id": "acct",
        "symbol": "AAPL",
        "asset_class": "EQUITY",
        "side": "BUY",
        "order_type": "MARKET",
        "quantity": 10,
        "time_in_force": "DAY",
        "status": "PENDING",
        "execution_strategy": "SMART",
        "urgency": "LOW",
    }
    row.update(overrides)
    columns = ", ".join(row)
    placeholders = ", ".join(["%s"] * len(row))
    statement = (
        f"INSERT INTO broker_orders ({columns}, created_at, updated_at) VALUES ({placeholders}, now(), now())"
    )
    conn.execute(statement.encode(), list(row.values()))


def _insert_broker(conn: psycopg.Connection[tuple[object, ...]], broker_id: str) -> None:
    conn.execute(
        "INSERT INTO broker_connections (id, broker_id, name, status, supported_asset_classes, features,"
        " commission_structure, credentials, connection_params, rate_limits, latency_stats,"
        " created_at, updated_at)"
        " VALUES (%s, %s, 'b', 'CONNECTED', '[]', '[]', '{}', '{}', '{}', '{}', '{}', now(), now())",
        (new_id(), broker_id),
    )


def test_broker_orders_reference_broker_connections(migrated_database_url: str) -> None:
    broker_id, order_id = new_id(), new_id()
    with psycopg.connect(migrated_database_url) as conn:
        _insert_routed(conn, order_id)
        with pytest.raises(errors.ForeignKeyViolation), conn.transaction():
            _insert_order(conn, order_id, broker_id)
        _insert_broker(conn, broker_id)
        _insert_order(conn, order_id, broker_id)  # the foreign key now holds
        count = conn.execute("SELECT count(*) FROM broker_orders WHERE broker_id = %s", (broker_id,))
        assert count.fetchone() == (1,)
        conn.rollback()


def test_broker_id_is_unique(migrated_database_url: str) -> None:
    broker_id = new_id()
    with psycopg.connect(migrated_database_url) as conn:
        _insert_broker(conn, broker_id)
        with pytest.raises(errors.UniqueViolation):
            _insert_broker(conn, broker_id)
        conn.rollback()


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("quantity", 0),
        ("filled_quantity", 11),  # more than the quantity of 10
        ("filled_quantity", -1),
        ("status", "DONE"),
        ("side", "buy"),
        ("order_type", "ICEBERG"),
        ("time_in_force", "GTD"),
        ("asset_class", "BONDS"),
        ("attempt", 0),
    ],
)
def test_bad_order_rows_are_refused(migrated_database_url: str, column: str, value: object) -> None:
    broker_id, order_id = new_id(), new_id()
    with psycopg.connect(migrated_database_url) as conn:
        _insert_broker(conn, broker_id)
        _insert_routed(conn, order_id)
        with pytest.raises(errors.CheckViolation):
            _insert_order(conn, order_id, broker_id, **{column: value})
        conn.rollback()


def test_one_row_per_attempt_and_per_client_order_id(migrated_database_url: str) -> None:
    broker_id, order_id = new_id(), new_id()
    with psycopg.connect(migrated_database_url) as conn:
        _insert_broker(conn, broker_id)
        _insert_routed(conn, order_id)
        _insert_order(conn, order_id, broker_id, client_order_id="coid-1")
        with pytest.raises(errors.UniqueViolation), conn.transaction():
            _insert_order(conn, order_id, broker_id)  # attempt 1 again
        with pytest.raises(errors.UniqueViolation), conn.transaction():
            _insert_order(conn, order_id, broker_id, attempt=2, client_order_id="coid-1")
        _insert_order(conn, order_id, broker_id, attempt=2)
        conn.rollback()


# --- 0002 --------------------------------------------------------------------------------------


def test_0002_applies_to_a_database_that_had_only_0001(empty_database_url: str) -> None:
    first, second = load_migrations()[:2]
    assert apply_migrations(empty_database_url, migrations=[first]) == ["0001_schema"]
    broker_id = new_id()
    with psycopg.connect(empty_database_url) as conn:
        _insert_broker(conn, broker_id)  # a broker registered before the upgrade
        assert conn.execute("SELECT to_regclass('broker_status_transitions')").fetchone() == (None,)

    assert apply_migrations(empty_database_url) == [m.version for m in load_migrations()[1:]]
    assert second.version == "0002_supervision"
    with psycopg.connect(empty_database_url) as conn:
        row = conn.execute(
            "SELECT maintenance, maintenance_reason, maintenance_since FROM broker_connections"
            " WHERE broker_id = %s",
            (broker_id,),
        ).fetchone()
        assert row == (False, None, None)  # existing brokers start out of maintenance
        conn.execute(
            "INSERT INTO broker_status_transitions (broker_id, status, at, reason)"
            " VALUES (%s, 'CONNECTED', now(), NULL)",
            (broker_id,),
        )
        recorded = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert [r[0] for r in recorded] == [m.version for m in load_migrations()]
    assert apply_migrations(empty_database_url) == []


def test_0002_columns(migrated_database_url: str) -> None:
    with psycopg.connect(migrated_database_url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = 'public'"
            " AND (table_name = 'broker_status_transitions'"
            "      OR column_name IN ('maintenance', 'maintenance_reason', 'maintenance_since'))"
            " ORDER BY table_name, ordinal_position"
        ).fetchall()
    assert [(t, c, d, n) for t, c, d, n, _ in rows] == [
        ("broker_connections", "maintenance", "boolean", "NO"),
        ("broker_connections", "maintenance_reason", "text", "YES"),
        ("broker_connections", "maintenance_since", "timestamp with time zone", "YES"),
        ("broker_status_transitions", "id", "bigint", "NO"),
        ("broker_status_transitions", "broker_id", "character varying", "NO"),
        ("broker_status_transitions", "status", "character varying", "NO"),
        ("broker_status_transitions", "at", "timestamp with time zone", "NO"),
        ("broker_status_transitions", "reason", "text", "YES"),
    ]
    defaults = {c: d for _, c, _, _, d in rows}
    assert defaults["maintenance"] == "false"
    assert defaults["id"].startswith("nextval(")


def test_0015_to_0019_keep_the_outbox_the_claims_and_the_reports(empty_database_url: str) -> None:
    """A database written by the release before 0015 (outbox marks in published_at, jsonb
    documents, msg_id stored) upgrades without losing what waits or what was answered."""
    before = [m for m in load_migrations() if m.version < "0015"]
    apply_migrations(empty_database_url, migrations=before)
    broker_id, order_id, execution_id = new_id(), new_id(), new_id()
    request = f'{{"orderId": "{order_id}", "quantity": 10, "price": 189.985000}}'
    decision = '{"chosen": "x", "candidates": [["x", 1, false, 5.354750704002948]]}'
    with psycopg.connect(empty_database_url) as conn:
        _insert_broker(conn, broker_id)
        conn.execute(
            "INSERT INTO routed_orders (order_id, routing_id, request_hash, request, response,"
            " responded_at, routing_decision, received_at)"
            " VALUES (%s, %s, 'h', %s, '{\"status\": \"ACCEPTED\"}', now(), %s, now())",
            (order_id, new_id(), request, decision),
        )
        _insert_order(conn, order_id, broker_id, id=execution_id, status="FILLED", filled_quantity=10)
        for sequence, published in ((1, True), (2, False)):
            conn.execute(
                "INSERT INTO execution_events (execution_id, sequence, subject, payload, msg_id,"
                " created_at, published_at) VALUES (%s, %s, 's', 'p', %s, now(),"
                " CASE WHEN %s THEN now() END)",
                (execution_id, sequence, f"{execution_id}:{sequence}", published),
            )
        conn.execute(
            "INSERT INTO execution_reports (id, order_id, broker_order_id, broker_id, symbol, side,"
            " quantity, filled_quantity, average_price, benchmark_type, execution_start,"
            " execution_end, execution_duration_ms, created_at)"
            " VALUES (%s, %s, %s, %s, 'AAPL', 'BUY', 10, 10, 190, 'ARRIVAL_PRICE', now(), now(), 0,"
            " now())",
            (execution_id, order_id, execution_id, broker_id),
        )

    applied = apply_migrations(empty_database_url)
    assert applied[0] == "0015_unpublished_events" and "0019_event_msg_id" in applied
    with psycopg.connect(empty_database_url) as conn:
        # only the update still to publish waits
        assert conn.execute("SELECT execution_id, sequence FROM unpublished_events").fetchall() == [
            (execution_id, 2)
        ]
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'execution_events'"
            )
        }
        assert {"published_at", "msg_id"}.isdisjoint(columns)
        # the documents are the same JSON (now json: text, read back whole)
        row = conn.execute(
            "SELECT request::jsonb = %s::jsonb, routing_decision::jsonb = %s::jsonb, response->>'status',"
            " pg_typeof(request)::text FROM routed_orders WHERE order_id = %s",
            (request, decision, order_id),
        ).fetchone()
        assert row == (True, True, "ACCEPTED", "json")
        # a report keyed by its execution, and a second one for it refused by the primary key
        assert conn.execute(
            "SELECT count(*) FROM execution_reports WHERE id = %s", (execution_id,)
        ).fetchone() == (1,)
        with pytest.raises(errors.CheckViolation):
            conn.execute("UPDATE execution_reports SET id = %s WHERE id = %s", (new_id(), execution_id))
