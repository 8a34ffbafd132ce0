"""The one interface every broker adapter implements, and the errors at its boundary.

    BrokerError
    ├── BrokerRejected     the broker said no: the order does not exist there. Safe to fail over.
    ├── DeniedLocally      we refused before sending (capability, rate limit, breaker). Safe.
    ├── CancelRejected     the broker refused a cancel (already filled, unknown order).
    ├── AuthenticationFailed  credentials refused (connect); not retried quickly
    └── OutcomeUnknown     timeout, disconnect, 5xx, 429 on a POST: the order may or may not
        │                  exist at the broker. Never resend; reconcile with `query` first.
        ├── RateLimited    HTTP 429 / throttled: `retry_after` seconds, when the broker says
        ├── ServerError    HTTP 5xx
        └── ConnectionLost the connection dropped with the request in flight

Adapters map their library's exceptions into these at the boundary and never guess: anything
they cannot classify is `OutcomeUnknown`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Protocol, runtime_checkable

import msgspec
import trio

from api.capabilities import Capabilities, RateLimits
from api.contracts import CommissionStructure
from api.enums import AssetClass, BrokerOrderStatus, OrderType, Side, TimeInForce
from api.events import AnyBrokerEvent, OrderFilled

__all__ = [
    "AuthenticationFailed",
    "BrokerAck",
    "BrokerAdapter",
    "BrokerError",
    "BrokerOrderSnapshot",
    "BrokerRejected",
    "CancelRejected",
    "Capabilities",
    "ConnectionLost",
    "DeniedLocally",
    "OutcomeUnknown",
    "RateLimited",
    "RateLimits",
    "ServerError",
    "SubmitRequest",
    "shape_problem",
]


class BrokerError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BrokerRejected(BrokerError):
    pass


class DeniedLocally(BrokerError):
    pass


class CancelRejected(BrokerError):
    pass


class AuthenticationFailed(BrokerError):
    pass


class OutcomeUnknown(BrokerError):
    pass


class RateLimited(OutcomeUnknown):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class ServerError(OutcomeUnknown):
    pass


class ConnectionLost(OutcomeUnknown):
    pass


class SubmitRequest(msgspec.Struct, frozen=True):
    """What an adapter needs to place one order. `client_order_id` is fixed and persisted by
    the caller before `submit` is called; it is the broker-side idempotency key."""

    client_order_id: str
    account_id: str
    symbol: str
    asset_class: AssetClass
    side: Side
    order_type: OrderType
    quantity: Decimal
    time_in_force: TimeInForce
    price: Decimal | None = None
    stop_price: Decimal | None = None


def shape_problem(request: SubmitRequest) -> str | None:
    """What no broker takes, whichever it is: a quantity that is not positive, or a price or stop
    price that the order type needs and lacks (or is not positive). None otherwise."""
    if request.quantity <= 0:
        return "quantity must be positive"
    if request.order_type.needs_price and (request.price is None or request.price <= 0):
        return f"{request.order_type} orders need a positive price"
    if request.order_type.needs_stop_price and (request.stop_price is None or request.stop_price <= 0):
        return f"{request.order_type} orders need a positive stop price"
    return None


class BrokerAck(msgspec.Struct, frozen=True):
    broker_order_id: str
    at: datetime


class BrokerOrderSnapshot(msgspec.Struct, frozen=True):
    """The broker's view of one order, for reconciliation."""

    client_order_id: str
    broker_order_id: str
    status: BrokerOrderStatus
    filled_quantity: Decimal
    average_price: Decimal | None = None


@runtime_checkable
class BrokerAdapter(Protocol):
    """One broker connection. `run` owns the connection (connect, authenticate, stream) and
    lives in the broker's own nursery; the other methods are called by order tasks."""

    broker_id: str
    capabilities: Capabilities
    commission: CommissionStructure
    #: The broker keeps the orders it acknowledged when this process dies, and `query` finds
    #: them by client order id afterwards (every real broker). False for a venue that lives and
    #: dies with the process (the simulated ones): the daemon then writes an acknowledgement
    #: before it answers the OMS, since nobody could tell the answer again after a crash.
    outlives_daemon: bool

    async def run(
        self,
        events: trio.MemorySendChannel[AnyBrokerEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect, report `task_status.started()` once orders can be sent, then deliver every
        execution event into `events` until cancelled. Raises on a lost connection (the
        supervisor restarts it)."""

    async def heartbeat(self) -> None:
        """Prove the connection is alive now (a ping, a test request, a cheap authenticated
        call); raise ConnectionLost (or any error) if it is not. The supervisor calls it
        periodically under a timeout and restarts the connection when it fails."""

    async def submit(self, request: SubmitRequest) -> BrokerAck:
        """Place one order. Raises BrokerRejected, DeniedLocally or OutcomeUnknown."""

    async def cancel(self, client_order_id: str) -> None:
        """Ask the broker to cancel; the CANCELED event arrives on the stream. Raises
        CancelRejected or OutcomeUnknown. Idempotent."""

    async def query(self, client_order_id: str) -> BrokerOrderSnapshot | None:
        """The broker's view of the order, or None if it never received it."""

    async def open_orders(self) -> list[BrokerOrderSnapshot]:
        """Every order the broker holds open (accepted or partially filled) for this session's
        account(s): what a reconnect reconciles against."""

    async def fills_since(self, since: datetime) -> list[OrderFilled]:
        """Every fill the broker reports at or after `since`, oldest first, with the broker's
        fill ids (the daemon stores each fill once): what a stream reconnect recovers."""
