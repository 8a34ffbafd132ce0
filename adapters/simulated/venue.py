"""A simulated broker: `adapters.base.BrokerAdapter` over a `MatchingEngine` fed by a
`SimulatedMarket`. The embedded default runs several, configured differently (costs, latency,
order types, partial fills, rejects) so that routing and TCA have real choices to make.

Event delivery. The market calls the venue synchronously (a listener cannot wait), and
`send_nowait` straight into the daemon's channel would raise WouldBlock, and lose the event,
the moment the consumer falls behind. So every event goes first into an unbounded internal
memory channel (never blocks, never drops, keeps order), and a task in `run` forwards it with
`await events.send(...)`: a slow consumer costs memory, never events. Events still queued when
`run` is cancelled are lost, as with a real stream on a disconnect; `query` tells the truth.

Connection. Orders are accepted only while `run` is active (else `DeniedLocally`); the venue
watches the market only then, so resting orders do not match while it is disconnected, and on
(re)connect it catches up from the market's current quotes.

Ids. Order and fill ids carry a random session token, so a restarted venue never reuses the
fill id of an earlier life (the daemon stores fills by broker fill id). Orders live in memory
only: a restarted venue knows nothing of earlier orders (`query` returns None).

Latency. Each request takes one lognormal sample, half on the way to the venue and half on the
way back: a deadline that cancels `submit` on the way back leaves an order the venue accepted
(the case reconciliation exists for), and a disconnect in flight raises OutcomeUnknown. With a
zero median a request completes without any checkpoint at all (the zero-latency hot path).
"""

from __future__ import annotations

import math
import random
import secrets
from datetime import datetime

import trio

from adapters.base import (
    BrokerAck,
    BrokerOrderSnapshot,
    BrokerRejected,
    CancelRejected,
    Capabilities,
    ConnectionLost,
    DeniedLocally,
    OutcomeUnknown,
    SubmitRequest,
)
from adapters.simulated.config import SimulatedBrokerConfig
from adapters.simulated.market import Clock, MarketEvent, QuoteEvent, SimulatedMarket
from adapters.simulated.matching import MatchingEngine, order_problem
from api.events import AnyBrokerEvent, OrderFilled

#: Reasons a real venue gives for refusing a well-formed order; `reject_rate` draws from these.
VENUE_REJECT_REASONS = (
    "price outside the venue's trading collar",
    "risk check failed: order exceeds the venue's size limit",
    "symbol temporarily halted",
    "venue throttled: too many orders in flight",
)


