"""Configuration of the pre-trade checks: the execution safeguards (`[safeguards]`) and the Risk
Analysis Service interface (`[risk]`).

Safeguards are on by default with the limits below (the embedded default enables them); each
limit is set for every account and instrument in `[safeguards]`, and may be set again for one
account (`[[safeguards.accounts]]`) or one instrument (`[[safeguards.instruments]]`). When an
account's value and an instrument's value both apply, the stricter one wins. A limit of 0 turns
that check off (quantity, notional, daily notional, rate, price deviation).

Money is Decimal: notional is quantity x price in the instrument's quote currency (no FX
conversion; the daily total per account adds notionals as they are).
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from api.enums import AssetClass

__all__ = [
    "DEFAULT_INCREMENTS",
    "AccountSafeguards",
    "InstrumentSafeguards",
    "RiskConfig",
    "SafeguardsConfig",
    "config_problems",
]

#: The smallest quantity step per asset class: whole shares, contracts and base-currency units;
#: crypto to the satoshi. Fractional equities are allowed only with `fractional_equities`.
DEFAULT_INCREMENTS: dict[str, Decimal] = {
    AssetClass.EQUITY.value: Decimal(1),
    AssetClass.FOREX.value: Decimal(1),
    AssetClass.CRYPTO.value: Decimal("0.00000001"),
    AssetClass.FUTURES.value: Decimal(1),
    AssetClass.OPTIONS.value: Decimal(1),
}
#: The equity step when fractional equities are enabled (Alpaca's smallest fraction).
FRACTIONAL_EQUITY_INCREMENT = Decimal("0.000000001")


class AccountSafeguards(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One account's own limits (unset: the `[safeguards]` value)."""

    account_id: str
    max_order_quantity: Decimal | None = None
    max_order_notional: Decimal | None = None
    max_daily_notional: Decimal | None = None
    max_orders_per_second: int | None = None
    max_price_deviation_pct: Decimal | None = None
    market_orders_without_quote: bool | None = None
    fractional_equities: bool | None = None
    #: The Risk Analysis Service's policy for this account when it does not answer in time:
    #: "closed" refuses the order, "open" routes it (unset: `[risk].failure_policy`).
    risk_failure_policy: str | None = None


