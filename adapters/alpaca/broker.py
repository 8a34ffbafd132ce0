"""Alpaca as a `BrokerAdapter`: REST through alpaca-py (`adapters.alpaca.rest`), trade updates
over trio-websocket (`adapters.alpaca.stream`), translation in `adapters.alpaca.translate`.

Connection. `run` checks the account (`GET /v2/account`: keys valid, account ACTIVE and not
blocked), opens the trade-updates stream and waits until Alpaca confirms the subscription,
recovers what the previous connection missed, reports started (connected means caught up),
then forwards every trade update until the stream ends, which raises ConnectionLost (the
supervisor restarts `run`). Trade updates arriving during the recovery wait in the websocket
and are forwarded after it, so a recovered event never follows a newer streamed one.
Orders are accepted only while `run` is connected (else DeniedLocally): an order placed while
nobody listens would have its events recovered late. `query`, `cancel`, `open_orders` and
`fills_since` work at any time (reconciliation may need them while the stream is down).

Recovery, on every (re)connect, after the subscription is confirmed (so the gap is closed from
both sides: what happened before is in REST, what happens after comes on the stream):
1. fills: FILL activities since `recovery_overlap` before the newest fill already seen (or, on
   the first connect, `recovery_lookback` before the adapter was built), as OrderFilled with
   the same fill ids the stream uses (`translate.fill_id`);
2. terminal events: for orders last known open, the closed orders since the oldest of them
   (canceled, expired, rejected, replaced -> OrderCanceled / OrderExpired / OrderRejected).
The ledger (`adapters.alpaca.ledger`) admits every fill id and terminal event once for the
adapter's life, so the overlap between recovery and stream never reaches the channel twice.
Events missed by a crash of the whole daemon are the daemon's reconciliation (`fills_since`).

Submission is never retried. On an ambiguous failure (5xx, timeout, dropped connection, an
unreadable answer) `submit` looks the order up by its client order id once: found, it is
adopted and acknowledged (not duplicated); not found or not answerable, the original
OutcomeUnknown is raised and the daemon reconciles with `query`. A 429 raises RateLimited at
once (Alpaca's limiter refused the request; looking up would spend another request against an
exhausted limit). A 422 "client_order_id must be unique" means the order already exists: it
is adopted the same way, never reported as a rejection (which would allow a failover and a
second order elsewhere).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

import msgspec
import trio
from alpaca.common.enums import Sort
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.requests import GetOrdersRequest

from adapters.alpaca.config import AlpacaConfig, AlpacaCredentials
from adapters.alpaca.errors import Call, DuplicateClientOrderId, NotCancelable, NotFound
from adapters.alpaca.ledger import ExecutionLedger
from adapters.alpaca.rest import AlpacaRest
from adapters.alpaca.stream import open_trade_updates
from adapters.alpaca.translate import (
    ASSET_CLASSES,
    ORDER_TYPES,
    TIMES_IN_FORCE,
    IncompleteExecution,
    UnknownAlpacaWord,
    event_from_update,
    fill_from_activity,
    final_event,
    order_body,
    order_problem,
    snapshot,
)
from adapters.alpaca.wire import AlpacaAccount, AlpacaOrder, FillActivity, TradeUpdate, convert
from adapters.base import (
    AuthenticationFailed,
    BrokerAck,
    BrokerError,
    BrokerOrderSnapshot,
    CancelRejected,
    Capabilities,
    ConnectionLost,
    DeniedLocally,
    OutcomeUnknown,
    RateLimited,
    SubmitRequest,
)
from api.commission import commission
from api.events import AnyBrokerEvent, OrderFilled

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Alpaca's largest page: FILL activities (page_size) and orders (limit).
ACTIVITY_PAGE = 100
ORDER_PAGE = 500
_MAX_PAGES = 1000


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _timestamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AlpacaBroker:
    """One Alpaca account, driven through the `BrokerAdapter` interface."""

    def __init__(
        self,
        config: AlpacaConfig,
        credentials: AlpacaCredentials,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.config = config
        self.broker_id = config.broker_id
        self.name = config.name
        self.capabilities = Capabilities(
            asset_classes=frozenset(ASSET_CLASSES),
            features=frozenset(order_type.feature for order_type in ORDER_TYPES),
            time_in_force=frozenset(TIMES_IN_FORCE),
            rate_limits=config.rate_limits,
        )
        self.commission = config.commission
        self.outlives_daemon = True
        self._credentials = credentials
        self._rest = AlpacaRest(config, credentials)
        self._ledger = ExecutionLedger()
        self._clock = clock
        self._born = clock()
        self._running = False
        self._connected = False
        #: Successful connections so far (each one ran a recovery).
        self.connections = 0

    def __repr__(self) -> str:
        mode = "paper" if self.config.paper else "LIVE"
        state = "connected" if self._connected else "disconnected"
        return (
            f"<AlpacaBroker {self.broker_id} {mode} {state} connections={self.connections} "
            f"open={len(self._ledger.open_orders())}>"
        )

    @property
    def connected(self) -> bool:
        return self._connected

    # --- connection --------------------------------------------------------------------------

    async def run(
        self,
        events: trio.MemorySendChannel[AnyBrokerEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect, recover the gap, report started, then forward trade updates until the
        stream ends (ConnectionLost) or `run` is cancelled. One `run` at a time. Recovered
        events are sent before `started`: the consumer of `events` must already be running."""
        if self._running:
            raise RuntimeError(f"{self.broker_id}: run() is already active")
        self._running = True
        try:
            await self._check_account()
            async with open_trade_updates(self.config, self._credentials) as stream:
                await self._recover(events)
                self._connected = True
                self.connections += 1
                log.info("alpaca connected", extra={"broker_id": self.broker_id})
                task_status.started()
                while True:
                    message = await stream.receive()
                    await self._on_trade_update(message.data, events)
        finally:
            self._connected = False
            self._running = False

    async def heartbeat(self) -> None:
        """`GET /v2/clock`: cheap, authenticated. Raises ConnectionLost when not connected."""
        if not self._connected:
            raise ConnectionLost(f"{self.broker_id}: not connected")
        await self._rest.call(lambda client: client.get_clock())

    # --- orders ------------------------------------------------------------------------------

    async def submit(self, request: SubmitRequest) -> BrokerAck:
        """Place one order, sent once. Raises DeniedLocally (not connected, an order Alpaca
        cannot take), BrokerRejected (Alpaca refused: nothing exists there), RateLimited
        (429) or OutcomeUnknown (the order may exist; it was not found by the one lookup)."""
        if not self._connected:
            raise DeniedLocally(f"{self.broker_id}: not connected")
        problem = order_problem(request)
        if problem is not None:
            raise DeniedLocally(problem)
        body = order_body(request)
        try:
            raw = await self._rest.call(lambda client: client.post("/orders", body), kind=Call.SUBMIT)
            order = convert(raw, AlpacaOrder)
        except RateLimited:
            raise
        except DuplicateClientOrderId as exc:
            return await self._adopt(request, OutcomeUnknown(exc.reason))
        except OutcomeUnknown as exc:
            return await self._adopt(request, exc)
        except msgspec.ValidationError as exc:
            return await self._adopt(request, OutcomeUnknown(f"unreadable order from Alpaca: {exc}"))
        self._ledger.remember(order)
        return BrokerAck(broker_order_id=order.id, at=order.submitted_at)

    async def cancel(self, client_order_id: str) -> None:
        """Ask Alpaca to cancel; OrderCanceled arrives on the stream. Idempotent: an order
        already canceled (or being canceled) is not an error. Raises CancelRejected for an
        unknown order or one already filled, expired or rejected."""
        alpaca_id = self._ledger.alpaca_order_id(client_order_id)
        if alpaca_id is None:
            order = await self._lookup(client_order_id)
            if order is None:
                raise CancelRejected(f"unknown order {client_order_id}")
            alpaca_id = order.id
        order_id = alpaca_id
        try:
            await self._rest.call(lambda client: client.cancel_order_by_id(order_id), kind=Call.CANCEL)
        except NotFound:
            raise CancelRejected(f"unknown order {client_order_id}") from None
        except NotCancelable as exc:
            order = await self._lookup(client_order_id)
            if order is None:
                raise CancelRejected(f"unknown order {client_order_id}") from None
            if order.status in ("canceled", "pending_cancel"):
                return
            raise CancelRejected(f"order is {order.status}: {exc.reason}") from None

    async def query(self, client_order_id: str) -> BrokerOrderSnapshot | None:
        """Alpaca's view of the order (`GET /v2/orders:by_client_order_id`), None if unknown."""
        order = await self._lookup(client_order_id)
        if order is None:
            return None
        return self._snapshot(order)

    async def open_orders(self) -> list[BrokerOrderSnapshot]:
        """Every open order of the account (oldest first)."""
        orders = await self._orders(QueryOrderStatus.OPEN, after=None)
        return [self._snapshot(order) for order in orders]

    async def fills_since(self, since: datetime) -> list[OrderFilled]:
        """Every fill of the account at or after `since`, oldest first, from the FILL
        activities, with the fill ids the stream uses."""
        activities = await self._fill_activities(since)
        fills: list[OrderFilled] = []
        for activity in activities:
            client_order_id = await self._client_order_id(activity.order_id)
            if client_order_id is None:
                log.warning(
                    "alpaca fill of an order Alpaca does not know",
                    extra={"broker_id": self.broker_id, "alpaca_order_id": activity.order_id},
                )
                continue
            fills.append(
                fill_from_activity(activity, client_order_id, venue=self.config.venue, fee_for=self._fee)
            )
        return fills

    # --- internals ---------------------------------------------------------------------------

    async def _check_account(self) -> None:
        raw = await self._rest.call(lambda client: client.get_account())
        try:
            account = convert(raw, AlpacaAccount)
        except msgspec.ValidationError as exc:
            raise OutcomeUnknown(f"unreadable account from Alpaca: {exc}") from None
        if account.status != "ACTIVE":
            raise AuthenticationFailed(f"Alpaca account is {account.status}, not ACTIVE")
        if account.trading_blocked or account.account_blocked or account.trade_suspended_by_user:
            raise AuthenticationFailed("Alpaca account is blocked from trading")

    async def _recover(self, events: trio.MemorySendChannel[AnyBrokerEvent]) -> None:
        overlap = timedelta(seconds=self.config.recovery_overlap)
        start = self._ledger.newest_fill or self._born - timedelta(seconds=self.config.recovery_lookback)
        recovered = 0
        for fill in await self.fills_since(start - overlap):
            if self._ledger.admit(fill):
                recovered += 1
                await events.send(fill)
        tracked = {order.client_order_id: order for order in self._ledger.open_orders()}
        if tracked:
            oldest = min(order.submitted_at for order in tracked.values())
            for order in await self._orders(QueryOrderStatus.CLOSED, after=oldest - overlap):
                if order.client_order_id not in tracked:
                    continue
                event = self._final_event(order)
                self._ledger.remember(order)
                if event is not None and self._ledger.admit(event):
                    recovered += 1
                    await events.send(event)
        log.info(
            "alpaca recovery done",
            extra={"broker_id": self.broker_id, "recovered": recovered, "since": start - overlap},
        )

    def _final_event(self, order: AlpacaOrder) -> AnyBrokerEvent | None:
        try:
            return final_event(order, order.updated_at or self._clock())
        except UnknownAlpacaWord as exc:
            log.warning(
                "alpaca order in an unknown status", extra={"broker_id": self.broker_id, "why": str(exc)}
            )
            return None

    async def _on_trade_update(
        self, data: dict[str, Any], events: trio.MemorySendChannel[AnyBrokerEvent]
    ) -> None:
        try:
            update = convert(data, TradeUpdate)
        except msgspec.ValidationError as exc:
            raise ConnectionLost(f"unreadable trade update: {exc}") from None
        self._ledger.remember(update.order)
        try:
            event = event_from_update(update, venue=self.config.venue, fee_for=self._fee)
        except UnknownAlpacaWord as exc:
            log.warning("alpaca trade update ignored", extra={"broker_id": self.broker_id, "why": str(exc)})
            return
        except IncompleteExecution as exc:
            # Never guess a fill: reconnect, and the recovery reads it from the FILL activities.
            raise ConnectionLost(str(exc)) from None
        if event is not None and self._ledger.admit(event):
            await events.send(event)

    async def _adopt(self, request: SubmitRequest, failure: OutcomeUnknown) -> BrokerAck:
        """After an ambiguous submit: the order if Alpaca has it (adopted), else `failure`."""
        try:
            order = await self._lookup(request.client_order_id)
        except BrokerError as exc:
            log.warning(
                "alpaca lookup after an ambiguous submit failed",
                extra={
                    "broker_id": self.broker_id,
                    "client_order_id": request.client_order_id,
                    "why": exc.reason,
                },
            )
            raise failure from None
        if order is None:
            raise failure
        if order.qty is not None and order.qty != request.quantity:
            raise OutcomeUnknown(
                f"client order id {request.client_order_id} is held by an order of {order.qty}, "
                f"not {request.quantity}"
            )
        self._ledger.remember(order)
        log.info(
            "alpaca order adopted after an ambiguous submit",
            extra={
                "broker_id": self.broker_id,
                "client_order_id": request.client_order_id,
                "why": failure.reason,
            },
        )
        return BrokerAck(broker_order_id=order.id, at=order.submitted_at)

    async def _lookup(self, client_order_id: str) -> AlpacaOrder | None:
        try:
            raw = await self._rest.call(lambda client: client.get_order_by_client_id(client_order_id))
        except NotFound:
            return None
        order = self._read(raw, AlpacaOrder)
        self._ledger.remember(order)
        return order

    async def _client_order_id(self, alpaca_order_id: str) -> str | None:
        known = self._ledger.client_order_id(alpaca_order_id)
        if known is not None:
            return known
        try:
            raw = await self._rest.call(lambda client: client.get_order_by_id(alpaca_order_id))
        except NotFound:
            return None
        order = self._read(raw, AlpacaOrder)
        self._ledger.remember(order)
        return order.client_order_id

    async def _orders(self, status: QueryOrderStatus, after: datetime | None) -> list[AlpacaOrder]:
        """Orders of `status` submitted after `after`, oldest first, every page. Alpaca pages
        orders only by time (`after` is exclusive): orders sharing the submission instant of a
        page's last one could be skipped, which at 500 per page needs a burst Alpaca's rate
        limit does not allow."""
        orders: list[AlpacaOrder] = []
        for _ in range(_MAX_PAGES):
            query = GetOrdersRequest(
                status=status, limit=ORDER_PAGE, direction=Sort.ASC, after=after, nested=False
            )
            raw = await self._rest.call(partial(TradingClient.get_orders, filter=query))
            page = self._read(raw, list[AlpacaOrder])
            orders.extend(page)
            if len(page) < ORDER_PAGE:
                return orders
            after = page[-1].submitted_at
        raise OutcomeUnknown(f"more than {_MAX_PAGES * ORDER_PAGE} {status.value} orders")

    async def _fill_activities(self, since: datetime) -> list[FillActivity]:
        """FILL activities at or after `since`, oldest first. Alpaca's `after` is exclusive and
        executions in one millisecond are not ordered by it, so the page ends a little before
        `since` and the result is sorted by (time, order, cumulative quantity)."""
        params = {
            "after": _timestamp(since - timedelta(milliseconds=1)),
            "direction": "asc",
            "page_size": str(ACTIVITY_PAGE),
        }
        activities: list[FillActivity] = []
        for _ in range(_MAX_PAGES):
            fetch = partial(TradingClient.get, path="/account/activities/FILL", data=dict(params))
            raw = await self._rest.call(fetch)
            page = self._read(raw, list[FillActivity])
            activities.extend(page)
            if len(page) < ACTIVITY_PAGE:
                break
            params["page_token"] = page[-1].id
        else:
            raise OutcomeUnknown(f"more than {_MAX_PAGES * ACTIVITY_PAGE} fills since {since}")
        activities = [a for a in activities if a.transaction_time >= since and a.activity_type == "FILL"]
        activities.sort(key=lambda a: (a.transaction_time, a.order_id, a.cum_qty))
        return activities

    def _snapshot(self, order: AlpacaOrder) -> BrokerOrderSnapshot:
        try:
            return snapshot(order)
        except UnknownAlpacaWord as exc:
            raise OutcomeUnknown(str(exc)) from None

    @staticmethod
    def _read(raw: object, kind: type[T]) -> T:
        try:
            return convert(raw, kind)
        except msgspec.ValidationError as exc:
            raise OutcomeUnknown(f"unreadable answer from Alpaca: {exc}") from None

    def _fee(self, notional: Decimal) -> Decimal:
        return commission(self.commission, notional, self._ledger.volume)


def build_alpaca_broker(
    config: AlpacaConfig, environ: dict[str, str] | None = None, *, clock: Callable[[], datetime] = _utc_now
) -> AlpacaBroker:
    """The adapter for `config`, its credentials read from the environment variables the config
    names (`environ` defaults to `os.environ`)."""
    return AlpacaBroker(config, AlpacaCredentials.from_environment(config, environ), clock=clock)
