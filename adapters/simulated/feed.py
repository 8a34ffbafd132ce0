"""The embedded default's Market Data Service: publishes the simulated market's quotes and
trades on the market-data subjects (and each session's closes), exactly as a real one would,
so the daemon's intake is the same code in both cases.

Delivery: best effort, as market data is. Events are queued (bounded: `backlog`) from the
market's listener without blocking it; past the bound they are dropped and counted (`dropped`);
a batch the bus refuses (NATS reconnecting) is logged and lost."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from datetime import date
from typing import Protocol

import trio

from adapters.simulated.market import MarketEvent, QuoteEvent, SimulatedMarket
from market.messages import ENCODER, CloseMessage, QuoteMessage, TradeMessage
from market.subjects import PREFIX, subject

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> Awaitable[None]: ...


class SimulatedFeed:
    """Listens to a `SimulatedMarket` and publishes every event, batched per wake-up."""

    def __init__(self, market: SimulatedMarket, *, prefix: str = PREFIX, backlog: int = 50_000) -> None:
        self._market = market
        self._prefix = prefix
        self._send, self._receive = trio.open_memory_channel[tuple[str, bytes]](backlog)
        self.dropped = 0

    def __repr__(self) -> str:
        return f"<SimulatedFeed {self._prefix} dropped={self.dropped}>"

    def _on_event(self, event: MarketEvent) -> None:
        if isinstance(event, QuoteEvent):
            message: QuoteMessage | TradeMessage = QuoteMessage(
                symbol=event.symbol,
                bid=event.bid,
                ask=event.ask,
                timestamp=event.at,
                bid_size=event.bid_size,
                ask_size=event.ask_size,
            )
            kind = "quotes"
        else:
            message = TradeMessage(
                symbol=event.symbol, price=event.price, size=event.size, timestamp=event.at
            )
            kind = "trades"
        self._queue(subject(kind, event.symbol, self._prefix), ENCODER.encode(message))

    def _queue(self, subject_: str, payload: bytes) -> None:
        try:
            self._send.send_nowait((subject_, payload))
        except trio.WouldBlock:
            self.dropped += 1

    def snapshot(self) -> None:
        """Publish every instrument's current quote (what a subscriber starting now needs)."""
        for symbol in self._market.symbols:
            q = self._market.quote(symbol)
            self._on_event(QuoteEvent(symbol, q.bid, q.ask, q.bid_size, q.ask_size, q.at))

    def publish_closes(self, day: date) -> None:
        """The official close of `day` for every instrument: its last traded price."""
        for symbol in self._market.symbols:
            close = CloseMessage(symbol=symbol, date=day, price=self._market.quote(symbol).last)
            self._queue(subject("close", symbol, self._prefix), ENCODER.encode(close))

    async def run(
        self, bus: Publisher, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._market.add_listener(self._on_event)
        try:
            self.snapshot()
            task_status.started()
            async with self._receive:
                while True:
                    first = await self._receive.receive()
                    batch = [first]
                    while len(batch) < 1000:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except trio.WouldBlock:
                            break
                    try:
                        await bus.publish_many(batch)
                    except Exception as exc:  # NATS reconnecting: market data is not durable
                        log.warning(
                            "market data not published", extra={"count": len(batch), "error": repr(exc)}
                        )
        finally:
            self._market.remove_listener(self._on_event)
