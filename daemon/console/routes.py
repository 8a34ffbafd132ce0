"""The console's routes (a quart-trio blueprint on the daemon's REST server).

    GET /                          the page (static/index.html)
    GET /console/<asset>           its script and style sheet (package data, no CDN, no build)
    GET /console/api/brokers       broker rows (views.broker_rows)
    GET /console/api/executions    the last executions with fills and, once final, their TCA
    GET /console/api/quality       per-broker cost and quality (views.broker_quality)
    GET /console/api/events        execution updates as server-sent events, live

Everything here is read-only and needs no token. The page changes state only through the REST
API itself (`PUT /brokers/{id}/maintenance`), with the bearer token the operator types in: the
same rule as any other client. TCA results of final executions are computed on request, a few
per request under a deadline each, and kept (bounded), so an idle console costs nothing.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import msgspec
import trio
from quart import Blueprint, Response, make_response
from quart_trio.wrappers import TrioResponse

from api.contracts import TCARequest, TCAResponse
from api.errors import ServiceError
from api.service import BrokerService
from daemon.console import views
from daemon.feed import UpdatesFeed
from daemon.metrics import DaemonMetrics
from nursery.brokers import BrokerHandle
from tca.peers import PeerStats

log = logging.getLogger(__name__)

__all__ = ["ConsoleSources", "console_blueprint"]

ASSETS = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
#: TCA computations per executions request, each bounded by `TCA_DEADLINE_S`.
TCA_PER_REQUEST = 8
TCA_DEADLINE_S = 1.0
TCA_KEEP = 500
#: A comment line on an idle event stream this often (keeps proxies from closing it).
KEEPALIVE_S = 15.0


@dataclass
class ConsoleSources:
    handles: Sequence[BrokerHandle]
    metrics: DaemonMetrics
    feed: UpdatesFeed
    service: BrokerService
    peers: Callable[[], PeerStats]
    tca: OrderedDict[str, tuple[str, TCAResponse]] = field(default_factory=OrderedDict)


def _asset(name: str) -> bytes:
    return resources.files("daemon.console").joinpath("static", name).read_bytes()


def console_blueprint(sources: ConsoleSources) -> Blueprint:
    blueprint = Blueprint("console", __name__)
    page = _asset("index.html")
    assets = {name: _asset(name) for name in ASSETS}

    @blueprint.get("/")
    async def index() -> Response:
        return TrioResponse(page, content_type="text/html; charset=utf-8", headers=_NO_STORE)

    @blueprint.get("/console/<name>")
    async def asset(name: str) -> Response:
        if name not in assets:
            return _json({"message": "not found"}, 404)
        return TrioResponse(assets[name], content_type=ASSETS[name], headers=_NO_STORE)

    @blueprint.get("/console/api/brokers")
    async def brokers() -> Response:
        return _json(views.broker_rows(sources.handles, sources.metrics))

    @blueprint.get("/console/api/executions")
    async def executions() -> Response:
        rows = views.executions(sources.feed.recent)
        await _complete_tca(sources, rows)
        for row in rows:
            known = sources.tca.get(row["executionId"])
            row["tca"] = msgspec.to_builtins(known[1]) if known else None
        return _json(rows)

    @blueprint.get("/console/api/quality")
    async def quality() -> Response:
        rows = views.broker_quality(sources.handles, sources.metrics, sources.peers(), sources.tca)
        return _json(rows)

    @blueprint.get("/console/api/events")
    async def events() -> Response:
        response = await make_response(
            _stream(sources.feed),
            200,
            {"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        response.timeout = None  # type: ignore[union-attr]  # a stream lasts as long as the page
        return response  # type: ignore[return-value]

    return blueprint


_NO_STORE = {"Cache-Control": "no-store"}


async def _stream(feed: UpdatesFeed) -> AsyncIterator[bytes]:
    with feed.listen() as updates:
        yield b"retry: 2000\n: connected\n\n"
        while True:
            payload = None
            with trio.move_on_after(KEEPALIVE_S):
                payload = await updates.receive()
            if payload is None:
                yield b": idle\n\n"
            else:
                yield b"event: update\ndata: " + payload + b"\n\n"


async def _complete_tca(sources: ConsoleSources, rows: list[dict[str, Any]]) -> None:
    """TCA for final executions with fills that have none yet (a few per call)."""
    missing = [
        row for row in rows if row["final"] and row["fills"] and row["executionId"] not in sources.tca
    ][:TCA_PER_REQUEST]
    for row in missing:
        request = TCARequest(order_id=row["orderId"], execution_id=row["executionId"])
        with trio.move_on_after(TCA_DEADLINE_S):
            try:
                result = await sources.service.transaction_cost_analysis(request)
            except ServiceError:
                continue  # not reported yet: asked again next time
            except Exception:
                log.exception("console TCA failed", extra={"execution_id": row["executionId"]})
                continue
            sources.tca[row["executionId"]] = (row["brokerId"], result)
            while len(sources.tca) > TCA_KEEP:
                sources.tca.popitem(last=False)


def _json(value: Any, status: int = 200) -> Response:
    return TrioResponse(msgspec.json.encode(value), status=status, content_type="application/json")
