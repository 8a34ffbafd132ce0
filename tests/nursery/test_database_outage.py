"""PostgreSQL outages under the engine, on a real server: its database is made to refuse
connections (and its sessions are ended) while the engine runs, then given back.

- New orders are answered at once with a 503 (retry with the same orderId) and reach no broker.
- Broker events during the outage are applied in memory, written in order when the database
  returns, and published then.
- Past the buffer's bound, events are dropped and recovered from the broker afterwards, each
  fill stored once.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import trio
from psycopg.conninfo import conninfo_to_dict

from adapters.base import BrokerAck, BrokerOrderSnapshot, SubmitRequest
from api.capabilities import Capabilities
from api.contracts import CommissionStructure, GetExecutionRequest
from api.enums import AssetClass, BrokerFeature, BrokerOrderStatus, RoutingStatus
from api.errors import Unavailable
from api.events import AnyBrokerEvent, OrderFilled
from sql.migrate import apply_migrations
from sql.writer import DatabaseUnavailable
from tests.support.databases import sibling_database
from tests.support.engine_stack import AaplMarket, EngineStack, aapl_order, engine_stack
from tests.support.polling import wait_until


class Venue:
    """A broker that accepts everything and fills when the test says; it remembers every fill
    (for `fills_since`) as a real broker does."""

    broker_id = "venue"
    capabilities = Capabilities(frozenset({AssetClass.EQUITY}), frozenset(BrokerFeature))
    commission = CommissionStructure(base_rate=Decimal("0.0001"))
    outlives_daemon = True  # a broker outside the daemon

    def __init__(self) -> None:
        self.submits: list[SubmitRequest] = []
        self.events: trio.MemorySendChannel[AnyBrokerEvent] | None = None
        self.fills: list[OrderFilled] = []
        self.filled: dict[str, Decimal] = {}

    async def run(
        self,
        events: trio.MemorySendChannel[AnyBrokerEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.events = events
        task_status.started()
        await trio.sleep_forever()

    async def submit(self, request: SubmitRequest) -> BrokerAck:
        self.submits.append(request)
        self.filled[request.client_order_id] = Decimal(0)
        return BrokerAck(f"V-{len(self.submits)}", datetime.now(UTC))

    async def fill(self, client_order_id: str, quantity: str, *, deliver: bool = True) -> OrderFilled:
        qty = Decimal(quantity)
        self.filled[client_order_id] += qty
        event = OrderFilled(
            client_order_id,
            datetime.now(UTC),
            f"F-{uuid.uuid4().hex[:10]}",
            qty,
            Decimal("190.10"),
            Decimal(0),
            "VENUE",
            cumulative_quantity=self.filled[client_order_id],
        )
        self.fills.append(event)
        if deliver:
            assert self.events is not None
            await self.events.send(event)
        return event

    async def heartbeat(self) -> None:
        await trio.lowlevel.checkpoint()

    async def cancel(self, client_order_id: str) -> None:
        raise NotImplementedError

    async def query(self, client_order_id: str) -> BrokerOrderSnapshot | None:
        if client_order_id not in self.filled:
            return None
        filled = self.filled[client_order_id]
        return BrokerOrderSnapshot(
            client_order_id=client_order_id,
            broker_order_id="V",
            status=BrokerOrderStatus.FILLED if filled == 100 else BrokerOrderStatus.ACCEPTED,
            filled_quantity=filled,
            average_price=Decimal("190.10") if filled else None,
        )

    async def open_orders(self) -> list[BrokerOrderSnapshot]:
        return []

    async def fills_since(self, since: datetime) -> list[OrderFilled]:
        return [f for f in self.fills if f.at >= since]


@pytest.fixture
def database(migrated_database_url: str) -> Iterator[str]:
    with sibling_database(migrated_database_url) as url:
        apply_migrations(url)
        yield url


async def set_outage(url: str, down: bool) -> None:
    """Make the database refuse new sessions and end the ones it has (or accept them again),
    through another database of the same server."""
    name = conninfo_to_dict(url)["dbname"]
    admin_params = conninfo_to_dict(url)
    admin_params["dbname"] = "postgres"

    def run() -> None:
        with psycopg.connect(**admin_params, autocommit=True) as admin:  # type: ignore[arg-type]
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(not down).lower()}'.encode())
            if down:
                admin.execute(
                    b"SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    b" WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )

    await trio.to_thread.run_sync(run)


def rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.encode(), params).fetchall()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    """Wait for an async check (run in this thread) to hold."""
    await wait_until(check, what=what, timeout=timeout, interval=0.01)


async def eventually(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Wait for a blocking check (a query of PostgreSQL, run in a worker thread) to hold."""
    await wait_until(lambda: trio.to_thread.run_sync(check), what=what, timeout=timeout, interval=0.05)


