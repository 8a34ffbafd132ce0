"""What one Alpaca adapter has already reported, so that nothing is reported twice (pure).

The stream and the recovery after a reconnect overlap on purpose (recovery starts a little
before the newest fill seen), so the same fill or cancel can reach the adapter twice. The
ledger admits each fill id once, one OrderAccepted and one terminal event per order, for the
adapter's whole life (across reconnects), within a bounded memory of recent ids. The daemon
also stores fills by id; this keeps the channel free of duplicates in the first place.

It also remembers which Alpaca order id belongs to which client order id (FILL activities
name only the former), which orders are still open (their missed terminal events are looked
for after a reconnect), the newest fill time seen (where recovery starts) and the notional
traded (commission tiers).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from datetime import datetime
from decimal import Decimal
from typing import Generic, TypeVar

import msgspec

from adapters.alpaca.translate import is_open
from adapters.alpaca.wire import AlpacaOrder
from api.events import AnyBrokerEvent, OrderAccepted, OrderFilled

K = TypeVar("K", bound=Hashable)

#: How many fill ids, orders and terminal events the ledger remembers (oldest forgotten first).
MEMORY = 100_000


class _RecentSet(Generic[K]):
    """A set that forgets its oldest members beyond `size`."""

    def __init__(self, size: int) -> None:
        self._members: set[K] = set()
        self._order: deque[K] = deque()
        self._size = size

    def __contains__(self, item: K) -> bool:
        return item in self._members

    def __len__(self) -> int:
        return len(self._members)

    def add(self, item: K) -> bool:
        """Add `item`; False if it was already there."""
        if item in self._members:
            return False
        self._members.add(item)
        self._order.append(item)
        if len(self._order) > self._size:
            self._members.discard(self._order.popleft())
        return True


class OpenOrder(msgspec.Struct, frozen=True):
    client_order_id: str
    alpaca_order_id: str
    submitted_at: datetime


class ExecutionLedger:
    def __init__(self, memory: int = MEMORY) -> None:
        self._memory = memory
        self._client_ids: OrderedDict[str, str] = OrderedDict()  # alpaca id -> client id
        self._alpaca_ids: OrderedDict[str, str] = OrderedDict()  # client id -> alpaca id
        self._open: dict[str, OpenOrder] = {}
        self._fills: _RecentSet[str] = _RecentSet(memory)
        self._accepted: _RecentSet[str] = _RecentSet(memory)
        self._finished: _RecentSet[str] = _RecentSet(memory)
        #: Transaction time of the newest fill admitted: where the next recovery starts.
        self.newest_fill: datetime | None = None
        #: Notional of every fill admitted (the running volume of commission tiers).
        self.volume = Decimal(0)

    def __repr__(self) -> str:
        return f"<ExecutionLedger fills={len(self._fills)} open={len(self._open)} newest={self.newest_fill}>"

    # --- orders ----------------------------------------------------------------------------

    def remember(self, order: AlpacaOrder) -> None:
        """Record an order as Alpaca reported it (ack, lookup, trade update)."""
        self._link(order.id, order.client_order_id)
        if is_open(order):
            if order.client_order_id not in self._finished:
                self._open[order.client_order_id] = OpenOrder(
                    order.client_order_id, order.id, order.submitted_at
                )
        else:
            self._open.pop(order.client_order_id, None)

    def client_order_id(self, alpaca_order_id: str) -> str | None:
        return self._client_ids.get(alpaca_order_id)

    def alpaca_order_id(self, client_order_id: str) -> str | None:
        return self._alpaca_ids.get(client_order_id)

    def open_orders(self) -> list[OpenOrder]:
        """Orders last known open: a reconnect looks for the terminal events they missed."""
        return list(self._open.values())

    # --- events ----------------------------------------------------------------------------

    def admit(self, event: AnyBrokerEvent) -> bool:
        """True the first time an event is seen (emit it), False for a repeat (drop it)."""
        if isinstance(event, OrderFilled):
            if not self._fills.add(event.fill_id):
                return False
            if self.newest_fill is None or event.at > self.newest_fill:
                self.newest_fill = event.at
            self.volume += event.quantity * event.price
            return True
        if isinstance(event, OrderAccepted):
            if event.client_order_id in self._finished:
                return False
            return self._accepted.add(event.client_order_id)
        if not self._finished.add(event.client_order_id):
            return False
        self._open.pop(event.client_order_id, None)
        return True

    def _link(self, alpaca_order_id: str, client_order_id: str) -> None:
        for mapping, key, value in (
            (self._client_ids, alpaca_order_id, client_order_id),
            (self._alpaca_ids, client_order_id, alpaca_order_id),
        ):
            mapping[key] = value
            mapping.move_to_end(key)
            if len(mapping) > self._memory:
                mapping.popitem(last=False)
