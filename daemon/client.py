"""OMS-side client used by the CLI: plain asyncio nats-py (no Trio here; it is a separate process).

Finds the daemon's NATS through, in order: `--nats`, `NATS_URL`, or the `runtime.json` that a
running daemon writes in its state directory and in the user's (`daemon.runtime`: found from
any directory).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.api

from api.subjects import EXECUTIONS, escape_token
from daemon.bus import server_urls
from daemon.runtime import RuntimeNotFound, find_runtime


class ClientError(Exception):
    """A request failed: `code` is the service's error code (400, 404, 503, ...) or None."""

    def __init__(self, message: str, code: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.body = body


async def _quiet(exc: Exception) -> None:
    """nats-py's default error callback prints a traceback; the CLI reports errors itself."""


def resolve_nats_url(explicit: str | None, state_dir: Path | None) -> str:
    """`explicit`, else $NATS_URL, else the running daemon's (`daemon.runtime.find_runtime`:
    `state_dir` if given, else ./.state, else the user's state directory)."""
    if explicit:
        return explicit
    if os.environ.get("NATS_URL"):
        return os.environ["NATS_URL"]
    try:
        _, data = find_runtime(state_dir)
    except RuntimeNotFound as exc:
        raise ClientError(str(exc)) from None
    return str(data["nats_url"])


async def request(url: str, subject: str, payload: Any, timeout: float) -> Any:
    """Send one request; return the decoded reply or raise ClientError for an error reply."""
    try:
        nc = await nats.connect(
            servers=server_urls(url),
            connect_timeout=min(timeout, 5.0),
            allow_reconnect=False,
            max_reconnect_attempts=1,  # also bounds the first connect: one retry, then the error
            reconnect_time_wait=0.2,
            error_cb=_quiet,
        )
    except Exception as exc:
        raise ClientError(f"cannot connect to NATS at {url}: {exc!r}; is the daemon running?") from None
    try:
        data = json.dumps(payload).encode()
        try:
            msg = await nc.request(subject, data, timeout=timeout)
        except nats.errors.NoRespondersError:
            raise ClientError(f"no service answers on {subject}: is the daemon running?") from None
        except nats.errors.TimeoutError:
            raise ClientError(f"no reply on {subject} within {timeout}s") from None
        body = json.loads(msg.data) if msg.data else None
        headers = msg.headers or {}
        if "Nats-Service-Error-Code" in headers:
            code = int(headers["Nats-Service-Error-Code"])
            message = body.get("message") if isinstance(body, dict) else headers.get("Nats-Service-Error")
            raise ClientError(str(message), code, body)
        return body
    finally:
        await nc.close()


def updates_subject(broker: str | None, status: str | None, order: str | None) -> str:
    tokens = [escape_token(broker) if broker else "*", status or "*", escape_token(order) if order else "*"]
    return f"{EXECUTIONS}.{'.'.join(tokens)}"


async def watch_updates(
    url: str,
    subject: str,
    *,
    replay: bool,
    stream: str,
    on_message: Callable[[str, Any], None],
    on_connection: Callable[[str], None] | None = None,
) -> None:
    """Print updates until interrupted. `replay` first delivers what the stream kept.
    `on_connection` hears "disconnected" and "reconnected" as they happen (updates published
    in between are not seen live: `--replay` gets them from the stream)."""

    async def disconnected() -> None:
        if on_connection is not None:
            on_connection("disconnected")

    async def reconnected() -> None:
        if on_connection is not None:
            on_connection("reconnected")

    nc = await nats.connect(
        servers=server_urls(url),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=_quiet,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
    )
    try:
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def handler(msg: Any) -> None:
            await queue.put(msg)

        if replay:
            js = nc.jetstream()
            await js.subscribe(
                subject,
                cb=handler,
                stream=stream,
                ordered_consumer=True,
                deliver_policy=nats.js.api.DeliverPolicy.ALL,
            )
        else:
            await nc.subscribe(subject, cb=handler)
        while True:
            msg = await queue.get()
            on_message(msg.subject, json.loads(msg.data))
    finally:
        await nc.close()
