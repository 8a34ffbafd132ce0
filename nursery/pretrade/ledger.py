"""Per-account state of the account-wide safeguards, in memory: the gross notional routed on
the current UTC day and the times of the last orders (the rate window).

Contract: `admit` either refuses (nothing recorded) or records the order and returns a
`Reservation`; `release` takes it back (the order was not routed after all: a repeat of an
order routed before, or no broker was eligible), so neither a repeat nor an unrouted order
counts. The day's totals are seeded from the database at start (`seed`): what this daemon and
the others sharing the database routed earlier that day. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from nursery.pretrade.checks import Refusal, plain
from nursery.pretrade.limits import Limits

__all__ = ["AccountLedger", "Reservation"]

RATE_WINDOW_S = 1.0
_ZERO = Decimal(0)


@dataclass(slots=True)
class _Account:
    day: date
    notional: Decimal
    orders_today: int
    recent: deque[float]


@dataclass(frozen=True, slots=True)
class Reservation:
    account_id: str
    day: date
    notional: Decimal
    at: float


class AccountLedger:
    def __init__(self) -> None:
        self._accounts: dict[str, _Account] = {}

    def __repr__(self) -> str:
        return f"<AccountLedger accounts={len(self._accounts)}>"

    def seed(self, day: date, totals: Mapping[str, tuple[Decimal, int]]) -> None:
        """The day's gross notional and order count per account, as stored (start-up)."""
        for account_id, (notional, orders) in totals.items():
            self._accounts[account_id] = _Account(day, notional, orders, deque())

    def _account(self, account_id: str, day: date) -> _Account:
        account = self._accounts.get(account_id)
        if account is None:
            account = self._accounts[account_id] = _Account(day, _ZERO, 0, deque())
        elif account.day != day:  # a new UTC day: the daily total starts again
            account.day, account.notional, account.orders_today = day, _ZERO, 0
        return account

    def admit(
        self, account_id: str, notional: Decimal | None, limits: Limits, day: date, now: float
    ) -> Reservation | Refusal:
        """Record the order (rate and daily notional) or refuse it, recording nothing."""
        account = self._account(account_id, day)
        recent = account.recent
        while recent and now - recent[0] >= RATE_WINDOW_S:
            recent.popleft()
        rate = limits.max_orders_per_second
        if rate and len(recent) >= rate:
            return Refusal(
                "max_order_rate",
                f"account {account_id} sent {len(recent) + 1} orders within one second; the limit is {rate}",
                str(rate),
                str(len(recent) + 1),
            )
        amount = notional or _ZERO
        cap = limits.max_daily_notional
        if cap and account.notional + amount > cap:
            return Refusal(
                "max_daily_notional",
                f"account {account_id} would reach a gross notional of {plain(account.notional + amount)} "
                f"today (UTC); the limit is {plain(cap)}",
                plain(cap),
                plain(account.notional + amount),
            )
        recent.append(now)
        account.notional += amount
        account.orders_today += 1
        return Reservation(account_id, day, amount, now)

    def release(self, reservation: Reservation) -> None:
        account = self._accounts.get(reservation.account_id)
        if account is None or account.day != reservation.day:
            return
        account.notional -= reservation.notional
        account.orders_today -= 1
        try:
            account.recent.remove(reservation.at)
        except ValueError:
            pass  # already out of the window

    def today(self, account_id: str, day: date) -> tuple[Decimal, int]:
        """(gross notional, orders) of `account_id` on `day`."""
        account = self._accounts.get(account_id)
        if account is None or account.day != day:
            return _ZERO, 0
        return account.notional, account.orders_today
