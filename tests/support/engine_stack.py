"""The engine and its broker connections, assembled as the daemon does it (store, handles,
engine, supervisor), for tests that drive the engine directly: one builder instead of a copy
per test module; `AaplMarket` and `aapl_order` are the market and the order most of them use."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from decimal import Decimal
from typing import Any

import trio

from adapters.base import BrokerAdapter
from api.contracts import OrderRoutingRequest
from api.enums import AssetClass, OrderType, Side
from api.events import AnyBrokerEvent
from nursery.brokers import BrokerHandle, supervise_brokers
from nursery.engine import ExecutionEngine, MarketView
from routing.impact import MarketStats
from sql.records import OutboxEvent
from sql.store import Store


class AaplMarket:
    """One instrument, AAPL (an equity), mid 190.00, no statistics."""

    def asset_class(self, symbol: str) -> AssetClass | None:
        return AssetClass.EQUITY if symbol == "AAPL" else None

    def mid(self, symbol: str) -> Decimal | None:
        return Decimal("190.00")

    def stats(self, symbol: str) -> MarketStats | None:
        return None


def aapl_order(order_id: str, **changes: Any) -> OrderRoutingRequest:
    """A LIMIT buy of 100 AAPL at 190.50 (any field replaced by `changes`)."""
    fields: dict[str, Any] = dict(
        order_id=order_id,
        account_id="ACC",
        symbol="AAPL",
        side=Side.BUY,
        type=OrderType.LIMIT,
        quantity=Decimal(100),
        price=Decimal("190.50"),
    )
    fields.update(changes)
    return OrderRoutingRequest(**fields)


class EngineStack:
    def __init__(
        self,
        engine: ExecutionEngine,
        store: Store,
        handles: list[BrokerHandle],
        published: trio.MemoryReceiveChannel[OutboxEvent],
    ) -> None:
        self.engine, self.store, self.handles, self.published = engine, store, handles, published

    def __repr__(self) -> str:
        return f"<EngineStack {self.engine!r}>"

    def drain_published(self) -> list[OutboxEvent]:
        out = []
        while True:
            try:
                out.append(self.published.receive_nowait())
            except trio.WouldBlock:
                return out


@contextlib.asynccontextmanager
async def engine_stack(
    database_url: str,
    adapters: Sequence[BrokerAdapter],
    market: MarketView,
    *,
    deadline: float = 1.0,
    settle: float = 0.2,
    handle_options: Callable[[BrokerAdapter], dict[str, Any]] = lambda adapter: {},
    supervisor_options: dict[str, Any] | None = None,
    recover: bool = True,
    drain: bool = False,
    **engine_options: Any,
) -> AsyncIterator[EngineStack]:
    """Store, one handle per adapter (upserted), the engine running, the brokers supervised
    (with the engine's recovery unless `recover` is False). `drain` discards the published
    updates (else they queue on `EngineStack.published`)."""
    publish_send, publish_receive = trio.open_memory_channel[OutboxEvent](100_000)
    events_send, events_receive = trio.open_memory_channel[AnyBrokerEvent](100_000)
    async with Store.open(database_url) as store, trio.open_nursery() as nursery:
        handles = [BrokerHandle(a, a.broker_id, settle=settle, **handle_options(a)) for a in adapters]
        await store.upsert_brokers([h.record() for h in handles])
        engine = ExecutionEngine(
            store, handles, market, publish_send, attempt_deadline=lambda urgency: deadline, **engine_options
        )
        await nursery.start(engine.run, events_receive)
        options = dict(supervisor_options or {})
        if recover:
            options.setdefault("recover", engine.recover)
        await nursery.start(functools.partial(supervise_brokers, handles, events_send, **options))
        if drain:
            nursery.start_soon(_discard, publish_receive)
        yield EngineStack(engine, store, handles, publish_receive)
        with trio.move_on_after(5):  # acks answered just before the end are written, as on a stop
            await engine.wait_written()
        nursery.cancel_scope.cancel()
    publish_receive.close()


async def _discard(receive: trio.MemoryReceiveChannel[OutboxEvent]) -> None:
    async for _ in receive:
        pass
