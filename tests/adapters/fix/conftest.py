"""Fixtures of the FIX adapter tests: a fresh acceptor on loopback (comp ids of its own, so
each test's session has its own rows in the shared migrated database) and the adapter for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from adapters.fix import FixBroker, build_fix_broker
from tests.support.fix_acceptor import FixAcceptor, fix_config_for, fresh_acceptor


@pytest.fixture
async def acceptor(nursery: trio.Nursery) -> FixAcceptor:
    started = fresh_acceptor()
    await nursery.start(started.serve)
    return started


@pytest.fixture
async def adapter(acceptor: FixAcceptor, migrated_database_url: str) -> AsyncIterator[FixBroker]:
    broker = build_fix_broker(fix_config_for(acceptor), migrated_database_url)
    try:
        yield broker
    finally:
        await broker.aclose()
