"""Supervision through the real engine: rate limits never exceeded (from the adapter's own
timestamps), the circuit breaker taking a failing broker out of routing and back, and one
broker's crash restarting only that broker."""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from decimal import Decimal
from typing import Any

import msgspec
import pytest
import trio

from adapters.simulated import SimulatedMarket
from adapters.simulated.config import MarketConfig, default_instruments
from adapters.simulated.view import DirectView
from api.capabilities import RateLimits
from api.contracts import OrderRoutingRequest
from api.enums import ConnectionStatus, OrderType, RoutingStatus, Side
from api.events import AnyBrokerEvent
from nursery.breaker import BreakerState, CircuitBreaker
from nursery.brokers import BrokerHandle, supervise_brokers
from nursery.engine import ExecutionEngine
from tests.nursery.test_failover import venue
from tests.support.engine_stack import engine_stack
from tests.support.faults import Fault, FaultyBroker
from tests.support.polling import condition, wait_until


@contextlib.asynccontextmanager
async def engine_with(
    database_url: str,
    brokers: Sequence[FaultyBroker],
    *,
    deadline: float,
    breakers: dict[str, CircuitBreaker],
) -> AsyncIterator[tuple[ExecutionEngine, list[BrokerHandle]]]:
    market = brokers[0]._market  # the venues share it
    async with engine_stack(
        database_url,
        brokers,
        DirectView(market),
        deadline=deadline,
        settle=0.1,
        handle_options=lambda adapter: {"breaker": breakers.get(adapter.broker_id)},
        recover=False,
        drain=True,
    ) as stack:
        yield stack.engine, stack.handles


async def eventually(check: Callable[[], bool], within: float) -> None:
    await wait_until(lambda: condition(check), what="condition", timeout=within, interval=0.005)


def market() -> SimulatedMarket:
    return SimulatedMarket(MarketConfig(seed=5, tick_interval_ms=None, instruments=default_instruments()))


def resting(**changes: Any) -> OrderRoutingRequest:
    fields: dict[str, Any] = dict(
        order_id=f"sv-{uuid.uuid4().hex[:16]}",
        account_id="ACC",
        symbol="AAPL",
        side=Side.BUY,
        type=OrderType.LIMIT,
        quantity=Decimal(1),
        price=Decimal("1.00"),
    )
    fields.update(changes)
    return OrderRoutingRequest(**fields)


async def test_a_flood_never_exceeds_the_brokers_rate_limits(migrated_database_url: str) -> None:
    limited = FaultyBroker(
        msgspec.structs.replace(
            venue("sv-limited", "0.0001"),
            rate_limits=RateLimits(requests_per_second=8, requests_per_minute=24),
        ),
        market(),
    )
    async with engine_with(migrated_database_url, [limited], deadline=10.0, breakers={}) as (engine, _):
        responses: list[Any] = []

        async def send(engine: ExecutionEngine, responses: list[Any]) -> None:
            responses.append(await engine.route_order(resting()))

        async with trio.open_nursery() as flood:
            for _ in range(30):
                flood.start_soon(send, engine, responses)
        accepted = [r for r in responses if r.status is RoutingStatus.ACCEPTED]
        refused = [r for r in responses if r.status is RoutingStatus.REJECTED]
        # 24 fit the minute; the other 6 could not get capacity within their 10 s deadline and
        # were refused at once (nothing sent), not left to wait or sent over the limit.
        assert (len(accepted), len(refused)) == (24, 6)
        assert all("rate limit" in (r.rejection_reason or "") for r in refused)
        times = sorted(call.at for call in limited.submits)
        assert len(times) == 24
        # Every sliding window, from the adapter's own timestamps: the (i+limit)-th request
        # comes at least a full window after the i-th.
        for window, limit in ((1.0, 8), (60.0, 24)):
            for i in range(len(times) - limit):
                assert times[i + limit] - times[i] >= window - 1e-9, (window, i)
        assert times[-1] - times[0] >= 2.0  # 24 at 8/s: the per-second limit really held them back


async def test_orders_that_cannot_get_capacity_in_time_go_to_the_next_broker(
    migrated_database_url: str,
) -> None:
    shared = market()
    tight = FaultyBroker(
        msgspec.structs.replace(venue("sv-tight", "0.0001"), rate_limits=RateLimits(requests_per_second=2)),
        shared,
    )
    spare = FaultyBroker(venue("sv-spare", "0.0009"), shared)
    async with engine_with(migrated_database_url, [tight, spare], deadline=0.2, breakers={}) as (engine, _):
        brokers = [(await engine.route_order(resting())).selected_broker for _ in range(6)]
        assert brokers[:2] == ["sv-tight", "sv-tight"]
        assert set(brokers[2:]) == {"sv-spare"}  # no capacity within the deadline: denied, moved on
        assert len(tight.submits) == 2


