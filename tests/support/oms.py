"""An OMS-side client for the end-to-end tests: nats-py on its own asyncio loop, as an OMS would
use it, wrapped in synchronous calls so tests read top to bottom."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

import nats
import nats.js.api

from api import subjects

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Reply:
    def __init__(self, data: bytes, headers: dict[str, str] | None) -> None:
        self.raw = data
        self.body = json.loads(data) if data else None
        self.headers = headers or {}

    @property
    def error_code(self) -> int | None:
        code = self.headers.get("Nats-Service-Error-Code")
        return int(code) if code else None

    @property
    def field_errors(self) -> dict[str, str]:
        assert isinstance(self.body, dict)
        return {e["field"]: e["message"] for e in self.body.get("errors", [])}

    def __repr__(self) -> str:
        return f"<Reply error={self.error_code} {self.body!r}>"


async def request(url: str, subject: str, payload: Any, timeout: float = 10.0) -> Reply:
    nc = await nats.connect(servers=[url])
    try:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        msg = await nc.request(subject, data, timeout=timeout)
        return Reply(msg.data, msg.headers)
    finally:
        await nc.close()


async def request_many(url: str, subject: str, payloads: list[Any], timeout: float = 20.0) -> list[Reply]:
    nc = await nats.connect(servers=[url])
    try:

        async def one(payload: Any) -> Reply:
            msg = await nc.request(subject, json.dumps(payload).encode(), timeout=timeout)
            return Reply(msg.data, msg.headers)

        return list(await asyncio.gather(*(one(p) for p in payloads)))
    finally:
        await nc.close()


def route(url: str, order: dict[str, Any]) -> Reply:
    return run(request(url, subjects.ROUTE_ORDER, order))


def get_execution(url: str, **key: str) -> Reply:
    return run(request(url, subjects.GET_EXECUTION, key))


async def replay_updates(
    url: str, subject: str, *, until_status: str | None = None, timeout: float = 10.0
) -> list[Any]:
    """Every update the JetStream stream kept on `subject` (an ordered consumer from the start),
    waiting up to `timeout` for one with `until_status` when given. Returns (headers, body) pairs."""
    nc = await nats.connect(servers=[url])
    js = nc.jetstream()
    received: list[Any] = []
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        body = json.loads(msg.data)
        received.append((dict(msg.headers or {}), body))
        if until_status is not None and body["status"] == until_status:
            done.set()

    try:
        sub = await js.subscribe(
            subject, cb=on_msg, ordered_consumer=True, deliver_policy=nats.js.api.DeliverPolicy.ALL
        )
        if until_status is None:
            await asyncio.sleep(0.3)
        else:
            try:
                await asyncio.wait_for(done.wait(), timeout)
            except TimeoutError:
                pass
        await sub.unsubscribe()
        return received
    finally:
        await nc.close()


def updates_for(
    url: str, order_id: str, *, until_status: str | None = None, timeout: float = 10.0
) -> list[Any]:
    subject = f"{subjects.EXECUTIONS}.*.*.{subjects.escape_token(order_id)}"
    return run(replay_updates(url, subject, until_status=until_status, timeout=timeout))


def order(order_id: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "orderId": order_id,
        "accountId": "ACC-E2E",
        "symbol": "AAPL",
        "side": "BUY",
        "type": "MARKET",
        "quantity": 10,
    }
    base.update(fields)
    return base
