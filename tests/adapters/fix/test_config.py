"""The FIX broker configuration: the documented example decodes, bad values are refused."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from adapters.fix import CommissionReporting, FixConfig
from api.enums import AssetClass, OrderType, TimeInForce

EXAMPLE = Path(__file__).parents[3] / "adapters" / "fix" / "example.toml"


class Brokers(msgspec.Struct, forbid_unknown_fields=True):
    fix_brokers: tuple[FixConfig, ...]


def test_the_commented_example_decodes() -> None:
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("# [[fix_brokers]]")
    toml = "\n".join(line.removeprefix("# ") for line in lines[start:])
    [config] = msgspec.toml.decode(toml.encode(), type=Brokers).fix_brokers
    assert config.session_id == "FIX.4.4:BIS_DESK1->PRIMEBRK"
    assert config.password_env == "BIS_FIX_PRIMEBROKER_PASSWORD"
    assert config.commission.min_commission == Decimal("1.00")
    assert config.commission_reporting is CommissionReporting.PER_FILL
    assert config.timeouts.answer_s == 30.0
    capabilities = config.capabilities()
    assert capabilities.supports(AssetClass.EQUITY, OrderType.STOP_LIMIT, TimeInForce.FOK) is None
    assert capabilities.supports(AssetClass.FOREX, OrderType.LIMIT, TimeInForce.DAY) is not None
    assert "PRIMEBRK" in repr(config)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"port": 0}, "port"),
        ({"heartbeat_interval": 0}, "heartbeat_interval"),
        ({"sender_comp_id": "A\x01B"}, "sender_comp_id"),
        ({"features": ()}, "must not be empty"),
    ],
)
def test_bad_values_are_refused(change: dict[str, object], message: str) -> None:
    values: dict[str, object] = {
        "broker_id": "b",
        "name": "n",
        "host": "h",
        "port": 1,
        "sender_comp_id": "S",
        "target_comp_id": "T",
        "commission": {"baseRate": "0.001"},
    }
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert({**values, **change}, FixConfig)
