"""Lost trade-update streams: every fill and terminal event missed in a gap is recovered after
the reconnect, exactly once, with the fill ids the stream would have used."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import pytest
import trio

from adapters.alpaca.broker import AlpacaBroker
from adapters.base import ConnectionLost, SubmitRequest
from api.enums import AssetClass, OrderType, Side, TimeInForce
from api.events import AnyBrokerEvent, OrderAccepted, OrderExpired, OrderFilled
from tests.support.alpaca_emulator import AlpacaDriver, AlpacaEmulator, open_alpaca_adapter, supervise
from tests.support.polling import condition, wait_until

D = Decimal


def limit(client_order_id: str, quantity: str = "10") -> SubmitRequest:
    return SubmitRequest(
        client_order_id=client_order_id,
        account_id="acct-1",
        symbol="AAPL",
        asset_class=AssetClass.EQUITY,
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        quantity=D(quantity),
        time_in_force=TimeInForce.GTC,
        price=D("99.00"),
    )


async def until(holds: Callable[[], bool], what: str, timeout: float = 1.5) -> None:
    """Poll adapter state that has no event of its own (connected, connection count)."""
    await wait_until(lambda: condition(holds), what=what, timeout=timeout, interval=0.005)


async def collect_until(
    driver: AlpacaDriver, done: Callable[[AnyBrokerEvent], bool], timeout: float = 1.5
) -> list[AnyBrokerEvent]:
    seen: list[AnyBrokerEvent] = []
    with trio.fail_after(timeout):
        while not seen or not done(seen[-1]):
            seen.append(await driver.events.receive())
    # Absence: anything duplicated would arrive right behind (no event says "nothing more").
    await trio.sleep(0.05)
    return seen + driver.pending_events()


async def test_stream_drop_during_fills_recovers_every_fill_exactly_once() -> None:
    async with open_alpaca_adapter() as (adapter, driver):
        emu = driver.emulator
        for client_order_id in ("a", "b", "c"):
            await adapter.submit(limit(client_order_id))
        events = await collect_until(driver, lambda e: e.client_order_id == "c")
        driver.fill("a", D(1), D("98.00"))  # seen on the stream before the gap
        events += await collect_until(driver, lambda e: isinstance(e, OrderFilled))

        with emu.stream_outage():
            await until(lambda: not adapter.connected, "the stream lost")
            emu.fill("a", D(2), D("98.50"))  # all three happen while nobody listens
            emu.fill("b", D(10), D("97.00"))
            emu.expire("c")
        await until(lambda: adapter.connected and adapter.connections == 2, "the second connection up")
        driver.fill("a", D(7), D("99.00"))  # after the reconnect: on the stream again
        events += await collect_until(
            driver, lambda e: isinstance(e, OrderFilled) and e.fill_id.endswith(":10")
        )

        fills = [e for e in events if isinstance(e, OrderFilled)]
        ids = Counter(f.fill_id for f in fills)
        assert all(count == 1 for count in ids.values()), ids
        order_a, order_b = emu.order("a").id, emu.order("b").id
        assert set(ids) == {f"{order_a}:1", f"{order_a}:3", f"{order_a}:10", f"{order_b}:10"}
        for client_order_id in ("a", "b"):
            quantity = sum(f.quantity for f in fills if f.client_order_id == client_order_id)
            assert quantity == emu.order(client_order_id).filled_qty == D(10)
        assert [e.client_order_id for e in events if isinstance(e, OrderExpired)] == ["c"]
        assert [e.client_order_id for e in events if isinstance(e, OrderAccepted)] == ["a", "b", "c"]
        assert any(isinstance(f, ConnectionLost) for f in driver.run_failures)


async def test_drop_without_a_gap_emits_nothing_twice() -> None:
    async with open_alpaca_adapter() as (adapter, driver):
        await adapter.submit(limit("a", "8"))
        driver.fill("a", D(3), D("98"))
        events = await collect_until(driver, lambda e: isinstance(e, OrderFilled))
        for _ in range(3):
            connections = adapter.connections
            driver.emulator.drop_stream()
            await until(
                lambda: adapter.connected and adapter.connections == connections + 1,  # noqa: B023
                f"connection {connections + 1} up",
            )
        driver.fill("a", D(5), D("99"))
        events += await collect_until(driver, lambda e: isinstance(e, OrderFilled) and e.quantity == D(5))
        assert [type(e) for e in events] == [OrderAccepted, OrderFilled, OrderFilled]


async def test_fill_update_without_its_execution_details_is_recovered_from_activities() -> None:
    async with open_alpaca_adapter() as (adapter, driver):
        await adapter.submit(limit("a"))
        await driver.next_event()
        driver.emulator.fill("a", D(4), D("98.25"), complete=False)  # no qty/price on the stream
        (fill,) = [e for e in await collect_until(driver, lambda e: isinstance(e, OrderFilled))]
        assert isinstance(fill, OrderFilled)
        assert (fill.quantity, fill.price, fill.fill_id) == (
            D(4),
            D("98.25"),
            f"{driver.emulator.order('a').id}:4",
        )
        assert adapter.connections == 2


async def test_unknown_and_informational_updates_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="adapters.alpaca")
    async with open_alpaca_adapter() as (adapter, driver):
        await adapter.submit(limit("a"))
        await driver.next_event()
        order_json = driver.emulator.order("a").json()
        for event in ("done_for_day", "pending_cancel", "a_future_event"):
            driver.emulator.publish_raw(
                {"event": event, "order": order_json, "timestamp": order_json["updated_at"]}
            )
        driver.fill("a", D(1), D(98))
        events = await collect_until(driver, lambda e: isinstance(e, OrderFilled))
        assert [type(e) for e in events] == [OrderFilled]
        assert adapter.connections == 1
        assert any("a_future_event" in str(getattr(r, "why", "")) for r in caplog.records)


async def test_a_new_adapter_recovers_fills_of_the_previous_one_under_the_same_ids() -> None:
    """A daemon restart: the new adapter's first connect reads the recent FILL activities, and
    its ids match what the old adapter emitted from the stream (the daemon stores each once)."""
    async with open_alpaca_adapter(partial_fills=2) as (first, driver):
        await first.submit(limit("a"))
        driver.fill("a", D(6), D("98"))
        driver.fill("a", D(4), D("99"))
        streamed = await collect_until(driver, lambda e: isinstance(e, OrderFilled) and e.quantity == D(4))
        emu: AlpacaEmulator = driver.emulator
        second = AlpacaBroker(emu.config(broker_id="restarted"), emu.credentials)
        send, receive = trio.open_memory_channel[AnyBrokerEvent](math.inf)
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, second, send, [])
            with trio.fail_after(1.5):
                recovered = [await receive.receive(), await receive.receive()]
            nursery.cancel_scope.cancel()
        fills = [f for f in recovered if isinstance(f, OrderFilled) and f.client_order_id == "a"]
        assert len(fills) == 2
        assert [f.fill_id for f in fills] == [e.fill_id for e in streamed if isinstance(e, OrderFilled)]
