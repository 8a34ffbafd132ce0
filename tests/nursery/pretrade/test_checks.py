"""The per-order safeguards and the limits they read, pure: each safeguard refuses what it must,
names its limit and the order's value, and lets the ordinary order through."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from api.contracts import OrderRoutingRequest
from api.enums import AssetClass, OrderType, Side
from nursery.pretrade.checks import check_order, order_notional
from nursery.pretrade.config import (
    AccountSafeguards,
    InstrumentSafeguards,
    RiskConfig,
    SafeguardsConfig,
    config_problems,
)
from nursery.pretrade.limits import LimitsTable

MID = Decimal("190.00")


def order(**changes: Any) -> OrderRoutingRequest:
    fields: dict[str, Any] = dict(
        order_id="o-1",
        account_id="ACC-1",
        symbol="AAPL",
        side=Side.BUY,
        type=OrderType.LIMIT,
        quantity=Decimal(100),
        price=Decimal("190.50"),
    )
    fields.update(changes)
    return OrderRoutingRequest(**fields)


DEFAULTS = LimitsTable(SafeguardsConfig())


def limits(account: str = "ACC-1", symbol: str = "AAPL", asset_class: AssetClass = AssetClass.EQUITY) -> Any:
    return DEFAULTS.of(account, symbol, asset_class)


def test_an_ordinary_order_passes() -> None:
    assert check_order(order(), limits(), MID) is None
    assert check_order(order(type=OrderType.MARKET, price=None), limits(), MID) is None


def test_the_fat_finger_market_buy_of_fifty_million_shares_is_refused_naming_limit_and_value() -> None:
    refusal = check_order(
        order(type=OrderType.MARKET, price=None, quantity=Decimal(50_000_000)), limits(), MID
    )
    assert refusal is not None
    assert refusal.safeguard == "max_order_quantity"
    assert (refusal.limit, refusal.value) == ("1000000", "50000000")
    assert (
        refusal.rejection_reason
        == "safeguard max_order_quantity: quantity 50000000 exceeds the limit 1000000"
    )


def test_notional_over_the_limit_is_refused() -> None:
    refusal = check_order(order(type=OrderType.MARKET, price=None, quantity=Decimal(30_000)), limits(), MID)
    assert refusal is not None
    assert refusal.safeguard == "max_order_notional"
    assert (refusal.limit, refusal.value) == ("5000000", "5700000")


def test_a_limit_buy_at_ten_times_the_market_is_refused_by_the_collar() -> None:
    refusal = check_order(order(price=Decimal(1900)), limits(), MID)
    assert refusal is not None
    assert refusal.safeguard == "price_collar"
    assert (refusal.limit, refusal.value) == ("10", "900")
    assert "above the mid 190" in refusal.reason


@pytest.mark.parametrize(
    ("side", "price", "refused"),
    [
        (Side.BUY, "209.00", False),  # exactly 10 % through: allowed
        (Side.BUY, "209.01", True),
        (Side.BUY, "1.90", False),  # far below the market: passive, harmless
        (Side.SELL, "171.00", False),
        (Side.SELL, "170.99", True),
        (Side.SELL, "1900", False),
    ],
)
def test_the_collar_refuses_only_prices_through_the_market(side: Side, price: str, refused: bool) -> None:
    refusal = check_order(order(side=side, price=Decimal(price), quantity=Decimal(1)), limits(), MID)
    assert (refusal is not None and refusal.safeguard == "price_collar") is refused


def test_a_stop_trigger_far_from_the_mid_either_way_is_refused() -> None:
    far = order(type=OrderType.STOP, price=None, stop_price=Decimal(100), quantity=Decimal(1))
    near = order(type=OrderType.STOP, price=None, stop_price=Decimal(185), quantity=Decimal(1))
    refusal = check_order(far, limits(), MID)
    assert refusal is not None and refusal.safeguard == "price_collar"
    assert check_order(near, limits(), MID) is None


def test_a_market_order_without_a_fresh_quote_is_refused_unless_allowed() -> None:
    market = order(type=OrderType.MARKET, price=None)
    refusal = check_order(market, limits(), None)
    assert refusal is not None and refusal.safeguard == "market_without_quote"
    allowed = LimitsTable(SafeguardsConfig(market_orders_without_quote=True))
    assert check_order(market, allowed.of("ACC-1", "AAPL", AssetClass.EQUITY), None) is None
    # A LIMIT order carries its own price: no quote needed (no collar reference either).
    assert check_order(order(), limits(), None) is None


def test_fractional_equities_are_refused_unless_enabled_for_the_account() -> None:
    refusal = check_order(order(quantity=Decimal("10.5")), limits(), MID)
    assert refusal is not None
    assert refusal.safeguard == "quantity_increment"
    assert (refusal.limit, refusal.value) == ("1", "10.5")
    table = LimitsTable(SafeguardsConfig(accounts=(AccountSafeguards("FRAC", fractional_equities=True),)))
    assert (
        check_order(order(quantity=Decimal("10.5")), table.of("FRAC", "AAPL", AssetClass.EQUITY), MID) is None
    )
    assert check_order(order(quantity=Decimal("10.5")), table.of("OTHER", "AAPL", AssetClass.EQUITY), MID)


def test_crypto_quantities_step_by_the_satoshi() -> None:
    btc = order(symbol="BTC-USD", quantity=Decimal("0.00000001"), price=Decimal(60000))
    crypto = limits(symbol="BTC-USD", asset_class=AssetClass.CRYPTO)
    assert check_order(btc, crypto, Decimal(60000)) is None
    finer = order(symbol="BTC-USD", quantity=Decimal("0.000000001"), price=Decimal(60000))
    refusal = check_order(finer, crypto, Decimal(60000))
    assert refusal is not None and refusal.safeguard == "quantity_increment"


def test_account_and_instrument_limits_apply_the_stricter() -> None:
    config = SafeguardsConfig(
        accounts=(AccountSafeguards("SMALL", max_order_notional=Decimal(10_000)),),
        instruments=(
            InstrumentSafeguards("AAPL", max_order_notional=Decimal(50_000), quantity_increment=Decimal(10)),
        ),
    )
    table = LimitsTable(config)
    assert table.of("SMALL", "AAPL", AssetClass.EQUITY).max_order_notional == 10_000
    assert table.of("OTHER", "AAPL", AssetClass.EQUITY).max_order_notional == 50_000
    assert table.of("OTHER", "MSFT", AssetClass.EQUITY).max_order_notional == 5_000_000
    assert table.of("OTHER", "AAPL", AssetClass.EQUITY).quantity_increment == 10


def test_a_limit_of_zero_turns_the_check_off() -> None:
    table = LimitsTable(SafeguardsConfig(max_order_quantity=Decimal(0), max_order_notional=Decimal(0)))
    huge = order(type=OrderType.MARKET, price=None, quantity=Decimal(50_000_000))
    assert check_order(huge, table.of("ACC-1", "AAPL", AssetClass.EQUITY), MID) is None


def test_notional_uses_the_order_price_else_the_mid() -> None:
    assert order_notional(order(), MID) == Decimal("19050.00")
    assert order_notional(order(type=OrderType.MARKET, price=None), MID) == Decimal("19000.00")
    assert order_notional(order(type=OrderType.MARKET, price=None), None) is None


def test_configuration_problems_name_their_key() -> None:
    assert config_problems(SafeguardsConfig(), RiskConfig()) == []
    problems = config_problems(
        SafeguardsConfig(
            max_order_notional=Decimal(-1),
            quantity_increments={"STOCKS": Decimal(1)},
            accounts=(AccountSafeguards("A", risk_failure_policy="maybe"),),
        ),
        RiskConfig(failure_policy="sometimes", timeout_ms=0),
    )
    text = "; ".join(problems)
    for key in (
        "safeguards.max_order_notional",
        "quantity_increments: unknown asset class 'STOCKS'",
        "safeguards.accounts[0] (A).risk_failure_policy",
        "risk.failure_policy",
        "risk.timeout_ms",
    ):
        assert key in text