class SimulatedBroker:
    """One simulated broker connection, driven through the `BrokerAdapter` interface."""

    def __init__(
        self,
        config: SimulatedBrokerConfig,
        market: SimulatedMarket,
        *,
        clock: Clock | None = None,
        session: str | None = None,
    ) -> None:
        self.config = config
        self.broker_id = config.broker_id
        self.name = config.name
        self.capabilities = Capabilities(
            asset_classes=frozenset(config.asset_classes),
            features=frozenset(config.features),
            time_in_force=frozenset(config.time_in_force),
            rate_limits=config.rate_limits,
        )
        self.commission = config.commission
        self.outlives_daemon = False  # orders live in this process only
        self._market = market
        self._clock = market.now if clock is None else clock
        self._random = random.Random(config.seed)
        self._engine = MatchingEngine(
            broker_id=config.broker_id,
            venue=config.venue,
            commission=config.commission,
            liquidity_share=config.liquidity_share,
            session=secrets.token_hex(4) if session is None else session,
        )
        self._outbox: trio.MemorySendChannel[AnyBrokerEvent] | None = None
        self._running = False

    def __repr__(self) -> str:
        state = "connected" if self._outbox is not None else "disconnected"
        return f"<SimulatedBroker {self.broker_id} {state} open={self._engine.open_orders}>"

    @property
    def connected(self) -> bool:
        return self._outbox is not None

    @property
    def engine(self) -> MatchingEngine:
        """The venue's order book (read it; drive it only through the adapter methods)."""
        return self._engine

    # --- connection --------------------------------------------------------------------

    async def run(
        self,
        events: trio.MemorySendChannel[AnyBrokerEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect (after `connect_ms`), report started, then forward every execution event
        into `events` until cancelled. One `run` at a time."""
        if self._running:
            raise RuntimeError(f"{self.broker_id}: run() is already active")
        self._running = True
        try:
            if self.config.latency.connect_ms > 0:
                await trio.sleep(self.config.latency.connect_ms / 1000.0)
            outbox, inbox = trio.open_memory_channel[AnyBrokerEvent](math.inf)
            async with outbox, inbox:
                self._outbox = outbox
                self._market.add_listener(self._on_market)
                try:
                    for symbol in self._market.symbols:
                        self._deliver(self._engine.on_quote(self._market.quote(symbol)))
                    task_status.started()
                    await self._forward(inbox, events)
                finally:
                    self._market.remove_listener(self._on_market)
                    self._outbox = None
        finally:
            self._running = False

    # --- orders ------------------------------------------------------------------------

    async def submit(self, request: SubmitRequest) -> BrokerAck:
        """Place one order: BrokerAck and an OrderAccepted event, then whatever matching on
        arrival produced (fills; the cancel of an IOC/FOK remainder). Events may reach the
        stream before the ack returns. Raises DeniedLocally when not connected, BrokerRejected
        for an order the venue refuses (nothing is recorded: `query` returns None for it), and
        OutcomeUnknown when the connection drops while the request is in flight."""
        outbox, half = await self._request_leg()
        try:
            ack = self._place(request, outbox)
        except BrokerRejected:
            await self._response_leg(outbox, half)
            raise
        await self._response_leg(outbox, half)
        return ack

    async def cancel(self, client_order_id: str) -> None:
        """Cancel an open order; its OrderCanceled arrives on the stream. Idempotent: cancelling
        an order already canceled does nothing. Raises CancelRejected for an unknown order or
        one already filled or expired, DeniedLocally / OutcomeUnknown as `submit`."""
        outbox, half = await self._request_leg()
        try:
            produced = self._engine.cancel(client_order_id, self._clock())
        except CancelRejected:
            await self._response_leg(outbox, half)
            raise
        for event in produced:
            outbox.send_nowait(event)
        await self._response_leg(outbox, half)

    async def heartbeat(self) -> None:
        """The simulated connection is alive while `run` is active."""
        await trio.lowlevel.checkpoint()
        if not self.connected:
            raise ConnectionLost(f"{self.broker_id}: not connected")

    async def query(self, client_order_id: str) -> BrokerOrderSnapshot | None:
        """The venue's view of the order, or None if it never accepted it."""
        outbox, half = await self._request_leg()
        snapshot = self._engine.snapshot(client_order_id)
        await self._response_leg(outbox, half)
        return snapshot

    async def open_orders(self) -> list[BrokerOrderSnapshot]:
        """The venue's open orders (accepted, partially filled, stops waiting to trigger)."""
        outbox, half = await self._request_leg()
        snapshots = self._engine.open_snapshots()
        await self._response_leg(outbox, half)
        return snapshots

    async def fills_since(self, since: datetime) -> list[OrderFilled]:
        """The venue's fills at or after `since`, oldest first (this venue life only)."""
        outbox, half = await self._request_leg()
        fills = self._engine.fills_since(since)
        await self._response_leg(outbox, half)
        return fills

    def end_of_day(self) -> None:
        """Expire every open DAY order (OrderExpired on the stream); GTC orders stay."""
        self._deliver(self._engine.end_of_day(self._clock()))

    def sample_latency(self) -> float:
        """One request latency in seconds: `median * e^(sigma * Z)`, or 0 with a zero median."""
        latency = self.config.latency
        if latency.median_ms <= 0:
            return 0.0
        if latency.sigma <= 0:
            return latency.median_ms / 1000.0
        return latency.median_ms * math.exp(latency.sigma * self._random.gauss(0.0, 1.0)) / 1000.0

    # --- internals ---------------------------------------------------------------------

    def _place(self, request: SubmitRequest, outbox: trio.MemorySendChannel[AnyBrokerEvent]) -> BrokerAck:
        """The venue's side of `submit`: checks in the order a venue makes them, then matching."""
        reason = self.capabilities.supports(request.asset_class, request.order_type, request.time_in_force)
        if reason is not None:
            raise BrokerRejected(reason)
        asset_class = self._market.asset_class(request.symbol)
        if asset_class is None:
            raise BrokerRejected(f"unknown symbol {request.symbol}")
        if asset_class is not request.asset_class:
            raise BrokerRejected(f"{request.symbol} is {asset_class}, not {request.asset_class}")
        reason = order_problem(request)
        if reason is not None:
            raise BrokerRejected(reason)
        if request.client_order_id in self._engine:
            raise BrokerRejected(f"duplicate client order id {request.client_order_id}")
        if self.config.reject_rate and self._random.random() < self.config.reject_rate:
            raise BrokerRejected(self._random.choice(VENUE_REJECT_REASONS))
        at = self._clock()
        broker_order_id, produced = self._engine.submit(request, at)
        for event in produced:
            outbox.send_nowait(event)
        return BrokerAck(broker_order_id=broker_order_id, at=at)

    async def _request_leg(self) -> tuple[trio.MemorySendChannel[AnyBrokerEvent], float]:
        """Check the connection and carry the request to the venue: the first half of one
        sampled latency. Returns the connection it arrived on and the half still to come."""
        outbox = self._outbox
        if outbox is None:
            raise DeniedLocally("not connected")
        half = self.sample_latency() / 2
        if half:
            await trio.sleep(half)
            if self._outbox is not outbox:
                raise OutcomeUnknown("connection lost while the request was in flight")
        return outbox, half

    async def _response_leg(self, outbox: trio.MemorySendChannel[AnyBrokerEvent], half: float) -> None:
        """Carry the response back. A cancellation here leaves the request done at the venue;
        a disconnect here makes the outcome unknown to the caller."""
        if half:
            await trio.sleep(half)
            if self._outbox is not outbox:
                raise OutcomeUnknown("connection lost before the response arrived")

    @staticmethod
    async def _forward(
        inbox: trio.MemoryReceiveChannel[AnyBrokerEvent], events: trio.MemorySendChannel[AnyBrokerEvent]
    ) -> None:
        """Move events from the internal queue to the caller's channel, in order. A burst is
        moved without a checkpoint per event while `events` has room; when it is full, wait."""
        async for event in inbox:
            await events.send(event)
            while True:
                try:
                    event = inbox.receive_nowait()
                except trio.WouldBlock:
                    break
                try:
                    events.send_nowait(event)
                except trio.WouldBlock:
                    await events.send(event)

    def _on_market(self, event: MarketEvent) -> None:
        if isinstance(event, QuoteEvent):
            self._deliver(self._engine.on_quote(event))
        else:
            self._deliver(self._engine.on_trade(event.symbol, event.price, event.at))

    def _deliver(self, produced: list[AnyBrokerEvent]) -> None:
        outbox = self._outbox
        if outbox is None:  # disconnected: like a real stream, the gap is not replayed
            return
        for event in produced:
            outbox.send_nowait(event)
