"""Applying broker events to live executions: the state machine, then persistence, then
publication, in that order, serialised per execution.

Events for one execution are queued on it and applied by one drain task at a time, under its
lock, so the persisted sequence of states is exactly the order in which they were applied.
Each transition is committed together with its outbox row before it is handed to the publisher.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import trio

from api.contracts import OrderRoutingResponse
from api.enums import BrokerOrderStatus
from api.events import AnyBrokerEvent, OrderAccepted, OrderFilled
from api.lifecycle import IllegalTransition, apply_event
from nursery.brokers import BrokerHandle
from nursery.identity import execution_of_client_order
from nursery.live import LiveBook, LiveExecution
from nursery.updates import outbox_event
from sql.records import OutboxEvent
from sql.store import Store

log = logging.getLogger(__name__)

Spawn = Callable[..., None]


class EventApplier:
    def __init__(
        self,
        store: Store,
        live: LiveBook,
        brokers: Mapping[str, BrokerHandle],
        publish: trio.MemorySendChannel[OutboxEvent],
        spawn: Spawn,
        on_zombie: Callable[[LiveExecution], object],
        on_finished: Callable[[LiveExecution], object] | None = None,
        on_late_fill: Callable[[LiveExecution], object] | None = None,
    ) -> None:
        self._store = store
        self._live = live
        self._brokers = brokers
        self._publish = publish
        self._spawn = spawn
        self._on_zombie = on_zombie
        #: Called once when an execution reaches a final status (routing statistics, reports).
        self._on_finished = on_finished
        #: Called when a fill reaches an execution that had already ended (its report is stale).
        self._on_late_fill = on_late_fill
        #: Drain / load tasks applying broker events right now (shutdown waits for zero).
        self.applying = 0

    def __repr__(self) -> str:
        return f"<EventApplier applying={self.applying}>"

    def enqueue(self, event: AnyBrokerEvent) -> None:
        """Queue a broker event on its execution (loading it if it is not live here)."""
        live = self._live.by_client_order(event.client_order_id)
        if live is None:
            self._spawn(self._load_and_enqueue, event)
            return
        live.queue.append(event)
        if not live.draining:
            live.draining = True
            self._spawn(self._drain, live)

    async def _load_and_enqueue(self, event: AnyBrokerEvent) -> None:
        self.applying += 1
        try:
            execution = execution_of_client_order(event.client_order_id)
            order = await self._store.load_execution(execution) if execution else None
            if order is None:
                log.error(
                    "event for an order we do not know", extra={"client_order_id": event.client_order_id}
                )
                return
            if self._live.by_client_order(event.client_order_id) is None:
                live = LiveExecution(order)
                self._live.add(live)
                if order.status.is_final:
                    self._live.finished(live)
            self.enqueue(event)
        finally:
            self.applying -= 1

    async def _drain(self, live: LiveExecution) -> None:
        self.applying += 1
        try:
            while live.queue:
                events = list(live.queue)
                live.queue.clear()
                await self.apply(live, events)
        finally:
            live.draining = False
            self.applying -= 1

    async def apply(
        self,
        live: LiveExecution,
        events: Sequence[AnyBrokerEvent],
        response: OrderRoutingResponse | None = None,
        *,
        publish: bool = True,
    ) -> None:
        """Apply `events` in order, persist each transition (with its outbox row when `publish`;
        and `response`, if given, with the last), then publish. Serialised per execution."""
        async with live.lock:
            order = live.order
            if order.status is BrokerOrderStatus.REJECTED and any(
                isinstance(e, (OrderAccepted, OrderFilled)) for e in events
            ):
                # A broker took an order we had written off (it arrived after we declared it
                # absent): a zombie. It must not live: cancel it, loudly.
                log.error(
                    "a broker accepted an order declared absent; cancelling it",
                    extra={
                        "order_id": order.order_id,
                        "broker_id": order.broker_id,
                        "client_order_id": order.client_order_id,
                    },
                )
                self._on_zombie(live)
            changes = []
            for event in events:
                try:
                    transition = apply_event(order, event)
                except IllegalTransition as exc:
                    log.error("broker event refused by the order state machine", extra={"error": str(exc)})
                    continue
                if transition.changed:
                    order = transition.order
                    changes.append(transition)
            if not changes:
                if response is not None:
                    await self._store.save_response(order.order_id, response)
                return
            published: list[OutboxEvent] = []
            previous_sequence = live.order.sequence
            for i, transition in enumerate(changes):
                state = transition.order
                outbox = None
                if publish and state.sequence != previous_sequence:
                    outbox = outbox_event(state, transition.fill)
                    published.append(outbox)
                previous_sequence = state.sequence
                last = i == len(changes) - 1
                await self._store.save_transition(
                    state,
                    transition.fill,
                    outbox,
                    (state.order_id, response) if last and response is not None else None,
                )
                if transition.fill is not None:
                    self._brokers[state.broker_id].running_volume += (
                        transition.fill.quantity * transition.fill.price
                    )
            was_final = live.order.status.is_final
            live.order = order
            live.changed.set()
            live.changed = trio.Event()
            late_fill = was_final and any(t.fill is not None for t in changes)
            if late_fill and self._on_late_fill is not None:
                try:
                    self._on_late_fill(live)
                except Exception:
                    log.exception("late-fill hook failed", extra={"execution_id": order.id})
            if order.status.is_final:
                self._live.finished(live)
                if not was_final and self._on_finished is not None:
                    try:  # statistics and reports: never allowed to stop the publication below
                        self._on_finished(live)
                    except Exception:
                        log.exception("after-execution hook failed", extra={"execution_id": order.id})
        for update in published:
            try:
                self._publish.send_nowait(update)
            except trio.WouldBlock:  # the outbox sweep publishes it
                log.warning("publish queue full; left to the outbox sweep", extra={"msg_id": update.msg_id})
