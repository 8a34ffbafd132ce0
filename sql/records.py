"""What crosses the store's boundary besides the shared domain types (`api.orders`)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec

from api.contracts import CommissionStructure, LatencyStats, OrderRoutingRequest, OrderRoutingResponse
from api.enums import AssetClass, BrokerFeature, ConnectionStatus
from api.orders import BrokerOrder

__all__ = ["BrokerRecord", "ClaimResult", "DuplicateAttempt", "OrderClaim", "OutboxEvent", "StatusChange"]


class BrokerRecord(msgspec.Struct, frozen=True):
    """One row of `broker_connections`, without credentials: the row's `credentials` column is
    written as `{}` (secrets never reach the database in clear). `status` is a ConnectionStatus
    value; `connection_params` must hold nothing secret. The maintenance flag is not part of it
    (an upsert never changes it): see `Store.set_maintenance` and `Store.maintenance_flags`."""

    broker_id: str
    name: str
    status: str
    supported_asset_classes: tuple[AssetClass, ...]
    features: tuple[BrokerFeature, ...]
    commission_structure: CommissionStructure
    connection_params: dict[str, str] = {}
    rate_limits: dict[str, int] = {}
    latency_stats: LatencyStats = LatencyStats()
    last_connected_at: datetime | None = None  # None on upsert keeps the stored value

    def __repr__(self) -> str:
        return f"<BrokerRecord {self.broker_id} {self.status}>"


class StatusChange(msgspec.Struct, frozen=True):
    """One row of `broker_status_transitions`: `broker_id` entered `status` at `at`; the status
    holds until the broker's next change."""

    broker_id: str
    status: ConnectionStatus
    at: datetime
    reason: str | None = None

    def __repr__(self) -> str:
        return f"<StatusChange {self.broker_id} {self.status} at={self.at.isoformat()}>"


class OutboxEvent(msgspec.Struct, frozen=True):
    """One published execution update (`execution_events` row): `payload` is the exact bytes
    published on `subject`. (execution_id, sequence) is its key, and `msg_id` (its Nats-Msg-Id,
    by which JetStream drops a republished copy) is made of it."""

    execution_id: str
    sequence: int
    subject: str
    payload: bytes
    created_at: datetime

    @property
    def key(self) -> tuple[str, int]:
        return (self.execution_id, self.sequence)

    @property
    def msg_id(self) -> str:
        return f"{self.execution_id}:{self.sequence}"

    def __repr__(self) -> str:
        return f"<OutboxEvent {self.execution_id}#{self.sequence} {self.subject}>"


class OrderClaim(msgspec.Struct, frozen=True):
    """The first write of a RouteOrder: the idempotency record, and (when a broker was chosen)
    the PENDING attempt with its client order id and its first update, all in one transaction.

    `response` is set when the answer is known at claim time (e.g. no eligible broker).
    `asset_class` is required with `execution`; `event` requires `execution`."""

    order_id: str
    routing_id: str
    request_hash: str
    request: OrderRoutingRequest
    received_at: datetime
    arrival_price: Decimal | None = None
    execution: BrokerOrder | None = None
    asset_class: str | None = None
    event: OutboxEvent | None = None
    response: OrderRoutingResponse | None = None
    #: The routing decision (`routing.decision.encode`d JSON) and the broker it chose.
    decision: str | None = None
    chosen_broker: str | None = None
    #: The daemon claiming it (`sql.leases`): whose lease keeps others from taking it over.
    owner: str | None = None

    def __repr__(self) -> str:
        execution = self.execution.id if self.execution is not None else None
        return f"<OrderClaim {self.order_id} execution={execution}>"


class ClaimTakenOver(Exception):
    """Another daemon took the order over (our lease lapsed), or it was answered meanwhile:
    no further attempt may start (`StartAttempt.owner`)."""

    def __init__(self, order_id: str, owner: str | None, answered: bool) -> None:
        why = "it was answered meanwhile" if answered else f"daemon {owner} took it over"
        super().__init__(f"order {order_id}: no further attempt: {why}")
        self.order_id = order_id


class DuplicateAttempt(ValueError):
    """`start_attempt` refused an attempt: the order already has an attempt with that number, or
    the execution id or the client order id is already used (`existing` is the execution id of
    the row in the way)."""

    def __init__(self, message: str, *, order_id: str, attempt: int, existing: str) -> None:
        super().__init__(message)
        self.order_id = order_id
        self.attempt = attempt
        self.existing = existing


class ClaimResult(msgspec.Struct, frozen=True):
    """`claimed` is True only for the one call that inserted the order's row; every other call
    gets the stored row: its request hash, its response (None while routing is in progress) and
    the id of its latest attempt (None if no broker was chosen)."""

    claimed: bool
    request_hash: str
    response: OrderRoutingResponse | None = None
    execution_id: str | None = None
    routing_id: str | None = None