class InstrumentSafeguards(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One instrument's own limits (unset: the `[safeguards]` value)."""

    symbol: str
    max_order_quantity: Decimal | None = None
    max_order_notional: Decimal | None = None
    max_price_deviation_pct: Decimal | None = None
    #: The quantity step of this instrument (overrides the asset class's).
    quantity_increment: Decimal | None = None


class SafeguardsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[safeguards]`: last-line checks of every order before it is routed (see the module)."""

    enabled: bool = True
    #: A LIMIT (or STOP_LIMIT) priced more than this through the last quote's mid is refused (a
    #: buy above, a sell below); a STOP's trigger further than this from the mid either way too.
    max_price_deviation_pct: Decimal = Decimal(10)
    #: A quote older than this is not fresh: no collar reference, and no MARKET order without
    #: `market_orders_without_quote`.
    max_quote_age_s: float = 30.0
    market_orders_without_quote: bool = False
    max_order_quantity: Decimal = Decimal(1_000_000)
    max_order_notional: Decimal = Decimal(5_000_000)
    #: Gross notional routed per account per UTC day (every order that passed the safeguards
    #: and was sent to a broker; rebuilt from the database at start).
    max_daily_notional: Decimal = Decimal(50_000_000)
    #: Orders per account within any one second.
    max_orders_per_second: int = 50
    fractional_equities: bool = False
    #: Quantity step per asset class (EQUITY, FOREX, CRYPTO, FUTURES, OPTIONS).
    quantity_increments: dict[str, Decimal] = msgspec.field(default_factory=lambda: dict(DEFAULT_INCREMENTS))
    accounts: tuple[AccountSafeguards, ...] = ()
    instruments: tuple[InstrumentSafeguards, ...] = ()
    #: How often the kill switches are read again from PostgreSQL (changes also arrive at once
    #: over NATS from the daemon that made them).
    kill_switch_reload_s: float = 30.0


class RiskConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[risk]`: the Risk Analysis Service, asked about each order before it is routed. Off
    unless `enabled` (then nothing is asked and nothing is spent)."""

    enabled: bool = False
    subject: str = "risk.v1.AssessExecution"
    #: How long the service has to answer.
    timeout_ms: float = 250.0
    #: When it does not answer in time (or answers garbage, or nobody listens): "closed" refuses
    #: the order, "open" routes it. Per account: `[[safeguards.accounts]].risk_failure_policy`.
    failure_policy: str = "closed"
    #: How stale the account's open exposure sent with each request may be (it is summed over
    #: the executions open here at most this often).
    exposure_refresh_s: float = 1.0


_POLICIES = ("closed", "open")


def config_problems(safeguards: SafeguardsConfig, risk: RiskConfig) -> list[str]:
    """What is wrong with the two sections, each naming its key (empty: fine)."""
    problems: list[str] = []
    s = safeguards
    for name in ("max_price_deviation_pct", "max_order_quantity", "max_order_notional", "max_daily_notional"):
        if getattr(s, name) < 0:
            problems.append(f"safeguards.{name} must not be negative (0 turns the check off)")
    if s.max_orders_per_second < 0:
        problems.append("safeguards.max_orders_per_second must not be negative (0 turns the check off)")
    if s.max_quote_age_s <= 0:
        problems.append("safeguards.max_quote_age_s must be positive")
    if s.kill_switch_reload_s <= 0:
        problems.append("safeguards.kill_switch_reload_s must be positive")
    known = {a.value for a in AssetClass}
    for name, step in s.quantity_increments.items():
        if name not in known:
            problems.append(
                f"safeguards.quantity_increments: unknown asset class {name!r} (known: {sorted(known)})"
            )
        elif step <= 0:
            problems.append(f"safeguards.quantity_increments.{name} must be positive")
    seen: set[str] = set()
    for i, account in enumerate(s.accounts):
        where = f"safeguards.accounts[{i}] ({account.account_id})"
        if not account.account_id or account.account_id in seen:
            problems.append(f"{where}: account_id must be given once")
        seen.add(account.account_id)
        for name in (
            "max_order_quantity",
            "max_order_notional",
            "max_daily_notional",
            "max_price_deviation_pct",
        ):
            value = getattr(account, name)
            if value is not None and value < 0:
                problems.append(f"{where}.{name} must not be negative")
        if account.max_orders_per_second is not None and account.max_orders_per_second < 0:
            problems.append(f"{where}.max_orders_per_second must not be negative")
        if account.risk_failure_policy is not None and account.risk_failure_policy not in _POLICIES:
            problems.append(f"{where}.risk_failure_policy must be 'closed' or 'open'")
    symbols: set[str] = set()
    for i, instrument in enumerate(s.instruments):
        where = f"safeguards.instruments[{i}] ({instrument.symbol})"
        if not instrument.symbol or instrument.symbol in symbols:
            problems.append(f"{where}: symbol must be given once")
        symbols.add(instrument.symbol)
        for name in ("max_order_quantity", "max_order_notional", "max_price_deviation_pct"):
            value = getattr(instrument, name)
            if value is not None and value < 0:
                problems.append(f"{where}.{name} must not be negative")
        if instrument.quantity_increment is not None and instrument.quantity_increment <= 0:
            problems.append(f"{where}.quantity_increment must be positive")
    if risk.failure_policy not in _POLICIES:
        problems.append("risk.failure_policy must be 'closed' or 'open'")
    if risk.timeout_ms <= 0:
        problems.append("risk.timeout_ms must be positive")
    if risk.exposure_refresh_s <= 0:
        problems.append("risk.exposure_refresh_s must be positive")
    if risk.enabled and not risk.subject.strip():
        problems.append("risk.subject must not be empty")
    return problems
