"""Recovery after a reconnect against the loopback FIX acceptor, through the engine, its
supervisor and PostgreSQL: what a broker's status answer says is booked even when its reports
are gone (a sequence reset discarded them) or the broker lost the order (unknown order)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import psycopg
import pytest
import trio
import trio.testing

from adapters.fix import FixBroker, build_fix_broker
from adapters.simulated import SimulatedMarket
from adapters.simulated.config import MarketConfig, default_instruments
from adapters.simulated.view import DirectView
from api.contracts import CancelOrderRequest, OrderRoutingRequest
from api.enums import BrokerOrderStatus, CancellationStatus, OrderType, RoutingStatus, Side, TimeInForce
from api.orders import BrokerOrder
from nursery.brokers import RECOVERY_OVERLAP, BrokerHandle
from nursery.recovery import UNKNOWN_AT_BROKER
from sql.migrate import apply_migrations
from tests.support.databases import sibling_database
from tests.support.engine_stack import EngineStack, engine_stack
from tests.support.fix_acceptor import FixAcceptor, fix_config_for, fresh_acceptor
from tests.support.polling import condition, wait_until

#: Reconnects wait this long (x 0.8-1.2), so what the acceptor does right after dropping the
#: connection happens while nobody is logged on.
BACKOFF = 0.3


class Stack:
    def __init__(self, built: EngineStack, acceptor: FixAcceptor, adapter: FixBroker, url: str) -> None:
        self.built, self.acceptor, self.adapter, self.url = built, acceptor, adapter, url
        self.engine, self.store = built.engine, built.store

    async def execution(self, order_id: str) -> BrokerOrder:
        execution = await self.store.load_latest_execution(order_id)
        assert execution is not None
        return execution

    async def status_becomes(self, order_id: str, status: BrokerOrderStatus) -> BrokerOrder:
        """The stored execution once its status is `status` (rows have no event to wait on)."""
        return await wait_until(
            lambda: self.execution(order_id),
            lambda execution: execution.status is status,
            what=f"execution of {order_id} {status.value}",
            interval=0.02,
        )

    async def drop_connection(self) -> None:
        """The connection drops; returns once nobody is logged on at the acceptor."""
        await self.acceptor.disconnect()
        await self.acceptor.wait_for(lambda: not self.acceptor.logged_on)

    async def logged_on_again(self, logons: int) -> None:
        await logged_on_again(self.acceptor, logons)


async def logged_on_again(acceptor: FixAcceptor, logons: int) -> None:
    """Wait until the adapter logged on again (more than `logons` logons in all)."""
    await acceptor.wait_for(lambda: acceptor.logons > logons and acceptor.logged_on, 10)


async def eventually(holds: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    await wait_until(lambda: condition(holds), what=what, timeout=timeout, interval=0.02)


def answered_twice_more(acceptor: FixAcceptor) -> Callable[[], bool]:
    """True once two more TestRequests than now have arrived: the first of them was answered."""
    requests = len(acceptor.received_of("1"))
    return lambda: len(acceptor.received_of("1")) >= requests + 2


@pytest.fixture
def database(migrated_database_url: str) -> Iterator[str]:
    """A database of this module's own: the engine reloads every open execution at start, and
    other modules' leftovers (PENDING attempts at brokers not configured here) must not log."""
    with sibling_database(migrated_database_url) as url:
        apply_migrations(url)
        yield url


@pytest.fixture
async def stack(database: str) -> AsyncIterator[Stack]:
    acceptor = fresh_acceptor()
    market = SimulatedMarket(MarketConfig(seed=5, tick_interval_ms=None, instruments=default_instruments()))
    async with trio.open_nursery() as servers:
        await servers.start(acceptor.serve)
        adapter = build_fix_broker(fix_config_for(acceptor), database)
        try:
            async with engine_stack(
                database,
                [adapter],
                DirectView(market),
                supervisor_options={"backoff_initial": BACKOFF},
            ) as built:
                yield Stack(built, acceptor, adapter, database)
        finally:
            servers.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await adapter.aclose()


def resting(order_id: str, quantity: str = "10") -> OrderRoutingRequest:
    return OrderRoutingRequest(
        order_id=order_id,
        account_id="ACC",
        symbol="AAPL",
        side=Side.BUY,
        type=OrderType.LIMIT,
        quantity=Decimal(quantity),
        price=Decimal("105"),
        time_in_force=TimeInForce.GTC,
    )


async def accepted_order(stack: Stack) -> BrokerOrder:
    order_id = f"fixrec-{uuid.uuid4().hex[:8]}"
    response = await stack.engine.route_order(resting(order_id))
    assert response.status is RoutingStatus.ACCEPTED, response
    return await stack.status_becomes(order_id, BrokerOrderStatus.ACCEPTED)


def exec_ids_of(acceptor: FixAcceptor, client_order_id: str, exec_type: str) -> list[str]:
    return [
        next(v for t, v in body if t == 17)
        for body in acceptor.sent_of("8")
        if (11, client_order_id) in body and (150, exec_type) in body
    ]


def fills_in_postgres(url: str, execution_id: str) -> list[tuple[Decimal, Decimal, bool]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT quantity, price, reconstructed FROM order_fills WHERE broker_order_id = %s"
            " ORDER BY timestamp",
            (execution_id,),
        ).fetchall()
    return [(row[0], row[1], row[2]) for row in rows]


def recorded_by_the_adapter(url: str, exec_ids: list[str]) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM fix_executions WHERE exec_id = ANY(%s)", (exec_ids,)
        ).fetchone()
    return row is not None and row[0] == len(exec_ids)