async def test_the_breaker_takes_a_failing_broker_out_and_a_probe_brings_it_back(
    migrated_database_url: str,
) -> None:
    shared = market()
    flaky = FaultyBroker(venue("sv-flaky", "0.0001"), shared)
    steady = FaultyBroker(venue("sv-steady", "0.0009"), shared)
    now = [0.0]  # the breaker's clock, moved by the test: the cool-down passes without waiting
    breaker = CircuitBreaker(failure_threshold=3, cooldown=0.5, clock=lambda: now[0])
    async with engine_with(
        migrated_database_url, [flaky, steady], deadline=0.2, breakers={"sv-flaky": breaker}
    ) as (engine, handles):
        flaky.inject(Fault.TIMEOUT, times=3, delay=0.01)
        for _ in range(3):
            assert (await engine.route_order(resting())).selected_broker == "sv-steady"
        assert breaker.state is BreakerState.OPEN
        status = await engine.get_broker_status("sv-flaky")
        assert status.status is ConnectionStatus.DEGRADED
        assert (await engine.route_order(resting())).selected_broker == "sv-steady"
        assert len(flaky.submits) == 3  # open: not even tried
        now[0] += 0.6  # cool-down over: one probe goes through
        assert (await engine.route_order(resting())).selected_broker == "sv-flaky"
        assert breaker.state is BreakerState.CLOSED
        assert (await engine.get_broker_status("sv-flaky")).status is ConnectionStatus.CONNECTED
        assert handles[1].breaker.state is BreakerState.CLOSED


async def test_one_brokers_crash_restarts_only_that_broker(migrated_database_url: str) -> None:
    shared = market()
    crashing = FaultyBroker(venue("sv-crash", "0.0001"), shared)
    calm = FaultyBroker(venue("sv-calm", "0.0009"), shared)
    async with engine_with(migrated_database_url, [crashing, calm], deadline=0.5, breakers={}) as (
        engine,
        handles,
    ):
        crashing.drop_connection("connection reset by peer")
        await eventually(lambda: handles[0].status is not ConnectionStatus.CONNECTED, 2.0)
        # while it reconnects, orders go to the other broker
        response = await engine.route_order(resting())
        assert response.selected_broker == "sv-calm"
        await eventually(lambda: handles[0].status is ConnectionStatus.CONNECTED, 5.0)
        assert (await engine.route_order(resting())).selected_broker == "sv-crash"
        status = await engine.get_broker_status("sv-crash")
        assert any(i.type.value == "CONNECTIVITY" and "reset" in i.message for i in status.issues)
        assert status.uptime < 100.0
        assert [c.status for c in handles[0].history] == [
            ConnectionStatus.CONNECTED,
            ConnectionStatus.DISCONNECTED,
            ConnectionStatus.CONNECTED,
        ]
        assert [c.status for c in handles[1].history] == [ConnectionStatus.CONNECTED]  # untouched
        assert (await engine.get_broker_status("sv-calm")).uptime == pytest.approx(100.0)


class SilentBroker(FaultyBroker):
    """Connected, but stops answering heartbeats when told."""

    silent = False

    async def heartbeat(self) -> None:
        if self.silent:
            self.silent = False  # one silence: the restarted connection answers again
            await trio.sleep_forever()
        await super().heartbeat()


async def test_a_broker_that_stops_answering_heartbeats_is_reconnected(migrated_database_url: str) -> None:
    silent = SilentBroker(venue("sv-silent", "0.0001"), market())
    handle = BrokerHandle(silent, "sv-silent")
    events_send, events_receive = trio.open_memory_channel[AnyBrokerEvent](1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(
                supervise_brokers,
                [handle],
                events_send,
                backoff_initial=0.05,
                heartbeat_every=0.05,
                heartbeat_timeout=0.1,
            )
        )
        assert handle.status is ConnectionStatus.CONNECTED
        silent.silent = True
        await eventually(lambda: handle.status is ConnectionStatus.DISCONNECTED, 2.0)
        assert "no heartbeat answer" in handle.issues[-1].message
        await eventually(lambda: handle.status is ConnectionStatus.CONNECTED, 2.0)
        nursery.cancel_scope.cancel()
    events_receive.close()
