"""Applying broker events to live executions: the state machine, then persistence, then
publication, in that order, serialised per execution.

Events for one execution are queued on it and applied under its lock, so the persisted
sequence of states is exactly the order in which they were applied. Every change of one `apply`
(its transitions, their outbox rows, the routing response if any) is committed in one
submission before anything is handed to the publisher.

Rounds. Broker events from the stream and deferred writes are not given a task each: the
executions they concern are marked ready, and one task runs rounds while any are. A round takes
every ready execution whose lock is free (without waiting: `nursery.quiet.QuietLock`), applies
their queued events in memory, writes all of their changes in ONE submission, then publishes
them and releases the locks; what arrives meanwhile waits for the next round, so under load a
round carries a whole burst and costs one commit and one wake-up instead of a few per order. An
execution whose lock someone else holds (a reply being made, a cancel) is handed to a task of
its own that waits for the lock (`_apply_alone`); an execution in a round is applied by nobody
else, so its order is kept. A round's submission refused for a reason other than the database
(a row that is not there) is retried one execution at a time, so one cannot fail the others.

Deferred writes (`apply(..., durable=False)`): the broker's acknowledgement of a new order and
the routing answer are applied in memory and the caller goes on at once (it replies to the OMS);
their write joins the next group commit, and their update is published after it. This takes
the second commit off the critical path of RouteOrder. It is safe because what must be durable
before the broker is called — the claim, the attempt and its client order id — already is: if
the daemon dies before the deferred write, the claim is found unanswered and its attempt
PENDING, and the daemon that takes it over (`nursery.orphans`) asks the broker by client order
id and records the same outcome (ACCEPTED with the broker's order id); nothing is ever sent
twice. That needs a broker that outlives the daemon: one that dies with it (a simulated venue,
`BrokerAdapter.outlives_daemon` False) would say "never received" and the takeover would record
REJECTED for an order the OMS was told ACCEPTED, so its acks are written before the reply.
A repeat of the order meanwhile gets the same answer, held in memory until it is written
(`nursery.router`), and `LiveExecution.unsaved_response` tells the sweeper it is being answered.
Later changes of the execution are written behind the deferred ones, in order: a durable
`apply` writes everything still unsaved first, in the same submission.

PostgreSQL outages: a change the database cannot take now is kept, in order, and written by
the flusher once it is back (`nursery.outage`); past `max_unsaved` kept changes, broker events
are dropped and asked from the brokers again afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import trio

from api.contracts import OrderRoutingResponse
from api.enums import BrokerOrderStatus
from api.events import AnyBrokerEvent, OrderAccepted, OrderFilled
from api.lifecycle import IllegalTransition, Transition, apply_event
from api.orders import BrokerOrder, OrderFill
from nursery import milestones
from nursery.brokers import BrokerHandle
from nursery.hooks import ApplierHooks, Spawn
from nursery.identity import execution_of_client_order
from nursery.live import LiveBook, LiveExecution
from nursery.outage import OutageBacklog
from nursery.updates import outbox_event
from sql.records import OutboxEvent
from sql.store import Store
from sql.writer import DatabaseUnavailable, WriteTimeout

log = logging.getLogger(__name__)

Change = tuple[BrokerOrder, OrderFill | None, OutboxEvent | None]

#: Changes kept in memory while the database is unavailable, across all executions.
MAX_UNSAVED = 100_000


class EventApplier:
    def __init__(
        self,
        store: Store,
        live: LiveBook,
        brokers: Mapping[str, BrokerHandle],
        publish: trio.MemorySendChannel[OutboxEvent],
        spawn: Spawn,
        hooks: ApplierHooks,
        max_unsaved: int = MAX_UNSAVED,
    ) -> None:
        self._store = store
        self._live = live
        self._brokers = brokers
        self._publish = publish
        self._spawn = spawn
        self._hooks = hooks
        self._max_unsaved = max_unsaved
        #: Drain / load tasks applying broker events right now (shutdown waits for zero).
        self.applying = 0
        #: Changes applied in memory and not yet written (database unavailable).
        self.unsaved = 0
        self._outage = OutageBacklog(
            store, lambda live: self._save_unsaved(live, urgent=False), hooks.dropped_events, spawn
        )
        #: Executions with a deferred write pending (a task is about to write them).
        self._deferred: set[str] = set()
        #: Executions with queued events or a deferred write, for the next round.
        self._ready: dict[str, LiveExecution] = {}
        self._in_rounds = False

    def __repr__(self) -> str:
        return f"<EventApplier applying={self.applying} unsaved={self.unsaved} dropped={self.dropped}>"

    @property
    def dropped(self) -> int:
        """Broker events dropped because the unsaved buffer was full (recovered afterwards)."""
        return self._outage.dropped

    # --- intake ------------------------------------------------------------------------------

    def enqueue(self, event: AnyBrokerEvent) -> None:
        """Queue a broker event on its execution (loading it if it is not live here). Dropped,
        to be recovered from the broker later, while the unsaved buffer is full."""
        if self.unsaved >= self._max_unsaved:
            self._outage.drop(event, self.unsaved)
            return
        live = self._live.by_client_order(event.client_order_id)
        if live is None:
            self._spawn(self._load_and_enqueue, event)
            return
        live.queue.append(event)
        if not live.draining:  # else the task applying it alone takes this one too
            self._make_ready(live)

    async def _load_and_enqueue(self, event: AnyBrokerEvent) -> None:
        self.applying += 1
        try:
            execution = execution_of_client_order(event.client_order_id)
            try:
                order = await self._store.load_execution(execution) if execution else None
            except DatabaseUnavailable:
                self._outage.drop(event, self.unsaved)  # not readable here: asked again later
                return
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

    # --- rounds: broker events and deferred writes, many executions per commit -------------

    def _make_ready(self, live: LiveExecution) -> None:
        """`live` has events queued or a deferred write: the next round takes it."""
        self._ready[live.order.id] = live
        if not self._in_rounds:
            self._in_rounds = True
            self.applying += 1
            self._spawn(self._rounds)

    async def _rounds(self) -> None:
        """Run rounds while executions are ready; a round's write is the next one's wait, so
        a burst of events shares one commit (see "Rounds")."""
        try:
            while self._ready:
                ready, self._ready = self._ready, {}
                try:
                    await self._round(list(ready.values()))
                except Exception:  # a bug: loud, never the engine's end
                    log.exception("broker events could not be applied", extra={"executions": len(ready)})
        finally:
            self._in_rounds = False
            self.applying -= 1

    async def _round(self, ready: list[LiveExecution]) -> None:
        """Apply the queued events of every ready execution whose lock is free, write all of
        their changes in one submission, then publish and finish them, releasing their locks.
        An execution someone else holds (a reply being made, a cancel) is left to a task of
        its own that waits for its lock."""
        taken: list[LiveExecution] = []
        for live in ready:
            if live.draining:
                continue  # its own task has it
            if not live.lock.acquire_nowait():
                live.draining = True
                self.applying += 1
                self._spawn(self._apply_alone, live)
                continue
            taken.append(live)
        if not taken:
            return
        try:
            applied: list[tuple[LiveExecution, BrokerOrder, list[Transition]]] = []
            for live in taken:
                self._deferred.discard(live.order.id)
                events, live.queue = live.queue, []
                if not events:
                    continue
                outcome = self._transitions(live, events, None, publish=True)
                if outcome is not None:
                    order, changes, rows = outcome
                    self._keep(live, rows, None)
                    if changes:
                        applied.append((live, order, changes))
            await self._write_many([live for live in taken if not self._outage.holds(live.order.id)])
            for live, order, changes in applied:
                self._finish(live, order, changes)
        finally:
            for live in taken:
                live.lock.release()
                live.settle()

    async def _write_many(self, lives: list[LiveExecution]) -> None:
        """Every unsaved change (and answer) of `lives` in one submission, then publish; on an
        outage, leave them all to the flusher. A submission refused for another reason (a bug,
        a row that is not there) is retried one execution at a time, so one cannot hold back
        the others."""
        lives = [live for live in lives if live.unsaved or live.unsaved_response is not None]
        if not lives:
            return
        rows = [row for live in lives for row in live.unsaved]
        responses = [live.unsaved_response for live in lives if live.unsaved_response is not None]
        try:
            await self._store.save_many(rows, responses, urgent=False)
        except (DatabaseUnavailable, WriteTimeout) as exc:
            self._outage.keep(lives, exc)
            return
        except Exception:
            if len(lives) == 1:
                raise
            for live in lives:
                try:
                    await self._write_unsaved(live, urgent=False)
                except Exception:
                    log.exception(
                        "execution changes could not be written", extra={"execution_id": live.order.id}
                    )
            return
        for live in lives:
            self.unsaved -= len(live.unsaved) + (live.unsaved_response is not None)
            live.unsaved, live.unsaved_response = [], None
        self._hand_to_publisher(rows)

    async def _apply_alone(self, live: LiveExecution) -> None:
        """A ready execution whose lock someone else held: wait for it, then apply its queued
        events (and write what it has deferred) on their own."""
        try:
            while True:
                async with live.lock:
                    self._deferred.discard(live.order.id)
                    events, live.queue = live.queue, []
                    try:
                        if events:
                            await self._apply_locked(
                                live, events, None, publish=True, durable=True, urgent=False
                            )
                        elif not self._outage.holds(live.order.id):
                            await self._write_unsaved(live, urgent=False)
                    except Exception:  # a bug or a row that is not there: loud, never the engine's end
                        log.exception(
                            "broker events could not be applied",
                            extra={"execution_id": live.order.id, "events": len(events)},
                        )
                if not live.queue:
                    break
        finally:
            live.draining = False
            self.applying -= 1
            if live.queue or live.order.id in self._deferred:  # came after its last turn
                self._make_ready(live)
            live.settle()

    # --- applying ------------------------------------------------------------------------------

    async def apply(
        self,
        live: LiveExecution,
        events: Sequence[AnyBrokerEvent],
        response: OrderRoutingResponse | None = None,
        *,
        publish: bool = True,
        durable: bool = True,
        urgent: bool = True,
    ) -> None:
        """Apply `events` in order; persist every change (with its outbox row when `publish`)
        and `response`, if given, in one submission; then publish. Serialised per execution.
        Never fails because the database is unavailable: the changes then wait, in order, for
        the flusher (see the module docstring). `durable=False`: return before the write,
        which a task does next (see "Deferred writes"). `urgent=False`: no reply waits on the
        write, which may then share the next commit (`sql.writer` "Lingering"); broker events
        from the stream, deferred writes and the flusher's are never urgent."""
        try:
            async with live.lock:
                await self._apply_locked(
                    live, events, response, publish=publish, durable=durable, urgent=urgent
                )
        finally:
            live.settle()  # an idle execution keeps no lock (100,000 resting orders)

    async def _apply_locked(
        self,
        live: LiveExecution,
        events: Sequence[AnyBrokerEvent],
        response: OrderRoutingResponse | None,
        *,
        publish: bool,
        durable: bool,
        urgent: bool,
    ) -> None:
        outcome = self._transitions(live, events, response, publish=publish)
        if outcome is None:
            return
        order, changes, rows = outcome
        answer = (order.order_id, response) if response is not None else None
        if durable:
            await self._persist(live, rows, answer, urgent)
        else:
            self._defer(live, rows, answer)
        if changes:
            self._finish(live, order, changes)

    def _transitions(
        self,
        live: LiveExecution,
        events: Sequence[AnyBrokerEvent],
        response: OrderRoutingResponse | None,
        *,
        publish: bool,
    ) -> tuple[BrokerOrder, list[Transition], list[Change]] | None:
        """The state machine over `events`, from `live.order` (not changed yet): the final
        state, the transitions that changed something and their rows (state, fill, outbox
        event when `publish`); None when nothing changed and there is no `response`."""
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
            self._spawn(self._hooks.zombies.cancel_zombie, live)
        changes: list[Transition] = []
        for event in events:
            try:
                transition = apply_event(order, event)
            except IllegalTransition as exc:
                log.error("broker event refused by the order state machine", extra={"error": str(exc)})
                continue
            if transition.changed:
                order = transition.order
                changes.append(transition)
        if not changes and response is None:
            return None
        rows: list[Change] = []
        previous_sequence = live.order.sequence
        for transition in changes:
            state = transition.order
            outbox = None
            if publish and state.sequence != previous_sequence:
                outbox = outbox_event(state, transition.fill)
            previous_sequence = state.sequence
            rows.append((state, transition.fill, outbox))
            if transition.fill is not None:
                self._brokers[state.broker_id].running_volume += (
                    transition.fill.quantity * transition.fill.price
                )
        return order, changes, rows

    def _finish(self, live: LiveExecution, order: BrokerOrder, changes: list[Transition]) -> None:
        """`live` is now `order` (its changes written, or kept for the flusher): wake its
        waiters, tell the observers."""
        was_final = live.order.status.is_final
        live.order = order
        live.announce_change()
        for transition in changes:
            if transition.fill is not None:
                milestones.fill(transition.order, transition.fill)
        late_fill = was_final and any(t.fill is not None for t in changes)
        if late_fill:
            try:
                self._hooks.after_execution.late_fill(live)
            except Exception:
                log.exception("late-fill hook failed", extra={"execution_id": order.id})
        if order.status.is_final:
            self._live.finished(live)
            if not was_final:
                milestones.final(order)
                try:  # statistics and reports: never allowed to stop the publication
                    self._hooks.after_execution.execution_finished(live)
                except Exception:
                    log.exception("after-execution hook failed", extra={"execution_id": order.id})

    async def _persist(
        self,
        live: LiveExecution,
        rows: list[Change],
        response: tuple[str, OrderRoutingResponse] | None,
        urgent: bool,
    ) -> None:
        """Write these changes (and `response`) in one submission, then publish; on an outage,
        or behind changes of this execution still unsaved, keep them for the flusher, in
        order. Called under `live.lock`."""
        self._keep(live, rows, response)
        if not self._outage.holds(live.order.id):  # else behind an outage's backlog, for the flusher
            await self._write_unsaved(live, urgent)

    def _keep(
        self, live: LiveExecution, rows: list[Change], response: tuple[str, OrderRoutingResponse] | None
    ) -> None:
        """Queue changes on the execution, behind those still unsaved."""
        live.unsaved.extend(rows)
        self.unsaved += len(rows)
        if live.unsaved_response is None and response is not None:  # the first answer wins
            live.unsaved_response = response
            self.unsaved += 1

    async def _write_unsaved(self, live: LiveExecution, urgent: bool) -> None:
        """Write every unsaved change of `live` (and its answer) in one submission, then
        publish; if the database cannot take them, leave them to the flusher. Under `live.lock`."""
        try:
            await self._save_unsaved(live, urgent)
        except (DatabaseUnavailable, WriteTimeout) as exc:
            self._outage.keep([live], exc)

    async def _save_unsaved(self, live: LiveExecution, urgent: bool) -> None:
        """Write `live`'s unsaved changes and answer in one submission, forget them, publish
        their updates. Raises what the store raises (they stay unsaved). Under `live.lock`.
        `urgent`: a reply waits on this write (`sql.writer` "Lingering")."""
        rows, response = live.unsaved, live.unsaved_response
        if not rows and response is None:
            return
        await self._store.save_changes(rows, response, urgent=urgent)
        live.unsaved, live.unsaved_response = [], None
        self.unsaved -= len(rows) + (response is not None)
        self._hand_to_publisher(rows)

    def _defer(
        self, live: LiveExecution, rows: list[Change], response: tuple[str, OrderRoutingResponse] | None
    ) -> None:
        self._keep(live, rows, response)
        execution_id = live.order.id
        if not self._outage.holds(execution_id) and execution_id not in self._deferred:
            self._deferred.add(execution_id)
            if not live.draining:  # else its own task writes it
                self._make_ready(live)

    @property
    def pending_writes(self) -> int:
        """Executions whose deferred write has not run yet (shutdown waits for zero)."""
        return len(self._deferred)

    def _hand_to_publisher(self, rows: Sequence[Change]) -> None:
        for _, _, update in rows:
            if update is None:
                continue
            try:
                self._publish.send_nowait(update)
            except trio.WouldBlock:  # the outbox sweep publishes it
                log.warning("publish queue full; left to the outbox sweep", extra={"msg_id": update.msg_id})
