"""Orders nobody answers (a crashed or dead daemon's claims), taken over and answered by a live
daemon, on a real PostgreSQL: two engines share one database and one broker, as two daemons
share them in production. The first claims an order and dies before answering; the second
answers it from what the broker says — never sending it again.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest
import trio

from adapters.base import BrokerAck, BrokerOrderSnapshot, SubmitRequest
from api.capabilities import Capabilities
from api.contracts import CommissionStructure, OrderRoutingResponse
from api.enums import AssetClass, BrokerFeature, BrokerOrderStatus, RoutingStatus
from api.events import AnyBrokerEvent, OrderFilled
from nursery.lease import Lease, new_seat
from nursery.orphans import OrphanSweeper
from sql.migrate import apply_migrations
from sql.records import ClaimTakenOver
from sql.store import Store
from tests.support.databases import sibling_database
from tests.support.engine_stack import AaplMarket, EngineStack, aapl_order, engine_stack
from tests.support.polling import condition, wait_until

LEASE_S = 0.6


class Venue:
    """One broker both daemons talk to. `hang`: a submit never returns (the daemon dies while
    it waits); `lose`: ... and the order never reached the broker."""

    broker_id = "venue"
    capabilities = Capabilities(frozenset({AssetClass.EQUITY}), frozenset(BrokerFeature))
    commission = CommissionStructure(base_rate=Decimal("0.0001"))
    outlives_daemon = True  # a broker outside the daemon

    def __init__(self) -> None:
        self.submits: list[SubmitRequest] = []
        self.orders: dict[str, str] = {}  # client order id -> broker order id
        self.hang = False
        self.lose = False

    async def run(
        self,
        events: trio.MemorySendChannel[AnyBrokerEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def submit(self, request: SubmitRequest) -> BrokerAck:
        self.submits.append(request)
        if not self.lose:
            self.orders[request.client_order_id] = f"V-{len(self.submits)}"
        if self.hang:
            await trio.sleep_forever()
        return BrokerAck(self.orders[request.client_order_id], datetime.now(UTC))

    async def heartbeat(self) -> None:
        await trio.lowlevel.checkpoint()

    async def cancel(self, client_order_id: str) -> None:
        raise NotImplementedError

    async def query(self, client_order_id: str) -> BrokerOrderSnapshot | None:
        broker_order_id = self.orders.get(client_order_id)
        if broker_order_id is None:
            return None
        return BrokerOrderSnapshot(client_order_id, broker_order_id, BrokerOrderStatus.ACCEPTED, Decimal(0))

    async def open_orders(self) -> list[BrokerOrderSnapshot]:
        return []

    async def fills_since(self, since: datetime) -> list[OrderFilled]:
        return []


def new_id() -> str:
    return f"o-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def database(migrated_database_url: str) -> Iterator[str]:
    with sibling_database(migrated_database_url) as url:
        apply_migrations(url)
        yield url


class Told:
    """Counts the sweeper's `taken_over` calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@dataclass
class Daemon:
    stack: EngineStack
    lease: Lease
    sweeper: OrphanSweeper


@asynccontextmanager
async def daemon(
    database: str,
    venue: Venue,
    name: str,
    *,
    renew: bool = True,
    sweep_every: float = 0.1,
    deadline: float = 1.0,
    taken_over: Callable[[], None] = lambda: None,
) -> AsyncIterator[Daemon]:
    """An engine with its lease (renewed only if `renew`: else registered once, then left to
    lapse, as by a process that died) and its orphan sweeper (which calls `taken_over`)."""
    seat = new_seat(name, f"/tmp/orphans-{name}-{uuid.uuid4().hex[:6]}")
    async with (
        engine_stack(
            database,
            [venue],
            AaplMarket(),
            deadline=deadline,
            settle=0.3,
            reconcile_budget=2.0,
            owner=seat.id,
        ) as s,
        trio.open_nursery() as nursery,
    ):
        lease = Lease(s.store, seat, renew_s=0.1, lease_s=LEASE_S)
        sweeper = OrphanSweeper(
            s.store,
            lease,
            s.engine.adopt,
            s.engine.routing_here,
            interval=sweep_every,
            own_after_s=0.5,
            taken_over=taken_over,
        )
        if renew:
            await nursery.start(lease.run)
            s.engine.take_orphan = sweeper.take_one
            nursery.start_soon(sweeper.run)
        else:
            await s.store.register_daemon(seat)
        yield Daemon(s, lease, sweeper)
        nursery.cancel_scope.cancel()


async def claim_and_die(database: str, venue: Venue, order_id: str) -> None:
    """A daemon claims the order, sends it, and dies while waiting for the broker's answer."""
    venue.hang = True
    async with daemon(database, venue, "doomed", renew=False) as doomed:
        with trio.move_on_after(0.5):
            await doomed.stack.engine.route_order(aapl_order(order_id))
    venue.hang = False


async def stored_response(store: Store, order_id: str) -> OrderRoutingResponse | None:
    claim = await store.get_claim(order_id)
    assert claim is not None
    return claim.response


