"""Fills of one IB adapter: each execution booked once, joined with its commission (pure).

IB reports an execution (`execDetails`) and, separately and a little later, its
`commissionReport` (same `execId`). The ledger holds a new execution until its commission
arrives (then the fill is booked with IB's commission as its fee) or until its deadline
passes (then the adapter books it with the fee computed from the configured commission and
logs it; a report arriving after that is not booked again).

Each fill id (`translate.fill_id`: the execId without its correction suffix) is admitted
once for the adapter's whole life, whichever path brings it: the live stream, a recovery
after a reconnect (`reqExecutions`), or a correction (`.02`) of an execution already booked.
A correction that changes quantity or price is reported to the caller (it is logged: our
fills are immutable once booked; IB's corrected figures are then in its statements).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

import msgspec

from adapters.ib.translate import fill_id
from adapters.ib.wire import IbCommission, IbExecution
from api.events import OrderFilled

#: How many fill ids and early commissions the ledger remembers (oldest forgotten first).
MEMORY = 100_000


class Verdict(StrEnum):
    NEW = "NEW"  # held for its commission
    REPEAT = "REPEAT"  # the same execution again (stream and recovery overlap)
    CORRECTION = "CORRECTION"  # a corrected execution whose figures differ from the booked one


class _Pending(msgspec.Struct, frozen=True):
    execution: IbExecution
    due: float


class FillLedger:
    def __init__(self, memory: int = MEMORY) -> None:
        self._memory = memory
        self._seen: OrderedDict[str, IbExecution] = OrderedDict()  # fill id -> first execution
        self._booked: set[str] = set()
        self._booked_order: deque[str] = deque()
        self._pending: dict[str, _Pending] = {}
        self._early: OrderedDict[str, IbCommission] = OrderedDict()
        #: Time of the newest fill booked: where the next recovery starts.
        self.newest_fill: datetime | None = None
        #: Notional of every fill booked (the running volume of commission tiers).
        self.volume = Decimal(0)

    def __repr__(self) -> str:
        return (
            f"<FillLedger booked={len(self._booked)} waiting={len(self._pending)} newest={self.newest_fill}>"
        )

    # --- executions and commissions --------------------------------------------------------

    def execution(self, execution: IbExecution, due: float) -> Verdict:
        """Record a live execution; NEW ones wait for their commission until `due`."""
        key = fill_id(execution.exec_id)
        first = self._seen.get(key)
        if first is not None:
            if (first.shares, first.price) != (execution.shares, execution.price):
                return Verdict.CORRECTION
            return Verdict.REPEAT
        self._remember(key, execution)
        self._pending[key] = _Pending(execution, due)
        return Verdict.NEW

    def commission(self, report: IbCommission) -> tuple[IbExecution, IbCommission] | None:
        """The waiting execution this report completes, if any."""
        key = fill_id(report.exec_id)
        pending = self._pending.pop(key, None)
        if pending is None:
            if key not in self._seen:
                self._early[key] = report  # before its execution: kept for it
                if len(self._early) > self._memory:
                    self._early.popitem(last=False)
            return None
        return pending.execution, report

    def early_commission(self, exec_id: str) -> tuple[IbExecution, IbCommission] | None:
        """A NEW execution whose commission had already arrived, ready to book."""
        key = fill_id(exec_id)
        report = self._early.pop(key, None)
        pending = self._pending.pop(key, None) if report is not None else None
        if report is None or pending is None:
            return None
        return pending.execution, report

    def due(self, now: float) -> list[IbExecution]:
        """Executions whose commission did not come in time (booked with a computed fee)."""
        late = [key for key, pending in self._pending.items() if pending.due <= now]
        return [self._pending.pop(key).execution for key in late]

    def next_due(self) -> float | None:
        return min((p.due for p in self._pending.values()), default=None)

    def waiting(self, exec_id: str) -> bool:
        return fill_id(exec_id) in self._pending

    # --- booking ---------------------------------------------------------------------------

    def book(self, fill: OrderFilled, execution: IbExecution | None = None) -> bool:
        """True the first time a fill id is booked (emit it), False for a repeat."""
        if fill.fill_id in self._booked:
            return False
        if execution is not None and fill.fill_id not in self._seen:
            self._remember(fill.fill_id, execution)
        self._pending.pop(fill.fill_id, None)
        self._booked.add(fill.fill_id)
        self._booked_order.append(fill.fill_id)
        if len(self._booked_order) > self._memory:
            self._booked.discard(self._booked_order.popleft())
        if self.newest_fill is None or fill.at > self.newest_fill:
            self.newest_fill = fill.at
        self.volume += fill.quantity * fill.price
        return True

    def is_booked(self, exec_id: str) -> bool:
        return fill_id(exec_id) in self._booked

    def _remember(self, key: str, execution: IbExecution) -> None:
        self._seen[key] = execution
        if len(self._seen) > self._memory:
            self._seen.popitem(last=False)