@pytest.fixture
async def stack(database: str) -> AsyncIterator[tuple[EngineStack, Venue]]:
    venue = Venue()
    async with engine_stack(database, [venue], AaplMarket(), deadline=2.0, max_unsaved=4) as built:
        yield built, venue
    await set_outage(database, False)  # so the database can be dropped


def new_id() -> str:
    return f"o-{uuid.uuid4().hex[:16]}"


async def test_orders_during_an_outage_get_a_503_and_reach_no_broker(
    stack: tuple[EngineStack, Venue], database: str
) -> None:
    built, venue = stack
    await set_outage(database, True)
    order_id = new_id()
    with trio.fail_after(8), pytest.raises(DatabaseUnavailable) as raised:
        await built.engine.route_order(aapl_order(order_id))
    assert isinstance(raised.value, Unavailable) and raised.value.code == 503
    assert "retry with the same orderId" in raised.value.message
    started = trio.current_time()
    with pytest.raises(DatabaseUnavailable):  # the next one does not wait: it knows
        await built.engine.route_order(aapl_order(new_id()))
    assert trio.current_time() - started < 0.5
    assert venue.submits == []
    await set_outage(database, False)
    with trio.fail_after(10):
        await built.store.wait_available()
    answer = await built.engine.route_order(aapl_order(order_id))  # the OMS's retry
    assert answer.status is RoutingStatus.ACCEPTED
    assert len(venue.submits) == 1


async def test_fills_during_an_outage_are_written_in_order_when_it_ends(
    stack: tuple[EngineStack, Venue], database: str
) -> None:
    built, venue = stack
    order_id = new_id()
    answer = await built.engine.route_order(aapl_order(order_id))
    assert answer.status is RoutingStatus.ACCEPTED
    with trio.fail_after(5):  # the ack's update: published once its (deferred) write committed
        assert (await built.published.receive()).sequence == 1
    client_order_id = venue.submits[0].client_order_id
    await set_outage(database, True)
    await venue.fill(client_order_id, "40")
    await venue.fill(client_order_id, "60")

    async def completed() -> bool:  # applied in memory: GetExecution answers from the live state
        execution = await built.engine.get_execution(GetExecutionRequest(order_id=order_id))
        return execution.status.value == "COMPLETED"

    await until(completed, "the execution completed in memory", timeout=5)
    await set_outage(database, False)
    query = "SELECT status, filled_quantity FROM broker_orders WHERE order_id = %s"
    await eventually(
        lambda: rows(database, query, order_id) == [("FILLED", Decimal(100))],
        "the fills written after the outage",
    )
    fills = rows(
        database,
        "SELECT f.quantity FROM order_fills f JOIN broker_orders b ON b.id = f.broker_order_id"
        " WHERE b.order_id = %s ORDER BY f.timestamp",
        order_id,
    )
    assert fills == [(Decimal(40),), (Decimal(60),)]
    with trio.fail_after(5):
        updates = [await built.published.receive() for _ in range(2)]
    assert [u.sequence for u in updates] == [2, 3]  # after the ack (1): both fills, in order
    assert built.engine._applier.unsaved == 0


async def test_events_past_the_buffer_are_recovered_from_the_broker(
    stack: tuple[EngineStack, Venue], database: str
) -> None:
    built, venue = stack
    order_ids = [new_id() for _ in range(6)]
    for order_id in order_ids:
        assert (await built.engine.route_order(aapl_order(order_id))).status is RoutingStatus.ACCEPTED
    await built.engine.wait_settled()  # the acks are written (just after each reply)
    await set_outage(database, True)
    since = datetime.now(UTC) - timedelta(seconds=1)
    applier = built.engine._applier
    for request in venue.submits:  # 6 fills; the buffer holds 4 changes
        before = (applier.unsaved, applier.dropped)
        await venue.fill(request.client_order_id, "100")

        async def counted(before: tuple[int, int] = before) -> bool:
            return (applier.unsaved, applier.dropped) != before

        await until(counted, "the fill buffered or dropped")
    assert (applier.unsaved, applier.dropped) == (4, 2)
    await set_outage(database, False)
    await eventually(
        lambda: (
            rows(
                database,
                "SELECT count(*) FROM broker_orders WHERE status = 'FILLED' AND order_id = ANY(%s)",
                order_ids,
            )
            == [(6,)]
        ),
        "every order filled in the database",
        timeout=20,
    )
    assert rows(
        database,
        "SELECT count(*) FROM order_fills f JOIN broker_orders b ON b.id = f.broker_order_id"
        " WHERE b.order_id = ANY(%s) AND f.timestamp >= %s",
        order_ids,
        since,
    ) == [(6,)]  # each once
