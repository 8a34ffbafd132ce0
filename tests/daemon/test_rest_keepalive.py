"""The REST app behind a real hypercorn: every response leaves its keep-alive connection usable.

A response that does not read its request body (a 401 from authentication, a 404/405 from
routing, a 413) used to leave the connection stuck when the body arrived after the response was
decided: hypercorn's close of the connection was cancelled by quart-trio, and the client's next
request on it hung until its timeout. These tests send such bodies *late* on purpose (only once the
server is idle, its response decided), which is exactly the ordering that stalled.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import hypercorn.config
import hypercorn.trio
import pytest
import trio
import trio.testing
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from quart import Response
from quart_trio import QuartTrio

from daemon.rest import create_app
from tests.api.fake_service import FakeBrokerService
from tests.api.test_validation import cancel, order

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 4096
#: No request may take longer than this; a stalled connection takes the client's whole timeout.
MAX_LATENCY_S = 1.0
#: Generous, so that a stall shows as a latency failure, never as a hung test.
CLIENT_TIMEOUT_S = 10.0


@dataclass
class Server:
    """A hypercorn serving the app; it records the client address of every request (one address
    for the whole run means one connection) and when the app has decided each response."""

    url: str
    app: QuartTrio
    clients: list[tuple[str, int] | None] = field(default_factory=list)
    decided: trio.Event = field(default_factory=trio.Event)

    def __repr__(self) -> str:
        return f"<Server {self.url} requests={len(self.clients)} connections={len(set(self.clients))}>"


@pytest.fixture
def service() -> FakeBrokerService:
    return FakeBrokerService()


async def serve(app: QuartTrio, nursery: trio.Nursery) -> tuple[Server, trio.Event]:
    """Start hypercorn (as `daemon.app._serve_rest` does) on a free port; set the event to stop."""
    server = Server(url="", app=app)

    @app.after_request
    async def mark_decided(response: Response) -> Response:
        server.decided.set()  # runs for 401s, error handlers and routes alike
        return response

    async def recording(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "http":
            server.clients.append(scope["client"])
        await app(scope, receive, send)

    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    binds: list[str] = await nursery.start(
        lambda task_status: hypercorn.trio.serve(
            recording,  # type: ignore[arg-type]
            config,
            shutdown_trigger=stop.wait,
            task_status=task_status,
        )
    )
    server.url = binds[0]
    return server, stop


@pytest.fixture
async def server(service: FakeBrokerService) -> AsyncIterator[Server]:
    app = create_app(service, tokens=frozenset({TOKEN}), max_body_bytes=LIMIT)
    async with trio.open_nursery() as nursery:
        served, stop = await serve(app, nursery)
        try:
            yield served
        finally:
            stop.set()


@dataclass(frozen=True)
class Call:
    """One request of the sequence and the status it must get."""

    method: str
    path: str
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    late_body: bool = False  # send the body only once the app has decided its response


def late(server: Server, body: bytes) -> AsyncIterator[bytes]:
    """The body, held back until the server can do nothing more without it: its headers have been
    parsed and the app has decided the response (it never reads this body), so the body arrives
    only after the response was sent (before the fix) or while the response waits for it."""

    async def chunks() -> AsyncIterator[bytes]:
        await trio.testing.wait_all_tasks_blocked()
        assert server.decided.is_set(), "the app should have answered without reading the body"
        yield body

    return chunks()


def unauthenticated_and_rejected(i: int) -> Call:
    """The i-th request of the "bad" half: responses sent without reading the request body."""
    body = order(orderId=f"bad-{i}")
    kinds = [
        Call("POST", "/execution/route", 401, body, late_body=True),
        Call("POST", "/execution/cancel", 401, cancel(), late_body=True),
        Call("POST", "/execution/route", 401, body),  # body sent at once: the usual case
        Call("PUT", "/execution/route", 405, body, AUTH, late_body=True),
        Call("POST", "/brokers", 405, body, {}, late_body=True),
        Call("POST", "/no/such/path", 404, body, AUTH, late_body=True),
        Call("GET", "/brokers", 401),
    ]
    return kinds[i % len(kinds)]


def valid(i: int) -> Call:
    if i % 2:
        return Call("GET", "/brokers", 200, headers=AUTH)
    return Call("POST", "/execution/route", 202, order(orderId=f"good-{i}"), AUTH)


async def send(http: httpx.AsyncClient, server: Server, call: Call) -> tuple[int, float]:
    """Send one call; its status and how long it took."""
    server.decided = trio.Event()
    headers = dict(call.headers)
    content: bytes | AsyncIterator[bytes] = call.body
    if call.late_body:
        headers["Content-Length"] = str(len(call.body))  # a declared length, streamed late
        content = late(server, call.body)
    started = time.perf_counter()
    try:
        response = await http.request(call.method, call.path, content=content or None, headers=headers)
    except httpx.TimeoutException:
        pytest.fail(f"{call.method} {call.path} stalled: no answer within {CLIENT_TIMEOUT_S} s")
    elapsed = time.perf_counter() - started
    assert response.headers["content-type"] == "application/json", call
    return response.status_code, elapsed


async def test_no_request_stalls_on_a_pooled_connection_after_unread_bodies(
    server: Server, service: FakeBrokerService
) -> None:
    oversized = order(accountId="x" * LIMIT)
    calls: list[Call] = []
    for i in range(100):
        calls.append(unauthenticated_and_rejected(i))
        calls.append(valid(i))
    # In place of one rejected request, a body declared over the limit: refused before it is
    # read, and drained behind the 413.
    calls[50] = Call("POST", "/execution/route", 413, oversized, AUTH, late_body=True)

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT_S, limits=limits) as http:
        results = [(call, *await send(http, server, call)) for call in calls]

    assert [(c.method, c.path, status) for c, status, _ in results] == [
        (c.method, c.path, c.status) for c in calls
    ]
    slow = [(c.method, c.path, c.status, round(s, 3)) for c, _, s in results if s > MAX_LATENCY_S]
    assert slow == []
    # Nothing was closed along the way: all 200 requests went over one connection.
    assert len(server.clients) == 200
    assert len(set(server.clients)) == 1, server
    # Only the valid half reached the service.
    assert sorted({method for method, _ in service.calls}) == ["list_brokers", "route_order"]
    assert len(service.calls) == 100


async def read_response(stream: trio.SocketStream) -> tuple[bytes, bool]:
    """Bytes until the server closes (True) or nothing arrives for a moment (False)."""
    data = b""
    while True:
        with trio.move_on_after(2.0):
            chunk = await stream.receive_some(65536)
            if not chunk:
                return data, True
            data += chunk
            continue
        return data, False


async def test_a_body_never_sent_gets_connection_close_and_the_connection_is_closed(
    service: FakeBrokerService,
) -> None:
    # The body is declared and never sent: the 401 cannot wait for it forever, so it says
    # "Connection: close" and the server really closes (the close used to be cancelled).
    app = create_app(service, tokens=frozenset({TOKEN}), max_body_bytes=LIMIT, drain_s=0.05)
    async with trio.open_nursery() as nursery:
        server, stop = await serve(app, nursery)
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                b"POST /execution/route HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n"
            )
            data, closed = await read_response(stream)
        stop.set()
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 401"), data
    assert b"\r\nconnection: close" in head
    assert closed, "the server kept a connection it had said it would close"


async def test_a_body_over_the_drain_limit_is_not_waited_for(service: FakeBrokerService) -> None:
    # 2 MiB declared: draining it is not worth it; the 413 goes out at once, and closes.
    app = create_app(service, tokens=frozenset({TOKEN}), max_body_bytes=LIMIT)
    async with trio.open_nursery() as nursery:
        server, stop = await serve(app, nursery)
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                b"POST /execution/route HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer "
                + TOKEN.encode()
                + b"\r\nContent-Length: 2097152\r\n\r\n"
            )
            started = time.perf_counter()
            data, closed = await read_response(stream)
        stop.set()
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 413"), data
    assert b"\r\nconnection: close" in head
    assert closed
    assert time.perf_counter() - started < MAX_LATENCY_S  # answered and closed at once: no drain wait
