"""One access-log record per HTTP request the daemon's REST server answers.

`AccessLog` is ASGI middleware around the app: when a response has been sent (or the client went
away) it logs one INFO record on the `daemon.access` logger with `method`, `path` (without the
query string: it may carry ids, never secrets, but stays out anyway), `status`, `duration_ms`
(request start to the last byte sent), `bytes` and `remote`. The daemon's logging makes it one
JSON line like every other record; headers (Authorization) are never logged.

A request that ended without a response (the client left first) is logged with status 0.
Non-HTTP scopes (lifespan) pass through untouched.
"""

from __future__ import annotations

import logging
import time

from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)

log = logging.getLogger("daemon.access")

__all__ = ["AccessLog"]


class AccessLog:
    def __init__(self, app: ASGIFramework) -> None:
        self._app = app

    def __repr__(self) -> str:
        return f"<AccessLog {self._app!r}>"

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        sent = 0

        async def logged_send(message: ASGISendEvent) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self._app(scope, receive, logged_send)
        finally:
            client = scope.get("client")
            log.info(
                "http request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000.0, 3),
                    "bytes": sent,
                    "remote": f"{client[0]}:{client[1]}" if client else None,
                },
            )
