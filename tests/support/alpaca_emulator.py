"""A loopback Alpaca: the trading REST API and the trade-updates websocket, on one free port.

The subset the adapter uses, in Alpaca's own JSON shapes (alpaca-py's `Order`, `TradeAccount`,
`Clock` and `TradeUpdate` models parse them; `tests/adapters/alpaca` checks that):

    GET    /v2/account                      GET /v2/clock
    POST   /v2/orders                       GET /v2/orders?status=&after=&until=&limit=&direction=
    GET    /v2/orders/{id}                  GET /v2/orders:by_client_order_id?client_order_id=
    DELETE /v2/orders/{id}                  GET /v2/account/activities/FILL (and ?activity_types=FILL)
    websocket /stream: authenticate, listen trade_updates, then trade updates (binary frames)

Behaviour. Market orders fill at once at `market_price` (in `partial_fills` executions when
configured); limit and stop orders rest until `fill()` (a limit IOC/FOK cancels at once: there
is no book to cross). A quantity above `max_quantity` is refused with 403 "insufficient buying
power"; a reused client order id with 422 "client_order_id must be unique"; an unknown symbol
with 422. Stream executions carry an `execution_id` that differs from the FILL activity's id
(Alpaca documents no relation between them).

Faults. `fail_next_post(status, create_anyway)` answers the next POST /orders with `status`
(429 with Alpaca's rate-limit headers, or 5xx), after creating the order when
`create_anyway`; `fail_next` does the same for any method and path; `delay_next` does the
request and answers it late; `revoke_keys()` makes every later request and login a 401.
`drop_stream()` closes every websocket, and events published while no connection listens
are lost, as at Alpaca; `stream_outage()` also refuses new ones (HTTP 503) until it ends.
`posts[client_order_id]` counts the POSTs received.

The server runs as a Trio task (hypercorn, raw ASGI) in the test's own loop: the adapter calls
alpaca-py from worker threads, so the loop is free to answer.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast
from urllib.parse import parse_qs

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from adapters.alpaca.broker import AlpacaBroker
from adapters.alpaca.config import AlpacaConfig, AlpacaCredentials
from adapters.base import BrokerError
from api.events import AnyBrokerEvent

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

KEY_ID = "PKEMULATOR00000000001"
SECRET = "emulator-secret-5f1e0c9d7b3a4e21"
ACCOUNT_ID = "0d7f1b0e-3a52-4c1e-9a8e-6b5c2f4d1e90"
SYMBOLS = frozenset({"AAPL", "MSFT", "SPY", "BTC/USD", "ETH/USD"})
_CLOSE = b""  # sentinel in a connection's outbox: close the websocket


def _ts(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _text(value: Decimal | None) -> str | None:
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text == "-0" else text


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class EmulatedOrder:
    id: str
    client_order_id: str
    symbol: str
    qty: Decimal
    side: str
    type: str
    time_in_force: str
    limit_price: Decimal | None
    stop_price: Decimal | None
    submitted_at: datetime
    status: str = "pending_new"
    filled_qty: Decimal = Decimal(0)
    filled_avg_price: Decimal | None = None
    updated_at: datetime = field(default_factory=_now)
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    failed_at: datetime | None = None

    @property
    def asset_class(self) -> str:
        return "crypto" if "/" in self.symbol else "us_equity"

    @property
    def is_open(self) -> bool:
        return self.status in ("pending_new", "new", "accepted", "partially_filled")

    def json(self) -> dict[str, Any]:
        """Alpaca's order object, field for field."""
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": _ts(self.submitted_at),
            "updated_at": _ts(self.updated_at),
            "submitted_at": _ts(self.submitted_at),
            "filled_at": _ts(self.filled_at) if self.filled_at else None,
            "expired_at": _ts(self.expired_at) if self.expired_at else None,
            "canceled_at": _ts(self.canceled_at) if self.canceled_at else None,
            "failed_at": _ts(self.failed_at) if self.failed_at else None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, self.symbol)),
            "symbol": self.symbol,
            "asset_class": self.asset_class,
            "notional": None,
            "qty": _text(self.qty),
            "filled_qty": _text(self.filled_qty),
            "filled_avg_price": _text(self.filled_avg_price),
            "order_class": "",
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "position_intent": "buy_to_open" if self.side == "buy" else "sell_to_close",
            "time_in_force": self.time_in_force,
            "limit_price": _text(self.limit_price),
            "stop_price": _text(self.stop_price),
            "status": self.status,
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "commission": "0",
        }


