"""Fixtures of the store tests: an open Store on the migrated test database, and a broker row
that executions can reference."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sql import Store
from tests.sql import broker_record


@pytest.fixture
async def store(migrated_database_url: str) -> AsyncIterator[Store]:
    async with Store.open(migrated_database_url, pool_size=4) as opened:
        yield opened


@pytest.fixture
async def broker_id(store: Store) -> str:
    record = broker_record()
    await store.upsert_brokers([record])
    return record.broker_id
