"""`GET /metrics`: the Prometheus text exposition of the daemon's metrics (`daemon.metrics`).

Public unless `rest.metrics_token` is set; then it needs `Authorization: Bearer <that token>`
(Prometheus' `authorization` scrape setting), else 401. The REST API's own tokens do not open
it, and the metrics token opens nothing else. The body is rendered on the Trio thread, where
every meter is written, so a scrape sees a consistent state.
"""

from __future__ import annotations

from quart import Blueprint, Response, request
from quart_trio.wrappers import TrioResponse

from daemon.metrics import CONTENT_TYPE, DaemonMetrics
from daemon.rest import bearer_matches

__all__ = ["metrics_blueprint"]

_UNAUTHORIZED = b'{"message":"Authentication required"}'


def metrics_blueprint(metrics: DaemonMetrics, token: str | None) -> Blueprint:
    blueprint = Blueprint("metrics", __name__)
    tokens = (token,) if token else ()

    @blueprint.get("/metrics")
    async def get_metrics() -> Response:
        if tokens and not bearer_matches(request.headers.get("Authorization"), tokens):
            return TrioResponse(
                _UNAUTHORIZED,
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
                content_type="application/json",
            )
        return TrioResponse(metrics.render(), status=200, content_type=CONTENT_TYPE)

    return blueprint
