"""Operating the kill switches: engage or release one (NATS admin, REST, CLI all end here), keep
every daemon's board in step, and cancel an account's open orders when asked.

Contract of `KillSwitchAdmin.set`:
- The switch takes effect on this daemon at once (before anything is written): a halt must not
  wait for a database. It is then stored (`kill_switches`, with an audit row) and announced on
  NATS (`KILL_SWITCH_CHANGED`) so every other daemon applies it within a message's time; each
  daemon also reloads the stored switches every `reload_s` (one that missed the message).
- If it cannot be stored (database unavailable) the answer says `persisted: false`; the daemon
  keeps retrying to store it at each reload, and until then a reload never undoes it.
- `cancelOpenOrders` (engaging only): every order of the scope still open at a broker (read from
  the database) gets a CancelOrder; the answer lists the ones requested and the ones refused.
- Newer wins: a change carries its time; an older one (a late message) is ignored everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import msgspec
import trio

from api.contracts import CancelOrderRequest, CancelOrderResponse, FieldError, Wire, WireOut
from api.enums import CancellationStatus
from api.errors import ServiceError
from api.validation import decode_request
from nursery.pretrade.killswitch import KillSwitch, KillSwitchBoard, Scope
from sql import pretrade as rows

__all__ = [
    "KILL_SWITCH_CHANGED",
    "LIST_KILL_SWITCHES",
    "SET_KILL_SWITCH",
    "CancelFailure",
    "KillSwitchAdmin",
    "KillSwitchList",
    "KillSwitchResult",
    "SetKillSwitchRequest",
    "decode_set_kill_switch",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: NATS admin requests (operators, not the OMS contract).
SET_KILL_SWITCH = "trading.broker.v1.admin.SetKillSwitch"
LIST_KILL_SWITCHES = "trading.broker.v1.admin.ListKillSwitches"
#: Core NATS subject on which a daemon announces a change to the others (not a request).
KILL_SWITCH_CHANGED = "trading.broker.v1.admin.events.KillSwitchChanged"
#: Bound on each database call of the admin (connect + statement are bounded inside too).
DATABASE_BUDGET_S = 15.0


class SetKillSwitchRequest(Wire, frozen=True):
    scope: Scope
    engaged: bool
    account_id: str | None = None
    reason: str | None = None
    cancel_open_orders: bool = False
    changed_by: str | None = None


class CancelFailure(WireOut, frozen=True):
    order_id: str
    broker_id: str
    reason: str


class KillSwitchResult(WireOut, frozen=True):
    switch: KillSwitch
    persisted: bool
    cancel_requested: tuple[str, ...] = ()
    cancel_failed: tuple[CancelFailure, ...] = ()


class KillSwitchList(WireOut, frozen=True):
    engaged: tuple[KillSwitch, ...]
    #: Changes this daemon could not store yet (retried at each reload).
    unpersisted: tuple[KillSwitch, ...] = ()


def _rules(request: SetKillSwitchRequest) -> list[FieldError]:
    errors: list[FieldError] = []
    if request.scope is Scope.ACCOUNT and not request.account_id:
        errors.append(FieldError("accountId", "is required when scope is ACCOUNT"))
    if request.scope is Scope.GLOBAL and request.account_id is not None:
        errors.append(FieldError("accountId", "must be absent when scope is GLOBAL"))
    if request.cancel_open_orders and not request.engaged:
        errors.append(FieldError("cancelOpenOrders", "only when engaging the switch"))
    if request.changed_by is not None and len(request.changed_by) > 100:
        errors.append(FieldError("changedBy", "must be at most 100 characters"))
    return errors


def decode_set_kill_switch(body: bytes | str) -> SetKillSwitchRequest:
    """Decode and check a request; `InvalidRequest` naming every bad field."""
    return decode_request(body, SetKillSwitchRequest, rules=(_rules,))


def _row(switch: KillSwitch) -> rows.KillSwitchRow:
    return (
        switch.scope.value,
        switch.account_id,
        switch.engaged,
        switch.reason,
        switch.changed_by,
        switch.changed_at,
    )


def _switch(row: rows.KillSwitchRow) -> KillSwitch:
    scope, account_id, engaged, reason, changed_by, changed_at = row
    return KillSwitch(Scope(scope), engaged, changed_at, account_id, reason, changed_by)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class KillSwitchAdmin:
    def __init__(
        self,
        board: KillSwitchBoard,
        database_url: str,
        *,
        cancel: Callable[[CancelOrderRequest], Awaitable[CancelOrderResponse]],
        announce: Callable[[str, bytes], Awaitable[None]] | None = None,
        reload_s: float = 30.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.board = board
        self._database_url = database_url
        self._cancel = cancel
        self._announce = announce
        self._reload_s = reload_s
        self._clock = clock
        #: Changes made here that are not stored yet, by switch.
        self._unpersisted: dict[tuple[Scope, str], KillSwitch] = {}

    def __repr__(self) -> str:
        return f"<KillSwitchAdmin {self.board!r} unpersisted={len(self._unpersisted)}>"

    async def _db(self, fn: Callable[..., T], *args: object) -> T:
        with trio.fail_after(DATABASE_BUDGET_S):
            return await trio.to_thread.run_sync(fn, self._database_url, *args, abandon_on_cancel=True)

    async def load(self) -> None:
        """The stored switches (start-up: before the first order is taken). Raises if the
        database cannot be read: the daemon must not start blind to an engaged switch."""
        stored = await self._db(rows.load_kill_switches)
        self.board.replace_all(_switch(r) for r in stored)
        engaged = self.board.engaged()
        if engaged:
            log.warning("kill switches engaged", extra={"switches": [repr(s) for s in engaged]})

    async def run(
        self,
        changes: trio.MemoryReceiveChannel[tuple[str, bytes]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Apply the changes other daemons announce (`changes`: the messages of
        `KILL_SWITCH_CHANGED`) and reload the stored switches every `reload_s`, storing this
        daemon's unpersisted changes first."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reload_every)
            task_status.started()
            async for _subject, payload in changes:
                try:
                    switch = msgspec.json.decode(payload, type=KillSwitch)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    log.warning("unreadable kill switch announcement", extra={"error": str(exc)})
                    continue
                if self.board.apply(switch):
                    log.warning("kill switch changed elsewhere", extra={"switch": repr(switch)})
            nursery.cancel_scope.cancel()

    async def _reload_every(self) -> None:
        while True:
            await trio.sleep(self._reload_s)
            try:
                await self.reload()
            except Exception as exc:  # the database is down (psycopg, a timeout): next time
                log.warning("kill switches not reloaded", extra={"error": repr(exc)})

    async def reload(self) -> None:
        for key, switch in list(self._unpersisted.items()):
            await self._db(rows.save_kill_switch, _row(switch))
            if self._unpersisted.get(key) is switch:
                del self._unpersisted[key]
            log.warning("kill switch stored after a database outage", extra={"switch": repr(switch)})
        stored = await self._db(rows.load_kill_switches)
        self.board.replace_all(_switch(r) for r in stored)

    def listed(self) -> KillSwitchList:
        return KillSwitchList(tuple(self.board.engaged()), tuple(self._unpersisted.values()))

    async def set(self, request: SetKillSwitchRequest) -> KillSwitchResult:
        """Engage or release a switch (see the module's contract)."""
        switch = KillSwitch(
            scope=request.scope,
            engaged=request.engaged,
            changed_at=self._clock(),
            account_id=request.account_id or "",
            reason=request.reason,
            changed_by=request.changed_by,
        )
        self.board.apply(switch)
        log.warning(
            "kill switch engaged" if switch.engaged else "kill switch released",
            extra={"scope": switch.scope.value, "account_id": switch.account_id, "reason": switch.reason},
        )
        persisted = True
        try:
            await self._db(rows.save_kill_switch, _row(switch))
            self._unpersisted.pop(switch.key, None)
        except Exception as exc:  # the switch holds here; stored at a later reload
            persisted = False
            self._unpersisted[switch.key] = switch
            log.error("kill switch not stored: retried at each reload", extra={"error": repr(exc)})
        if self._announce is not None:
            try:
                with trio.fail_after(5.0):
                    await self._announce(KILL_SWITCH_CHANGED, msgspec.json.encode(switch))
            except Exception as exc:  # the others see it at their next reload
                log.error("kill switch change not announced", extra={"error": repr(exc)})
        requested: list[str] = []
        failed: list[CancelFailure] = []
        if request.cancel_open_orders:
            await self._cancel_open(switch, requested, failed)
        return KillSwitchResult(switch, persisted, tuple(requested), tuple(failed))

    async def _cancel_open(
        self, switch: KillSwitch, requested: list[str], failed: list[CancelFailure]
    ) -> None:
        account = switch.account_id if switch.scope is Scope.ACCOUNT else None
        try:
            orders = await self._db(rows.open_orders, account)
        except Exception as exc:
            failed.append(CancelFailure("*", "*", f"open orders could not be read: {exc!r}"))
            return
        reason = f"kill switch: {switch.reason}" if switch.reason else "kill switch"
        for order_id, broker_id in orders:
            try:
                with trio.fail_after(DATABASE_BUDGET_S):
                    answer = await self._cancel(CancelOrderRequest(order_id, broker_id, reason=reason[:500]))
            except (ServiceError, trio.TooSlowError) as exc:
                failed.append(CancelFailure(order_id, broker_id, str(exc) or repr(exc)))
                continue
            if answer.status is CancellationStatus.REJECTED:
                failed.append(CancelFailure(order_id, broker_id, answer.rejection_reason or "refused"))
            else:
                requested.append(order_id)
        log.warning(
            "kill switch: open orders cancelled",
            extra={"account_id": account, "requested": len(requested), "failed": len(failed)},
        )