async def test_fills_whose_reports_a_sequence_reset_discarded_are_reconstructed_from_the_status(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    execution = await accepted_order(stack)
    cid = execution.client_order_id
    await stack.engine.wait_settled()  # the ack's update is published after its deferred write
    stack.built.drain_published()
    stack.acceptor.reset_next_logon = True  # the broker starts its numbers again on the next logon
    logons = stack.acceptor.logons
    await stack.drop_connection()
    # It fills while we are away; the reports are numbered for us, then the reset discards them.
    await stack.acceptor.fill(cid, Decimal(4), Decimal("101"))
    await stack.acceptor.fill(cid, Decimal(6), Decimal("102"))
    trades = exec_ids_of(stack.acceptor, cid, "F")
    assert len(trades) == 2
    await stack.logged_on_again(logons)
    assert [next(v for t, v in body if t == 17) for body in stack.acceptor.discarded[-2:]] == trades

    filled = await stack.status_becomes(execution.order_id, BrokerOrderStatus.FILLED)
    assert filled.filled_quantity == 10 and filled.average_price == Decimal("101.6")
    (fill,) = filled.fills
    assert fill.reconstructed and fill.quantity == 10 and fill.price == Decimal("101.6")
    assert fills_in_postgres(stack.url, execution.id) == [(Decimal(10), Decimal("101.6"), True)]
    await stack.engine.wait_settled()
    published = [msgspec.json.decode(e.payload) for e in stack.built.drain_published()]
    assert published and published[-1]["status"] == "COMPLETED"
    assert published[-1]["filledQuantity"] == 10 and published[-1]["latestFill"]["reconstructed"] is True

    # The broker's real reports turn up after all: counted by the reconstruction, not booked again.
    for exec_id in trades:
        await stack.acceptor.repeat_execution(exec_id)
    await eventually(
        lambda: recorded_by_the_adapter(stack.url, trades), "the repeated reports recorded by the adapter"
    )
    await stack.engine.wait_settled()
    after = await stack.execution(execution.order_id)
    assert after.filled_quantity == 10 and len(after.fills) == 1 and after.sequence == filled.sequence
    assert fills_in_postgres(stack.url, execution.id) == [(Decimal(10), Decimal("101.6"), True)]
    assert stack.built.drain_published() == []
    assert stack.acceptor.errors == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_an_order_the_broker_no_longer_knows_ends_cancelled_and_a_cancel_is_answered_once(
    stack: Stack,
) -> None:
    execution = await accepted_order(stack)
    stack.acceptor.forget_orders()  # a broker restart that lost its book
    logons = stack.acceptor.logons
    await stack.drop_connection()
    await stack.logged_on_again(logons)

    ended = await stack.status_becomes(execution.order_id, BrokerOrderStatus.CANCELED)
    assert ended.rejection_reason == UNKNOWN_AT_BROKER and ended.filled_quantity == 0
    status_requests = stack.acceptor.received_of("H")
    assert status_requests and status_requests[-1].get(11) == execution.client_order_id

    answer = await stack.engine.cancel_order(CancelOrderRequest(execution.order_id, stack.adapter.broker_id))
    assert answer.status is CancellationStatus.REJECTED
    assert answer.rejection_reason == "order is already CANCELED"
    # Absence over a while: nothing keeps asking the broker to cancel what it does not have (no
    # event announces that nothing happens, so this sleep stays).
    await trio.sleep(0.3)
    assert stack.acceptor.received_of("F") == []
    again = await stack.engine.cancel_order(CancelOrderRequest(execution.order_id, stack.adapter.broker_id))
    assert again.status is CancellationStatus.REJECTED
    assert stack.acceptor.received_of("F") == [] and stack.acceptor.errors == []


async def test_a_reconnect_rereads_fills_only_from_the_lost_connection_not_from_the_first_order(
    database: str,
) -> None:
    """The supervisor hands `recover` None on the first connect (the engine then reads from the
    oldest open execution) and, once a recovery completed, the lost connection's last heartbeat
    answer less `RECOVERY_OVERLAP`: a reconnect re-reads what it could have missed, however old
    the open orders are."""
    acceptor = fresh_acceptor()
    market = SimulatedMarket(MarketConfig(seed=5, tick_interval_ms=None, instruments=default_instruments()))
    asked: list[datetime | None] = []

    async def recover(handle: BrokerHandle, since: datetime | None) -> None:
        asked.append(since)

    async with trio.open_nursery() as servers:
        await servers.start(acceptor.serve)
        adapter = build_fix_broker(fix_config_for(acceptor), database)
        try:
            async with engine_stack(
                database,
                [adapter],
                DirectView(market),
                supervisor_options={"backoff_initial": BACKOFF, "heartbeat_every": 0.2, "recover": recover},
                drain=True,
            ):
                for _ in range(2):
                    # Heartbeats answered on this connection, so it is known alive: the supervisor
                    # sends its next TestRequest only once the previous one was answered.
                    await acceptor.wait_for(answered_twice_more(acceptor), 5)
                    # ...and the answer to the second one taken in (everything here is one Trio
                    # run), so no answer lands between `dropped_at` and the drop.
                    await trio.testing.wait_all_tasks_blocked(cushion=0.01)
                    logons = acceptor.logons
                    dropped_at = datetime.now(UTC)
                    await acceptor.disconnect()
                    await logged_on_again(acceptor, logons)
                    await eventually(lambda: len(asked) == acceptor.logons, "a recovery per logon")
                    since = asked[-1]
                    assert since is not None
                    assert dropped_at - RECOVERY_OVERLAP - timedelta(seconds=0.5) <= since
                    assert since <= dropped_at - RECOVERY_OVERLAP
        finally:
            servers.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await adapter.aclose()
    assert asked[0] is None and len(asked) == 3
