"""Whom the event applier tells what (`nursery.applier.EventApplier`), in place of callbacks:
each a small protocol, implemented elsewhere in the nursery and wired by the engine.

Contract: the applier calls them inside `apply`, after a change is applied, or spawns them as
tasks of their own (`Spawn`); an exception from one is logged by the applier and never stops a
change's publication.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from nursery.live import LiveExecution

__all__ = ["ApplierHooks", "DroppedEventsRecovery", "ExecutionObserver", "Spawn", "ZombieCanceller"]

#: Starts a task in the engine's nursery: `spawn(async_fn, *args)`.
Spawn = Callable[..., None]


class ZombieCanceller(Protocol):
    """Cancels an order a broker took after we declared it absent (`nursery.cancels.Cancels`).
    The applier runs it as a task of its own."""

    async def cancel_zombie(self, live: LiveExecution) -> None: ...


class ExecutionObserver(Protocol):
    """Told what happened to executions (`nursery.post_trade.PostTrade`: routing statistics,
    reports). Called inside `apply`, after the change is applied: quick, never blocking; an
    exception is logged and does not stop the change's publication."""

    def execution_finished(self, live: LiveExecution) -> None:
        """Once, when `live` reaches a final status."""

    def late_fill(self, live: LiveExecution) -> None:
        """When a fill reaches `live` after it had ended (its report is stale)."""


class DroppedEventsRecovery(Protocol):
    """Asks every broker again for what happened since `since` (`ExecutionEngine`, through
    `nursery.resync`): called once the database is back after broker events were dropped,
    with the time of the first drop. Starts the work and returns."""

    def recover_all_since(self, since: datetime) -> None: ...


@dataclass(frozen=True, slots=True)
class ApplierHooks:
    """Whom the applier tells what, in place of callbacks: each a small protocol above."""

    zombies: ZombieCanceller
    after_execution: ExecutionObserver
    dropped_events: DroppedEventsRecovery
