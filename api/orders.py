"""The order at one broker (the spec's BrokerOrder), as the service tracks it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec

from api.contracts import ExecutionAttempt, ExecutionDetails, Fill
from api.enums import (
    BrokerOrderStatus,
    ExecutionStrategy,
    OrderType,
    Side,
    TimeInForce,
    Urgency,
)


class OrderFill(msgspec.Struct, frozen=True):
    """One fill of an execution. `reconstructed`: inferred from the broker's cumulative quantity
    and average price, never reported as such (`api.events.ReconstructedFill`)."""

    id: str
    broker_fill_id: str
    quantity: Decimal
    price: Decimal
    fees: Decimal
    timestamp: datetime
    venue: str
    reconstructed: bool = False

    def to_wire(self) -> Fill:
        return Fill(
            fill_id=self.broker_fill_id,
            quantity=self.quantity,
            price=self.price,
            timestamp=self.timestamp,
            venue=self.venue,
            reconstructed=self.reconstructed,
        )


class BrokerOrder(msgspec.Struct, frozen=True):
    """One attempt of one OMS order at one broker. `id` is the execution id; `client_order_id`
    is what the broker sees, derived from `id` and fixed before the broker is called."""

    id: str
    order_id: str
    broker_id: str
    client_order_id: str
    account_id: str
    symbol: str
    side: Side
    order_type: OrderType
    quantity: Decimal
    time_in_force: TimeInForce
    execution_strategy: ExecutionStrategy
    urgency: Urgency
    created_at: datetime
    updated_at: datetime
    status: BrokerOrderStatus = BrokerOrderStatus.PENDING
    price: Decimal | None = None
    stop_price: Decimal | None = None
    broker_order_id: str | None = None
    filled_quantity: Decimal = Decimal(0)
    average_price: Decimal | None = None
    fees: Decimal = Decimal(0)
    rejection_reason: str | None = None
    sequence: int = 0  # number of published updates so far
    fills: tuple[OrderFill, ...] = ()
    attempt: int = 1  # 1 for the first broker tried, 2 after a failover, ...

    @property
    def leaves_quantity(self) -> Decimal:
        return self.quantity - self.filled_quantity

    def __repr__(self) -> str:
        return (
            f"<BrokerOrder {self.id} order={self.order_id} at={self.broker_id} {self.status}"
            f" {self.filled_quantity}/{self.quantity}>"
        )

    def to_details(self) -> ExecutionDetails:
        return ExecutionDetails(
            execution_id=self.id,
            order_id=self.order_id,
            broker_id=self.broker_id,
            status=self.status.execution_status,
            total_quantity=self.quantity,
            filled_quantity=self.filled_quantity,
            fees=self.fees,
            start_time=self.created_at,
            fills=tuple(f.to_wire() for f in self.fills),
            broker_order_id=self.broker_order_id,
            average_price=self.average_price,
            end_time=self.updated_at if self.status.is_final else None,
            symbol=self.symbol,
            side=self.side,
            client_order_id=self.client_order_id,
            rejection_reason=self.rejection_reason,
            attempt=self.attempt,
        )

    def to_attempt(self) -> ExecutionAttempt:
        return ExecutionAttempt(
            attempt=self.attempt,
            execution_id=self.id,
            broker_id=self.broker_id,
            client_order_id=self.client_order_id,
            status=self.status.execution_status,
            started_at=self.created_at,
            broker_order_id=self.broker_order_id,
            reason=self.rejection_reason,
        )
