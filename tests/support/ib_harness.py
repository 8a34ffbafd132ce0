"""The IB adapter under test: a fresh loopback TWS peer and an `IbBroker` connected to it
through ib_async, on one trio-asyncio loop (as in the daemon), its `run` supervised."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import trio
import trio.testing
import trio_asyncio

from adapters.base import BrokerError
from adapters.ib.broker import IbBroker
from adapters.ib.config import IbConfig
from api.enums import ConnectionStatus
from api.events import AnyBrokerEvent
from tests.support.tws_peer import SERVER_VERSION, TwsPeer

CLIENT_ID = 17


def peer_config(peer: TwsPeer, **changes: Any) -> IbConfig:
    base: dict[str, Any] = dict(
        broker_id="ib-test",
        name="IB (loopback)",
        port=peer.port,
        client_id=CLIENT_ID,
        connect_timeout=3.0,
        request_timeout=2.0,
        submit_timeout=1.0,
        cancel_timeout=1.0,
        executions_timeout=1.0,
        commission_wait=0.5,
    )
    base.update(changes)
    return IbConfig(**base)


@dataclass
class IbDriver:
    """What a test drives besides the adapter: the peer and the adapter's output."""

    peer: TwsPeer
    events: trio.MemoryReceiveChannel[AnyBrokerEvent]
    reject_quantity: Decimal
    market_price: Decimal
    run_failures: list[BrokerError] = field(default_factory=list)
    statuses: list[tuple[ConnectionStatus, str]] = field(default_factory=list)
    #: Set each time the supervised `run` reports started (a new connection is up).
    connected: trio.Event = field(default_factory=trio.Event)
    connections: int = 0
    _changed: trio.Event = field(default_factory=trio.Event)

    def notify(self) -> None:
        """Something a test may wait for happened (a status, a connection, a failure)."""
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, check: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (event-driven) until `check()` holds after a change the driver saw."""
        with trio.fail_after(timeout):
            while not check():
                await self._changed.wait()

    async def settled(self, adapter: IbBroker) -> None:
        """Everything TWS sent so far has been applied: a round trip through TWS (its answer
        comes after every earlier message), then every task idle."""
        await adapter.heartbeat()
        await trio.testing.wait_all_tasks_blocked()

    async def next_event(self, timeout: float = 3.0) -> AnyBrokerEvent:
        with trio.fail_after(timeout):
            return await self.events.receive()

    def pending_events(self) -> list[AnyBrokerEvent]:
        found: list[AnyBrokerEvent] = []
        while True:
            try:
                found.append(self.events.receive_nowait())
            except trio.WouldBlock:
                return found


async def supervise(
    adapter: IbBroker,
    events: trio.MemorySendChannel[AnyBrokerEvent],
    driver: IbDriver,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `adapter.run` forever, restarting it after a BrokerError (as the daemon's supervisor
    does, with a short fixed pause); started once the first connection is up."""
    first = True
    while True:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(adapter.run, events)
                driver.connected.set()
                driver.connections += 1
                driver.notify()
                if first:
                    first = False
                    task_status.started()
        except* BrokerError as group:
            driver.run_failures.extend(e for e in group.exceptions if isinstance(e, BrokerError))
        driver.connected = trio.Event()
        driver.notify()
        await trio.sleep(0.02)


@asynccontextmanager
async def open_ib_adapter(
    *,
    market_price: Decimal = Decimal("100.00"),
    reject_quantity: Decimal = Decimal(10_000),
    partial_fills: int = 1,
    max_version: int = SERVER_VERSION,
    **config_changes: Any,
) -> AsyncIterator[tuple[IbBroker, IbDriver]]:
    """A fresh peer and a connected `IbBroker`. Yields `(adapter, driver)`; events arrive on
    `driver.events`. Opens its own trio-asyncio loop (the daemon's one bridge)."""
    peer = TwsPeer(
        market_price=market_price,
        max_quantity=reject_quantity,
        partial_fills=partial_fills,
        max_version=max_version,
    )
    send, receive = trio.open_memory_channel[AnyBrokerEvent](math.inf)
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        await nursery.start(peer.serve)
        adapter = IbBroker(peer_config(peer, **config_changes))
        driver = IbDriver(peer, receive, reject_quantity, market_price)

        def on_status(status: ConnectionStatus, message: str) -> None:
            driver.statuses.append((status, message))
            driver.notify()

        adapter.status_listener = on_status
        with trio.fail_after(10):
            await nursery.start(supervise, adapter, send, driver)
        try:
            yield adapter, driver
        finally:
            nursery.cancel_scope.cancel()
