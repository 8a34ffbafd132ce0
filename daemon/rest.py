"""The REST API: a quart-trio app over the `BrokerService` facade, served by hypercorn.

One of the service's two drivers, side by side in `daemon/`: this one (REST) and
`daemon.endpoints` (NATS request-reply), both over the same `api.service.BrokerService` Protocol.
They live here, not in `api/`, because a driver depends on I/O and on parts wired by the daemon
(the NATS bridge `daemon.bus`, the pre-trade admin of `nursery`), while `api/` is imported by every
part and so holds only wire contracts and domain types. The blueprints that register on this app
(`daemon.console`, `daemon.pretrade_rest`, `daemon.scrape`'s metrics) sit beside it.

The app is a thin driver: it authenticates, decodes with `api.validation`, calls the facade and
encodes with `api.codec`. Its routes and bodies are exactly those of `api/openapi.json` (the
tests hold the two together). Every response, errors included, is JSON:

    ServiceError (InvalidRequest 400, NotFound 404, Unavailable 503)  -> its code, ErrorBody
    unknown route 404, wrong method 405, body over the limit 413      -> {"message": ...}
    missing or wrong bearer token                                     -> 401, WWW-Authenticate
    anything else                                                     -> 500, generic message, logged

A request rejected for any of these reasons never reaches the facade, so nothing is written.

Operator routes outside the document (Prometheus metrics, the console) come in as blueprints
(`create_app(blueprints=...)`): they authenticate themselves, so the bearer check skips them.

Every response leaves its keep-alive connection usable (`_ConnectionGuard`): the request body is
received in full before the response starts (and discarded if no route read it), or, when that
would cost too much, the response says `Connection: close` and the connection is closed.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import trio
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    HTTPResponseStartEvent,
    Scope,
)
from quart import Blueprint, Response, request
from quart_trio import QuartTrio
from quart_trio.wrappers import TrioResponse
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from api.codec import encode
from api.contracts import (
    ErrorBody,
    GetBrokerStatusRequest,
    GetExecutionRequest,
    ListBrokersRequest,
    MaintenanceRequest,
    TCARequest,
)
from api.errors import ServiceError
from api.observer import RouteObserver
from api.openapi import openapi_bytes
from api.service import BrokerService
from api.validation import (
    convert_fields,
    decode_cancel,
    decode_order,
    decode_request,
    get_execution_rules,
)

log = logging.getLogger(__name__)

JSON = "application/json"
#: Endpoints (named by the document's operationId) that answer without a token.
PUBLIC_ENDPOINTS = frozenset(
    {"getOpenApiDocument", "getHealth", "getReadiness", "getLiveness", "getHealthReady"}
)

_UNAUTHORIZED = encode(ErrorBody(message="Authentication required"))
_LIVE = encode({"status": "ok"})
_READY = encode({"ready": True, "checks": {}})
_INTERNAL = encode(ErrorBody(message="internal server error"))
_HTTP_MESSAGES = {
    404: encode(ErrorBody(message="not found")),
    405: encode(ErrorBody(message="method not allowed")),
}


#: How long a response that did not read its request body (401, 404, 405, 413) waits for the rest
#: of that body before it gives up keeping the connection and closes it instead.
BODY_DRAIN_S = 5.0
#: The most request-body bytes received and discarded to keep a connection; a larger body closes it.
BODY_DRAIN_BYTES = 1024 * 1024
#: Bound on the server's own work after the last byte of a response (recycle or close the connection).
_FINISH_S = 2.0


def create_app(
    service: BrokerService,
    *,
    tokens: frozenset[str],
    max_body_bytes: int = 64 * 1024,
    drain_bytes: int = BODY_DRAIN_BYTES,
    drain_s: float = BODY_DRAIN_S,
    readiness: Callable[[], tuple[bool, bytes]] | None = None,
    liveness: Callable[[], tuple[bool, bytes]] | None = None,
    route_observer: RouteObserver | None = None,
    blueprints: Sequence[Blueprint] = (),
) -> QuartTrio:
    """The REST app over `service`, ready for `hypercorn.trio.serve`.

    `readiness` answers `GET /ready`, `GET /health/ready` and `GET /health` (an alias): (ready,
    JSON body); 200 when ready, else 503 (without it the app is always ready: nothing it depends
    on is known here). `liveness` answers `GET /health/live` the same way (without it: live).
    `route_observer` hears how long each `POST /execution/route` took and how it ended.
    `blueprints` are registered as they are and authenticate their own routes.

    Every route except `GET /openapi.json` and the health routes needs
    `Authorization: Bearer <t>`
    with `t` in `tokens` (compared in constant time); otherwise 401. **An empty `tokens` turns
    authentication off**: that is the embedded default, which listens on localhost only. A request
    body over `max_body_bytes` gets 413 and is never buffered past the limit (a declared
    Content-Length over it is refused before reading).

    Connections: a response waits (up to `drain_s`) for the rest of a request body it did not read,
    discarding it, so the keep-alive connection serves the next request; a body over `drain_bytes`
    (declared or received), or one still incomplete after `drain_s`, gets `Connection: close`
    instead. Either way no request on the connection is left waiting (`_ConnectionGuard`).
    """
    if not all(_is_token(token) for token in tokens):
        raise ValueError("bearer tokens must be non-empty printable ASCII without spaces")

    app = QuartTrio(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    # OPTIONS would be a route the document does not have (and CORS is not ours to answer).
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    too_large = encode(ErrorBody(message=f"request body larger than {max_body_bytes} bytes"))
    document = openapi_bytes()

    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    if tokens:
        app.before_request(_authenticator(tokens, frozenset(b.name for b in blueprints)))

    # Endpoints are named by the document's operationId; path variables keep their wire names.
    @app.get("/brokers", endpoint="listBrokers")
    async def list_brokers() -> Response:
        query = convert_fields(_query_fields(request.args.to_dict(flat=False)), ListBrokersRequest)
        return _json(encode(await service.list_brokers(query)))

    @app.get("/brokers/<brokerId>/status", endpoint="getBrokerStatus")
    async def get_broker_status(brokerId: str) -> Response:
        query = convert_fields({"brokerId": brokerId}, GetBrokerStatusRequest)
        return _json(encode(await service.get_broker_status(query.broker_id)))

    @app.put("/brokers/<brokerId>/maintenance", endpoint="setBrokerMaintenance")
    async def set_broker_maintenance(brokerId: str) -> Response:
        path = convert_fields({"brokerId": brokerId}, GetBrokerStatusRequest)
        body = decode_request(await request.get_data(cache=False), MaintenanceRequest)
        return _json(encode(await service.set_maintenance(path.broker_id, body)))

    @app.post("/execution/route", endpoint="routeOrder")
    async def route_order() -> Response:
        started = time.perf_counter()
        try:
            order = decode_order(await request.get_data(cache=False))
            answer = await service.route_order(order)
        except Exception:
            if route_observer is not None:
                route_observer.observe_route_error(time.perf_counter() - started)
            raise
        if route_observer is not None:
            route_observer.observe_route(answer, time.perf_counter() - started)
        return _json(encode(answer), 202)

    @app.get("/execution/<executionId>", endpoint="getExecution")
    async def get_execution(executionId: str) -> Response:
        query = convert_fields(
            {"executionId": executionId}, GetExecutionRequest, rules=(get_execution_rules,)
        )
        return _json(encode(await service.get_execution(query)))

    @app.post("/execution/cancel", endpoint="cancelOrder")
    async def cancel_order() -> Response:
        cancel = decode_cancel(await request.get_data(cache=False))
        return _json(encode(await service.cancel_order(cancel)), 202)

    @app.post("/analysis/tca", endpoint="getTransactionCostAnalysis")
    async def transaction_cost_analysis() -> Response:
        body = decode_request(await request.get_data(cache=False), TCARequest)
        return _json(encode(await service.transaction_cost_analysis(body)))

    @app.get("/openapi.json", endpoint="getOpenApiDocument")
    async def get_openapi_document() -> Response:
        return _json(document)

    def ready_response() -> Response:
        if readiness is None:
            return _json(_READY)
        ready, body = readiness()
        return _json(body, 200 if ready else 503)

    @app.get("/health", endpoint="getHealth")
    async def get_health() -> Response:
        return ready_response()

    @app.get("/ready", endpoint="getReadiness")
    async def get_readiness() -> Response:
        return ready_response()

    @app.get("/health/ready", endpoint="getHealthReady")
    async def get_health_ready() -> Response:
        return ready_response()

    @app.get("/health/live", endpoint="getLiveness")
    async def get_liveness() -> Response:
        if liveness is None:
            return _json(_LIVE)
        live, body = liveness()
        return _json(body, 200 if live else 503)

    @app.errorhandler(ServiceError)
    async def service_error(error: ServiceError) -> Response:
        return _json(encode(error.body()), error.code)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        code = error.code or 500
        if code == 413:
            return _json(too_large, 413)
        headers: dict[str, str] = {}
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            headers["Allow"] = ", ".join(sorted(error.valid_methods))
        body = _HTTP_MESSAGES.get(code) or encode(ErrorBody(message=error.name.lower()))
        return _json(body, code, headers)

    @app.errorhandler(Exception)
    async def unexpected_error(error: Exception) -> Response:
        log.error("unhandled error in %s %s", request.method, request.path, exc_info=error)
        return _json(_INTERNAL, 500)

    # Quart's documented middleware hook: the app stays a QuartTrio, its ASGI entry is wrapped.
    app.asgi_app = _ConnectionGuard(  # type: ignore[method-assign]
        app.asgi_app, drain_bytes=max(drain_bytes, max_body_bytes), drain_s=drain_s
    )
    return app


class _BodyProgress:
    """How much of one request body has arrived, as seen through the app's `receive`.

    `settled` is set once the response need not wait any longer: the body ended (`complete`), the
    client went away, or reading the rest would cost more than `drain_bytes`.
    """

    def __init__(self, declared: int | None, drain_bytes: int) -> None:
        self.received = 0
        self.complete = False
        self.settled = trio.Event()
        self._drain_bytes = drain_bytes
        if declared is not None and declared > drain_bytes:
            self.settled.set()

    def __repr__(self) -> str:
        return f"<_BodyProgress received={self.received} complete={self.complete}>"

    def observe(self, message: ASGIReceiveEvent) -> None:
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
                self.settled.set()
            elif self.received > self._drain_bytes:
                self.settled.set()
        elif message["type"] == "http.disconnect":
            self.complete = True  # nothing more will come; the connection is gone anyway
            self.settled.set()


class _ConnectionGuard:
    """ASGI middleware between hypercorn and the quart-trio app: every HTTP response leaves its
    connection usable. Either the whole request body has been received when the response starts
    (quart reads every body message, whether or not a route asked for the body, so waiting is
    enough to drain it) and hypercorn recycles the connection; or the response carries
    `Connection: close` and the connection is closed.

    Why it is needed (hypercorn 0.18, quart-trio 0.12): when a response ends before its request
    body has arrived (a 401 from `before_request`, a 404/405 from routing, a 413), hypercorn closes
    the connection from inside the app's last `send`, right after queueing `http.disconnect` for
    the app. quart-trio's receiver task takes that message and cancels the request's nursery, and
    the cancellation lands on the close itself (`send_eof`'s checkpoint): the socket stays open,
    the keep-alive timer stays stopped, and when the rest of the body and the next request arrive,
    hypercorn's reader pauses for a recycle that never comes. The client's next request hangs.
    So the last `send` of a response is also shielded (bounded by `_FINISH_S`): whatever hypercorn
    does after it (recycle, re-arm the keep-alive timer, or close) is never cut short.
    """

    def __init__(self, app: ASGIFramework, *, drain_bytes: int, drain_s: float) -> None:
        self._app = app
        self._drain_bytes = drain_bytes
        self._drain_s = drain_s

    def __repr__(self) -> str:
        return f"<_ConnectionGuard drain_bytes={self._drain_bytes} drain_s={self._drain_s}>"

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        body = _BodyProgress(_content_length(scope["headers"]), self._drain_bytes)

        async def observed_receive() -> ASGIReceiveEvent:
            message = await receive()
            body.observe(message)
            return message

        async def guarded_send(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.start":
                message = await self._settle(body, message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(deadline=trio.current_time() + _FINISH_S, shield=True):
                    await send(message)
            else:
                await send(message)

        await self._app(scope, observed_receive, guarded_send)

    async def _settle(self, body: _BodyProgress, start: HTTPResponseStartEvent) -> HTTPResponseStartEvent:
        """Wait for the rest of the request body (bounded); if it is still incomplete, the response
        announces that the connection closes after it."""
        if not body.complete:
            with trio.move_on_after(self._drain_s):
                await body.settled.wait()
        if body.complete:
            return start
        closing = HTTPResponseStartEvent(
            type="http.response.start",
            status=start["status"],
            headers=[*start.get("headers", ()), (b"connection", b"close")],
        )
        if "trailers" in start:
            closing["trailers"] = start["trailers"]
        return closing


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The request's declared Content-Length, or None (chunked, absent or unreadable)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _authenticator(
    tokens: frozenset[str], own_auth: frozenset[str] = frozenset()
) -> Callable[[], Awaitable[Response | None]]:
    """The bearer check before every route except the public ones and those of the blueprints
    named in `own_auth` (they check what they need themselves)."""
    expected = tuple(token.encode() for token in tokens)

    async def authenticate() -> Response | None:
        if request.endpoint is None or request.endpoint in PUBLIC_ENDPOINTS:
            return None  # public, or no route matched: let the 404/405 through
        if request.blueprint is not None and request.blueprint in own_auth:
            return None
        if _bearer_matches(request.headers.get("Authorization"), expected):
            return None
        return _json(_UNAUTHORIZED, 401, {"WWW-Authenticate": "Bearer"})

    return authenticate


def _is_token(token: str) -> bool:
    # RFC 6750 b64token characters are a subset of this; anything else could never match a
    # header value, which arrives as latin-1 text.
    return bool(token) and token.isascii() and token.isprintable() and " " not in token


def bearer_matches(header: str | None, tokens: Iterable[str]) -> bool:
    """Whether an Authorization header value is `Bearer <t>` with `t` among `tokens` (each
    compared in constant time). For routes that check a token of their own (metrics)."""
    return _bearer_matches(header, tuple(token.encode() for token in tokens))


def _bearer_matches(header: str | None, expected: tuple[bytes, ...]) -> bool:
    """Whether `header` is `Bearer <token>` with a known token. Every known token is compared,
    each in constant time, so the timing tells nothing about which one nearly matched."""
    if header is None:
        return False
    scheme, _, credentials = header.partition(" ")
    presented = credentials.strip().encode("utf-8", "surrogatepass")
    if scheme.lower() != "bearer" or not presented:
        return False
    matched = False
    for token in expected:
        matched |= hmac.compare_digest(presented, token)
    return matched


def _query_fields(args: Mapping[str, list[str]]) -> dict[str, Any]:
    """Query parameters by name: a single value as itself, a repeated one as its list (which
    the Struct's scalar field then rejects, naming the parameter)."""
    return {name: values[0] if len(values) == 1 else values for name, values in args.items()}


def _json(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return TrioResponse(body, status=status, headers=dict(headers) if headers else None, content_type=JSON)
