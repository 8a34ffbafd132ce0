"""What every broker venue in the contract suite provides besides its adapter: a running
adapter, its event stream, and the means to make the broker fill, refuse and price orders."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Protocol

import msgspec
import trio
import trio.lowlevel

from adapters.base import BrokerAdapter, SubmitRequest
from adapters.simulated.config import InstrumentConfig, MarketConfig, SimulatedBrokerConfig
from adapters.simulated.market import SimulatedMarket
from adapters.simulated.venue import SimulatedBroker
from api.contracts import CommissionStructure
from api.enums import AssetClass, BrokerFeature, OrderType, Side, TimeInForce
from api.events import AnyBrokerEvent
from tests.support.alpaca_emulator import AlpacaDriver, open_alpaca_adapter
from tests.support.fix_acceptor import FixDriver, open_fix_adapter
from tests.support.ib_harness import IbDriver, open_ib_adapter

SYMBOL = "AAPL"
Events = trio.MemoryReceiveChannel[AnyBrokerEvent]


class ContractVenue(Protocol):
    adapter: BrokerAdapter
    events: trio.MemoryReceiveChannel[AnyBrokerEvent]
    #: A market buy fills at once, in full, at this price.
    market_price: Decimal
    #: A buy limit at this price rests (nothing fills until `fill`).
    resting_price: Decimal

    def refused(self, request: SubmitRequest) -> SubmitRequest:
        """A variant of `request` this broker refuses (BrokerRejected)."""
        ...

    async def fill(self, client_order_id: str, quantity: Decimal, price: Decimal) -> None:
        """Make the broker fill `quantity` of a resting buy at `price`."""
        ...


def request(client_order_id: str, **fields: object) -> SubmitRequest:
    base: dict[str, object] = dict(
        client_order_id=client_order_id,
        account_id="ACC-CONTRACT",
        symbol=SYMBOL,
        asset_class=AssetClass.EQUITY,
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(10),
        time_in_force=TimeInForce.DAY,
    )
    base.update(fields)
    return SubmitRequest(**base)  # type: ignore[arg-type]


class SimulatedVenue:
    """The simulated broker on a hand-driven market: the ask is the market price."""

    def __init__(
        self,
        adapter: SimulatedBroker,
        market: SimulatedMarket,
        events: trio.MemoryReceiveChannel[AnyBrokerEvent],
    ) -> None:
        self.adapter: BrokerAdapter = adapter
        self.market = market
        self.events = events
        self.market_price = Decimal("100.02")
        self.resting_price = Decimal("99.00")

    def refused(self, request: SubmitRequest) -> SubmitRequest:
        return msgspec.structs.replace(request, symbol="NOT-TRADED")  # the venue knows no such symbol

    async def fill(self, client_order_id: str, quantity: Decimal, price: Decimal) -> None:
        self.market.set_quote(SYMBOL, price - Decimal("0.01"), price, ask_size=quantity)
        await trio.lowlevel.checkpoint()
        self.market.set_quote(SYMBOL, Decimal("100.00"), self.market_price)  # back to the book


@asynccontextmanager
async def simulated_venue() -> AsyncIterator[SimulatedVenue]:
    market = SimulatedMarket(
        MarketConfig(
            seed=1,
            tick_interval_ms=None,
            instruments=(
                InstrumentConfig(
                    symbol=SYMBOL,
                    asset_class=AssetClass.EQUITY,
                    price=Decimal("100.00"),
                    spread_bps=Decimal(2),
                    volatility_bps=Decimal(1),
                    top_size=Decimal(1000),
                    tick_size=Decimal("0.01"),
                    trade_probability=0.0,
                ),
            ),
        )
    )
    market.set_quote(SYMBOL, Decimal("100.00"), Decimal("100.02"))
    adapter = SimulatedBroker(
        SimulatedBrokerConfig(
            broker_id="contract-sim",
            name="Contract Simulated",
            asset_classes=(AssetClass.EQUITY,),
            features=tuple(BrokerFeature),
            commission=CommissionStructure(base_rate=Decimal(0)),
            venue="SIMX-C",
            seed=3,
        ),
        market,
    )
    send, receive = trio.open_memory_channel[AnyBrokerEvent](1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(adapter.run, send)
        yield SimulatedVenue(adapter, market, receive)
        nursery.cancel_scope.cancel()


class AlpacaVenue:
    """The Alpaca adapter against the loopback emulator (driven through alpaca-py)."""

    def __init__(self, adapter: BrokerAdapter, driver: AlpacaDriver) -> None:
        self.adapter = adapter
        self.driver = driver
        self.events = driver.events
        self.market_price = driver.market_price
        self.resting_price = Decimal("99.00")

    def refused(self, request: SubmitRequest) -> SubmitRequest:
        return msgspec.structs.replace(request, quantity=self.driver.reject_quantity + 1)  # buying power

    async def fill(self, client_order_id: str, quantity: Decimal, price: Decimal) -> None:
        self.driver.fill(client_order_id, quantity, price)
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def alpaca_venue() -> AsyncIterator[AlpacaVenue]:
    async with open_alpaca_adapter(market_price=Decimal("100.02")) as (adapter, driver):
        yield AlpacaVenue(adapter, driver)


class FixVenue:
    """The FIX 4.4 adapter against the loopback acceptor (its session state in PostgreSQL)."""

    def __init__(self, adapter: BrokerAdapter, driver: FixDriver) -> None:
        self.adapter = adapter
        self.driver = driver
        self.events = driver.events
        self.market_price = driver.market_price
        self.resting_price = Decimal("99.00")

    def refused(self, request: SubmitRequest) -> SubmitRequest:
        return msgspec.structs.replace(request, quantity=self.driver.reject_quantity + 1)

    async def fill(self, client_order_id: str, quantity: Decimal, price: Decimal) -> None:
        await self.driver.fill(client_order_id, quantity, price)


@asynccontextmanager
async def fix_venue(database_url: str) -> AsyncIterator[FixVenue]:
    async with open_fix_adapter(database_url) as (adapter, driver):
        yield FixVenue(adapter, driver)


class IbVenue:
    """The Interactive Brokers adapter (ib_async) against the loopback TWS API peer."""

    def __init__(self, adapter: BrokerAdapter, driver: IbDriver) -> None:
        self.adapter = adapter
        self.driver = driver
        self.events = driver.events
        self.market_price = driver.market_price
        self.resting_price = Decimal("99.00")

    def refused(self, request: SubmitRequest) -> SubmitRequest:
        return msgspec.structs.replace(request, quantity=self.driver.reject_quantity + 1)  # margin: 201

    async def fill(self, client_order_id: str, quantity: Decimal, price: Decimal) -> None:
        self.driver.peer.fill(client_order_id, quantity, price)
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def ib_venue() -> AsyncIterator[IbVenue]:
    async with open_ib_adapter(market_price=Decimal("100.02")) as (adapter, driver):
        yield IbVenue(adapter, driver)
