"""A fresh PostgreSQL database per test run, on DATABASE_URL's server or an embedded one."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from daemon.servers import database_url_from_env, embedded_postgres


@contextlib.contextmanager
def fresh_database(tmp_dir: Path) -> Iterator[str]:
    """Create an empty database named bis_test_<random>, yield its conninfo, drop it after."""
    with contextlib.ExitStack() as stack:
        server_url = database_url_from_env()
        if server_url is None:
            server_url = stack.enter_context(embedded_postgres(tmp_dir / "pgdata"))
        name = f"bis_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        params = conninfo_to_dict(server_url)
        params["dbname"] = name
        url = make_conninfo(**params)
        try:
            yield url
        finally:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
                )
                admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


@contextlib.contextmanager
def sibling_database(database_url: str) -> Iterator[str]:
    """Another empty database on the server of `database_url` (cheap: no server to start),
    dropped after."""
    name = f"bis_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(database_url)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
