"""Learning what became of PENDING attempts: background reconciliation and adoption.

An attempt is PENDING while nobody knows whether its broker holds the order (a timeout, a
disconnect, a daemon that stopped while routing it). `PendingResolver` asks the broker by the
attempt's client order id (`nursery.reconcile.find_order`) and records the answer through the
applier: ACCEPTED when the broker holds the order, REJECTED when it never will. Contract:

- Nothing is ever sent to a broker from here: only lookups.
- `resolve_in_background(live, reason)` keeps asking until the broker answers, one task per
  execution (a second call for an execution being resolved returns at once); there is no
  failover from here: the requester already has its PENDING answer, updates tell the rest.
- `adopt(order_id)` answers an order nobody is answering (`nursery.orphans`): one
  reconcile-budget's try, then PENDING and the background resolver, as an unknown outcome
  while routing is. Raises `DatabaseUnavailable` (the next sweep tries again).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from datetime import datetime

import trio

from api.enums import BrokerOrderStatus
from api.events import OrderAccepted, OrderRejected
from nursery.answers import adopted_answer
from nursery.applier import EventApplier
from nursery.brokers import BrokerHandle
from nursery.hooks import Spawn
from nursery.live import LiveBook, LiveExecution
from nursery.reconcile import Finding, Resolution, find_order
from sql.store import Store

__all__ = ["PendingResolver", "broker_order_id"]

log = logging.getLogger(__name__)


def _left_pending(live: LiveExecution) -> bool:
    """The broker's stream already said something about the order (so the broker has it)."""
    return live.order.status is not BrokerOrderStatus.PENDING


def broker_order_id(live: LiveExecution, finding: Finding) -> str:
    """The broker's id of the order `finding` found (else the one `live` already holds)."""
    if finding.snapshot is not None:
        return finding.snapshot.broker_order_id
    return live.order.broker_order_id or ""


class PendingResolver:
    def __init__(
        self,
        store: Store,
        live: LiveBook,
        brokers: Mapping[str, BrokerHandle],
        applier: EventApplier,
        spawn: Spawn,
        *,
        attempt_deadline: Callable[[object], float],
        reconcile_budget: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._live = live
        self._brokers = brokers
        self._applier = applier
        self._spawn = spawn
        self._attempt_deadline = attempt_deadline
        #: How long one try waits to learn the fate of an unknown attempt.
        self._reconcile_budget = reconcile_budget
        self._clock = clock
        #: Execution ids whose PENDING attempt a background task is resolving.
        self._resolving: set[str] = set()

    def __repr__(self) -> str:
        return f"<PendingResolver resolving={len(self._resolving)}>"

    # --- adoption ---------------------------------------------------------------------------

    async def adopt(self, order_id: str) -> None:
        """Answer an order nobody is answering (`nursery.orphans`): the answer follows from its
        latest attempt, after asking the broker what became of it if it is PENDING (within the
        reconcile budget; still unknown: answered PENDING and resolved in the background, as an
        unknown outcome while routing is). Never sends anything. Raises `DatabaseUnavailable`
        (the next sweep tries again)."""
        claim = await self._store.get_claim(order_id)
        if claim is None or claim.routing_id is None:
            return
        attempts = await self._store.load_attempts(order_id)
        if not attempts:
            if claim.response is None:  # claimed without a broker is answered at claim time
                log.error("an unanswered claim has no attempt", extra={"order_id": order_id})
            return
        latest = attempts[-1]
        live = self._live.by_execution(latest.id)
        if live is None:
            live = LiveExecution(latest)
            self._live.add(live)
        if live.order.status is BrokerOrderStatus.PENDING:
            if latest.id in self._resolving:
                with trio.move_on_after(self._reconcile_budget):
                    while live.order.status is BrokerOrderStatus.PENDING:
                        await live.changed.wait()
            else:
                await self._resolve_adopted(live)
        if claim.response is None:
            answer = adopted_answer(live, claim.routing_id, attempts, self._clock())
            await self._applier.apply(live, [], answer)
        log.info(
            "adopted an order nobody was answering",
            extra={
                "order_id": order_id,
                "status": live.order.status.value,
                "answered": claim.response is None,
            },
        )

    async def _resolve_adopted(self, live: LiveExecution) -> None:
        """One reconcile-budget's try at learning whether the broker holds `live`'s order; the
        background resolver goes on if it cannot tell yet."""
        handle = self._reconciling_handle(live)
        if handle is None:
            return
        finding = await self.ask_broker(handle, live, self._reconcile_budget)
        reason = "routing was interrupted (the daemon routing it stopped)"
        if finding.resolution is Resolution.UNRESOLVED:
            self._spawn(self.resolve_in_background, live, reason)
            return
        await self._settle(live, finding, reason)

    # --- reconciliation ---------------------------------------------------------------------

    async def resolve_in_background(self, live: LiveExecution, reason: str) -> None:
        """Keep asking the broker until it says whether it holds the order (no further failover:
        the requester already has its PENDING answer, updates tell the rest)."""
        handle = self._reconciling_handle(live)
        if handle is None:
            return
        if live.order.id in self._resolving:
            return
        self._resolving.add(live.order.id)
        try:
            await self._resolve_until_known(handle, live, reason)
        finally:
            self._resolving.discard(live.order.id)

    async def _resolve_until_known(self, handle: BrokerHandle, live: LiveExecution, reason: str) -> None:
        while live.order.status is BrokerOrderStatus.PENDING:
            finding = await self.ask_broker(handle, live, max(self._reconcile_budget, handle.settle))
            await self._settle(live, finding, reason)

    def _reconciling_handle(self, live: LiveExecution) -> BrokerHandle | None:
        """The connection to ask about `live`'s PENDING attempt; None (logged) if its broker is
        no longer configured."""
        handle = self._brokers.get(live.order.broker_id)
        if handle is None:
            log.error(
                "cannot reconcile: broker no longer configured", extra={"broker_id": live.order.broker_id}
            )
        return handle

    async def ask_broker(self, handle: BrokerHandle, live: LiveExecution, within: float) -> Finding:
        """What the broker says of `live`'s attempt (by client order id), within `within` s."""
        return await find_order(
            handle,
            live.order.client_order_id,
            settle=handle.settle,
            until=trio.current_time() + within,
            query_timeout=self._attempt_deadline(live.order.urgency),
            known_to_exist=functools.partial(_left_pending, live),
        )

    async def _settle(self, live: LiveExecution, finding: Finding, reason: str) -> None:
        """Record what the broker said of a PENDING attempt: it holds it (accepted), or it
        never will (rejected). Unresolved: nothing."""
        if live.order.status is not BrokerOrderStatus.PENDING:
            return
        if finding.resolution is Resolution.EXISTS:
            adopted = OrderAccepted(live.order.client_order_id, self._clock(), broker_order_id(live, finding))
            await self._applier.apply(live, [adopted])
        elif finding.resolution in (Resolution.ABSENT, Resolution.REFUSED):
            outcome = (
                "the broker rejected it"
                if finding.resolution is Resolution.REFUSED
                else "the order never reached the broker"
            )
            why = f"{live.order.broker_id}: {reason}; {outcome}"
            await self._applier.apply(live, [OrderRejected(live.order.client_order_id, self._clock(), why)])
