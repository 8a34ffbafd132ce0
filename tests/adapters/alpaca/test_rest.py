"""alpaca-py's REST client under Trio: each request sent once, each bounded by a timeout."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from adapters.alpaca.rest import AlpacaRest, OneShotTradingClient
from adapters.base import DeniedLocally, OutcomeUnknown, RateLimited, ServerError
from tests.support.alpaca_emulator import AlpacaEmulator

ORDER = {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"}


@asynccontextmanager
async def emulator() -> AsyncIterator[AlpacaEmulator]:
    emu = AlpacaEmulator()
    async with trio.open_nursery() as nursery:
        await nursery.start(emu.serve)
        try:
            yield emu
        finally:
            nursery.cancel_scope.cancel()


def one_shot(emu: AlpacaEmulator, timeout: tuple[float, float] = (1.0, 2.0)) -> OneShotTradingClient:
    return OneShotTradingClient(emu.credentials, url=emu.url, paper=True, timeout=timeout)


async def test_library_default_resends_a_post_answered_504() -> None:
    """The trap (PITFALLS: alpaca-py): the stock client sends the order again after a 504."""
    async with emulator() as emu:
        stock = TradingClient(emu.key_id, emu.secret, url_override=emu.url)
        stock._retry_wait = 0  # its default is a 3 s blocking sleep per retry
        emu.fail_next_post(504, create_anyway=True)
        order = MarketOrderRequest(
            symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, client_order_id="twice"
        )
        with pytest.raises(APIError):  # the resend meets 422 "client_order_id must be unique"
            await trio.to_thread.run_sync(stock.submit_order, order)
        assert emu.posts["twice"] == 2


@pytest.mark.parametrize("status", [429, 504])
@pytest.mark.parametrize("create_anyway", [False, True])
async def test_post_is_sent_exactly_once(status: int, create_anyway: bool) -> None:
    async with emulator() as emu:
        client = one_shot(emu)
        emu.fail_next_post(status, create_anyway=create_anyway)
        started = time.perf_counter()
        with pytest.raises(APIError) as caught:
            await trio.to_thread.run_sync(client.post, "/orders", {**ORDER, "client_order_id": "once"})
        assert caught.value.status_code == status
        assert emu.posts["once"] == 1
        assert ("once" in {o.client_order_id for o in emu.orders.values()}) is create_anyway
        assert time.perf_counter() - started < 1.0  # no retry sleep either


async def test_gets_are_not_retried_either() -> None:
    async with emulator() as emu:
        client = one_shot(emu)
        emu.fail_next("GET", "/v2/clock", 429)
        with pytest.raises(APIError):
            await trio.to_thread.run_sync(client.get_clock)
        assert emu.requests.count(("GET", "/v2/clock")) == 1


async def test_a_silent_server_ends_in_the_read_timeout() -> None:
    async with emulator() as emu:
        rest = AlpacaRest(emu.config(request_timeout=0.2), emu.credentials)
        emu.delay_next("GET", "/v2/clock", 1.0)
        started = time.perf_counter()
        with pytest.raises(OutcomeUnknown, match="no response"):
            await rest.call(lambda client: client.get_clock())
        assert time.perf_counter() - started < 0.8


async def test_errors_are_mapped_at_the_boundary() -> None:
    async with emulator() as emu:
        rest = AlpacaRest(emu.config(), emu.credentials)
        emu.fail_next("GET", "/v2/clock", 503)
        with pytest.raises(ServerError):
            await rest.call(lambda client: client.get_clock())
        emu.fail_next("GET", "/v2/clock", 429)
        with pytest.raises(RateLimited) as limited:
            await rest.call(lambda client: client.get_clock())
        assert limited.value.retry_after is not None and 0 <= limited.value.retry_after <= 2


async def test_waiting_for_a_free_slot_past_the_deadline_sends_nothing() -> None:
    async with emulator() as emu:
        rest = AlpacaRest(
            emu.config(max_concurrent_requests=1, connect_timeout=0.1, request_timeout=0.1), emu.credentials
        )
        rest._deadline = 0.3  # the slot is held by a thread stuck longer than this
        taken, release = trio.Event(), trio.Event()
        token = trio.lowlevel.current_trio_token()

        def occupy(client: TradingClient) -> None:
            trio.from_thread.run_sync(taken.set, trio_token=token)
            trio.from_thread.run(release.wait, trio_token=token)

        async def hold_the_slot() -> None:
            with contextlib.suppress(OutcomeUnknown):  # abandoned: its thread keeps the slot
                await rest.call(occupy)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold_the_slot)
            await taken.wait()  # the only slot is held by a thread
            with pytest.raises(DeniedLocally, match="no REST slot"):
                await rest.call(lambda client: client.post("/orders", {**ORDER, "client_order_id": "never"}))
            release.set()
        assert emu.posts["never"] == 0


async def test_a_request_in_flight_past_the_deadline_is_outcome_unknown() -> None:
    async with emulator() as emu:
        rest = AlpacaRest(emu.config(connect_timeout=0.1, request_timeout=0.1), emu.credentials)
        rest._deadline = 0.2
        token = trio.lowlevel.current_trio_token()
        release = trio.Event()

        def stuck(client: TradingClient) -> None:
            trio.from_thread.run(release.wait, trio_token=token)

        with pytest.raises(OutcomeUnknown, match="no answer"):
            await rest.call(stuck)
        release.set()


def test_reprs_name_the_endpoint_only() -> None:
    emu = AlpacaEmulator()
    emu.url = "http://127.0.0.1:1"
    rest = AlpacaRest(emu.config(), emu.credentials)
    assert repr(rest.client) == "<OneShotTradingClient http://127.0.0.1:1>"
    assert emu.secret not in repr(rest) and emu.key_id not in repr(rest)
