"""The trade-updates connection's liveness: idle pings, and a peer that stops answering."""

from __future__ import annotations

import time

import pytest
import trio

from adapters.alpaca.config import AlpacaConfig
from adapters.alpaca.stream import TradeUpdateStream
from adapters.base import ConnectionLost
from tests.support.alpaca_emulator import open_alpaca_adapter


class SilentPeer:
    """A websocket whose peer vanished without closing: nothing arrives, no pong comes back."""

    closed = None
    pings = 0

    async def get_message(self) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def ping(self, payload: bytes | None = None) -> None:
        self.pings += 1
        await trio.sleep_forever()


async def test_a_peer_that_stops_answering_pings_is_a_lost_connection() -> None:
    peer = SilentPeer()
    config = AlpacaConfig(stream_ping_interval=0.05, stream_ping_timeout=0.1)
    stream = TradeUpdateStream(peer, config)  # type: ignore[arg-type]
    started = time.perf_counter()
    with pytest.raises(ConnectionLost, match="no pong"):
        await stream.receive()
    assert peer.pings == 1
    assert 0.14 <= time.perf_counter() - started < 0.5


async def test_an_idle_stream_stays_up_on_answered_pings() -> None:
    async with open_alpaca_adapter(stream_ping_interval=0.02, stream_ping_timeout=0.5) as (adapter, driver):
        # Idle time passing is what is tested (about ten pings answered meanwhile; the websocket
        # library answers them and counts nothing we could wait on).
        await trio.sleep(0.2)
        assert adapter.connected and adapter.connections == 1
        assert driver.run_failures == []
