"""The bus across a nats-server restart: how long requesters get "no responders" once the server is
back, before the serving connection has reconnected and its subscriptions are restored.

nats-py re-sends its SUBs only after it has reconnected, and it retries a lost server only every
`reconnect_time_wait`: requests that reach the fresh server before that (an OMS that reconnected
first, or the requests it buffered while disconnected) find no subscriber. That window is
measured here from the moment the restarted server accepts connections.

Run with `-s` to see the figures (`no-responders window after restart: ...`).
"""

from __future__ import annotations

import statistics
from typing import Any

import nats.errors
import trio
import trio_asyncio

from daemon.bus import Endpoint, NatsBus, Reply
from daemon.servers import NatsServer
from tests.support.polling import condition, wait_until

SUBJECT = "test.restart.echo"
#: Outage lengths, one per restart: the server comes back at different points of the serving
#: connection's retry cycle (the outage is the fault being modelled, not a synchronisation).
OUTAGES_S = (0.0, 0.13, 0.31, 0.57, 1.19)
#: Per restart, from "the server accepts connections" to "the endpoint answers". The reconnect
#: wait is 50 ms; the rest is the reconnect handshake through trio-asyncio, on a shared machine.
MAX_WINDOW_S = 0.5
MAX_MEAN_WINDOW_S = 0.25


class Window:
    """One restart: seconds from the server accepting connections to the first answer, and how
    many requests got "no responders" meanwhile."""

    def __init__(self, seconds: float, no_responders: int) -> None:
        self.seconds = seconds
        self.no_responders = no_responders

    def __repr__(self) -> str:
        return f"<Window {self.seconds * 1000:.0f} ms, {self.no_responders} no responders>"


async def echo(data: bytes) -> Reply:
    return Reply(data)


async def restart_and_measure(server: NatsServer, service: NatsBus, outage_s: float) -> Window:
    """Stop the server, wait until the serving bus has noticed, keep the server down for
    `outage_s`, start it again, then request (from a connection made after the restart) until
    the endpoint answers."""
    await trio.to_thread.run_sync(server.stop)
    await wait_until(  # nats-py's state: no event to wait on
        lambda: condition(lambda: service.is_connected),
        lambda connected: not connected,
        what="the serving bus noticing the server gone",
        interval=0.005,
    )
    await trio.sleep(outage_s)  # the outage itself (modelled wall time for nats-server), not a wait
    await trio.to_thread.run_sync(server.start)  # returns once the port accepts connections
    back = trio.current_time()
    no_responders = 0
    async with NatsBus.connect(server.url, name="restart-requester") as requester:
        with trio.fail_after(10):
            while True:
                try:
                    await requester.request(SUBJECT, b"ping", timeout=1.0)
                    break
                except nats.errors.NoRespondersError:
                    no_responders += 1
                    await trio.sleep(0.001)  # the window is what is measured: ask again every ms
    return Window(trio.current_time() - back, no_responders)


async def measure(
    server: NatsServer, outages_s: tuple[float, ...] = OUTAGES_S, **bus_options: Any
) -> list[Window]:
    """One restart of `server` per outage length, under a bus serving one echo endpoint."""
    windows: list[Window] = []
    async with (
        trio_asyncio.open_loop(),
        NatsBus.connect(server.url, name="restart-service", **bus_options) as service,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(
            lambda task_status: service.serve(
                [Endpoint("Echo", SUBJECT, echo)],
                service_name="restart-test",
                version="0.0.1",
                description="echo",
                queue_group="restart-test",
                workers=2,
                backlog=64,
                overloaded=b"{}",
                task_status=task_status,
            )
        )
        for outage_s in outages_s:
            windows.append(await restart_and_measure(server, service, outage_s))
        nursery.cancel_scope.cancel()
    return windows


def summary(windows: list[Window]) -> str:
    ms = [w.seconds * 1000 for w in windows]
    return (
        f"no-responders window after restart: mean {statistics.mean(ms):.0f} ms, max {max(ms):.0f} ms, "
        f"no-responders replies {[w.no_responders for w in windows]}"
    )


async def test_the_endpoints_answer_again_soon_after_nats_restarts(private_nats_server: NatsServer) -> None:
    windows = await measure(private_nats_server)
    print(summary(windows))
    assert max(w.seconds for w in windows) < MAX_WINDOW_S, windows
    assert statistics.mean(w.seconds for w in windows) < MAX_MEAN_WINDOW_S, windows
