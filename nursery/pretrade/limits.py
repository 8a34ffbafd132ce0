"""The limits that apply to one order: `[safeguards]`, then the account's and the instrument's
own values (the stricter of the two when both are set). Resolved once per (account, symbol) and
kept: the order path only looks them up.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from api.enums import AssetClass
from nursery.pretrade.config import (
    DEFAULT_INCREMENTS,
    FRACTIONAL_EQUITY_INCREMENT,
    AccountSafeguards,
    InstrumentSafeguards,
    SafeguardsConfig,
)

__all__ = ["Limits", "LimitsTable"]

#: The most (account, symbol) pairs kept resolved; past it the table starts again (accounts are
#: OMS ids: an unbounded set).
MAX_RESOLVED = 100_000


@dataclass(frozen=True, slots=True)
class Limits:
    """Resolved limits; 0 means that check is off."""

    max_order_quantity: Decimal
    max_order_notional: Decimal
    max_daily_notional: Decimal
    max_orders_per_second: int
    max_price_deviation_pct: Decimal
    market_orders_without_quote: bool
    quantity_increment: Decimal
    risk_failure_policy: str | None


def _stricter(*values: Decimal | None) -> Decimal | None:
    """The smallest limit set to something other than "off" (0); 0 if all set are off."""
    given = [v for v in values if v is not None]
    if not given:
        return None
    active = [v for v in given if v > 0]
    return min(active) if active else Decimal(0)


class LimitsTable:
    def __init__(self, config: SafeguardsConfig) -> None:
        self._config = config
        self._accounts = {a.account_id: a for a in config.accounts}
        self._instruments = {i.symbol: i for i in config.instruments}
        self._resolved: dict[tuple[str, str], Limits] = {}

    def __repr__(self) -> str:
        return f"<LimitsTable accounts={len(self._accounts)} instruments={len(self._instruments)}>"

    def of(self, account_id: str, symbol: str, asset_class: AssetClass) -> Limits:
        key = (account_id, symbol)
        limits = self._resolved.get(key)
        if limits is None:
            if len(self._resolved) >= MAX_RESOLVED:
                self._resolved.clear()
            limits = self._resolved[key] = self._resolve(
                self._accounts.get(account_id), self._instruments.get(symbol), asset_class
            )
        return limits

    def _resolve(
        self,
        account: AccountSafeguards | None,
        instrument: InstrumentSafeguards | None,
        asset_class: AssetClass,
    ) -> Limits:
        c = self._config
        a = account or AccountSafeguards(account_id="")
        i = instrument or InstrumentSafeguards(symbol="")

        def pick(name: str, default: Decimal, *, per_instrument: bool = True) -> Decimal:
            own = _stricter(getattr(a, name), getattr(i, name) if per_instrument else None)
            return default if own is None else own

        fractional = c.fractional_equities if a.fractional_equities is None else a.fractional_equities
        increments = {**DEFAULT_INCREMENTS, **c.quantity_increments}
        step = increments.get(asset_class.value, Decimal(1))
        if asset_class is AssetClass.EQUITY and fractional:
            step = min(step, FRACTIONAL_EQUITY_INCREMENT)
        if i.quantity_increment is not None:
            step = i.quantity_increment
        return Limits(
            max_order_quantity=pick("max_order_quantity", c.max_order_quantity),
            max_order_notional=pick("max_order_notional", c.max_order_notional),
            max_daily_notional=pick("max_daily_notional", c.max_daily_notional, per_instrument=False),
            max_orders_per_second=(
                c.max_orders_per_second if a.max_orders_per_second is None else a.max_orders_per_second
            ),
            max_price_deviation_pct=pick("max_price_deviation_pct", c.max_price_deviation_pct),
            market_orders_without_quote=(
                c.market_orders_without_quote
                if a.market_orders_without_quote is None
                else a.market_orders_without_quote
            ),
            quantity_increment=step,
            risk_failure_policy=a.risk_failure_policy,
        )
