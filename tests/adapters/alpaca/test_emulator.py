"""The emulator speaks Alpaca's shapes: alpaca-py's own models and client parse what it sends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import trio
from alpaca.common.enums import Sort
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Order, TradeAccount, TradeUpdate
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest
from trio_websocket import open_websocket_url

from adapters.alpaca.stream import auth_message, listen_message
from tests.support.alpaca_emulator import AlpacaEmulator

D = Decimal


@asynccontextmanager
async def emulator(**options: Any) -> AsyncIterator[AlpacaEmulator]:
    emu = AlpacaEmulator(**options)
    async with trio.open_nursery() as nursery:
        await nursery.start(emu.serve)
        try:
            yield emu
        finally:
            nursery.cancel_scope.cancel()


async def test_alpaca_py_client_parses_every_rest_answer() -> None:
    async with emulator(market_price=D("187.5")) as emu:
        client = TradingClient(emu.key_id, emu.secret, url_override=emu.url)

        def session() -> tuple[Any, ...]:
            account = client.get_account()
            clock = client.get_clock()
            market = client.submit_order(
                MarketOrderRequest(symbol="AAPL", qty=2, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
            )
            resting = client.submit_order(
                LimitOrderRequest(
                    symbol="MSFT",
                    qty=1,
                    side=OrderSide.SELL,
                    time_in_force=TimeInForce.GTC,
                    limit_price=420.5,
                    client_order_id="lim-1",
                )
            )
            by_client = client.get_order_by_client_id("lim-1")
            listed = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, direction=Sort.ASC))
            assert isinstance(resting, Order)
            client.cancel_order_by_id(resting.id)
            after = client.get_order_by_id(resting.id)
            return account, clock, market, by_client, listed, after

        account, clock, market, by_client, listed, after = await trio.to_thread.run_sync(session)
        assert isinstance(account, TradeAccount) and account.status.value == "ACTIVE"
        assert clock.is_open
        assert isinstance(market, Order) and market.status is OrderStatus.PENDING_NEW
        assert by_client.client_order_id == "lim-1" and by_client.limit_price == "420.5"
        assert [o.symbol for o in listed] == ["AAPL", "MSFT"]
        assert listed[0].status is OrderStatus.FILLED and listed[0].filled_avg_price == "187.5"
        assert after.status is OrderStatus.CANCELED


async def test_stream_speaks_alpacas_protocol_in_binary_frames() -> None:
    async with emulator() as emu:
        async with open_websocket_url(emu.url.replace("http", "ws") + "/stream") as ws:
            await ws.send_message(auth_message(emu.credentials))
            authorized = await ws.get_message()
            await ws.send_message(listen_message())
            listening = await ws.get_message()
            client = TradingClient(emu.key_id, emu.secret, url_override=emu.url)
            request = MarketOrderRequest(
                symbol="AAPL", qty=3, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
            )
            await trio.to_thread.run_sync(client.submit_order, request)
            frames = [await ws.get_message() for _ in range(2)]
        assert isinstance(authorized, bytes) and json.loads(authorized) == {
            "stream": "authorization",
            "data": {"action": "authenticate", "status": "authorized"},
        }
        assert json.loads(listening) == {"stream": "listening", "data": {"streams": ["trade_updates"]}}
        updates = [TradeUpdate(**json.loads(frame)["data"]) for frame in frames]
        assert [u.event for u in updates] == ["new", "fill"]
        assert updates[1].qty == 3 and updates[1].order.filled_qty == "3"
        assert updates[1].execution_id is not None
        activity = emu.activities[0]
        assert str(updates[1].execution_id) not in activity["id"]  # no relation, as at Alpaca


async def test_events_published_while_nobody_listens_are_lost() -> None:
    async with emulator() as emu:
        async with open_websocket_url(emu.url.replace("http", "ws") + "/stream") as ws:
            await ws.send_message(auth_message(emu.credentials))
            await ws.get_message()
            await ws.send_message(listen_message())
            await ws.get_message()
            assert emu.listening == 1
            emu.drop_stream()
            assert emu.listening == 0
        client = TradingClient(emu.key_id, emu.secret, url_override=emu.url)
        request = MarketOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
        await trio.to_thread.run_sync(client.submit_order, request)
        async with open_websocket_url(emu.url.replace("http", "ws") + "/stream") as ws:
            await ws.send_message(auth_message(emu.credentials))
            await ws.get_message()
            await ws.send_message(listen_message())
            await ws.get_message()
            with trio.move_on_after(0.1) as idle:
                await ws.get_message()
        assert idle.cancelled_caught  # nothing replayed
        assert len(emu.activities) == 1  # but the FILL activity is there