async def wait_answer(store: Store, order_id: str, timeout: float = 10.0) -> OrderRoutingResponse:
    """The answer another daemon stores (a row: no event reaches this one)."""
    answer = await wait_until(
        lambda: stored_response(store, order_id),
        what=f"a stored answer to {order_id}",
        timeout=timeout,
        interval=0.05,
    )
    assert answer is not None
    return answer


async def may_judge_leases(lease: Lease) -> None:
    """Until `lease`'s daemon has renewed its own lease for `LEASE_S` without a break: from then
    on it judges the others' (and any lease older than its vouching has lapsed)."""
    await wait_until(
        lambda: condition(lease.vouched_for),
        lambda vouched: vouched >= LEASE_S,
        what=f"{lease.seat.instance_id} renewing its lease unbroken for {LEASE_S} s",
    )


async def test_a_dead_daemons_order_at_the_broker_is_answered_accepted_by_a_survivor(database: str) -> None:
    venue = Venue()
    order_id = new_id()
    await claim_and_die(database, venue, order_id)
    assert len(venue.submits) == 1
    told = Told()
    async with daemon(database, venue, "survivor", taken_over=told) as survivor:
        store = survivor.stack.store
        assert await stored_response(store, order_id) is None  # its lease has not lapsed yet
        answer = await wait_answer(store, order_id)
        await wait_until(lambda: condition(lambda: told.count), what="the takeover told (for the backfill)")
        assert answer.status is RoutingStatus.ACCEPTED
        assert answer.broker_order_id == "V-1"
        again = await survivor.stack.engine.route_order(aapl_order(order_id))  # the OMS's retry
        assert again == answer
        (attempt,) = await store.load_attempts(order_id)
        assert attempt.status is BrokerOrderStatus.ACCEPTED
    assert len(venue.submits) == 1  # never sent again


async def test_an_order_that_never_reached_the_broker_is_answered_rejected(database: str) -> None:
    venue = Venue()
    venue.lose = True
    order_id = new_id()
    await claim_and_die(database, venue, order_id)
    async with daemon(database, venue, "survivor") as survivor:
        answer = await wait_answer(survivor.stack.store, order_id)
        assert answer.status is RoutingStatus.REJECTED
        assert answer.rejection_reason is not None
        assert "never reached the broker" in answer.rejection_reason
    assert len(venue.submits) == 1


async def test_a_repeated_request_takes_the_orphan_over_at_once(database: str) -> None:
    venue = Venue()
    order_id = new_id()
    await claim_and_die(database, venue, order_id)
    told = Told()
    async with daemon(database, venue, "survivor", sweep_every=3600, taken_over=told) as survivor:
        # The survivor may judge leases, and the dead daemon's (registered before the survivor
        # started) has lapsed.
        await may_judge_leases(survivor.lease)
        started = trio.current_time()
        with trio.fail_after(5):
            answer = await survivor.stack.engine.route_order(aapl_order(order_id))
        assert answer.status is RoutingStatus.ACCEPTED
        assert trio.current_time() - started < 3.0  # not the 10 s wait then 503 of old
        assert told.count == 1  # once the order was taken over and answered
    assert len(venue.submits) == 1


async def test_a_live_peers_orders_are_left_alone(database: str) -> None:
    venue = Venue()
    order_id = new_id()
    venue.hang = True
    async with daemon(database, venue, "busy", deadline=30.0) as busy, trio.open_nursery() as nursery:
        nursery.start_soon(busy.stack.engine.route_order, aapl_order(order_id))
        told = Told()
        async with daemon(database, venue, "peer", taken_over=told) as peer:
            await may_judge_leases(peer.lease)  # and the busy order's claim is old enough to take
            # Sweeps that judge leases take nothing: the busy daemon's lease is renewed.
            assert await peer.sweeper.sweep() == 0, "peer"
            assert await busy.sweeper.sweep() == 0, "busy"
            assert peer.sweeper.adopted == 0, "peer"
            assert busy.sweeper.adopted == 0, "busy"
            assert await stored_response(peer.stack.store, order_id) is None
            assert told.count == 0  # nothing taken over, nothing to backfill
        nursery.cancel_scope.cancel()


async def test_a_daemon_that_lost_its_claim_cannot_start_another_attempt(database: str) -> None:
    venue = Venue()
    order_id = new_id()
    await claim_and_die(database, venue, order_id)
    async with daemon(database, venue, "survivor") as survivor:
        store = survivor.stack.store
        await wait_answer(store, order_id)
        (attempt,) = await store.load_attempts(order_id)
        second = msgspec.structs.replace(
            attempt,
            id=str(uuid.uuid4()),
            client_order_id=f"c-{uuid.uuid4().hex[:20]}",
            attempt=2,
            status=BrokerOrderStatus.PENDING,
            broker_order_id=None,
        )
        with pytest.raises(ClaimTakenOver):
            await store.start_attempt(second, "EQUITY", owner="someone-else")