@dataclass
class _Fault:
    method: str
    path: str
    status: int = 0
    create_anyway: bool = False
    delay: float = 0.0


class _HttpError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "message": message}


@dataclass(eq=False)
class _Connection:
    outbox: trio.MemorySendChannel[bytes]
    authenticated: bool = False
    listening: bool = False


class AlpacaEmulator:
    """One emulated Alpaca account. Start it with `await nursery.start(emulator.serve)`."""

    def __init__(
        self,
        *,
        market_price: Decimal = Decimal("100.00"),
        max_quantity: Decimal = Decimal(10_000),
        partial_fills: int = 1,
        key_id: str = KEY_ID,
        secret: str = SECRET,
    ) -> None:
        self.market_price = market_price
        self.max_quantity = max_quantity
        self.partial_fills = partial_fills
        self.key_id = key_id
        self.secret = secret
        self.url = ""
        self.orders: dict[str, EmulatedOrder] = {}
        self.activities: list[dict[str, Any]] = []
        #: POST /v2/orders received, per client order id (faulted ones included).
        self.posts: Counter[str] = Counter()
        #: Every request as (method, path).
        self.requests: list[tuple[str, str]] = []
        self.stream_connections = 0
        self.reject_stream_auth = False
        self._by_client: dict[str, str] = {}
        self._faults: list[_Fault] = []
        self._connections: set[_Connection] = set()
        self._refusing = False
        self._positions: dict[str, Decimal] = {}

    def __repr__(self) -> str:
        return (
            f"<AlpacaEmulator {self.url} orders={len(self.orders)} fills={len(self.activities)} "
            f"listening={self.listening}>"
        )

    @property
    def listening(self) -> int:
        return sum(1 for c in self._connections if c.listening)

    @property
    def credentials(self) -> AlpacaCredentials:
        return AlpacaCredentials(self.key_id, self.secret)

    def config(self, **changes: Any) -> AlpacaConfig:
        """An adapter config pointing here, with test-sized timeouts."""
        settings: dict[str, Any] = {
            "broker_id": "alpaca-emulator",
            "base_url": self.url,
            "connect_timeout": 1.0,
            "request_timeout": 2.0,
            "stream_connect_timeout": 2.0,
            "stream_ping_interval": 5.0,
            "stream_ping_timeout": 2.0,
        }
        settings.update(changes)
        return AlpacaConfig(**settings)

    # --- test controls ---------------------------------------------------------------------

    def order(self, client_order_id: str) -> EmulatedOrder:
        return self.orders[self._by_client[client_order_id]]

    def fill(self, client_order_id: str, quantity: Decimal, price: Decimal, *, complete: bool = True) -> None:
        """Execute `quantity` of a resting order at `price` (a trade update and a FILL
        activity). `complete=False` sends the trade update without its qty and price."""
        order = self.order(client_order_id)
        if not order.is_open:
            raise ValueError(f"{client_order_id} is {order.status}")
        if not 0 < quantity <= order.qty - order.filled_qty:
            raise ValueError(f"cannot fill {quantity} of {order.qty - order.filled_qty} remaining")
        self._execute(order, quantity, price, complete=complete)

    def cancel_at_venue(self, client_order_id: str) -> None:
        self._finish(self.order(client_order_id), "canceled")

    def expire(self, client_order_id: str) -> None:
        self._finish(self.order(client_order_id), "expired")

    def reject(self, client_order_id: str) -> None:
        self._finish(self.order(client_order_id), "rejected")

    def publish_raw(self, data: dict[str, Any]) -> None:
        """Send any trade update `data` to the listening connections."""
        self._broadcast({"stream": "trade_updates", "data": data})

    def fail_next_post(self, status: int, *, create_anyway: bool = False) -> None:
        self.fail_next("POST", "/v2/orders", status, create_anyway=create_anyway)

    def fail_next(self, method: str, path: str, status: int, *, create_anyway: bool = False) -> None:
        """Answer the next `method` request whose path starts with `path` with `status`,
        after doing the work anyway when `create_anyway`."""
        self._faults.append(_Fault(method, path, status=status, create_anyway=create_anyway))

    def delay_next(self, method: str, path: str, seconds: float) -> None:
        """Do the next matching request, then answer it only after `seconds`."""
        self._faults.append(_Fault(method, path, delay=seconds))

    def drop_stream(self) -> None:
        """Close every websocket. What is published until a client listens again is lost."""
        for connection in list(self._connections):
            connection.listening = False
            connection.outbox.send_nowait(_CLOSE)
        self._connections.clear()

    @contextmanager
    def stream_outage(self) -> Iterator[None]:
        """Drop the stream and refuse new connections (HTTP 503) until the block ends."""
        self._refusing = True
        self.drop_stream()
        try:
            yield
        finally:
            self._refusing = False

    def revoke_keys(self) -> None:
        """From now on every request and stream login is refused (401)."""
        self.secret = "revoked-" + uuid.uuid4().hex

    # --- server ----------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        config = HypercornConfig()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        config.graceful_timeout = 0.1
        config.websocket_ping_interval = None

        async with trio.open_nursery() as nursery:
            binds = await nursery.start(self._hypercorn, config)
            self.url = binds[0]
            task_status.started()

    async def _hypercorn(
        self, config: HypercornConfig, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await serve(cast(Any, self._asgi), config, mode="asgi", task_status=task_status)

    async def _asgi(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    # --- REST ------------------------------------------------------------------------------

    async def _http(self, scope: Message, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        method, path = scope["method"], scope["path"]
        self.requests.append((method, path))
        query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        fault = self._take_fault(method, path)
        status, result, extra = 200, None, []
        try:
            if method == "POST" and path == "/v2/orders":
                self._count_post(body)
            if (
                headers.get("apca-api-key-id") != self.key_id
                or headers.get("apca-api-secret-key") != self.secret
            ):
                raise _HttpError(401, 40110000, "request is not authorized")
            if fault is None or fault.create_anyway or fault.delay:
                status, result = self._route(method, path, query, body)
        except _HttpError as error:
            status, result = error.status, error.body
        if fault is not None and fault.delay:
            await trio.sleep(fault.delay)
        if fault is not None and fault.status:
            status, result = fault.status, {"code": fault.status * 100000, "message": "injected fault"}
            if fault.status == 429:
                result = {"code": 42910000, "message": "rate limit exceeded"}
                reset = str(int(time.time()) + 1)
                extra = [(b"x-ratelimit-limit", b"200"), (b"x-ratelimit-remaining", b"0")]
                extra.append((b"x-ratelimit-reset", reset.encode()))
            elif fault.status == 504:
                result = None  # a gateway's HTML page, not Alpaca's JSON
        payload = b"" if status == 204 else (json.dumps(result).encode() if result is not None else b"")
        if status == 504 and not payload:
            payload = b"<html><body><h1>504 Gateway Time-out</h1></body></html>"
        kind = b"text/html" if payload.startswith(b"<") else b"application/json"
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", kind), *extra]}
        )
        await send({"type": "http.response.body", "body": payload})

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method == method and path.startswith(fault.path):
                self._faults.remove(fault)
                return fault
        return None

    def _count_post(self, body: bytes) -> None:
        try:
            client_order_id = json.loads(body).get("client_order_id", "")
        except ValueError:
            client_order_id = ""
        self.posts[str(client_order_id)] += 1

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, Any]:
        if method == "GET" and path == "/v2/account":
            return 200, self._account_json()
        if method == "GET" and path == "/v2/clock":
            now = datetime.now(UTC)
            stamp = now.isoformat()
            return 200, {"timestamp": stamp, "is_open": True, "next_open": stamp, "next_close": stamp}
        if method == "POST" and path == "/v2/orders":
            return 200, self._create(json.loads(body))
        if method == "GET" and path == "/v2/orders":
            return 200, self._list_orders(query)
        if method == "GET" and path == "/v2/orders:by_client_order_id":
            order_id = self._by_client.get(query.get("client_order_id", ""))
            if order_id is None:
                raise _HttpError(404, 40410000, "order not found")
            return 200, self.orders[order_id].json()
        if path.startswith("/v2/orders/"):
            order = self.orders.get(path.removeprefix("/v2/orders/"))
            if order is None:
                raise _HttpError(404, 40410000, "order not found")
            if method == "GET":
                return 200, order.json()
            if method == "DELETE":
                if not order.is_open:
                    raise _HttpError(422, 42210000, f'order is already in "{order.status}" state')
                self._finish(order, "canceled")
                return 204, None
        if method == "GET" and (
            path == "/v2/account/activities/FILL"
            or (path == "/v2/account/activities" and query.get("activity_types") == "FILL")
        ):
            return 200, self._list_activities(query)
        raise _HttpError(404, 40410000, "endpoint not found")

    def _account_json(self) -> dict[str, Any]:
        return {
            "id": ACCOUNT_ID,
            "account_number": "PA3EMULATOR",
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": "400000",
            "regt_buying_power": "200000",
            "non_marginable_buying_power": "100000",
            "cash": "100000",
            "accrued_fees": "0",
            "pending_transfer_in": "0",
            "portfolio_value": "100000",
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": "2024-01-02T15:04:05.123456Z",
            "trade_suspended_by_user": False,
            "multiplier": "4",
            "shorting_enabled": True,
            "equity": "100000",
            "last_equity": "100000",
            "long_market_value": "0",
            "short_market_value": "0",
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "daytrade_count": 0,
            "options_buying_power": "100000",
            "options_approved_level": 0,
            "options_trading_level": 0,
        }

    def _create(self, data: dict[str, Any]) -> dict[str, Any]:
        """Create the order; returns what POST answers: the order as accepted, before routing."""
        client_order_id = str(data.get("client_order_id") or uuid.uuid4())
        if client_order_id in self._by_client:
            raise _HttpError(422, 40010001, "client_order_id must be unique")
        symbol = str(data.get("symbol", ""))
        if symbol not in SYMBOLS:
            raise _HttpError(422, 40010001, f'asset "{symbol}" not found')
        order_type, tif, side = data.get("type"), data.get("time_in_force"), data.get("side")
        if side not in ("buy", "sell"):
            raise _HttpError(422, 40010001, "invalid side")
        if order_type not in ("market", "limit", "stop", "stop_limit"):
            raise _HttpError(422, 40010001, "invalid order type")
        if tif not in ("day", "gtc", "ioc", "fok") or ("/" in symbol and tif not in ("gtc", "ioc")):
            raise _HttpError(422, 40010001, "invalid time_in_force")
        try:
            qty = Decimal(str(data["qty"]))
            limit = Decimal(str(data["limit_price"])) if data.get("limit_price") is not None else None
            stop = Decimal(str(data["stop_price"])) if data.get("stop_price") is not None else None
        except (KeyError, ArithmeticError):
            raise _HttpError(422, 40010001, "qty, limit_price or stop_price is invalid") from None
        if qty <= 0:
            raise _HttpError(422, 40010001, "qty must be > 0")
        if order_type in ("limit", "stop_limit") and limit is None:
            raise _HttpError(422, 40010001, "limit_price is required")
        if order_type in ("stop", "stop_limit") and stop is None:
            raise _HttpError(422, 40010001, "stop_price is required")
        if qty > self.max_quantity:
            raise _HttpError(403, 40310000, "insufficient buying power")
        now = _now()
        order = EmulatedOrder(
            id=str(uuid.uuid4()),
            client_order_id=client_order_id,
            symbol=symbol,
            qty=qty,
            side=str(side),
            type=str(order_type),
            time_in_force=str(tif),
            limit_price=limit,
            stop_price=stop,
            submitted_at=now,
            updated_at=now,
        )
        self.orders[order.id] = order
        self._by_client[client_order_id] = order.id
        response = order.json()
        order.status = "new"
        self._publish("new", order)
        if order.type == "market":
            self._fill_market(order)
        elif order.time_in_force in ("ioc", "fok") and order.type == "limit":
            self._finish(order, "canceled")
        return response

    def _fill_market(self, order: EmulatedOrder) -> None:
        parts = max(1, self.partial_fills)
        step = (order.qty / parts).quantize(Decimal("0.000000001"), rounding="ROUND_DOWN")
        if order.qty == order.qty.to_integral_value() and order.qty >= parts:
            step = Decimal(math.floor(order.qty / parts))
        for part in range(parts):
            quantity = order.qty - order.filled_qty if part == parts - 1 else step
            if quantity > 0:
                self._execute(order, quantity, self.market_price, complete=True)

    def _execute(self, order: EmulatedOrder, quantity: Decimal, price: Decimal, *, complete: bool) -> None:
        now = _now()
        notional = (order.filled_avg_price or Decimal(0)) * order.filled_qty + quantity * price
        order.filled_qty += quantity
        order.filled_avg_price = notional / order.filled_qty
        done = order.filled_qty == order.qty
        order.status = "filled" if done else "partially_filled"
        order.updated_at = now
        if done:
            order.filled_at = now
        signed = quantity if order.side == "buy" else -quantity
        self._positions[order.symbol] = self._positions.get(order.symbol, Decimal(0)) + signed
        self.activities.append(
            {
                "id": f"{now.strftime('%Y%m%d%H%M%S')}{now.microsecond // 1000:03d}::{uuid.uuid4()}",
                "activity_type": "FILL",
                "transaction_time": _ts(now),
                "type": "fill" if done else "partial_fill",
                "price": _text(price),
                "qty": _text(quantity),
                "side": order.side,
                "symbol": order.symbol,
                "leaves_qty": _text(order.qty - order.filled_qty),
                "order_id": order.id,
                "cum_qty": _text(order.filled_qty),
                "order_status": order.status,
            }
        )
        if complete:
            self._publish("fill" if done else "partial_fill", order, quantity, price, at=now)
        else:
            self._publish("fill" if done else "partial_fill", order, at=now)

    def _finish(self, order: EmulatedOrder, status: str) -> None:
        if not order.is_open:
            raise ValueError(f"{order.client_order_id} is already {order.status}")
        now = _now()
        order.status = status
        order.updated_at = now
        if status == "canceled":
            order.canceled_at = now
        elif status == "expired":
            order.expired_at = now
        elif status == "rejected":
            order.failed_at = now
        self._publish(status, order, at=now)

    def _list_orders(self, query: dict[str, str]) -> list[dict[str, Any]]:
        status = query.get("status", "open")
        orders = [o for o in self.orders.values() if status == "all" or (status == "open") == o.is_open]
        if "after" in query:
            after = datetime.fromisoformat(query["after"])
            orders = [o for o in orders if o.submitted_at > after]
        if "until" in query:
            until = datetime.fromisoformat(query["until"])
            orders = [o for o in orders if o.submitted_at < until]
        orders.sort(key=lambda o: o.submitted_at, reverse=query.get("direction", "desc") == "desc")
        limit = min(int(query.get("limit", 50)), 500)
        return [o.json() for o in orders[:limit]]

    def _list_activities(self, query: dict[str, str]) -> list[dict[str, Any]]:
        items = list(self.activities)  # appended in transaction order
        if "after" in query:
            after = datetime.fromisoformat(query["after"])
            items = [a for a in items if datetime.fromisoformat(a["transaction_time"]) > after]
        if "until" in query:
            until = datetime.fromisoformat(query["until"])
            items = [a for a in items if datetime.fromisoformat(a["transaction_time"]) < until]
        if query.get("direction", "desc") == "desc":
            items.reverse()
        token = query.get("page_token")
        if token is not None:
            ids = [a["id"] for a in items]
            items = items[ids.index(token) + 1 :] if token in ids else []
        return items[: min(int(query.get("page_size", 100)), 100)]

    # --- stream ----------------------------------------------------------------------------

    def _publish(
        self,
        event: str,
        order: EmulatedOrder,
        quantity: Decimal | None = None,
        price: Decimal | None = None,
        *,
        at: datetime | None = None,
    ) -> None:
        at = at or _now()
        data: dict[str, Any] = {
            "event": event,
            "execution_id": str(uuid.uuid4()),
            "order": order.json(),
            "timestamp": _ts(at),
        }
        if event in ("fill", "partial_fill"):
            data["position_qty"] = _text(self._positions.get(order.symbol, Decimal(0)))
            if quantity is not None and price is not None:
                data["qty"] = _text(quantity)
                data["price"] = _text(price)
        self.publish_raw(data)

    def _broadcast(self, message: dict[str, Any]) -> None:
        frame = json.dumps(message).encode()
        for connection in self._connections:
            if connection.listening:
                connection.outbox.send_nowait(frame)

    async def _websocket(self, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        if self._refusing:
            await send({"type": "websocket.http.response.start", "status": 503, "headers": []})
            await send({"type": "websocket.http.response.body", "body": b"service unavailable"})
            return
        await send({"type": "websocket.accept"})
        self.stream_connections += 1
        outbox, inbox = trio.open_memory_channel[bytes](math.inf)
        connection = _Connection(outbox)
        self._connections.add(connection)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, inbox, send, nursery.cancel_scope)
                while True:
                    message = await receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    if message["type"] == "websocket.receive":
                        self._on_client_message(
                            connection, message.get("text") or message.get("bytes") or b""
                        )
                nursery.cancel_scope.cancel()
        finally:
            self._connections.discard(connection)

    async def _write(
        self, inbox: trio.MemoryReceiveChannel[bytes], send: Send, scope: trio.CancelScope
    ) -> None:
        async for frame in inbox:
            if frame == _CLOSE:
                await send({"type": "websocket.close", "code": 1011, "reason": "connection dropped"})
                scope.cancel()
                return
            await send({"type": "websocket.send", "bytes": frame})

    def _on_client_message(self, connection: _Connection, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
            action, data = message.get("action"), message.get("data") or {}
        except (ValueError, AttributeError):
            self._reply(connection, "error", {"message": "invalid syntax"})
            return
        if action == "authenticate":
            ok = data.get("key_id") == self.key_id and data.get("secret_key") == self.secret
            if ok and not self.reject_stream_auth:
                connection.authenticated = True
                self._reply(connection, "authorization", {"action": "authenticate", "status": "authorized"})
            else:
                reply = {
                    "action": "authenticate",
                    "status": "unauthorized",
                    "message": "access key verification failed",
                }
                self._reply(connection, "authorization", reply)
                connection.outbox.send_nowait(_CLOSE)
        elif action == "listen":
            if not connection.authenticated:
                self._reply(connection, "authorization", {"action": "listen", "status": "unauthorized"})
                return
            streams = [s for s in data.get("streams", []) if s == "trade_updates"]
            connection.listening = "trade_updates" in streams
            self._reply(connection, "listening", {"streams": streams})
        else:
            self._reply(connection, "error", {"message": f"unknown action {action!r}"})

    @staticmethod
    def _reply(connection: _Connection, stream: str, data: dict[str, Any]) -> None:
        connection.outbox.send_nowait(json.dumps({"stream": stream, "data": data}).encode())


# --- the adapter under test, running against a fresh emulator ----------------------------------


@dataclass
class AlpacaDriver:
    """What a test (or the cross-adapter contract suite) drives besides the adapter."""

    emulator: AlpacaEmulator
    events: trio.MemoryReceiveChannel[AnyBrokerEvent]
    #: Orders for more than this are refused by the broker (BrokerRejected).
    reject_quantity: Decimal
    #: Market orders fill at once at this price.
    market_price: Decimal
    #: Each failure of `run` the supervisor restarted it after.
    run_failures: list[BrokerError] = field(default_factory=list)

    def fill(self, client_order_id: str, quantity: Decimal, price: Decimal) -> None:
        """Fill `quantity` of the resting order at `price` (the fill comes on the stream)."""
        self.emulator.fill(client_order_id, quantity, price)

    async def next_event(self, timeout: float = 2.0) -> AnyBrokerEvent:
        with trio.fail_after(timeout):
            return await self.events.receive()

    def pending_events(self) -> list[AnyBrokerEvent]:
        """Every event already delivered and not yet received, without waiting."""
        found: list[AnyBrokerEvent] = []
        while True:
            try:
                found.append(self.events.receive_nowait())
            except trio.WouldBlock:
                return found


async def supervise(
    adapter: AlpacaBroker,
    events: trio.MemorySendChannel[AnyBrokerEvent],
    failures: list[BrokerError],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `adapter.run` forever, restarting it after a BrokerError (as the daemon's broker
    supervisor does, without its backoff); started once the first connection is up."""
    first = True
    while True:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(adapter.run, events)
                if first:
                    first = False
                    task_status.started()
        except* BrokerError as group:
            failures.extend(e for e in group.exceptions if isinstance(e, BrokerError))
        await trio.sleep(0.01)


@asynccontextmanager
async def open_alpaca_adapter(
    *,
    market_price: Decimal = Decimal("100.00"),
    reject_quantity: Decimal = Decimal(10_000),
    partial_fills: int = 1,
    **config_changes: Any,
) -> AsyncIterator[tuple[AlpacaBroker, AlpacaDriver]]:
    """A fresh emulator and an `AlpacaBroker` connected to it, its `run` supervised (restarted
    after a lost connection). Yields `(adapter, driver)`; events arrive on `driver.events`."""
    emulator = AlpacaEmulator(
        market_price=market_price, max_quantity=reject_quantity, partial_fills=partial_fills
    )
    send, receive = trio.open_memory_channel[AnyBrokerEvent](math.inf)
    async with trio.open_nursery() as nursery:
        await nursery.start(emulator.serve)
        adapter = AlpacaBroker(emulator.config(**config_changes), emulator.credentials)
        driver = AlpacaDriver(emulator, receive, reject_quantity, market_price)
        with trio.fail_after(5):
            await nursery.start(supervise, adapter, send, driver.run_failures)
        try:
            yield adapter, driver
        finally:
            nursery.cancel_scope.cancel()
