"""The adapter's view of its orders at IB, by client order id (= IB's `orderRef`) (pure).

An `OrderRecord` exists from the moment `submit` decides to send (before placeOrder), so any
message about the order is matched to it by orderRef, and a second submit of the same client
order id never sends a second order. IB's updates (`IbOrderState`) replace the record's
state; `events_for` turns each update into at most one OrderAccepted and one terminal event
(OrderCanceled / OrderRejected) per order for the adapter's life. Fills are the ledger's.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from adapters.ib.translate import (
    Rule,
    broker_order_id,
    broker_status,
    is_cancel_answer,
    rejection,
    rule,
)
from adapters.ib.wire import IbOrderState
from api.enums import BrokerOrderStatus
from api.events import AnyBrokerEvent, OrderAccepted, OrderCanceled, OrderRejected


class OrderRecord:
    __slots__ = ("accepted_sent", "client_order_id", "final_sent", "quantity", "sent_at", "state")

    def __init__(self, client_order_id: str, quantity: Decimal, sent_at: datetime) -> None:
        self.client_order_id = client_order_id
        self.quantity = quantity
        self.sent_at = sent_at
        self.state: IbOrderState | None = None
        self.accepted_sent = False
        self.final_sent = False

    def __repr__(self) -> str:
        state = self.state.status if self.state is not None else "unacknowledged"
        return f"<OrderRecord {self.client_order_id} {state} {self.broker_order_id or '-'}>"

    @property
    def broker_order_id(self) -> str | None:
        if self.state is None or rule(self.state) is Rule.PENDING:
            return None
        return broker_order_id(self.state)

    @property
    def status(self) -> BrokerOrderStatus:
        return BrokerOrderStatus.PENDING if self.state is None else broker_status(self.state)

    @property
    def acknowledged(self) -> bool:
        """IB has the order (it is working, filled, cancelled or rejected there)."""
        return self.state is not None and rule(self.state) is not Rule.PENDING


class OrderBook:
    def __init__(self) -> None:
        self._records: dict[str, OrderRecord] = {}

    def __repr__(self) -> str:
        return f"<OrderBook orders={len(self._records)} open={len(self.open())}>"

    def get(self, client_order_id: str) -> OrderRecord | None:
        return self._records.get(client_order_id)

    def add(self, record: OrderRecord) -> None:
        self._records[record.client_order_id] = record

    def open(self) -> list[OrderRecord]:
        """Orders last known not final (their missed terminal events are looked for)."""
        return [r for r in self._records.values() if not r.status.is_final]

    def update(self, state: IbOrderState, at: datetime) -> list[AnyBrokerEvent]:
        """Apply IB's latest state of an order; the events it means (each at most once)."""
        if not state.order_ref or is_cancel_answer(state):
            return []
        record = self._records.get(state.order_ref)
        if record is None:
            record = OrderRecord(state.order_ref, state.quantity, at)
            self._records[state.order_ref] = record
        if record.state is not None and _regresses(record.state, state):
            return []
        record.state = state
        return events_for(record, at)


def _regresses(old: IbOrderState, new: IbOrderState) -> bool:
    """A stale update (a lookup answered before a newer live message) never undoes a final
    state or lowers the filled quantity."""
    if new.filled < old.filled:
        return True
    return broker_status(old).is_final and not broker_status(new).is_final


def events_for(record: OrderRecord, at: datetime) -> list[AnyBrokerEvent]:
    state = record.state
    if state is None:
        return []
    events: list[AnyBrokerEvent] = []
    reason = rejection(state)
    status = broker_status(state)
    if reason is not None:
        if not record.final_sent:
            record.final_sent = True
            events.append(OrderRejected(client_order_id=record.client_order_id, at=at, reason=reason))
        return events
    if rule(state) is not Rule.PENDING and not record.accepted_sent and not record.final_sent:
        record.accepted_sent = True
        events.append(
            OrderAccepted(
                client_order_id=record.client_order_id, at=at, broker_order_id=broker_order_id(state)
            )
        )
    if status is BrokerOrderStatus.CANCELED and not record.final_sent:
        record.final_sent = True
        why = state.error_message if state.error_code else ""
        events.append(OrderCanceled(client_order_id=record.client_order_id, at=at, reason=why))
    return events
