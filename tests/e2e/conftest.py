"""End-to-end fixtures: the real daemon as a separate process, on the session's nats-server and
PostgreSQL database. Tests talk to it only through NATS and REST, as an OMS would."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from daemon.servers import NatsServer
from tests.support.daemon import TEST_TOKEN, DaemonProcess
from tests.support.databases import fresh_database, sibling_database
from tests.support.quotes import QuotePublisher


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The end-to-end daemons get a database of their own: a running daemon sweeps and publishes
    every unpublished outbox row it finds (as it should), which would touch the rows other
    tests write on purpose."""
    with fresh_database(tmp_path_factory.mktemp("pg-e2e")) as url:
        yield url


@pytest.fixture(scope="session")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, database_url: str
) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path_factory.mktemp("daemon"), nats_url, database_url)
    process.start()
    try:
        yield process
    finally:
        code = process.stop()
        assert code == 0, process.log()
        assert "Traceback" not in process.log(), process.log()


@pytest.fixture
def second_daemon(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, database_url: str, daemon: DaemonProcess
) -> Iterator[DaemonProcess]:
    """Another instance sharing NATS and PostgreSQL with `daemon`, for one test only: it joins
    the same queue group, and its simulated venues are its own (a real broker is shared), so a
    cancel it happened to receive would not find an order the first daemon placed."""
    process = DaemonProcess(tmp_path_factory.mktemp("daemon2"), nats_url, database_url, instance="e2e-2")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def rest(daemon: DaemonProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=daemon.rest_url, headers={"Authorization": f"Bearer {TEST_TOKEN}"}, timeout=10.0
    ) as client:
        yield client


@pytest.fixture
def order_id() -> str:
    return f"e2e-{uuid.uuid4().hex[:24]}"


@pytest.fixture
def own_nats(private_nats_server: NatsServer) -> str:
    """A nats-server of its own: the session's e2e daemons would answer requests on the shared one."""
    return private_nats_server.url


@pytest.fixture
def own_database(database_url: str) -> Iterator[str]:
    """A database of its own: a daemon sweeps every unpublished outbox row it finds, and a daemon
    on `own_nats` must not publish the session daemon's rows elsewhere."""
    with sibling_database(database_url) as url:
        yield url


@pytest.fixture
def quotes(own_nats: str, request: pytest.FixtureRequest) -> Iterator[QuotePublisher]:
    """A stand-in Market Data Service on `own_nats`, for the daemon instance the test module
    names in `INSTANCE` (its market-data prefix is `marketdata.<instance>`)."""
    with QuotePublisher(own_nats, f"marketdata.{request.module.INSTANCE}") as publisher:
        yield publisher
