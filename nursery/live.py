"""The executions this daemon is currently driving, in memory.

A `LiveExecution` serialises everything that changes one order: broker events are queued on it
and applied in arrival order by a single drain task at a time, under its lock, so the persisted
sequence of states is exactly the order in which they were applied. Finished executions stay for
`retain` so that late events (a fill racing a cancel) still find them, at most the last `keep`
of them (~2 kB each: at 2,000 orders a second, 300 s of them were over a gigabyte); older ones
are reloaded from PostgreSQL on demand.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

import trio

from api.contracts import OrderRoutingResponse
from api.events import AnyBrokerEvent
from api.orders import BrokerOrder, OrderFill
from nursery.quiet import QuietLock
from sql.records import OutboxEvent


class LiveExecution:
    """One execution driven here. Kept small: a daemon holds one per open order (100,000
    resting orders), so what only a busy execution needs — its lock, the event a waiter waits
    on — is made on first use and let go when idle (`lock`, `changed`, `settle`)."""

    __slots__ = (
        "_changed",
        "_lock",
        "accepted_at",
        "arrival_known",
        "arrival_price",
        "cancel_requested",
        "decision",
        "draining",
        "estimate_ms",
        "finished_at",
        "order",
        "queue",
        "unsaved",
        "unsaved_response",
    )

    def __init__(self, order: BrokerOrder) -> None:
        self.order = order
        self._lock: QuietLock | None = None
        #: Broker events waiting for the drain task, in arrival order.
        self.queue: list[AnyBrokerEvent] = []
        self.draining = False
        self.cancel_requested = False
        self.finished_at: float | None = None
        #: When the broker acknowledged the order (its clock), for the time-to-fill statistic.
        self.accepted_at: datetime | None = None
        #: The routing model's expected time to fill at this broker (estimatedExecutionTime).
        self.estimate_ms: float | None = None
        #: The arrival price stored with the order, when routed here (else read back).
        self.arrival_price: Decimal | None = None
        self.arrival_known = False
        #: The routing decision (JSON text) while the order is being routed here (failover
        #: carries it to the next attempt); afterwards it is read from the store (~0.8 kB per
        #: order with 2 brokers, ~5 kB with 20: too much to keep for every resting order).
        self.decision: str | None = None
        self._changed: trio.Event | None = None
        #: Changes applied in memory but not yet written (the database is unavailable), in
        #: order, with the routing response to store with them (`nursery.applier`).
        self.unsaved: list[tuple[BrokerOrder, OrderFill | None, OutboxEvent | None]] = []
        self.unsaved_response: tuple[str, OrderRoutingResponse] | None = None

    def __repr__(self) -> str:
        unsaved = f" unsaved={len(self.unsaved)}" if self.unsaved else ""
        return f"<LiveExecution {self.order!r} queued={len(self.queue)}{unsaved}>"

    @property
    def lock(self) -> QuietLock:
        """Serialises the changes of this execution (made on first use; free, it is taken
        without a trip through the scheduler: `nursery.quietlock`)."""
        if self._lock is None:
            self._lock = QuietLock()
        return self._lock

    @property
    def changed(self) -> trio.Event:
        """Set at the next change of the order (`announce_change`): wait on it to see it."""
        if self._changed is None:
            self._changed = trio.Event()
        return self._changed

    def announce_change(self) -> None:
        """Wake whoever waits for a change; later waiters wait for the one after."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def settle(self) -> None:
        """Let go of the lock if nobody holds or waits for it (it is made again when needed)."""
        lock = self._lock
        if lock is not None and not lock.locked() and not lock.waiting:
            self._lock = None


class LiveBook:
    """Live executions by client order id, execution id and order id."""

    def __init__(self, retain: float = 300.0, keep: int = 20_000) -> None:
        self._by_client: dict[str, LiveExecution] = {}
        self._by_execution: dict[str, LiveExecution] = {}
        self._by_order: dict[str, LiveExecution] = {}
        self._finished: deque[LiveExecution] = deque()
        self.retain = retain
        self.keep = keep

    def __len__(self) -> int:
        return len(self._by_client)

    def __iter__(self) -> Iterator[LiveExecution]:
        return iter(list(self._by_client.values()))

    def add(self, live: LiveExecution) -> None:
        order = live.order
        self._by_client[order.client_order_id] = live
        self._by_execution[order.id] = live
        self._by_order[order.order_id] = live

    def by_client_order(self, client_order_id: str) -> LiveExecution | None:
        return self._by_client.get(client_order_id)

    def by_execution(self, execution_id: str) -> LiveExecution | None:
        return self._by_execution.get(execution_id)

    def by_order(self, order_id: str) -> LiveExecution | None:
        return self._by_order.get(order_id)

    def finished(self, live: LiveExecution) -> None:
        if live.finished_at is None:
            live.finished_at = trio.current_time()
            self._finished.append(live)
            if len(self._finished) > self.keep:
                self.evict_finished()

    def open_count(self) -> int:
        return len(self._by_client) - len(self._finished)

    def evict_finished(self) -> int:
        """Forget executions finished more than `retain` seconds ago, and the oldest beyond the
        last `keep` finished; returns how many. The oldest one still busy (events queued, being
        drained, changes or an answer unsaved) stops the eviction until a later call."""
        now = trio.current_time()
        evicted = 0
        finished = self._finished
        while finished:
            live = finished[0]
            assert live.finished_at is not None
            if len(finished) <= self.keep and now - live.finished_at < self.retain:
                break
            if live.queue or live.draining or live.unsaved or live.unsaved_response is not None:
                break
            finished.popleft()
            order = live.order
            self._by_client.pop(order.client_order_id, None)
            self._by_execution.pop(order.id, None)
            if self._by_order.get(order.order_id) is live:
                del self._by_order[order.order_id]
            evicted += 1
        return evicted
