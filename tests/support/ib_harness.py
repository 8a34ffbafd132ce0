"""The IB adapter under test: a fresh loopback TWS peer and an `IbBroker` connected to it
through ib_async, on one trio-asyncio loop (as in the daemon), its `run` supervised."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import trio
import trio_asyncio

from adapters.base import BrokerError
from adapters.ib.broker import IbBroker
from adapters.ib.config import IbConfig
from api.enums import ConnectionStatus
from api.events import AnyBrokerEvent
from tests.support.tws_peer import TwsPeer

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
                if first:
                    first = False
                    task_status.started()
        except* BrokerError as group:
            driver.run_failures.extend(e for e in group.exceptions if isinstance(e, BrokerError))
        driver.connected = trio.Event()
        await trio.sleep(0.02)


@asynccontextmanager
async def open_ib_adapter(
    *,
    market_price: Decimal = Decimal("100.00"),
    reject_quantity: Decimal = Decimal(10_000),
    partial_fills: int = 1,
    **config_changes: Any,
) -> AsyncIterator[tuple[IbBroker, IbDriver]]:
    """A fresh peer and a connected `IbBroker`. Yields `(adapter, driver)`; events arrive on
    `driver.events`. Opens its own trio-asyncio loop (the daemon's one bridge)."""
    peer = TwsPeer(market_price=market_price, max_quantity=reject_quantity, partial_fills=partial_fills)
    send, receive = trio.open_memory_channel[AnyBrokerEvent](math.inf)
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        await nursery.start(peer.serve)
        adapter = IbBroker(peer_config(peer, **config_changes))
        driver = IbDriver(peer, receive, reject_quantity, market_price)
        adapter.status_listener = lambda status, message: driver.statuses.append((status, message))
        with trio.fail_after(10):
            await nursery.start(supervise, adapter, send, driver)
        try:
            yield adapter, driver
        finally:
            nursery.cancel_scope.cancel()
