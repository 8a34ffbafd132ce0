"""The pre-trade gate: every new order passes it before a broker is chosen.

`PreTradeGate.check` answers in a few microseconds with no I/O: the kill switches
(`nursery.pretrade.killswitch`), the per-order safeguards (`nursery.pretrade.checks`, against the
last quote of `market`) and the account-wide ones (`nursery.pretrade.ledger`: orders per second,
gross notional per UTC day). It returns a `Refusal` (nothing recorded) or a `Reservation` the
router gives back (`release`) if the order is not routed after all (a repeat, no eligible
broker). The kill switches apply even with `[safeguards] enabled = false`.

Counters for the metrics collector: `rejections` (per safeguard, counted by `count` once the
refusal is the order's recorded answer) and `kill_switches.gauge()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Protocol

from api.contracts import OrderRoutingRequest
from api.enums import AssetClass
from nursery.pretrade.checks import SAFEGUARDS, Refusal, check_order, order_notional
from nursery.pretrade.config import SafeguardsConfig
from nursery.pretrade.killswitch import KillSwitchBoard
from nursery.pretrade.ledger import AccountLedger, Reservation
from nursery.pretrade.limits import Limits, LimitsTable

__all__ = ["PreTradeGate", "QuoteView"]

_NS = 1_000_000_000


class QuoteView(Protocol):
    """What the gate reads of the market (`market.book.MarketBook`)."""

    def mid(self, symbol: str) -> Decimal | None: ...

    def quote_ns(self, symbol: str) -> int | None:
        """The market time of the quote `mid` comes from (a trade does not refresh it)."""
        ...


def _today() -> date:
    return datetime.now(UTC).date()


class PreTradeGate:
    def __init__(
        self,
        config: SafeguardsConfig,
        market: QuoteView,
        *,
        kill_switches: KillSwitchBoard | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        today: Callable[[], date] = _today,
    ) -> None:
        self.config = config
        self._market = market
        self._limits = LimitsTable(config)
        self.kill_switches = kill_switches if kill_switches is not None else KillSwitchBoard()
        self.ledger = AccountLedger()
        self._clock_ns = clock_ns
        self._today = today
        self._max_age_ns = int(config.max_quote_age_s * _NS)
        #: Refusals per safeguard (`bis_safeguard_rejections_total{safeguard}`).
        self.rejections: dict[str, int] = dict.fromkeys(SAFEGUARDS, 0)

    def __repr__(self) -> str:
        refused = sum(self.rejections.values())
        return f"<PreTradeGate enabled={self.config.enabled} refused={refused} {self.kill_switches!r}>"

    def limits(self, account_id: str, symbol: str, asset_class: AssetClass) -> Limits:
        return self._limits.of(account_id, symbol, asset_class)

    def fresh_mid(self, symbol: str) -> Decimal | None:
        """The last quote's mid if that quote is at most `max_quote_age_s` old, else None. The
        quote's own time decides: trades printing on a stale quote do not make its mid fresh."""
        mid = self._market.mid(symbol)
        if mid is None:
            return None
        quoted = self._market.quote_ns(symbol)
        if quoted is None or self._clock_ns() - quoted > self._max_age_ns:
            return None
        return mid

    def check(
        self, request: OrderRoutingRequest, asset_class: AssetClass, now: float
    ) -> Reservation | Refusal:
        """Refuse the order (a `Refusal`, nothing recorded) or admit it (its `Reservation`).
        `now`: a monotonic time in seconds (the rate window)."""
        refusal = self.kill_switches.refusal(request.account_id)
        if refusal is not None:
            return refusal
        day = self._today()
        if not self.config.enabled:
            return Reservation(request.account_id, day, Decimal(0), now)
        limits = self._limits.of(request.account_id, request.symbol, asset_class)
        mid = self.fresh_mid(request.symbol)
        refusal = check_order(request, limits, mid)
        if refusal is not None:
            return refusal
        return self.ledger.admit(request.account_id, order_notional(request, mid), limits, day, now)

    def release(self, reservation: Reservation) -> None:
        """The admitted order was not routed after all: it does not count."""
        if self.config.enabled:
            self.ledger.release(reservation)

    def count(self, refusal: Refusal) -> None:
        """A refusal became an order's answer."""
        self.rejections[refusal.safeguard] = self.rejections.get(refusal.safeguard, 0) + 1
