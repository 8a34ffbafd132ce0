"""The kill switches, in memory: one global, one per account. Engaged, a switch refuses every
new order in its scope (safeguard `kill_switch`); orders already routed are left alone unless
the operator asks for them to be cancelled (`nursery.pretrade.admin`).

`KillSwitch` is also the wire form (NATS admin, REST, the broadcast between daemons) and the
row of `kill_switches` (migration 0012). Persistence and propagation are the admin's; this
module is pure state: the order path reads it in two dict lookups.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

import msgspec

from nursery.pretrade.checks import Refusal

__all__ = ["KillSwitch", "KillSwitchBoard", "Scope"]


class Scope(StrEnum):
    GLOBAL = "GLOBAL"
    ACCOUNT = "ACCOUNT"


class KillSwitch(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    scope: Scope
    engaged: bool
    changed_at: datetime
    account_id: str = ""
    reason: str | None = None
    changed_by: str | None = None

    @property
    def key(self) -> tuple[Scope, str]:
        return (self.scope, self.account_id)

    def __repr__(self) -> str:
        where = "global" if self.scope is Scope.GLOBAL else f"account {self.account_id}"
        return f"<KillSwitch {where} {'ENGAGED' if self.engaged else 'released'}>"


class KillSwitchBoard:
    """Every switch known (released ones too: their time decides against a stale message)."""

    def __init__(self) -> None:
        self._global: KillSwitch | None = None
        self._accounts: dict[str, KillSwitch] = {}

    def __repr__(self) -> str:
        return f"<KillSwitchBoard {self.gauge()}>"

    def apply(self, switch: KillSwitch) -> bool:
        """Take a switch's state unless a newer one is already known; whether the switch is now
        in another position (engaged / released) than before."""
        current = self._global if switch.scope is Scope.GLOBAL else self._accounts.get(switch.account_id)
        if current is not None and current.changed_at > switch.changed_at:
            return False
        if switch.scope is Scope.GLOBAL:
            self._global = switch
        else:
            self._accounts[switch.account_id] = switch
        was_engaged = current is not None and current.engaged
        return was_engaged != switch.engaged

    def replace_all(self, switches: Iterable[KillSwitch]) -> None:
        """The stored state (start-up, periodic reload); newer states known here are kept."""
        for switch in switches:
            self.apply(switch)

    def get(self, scope: Scope, account_id: str = "") -> KillSwitch | None:
        """The last known state of that switch, or None (never set: released)."""
        return self._global if scope is Scope.GLOBAL else self._accounts.get(account_id)

    def engaged(self) -> list[KillSwitch]:
        switches = [self._global] if self._global is not None else []
        switches += sorted(self._accounts.values(), key=lambda s: s.account_id)
        return [s for s in switches if s.engaged]

    def refusal(self, account_id: str) -> Refusal | None:
        """The order path: whether an order of `account_id` is stopped, and by which switch."""
        switch = self._global
        if switch is None or not switch.engaged:
            switch = self._accounts.get(account_id)
            if switch is None or not switch.engaged:
                return None
        where = "all accounts (global)" if switch.scope is Scope.GLOBAL else f"account {account_id}"
        why = f": {switch.reason}" if switch.reason else ""
        return Refusal(
            "kill_switch",
            f"the kill switch is engaged for {where} since {switch.changed_at.isoformat()}{why}",
        )

    def gauge(self) -> dict[str, int]:
        """`bis_kill_switch_engaged{scope}`: 1/0 for the global switch, the number of accounts
        whose switch is engaged."""
        return {
            "global": int(self._global is not None and self._global.engaged),
            "account": sum(1 for s in self._accounts.values() if s.engaged),
        }
