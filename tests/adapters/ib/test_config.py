"""`[[ib_brokers]]` configuration: defaults, validation, and the daemon config that holds it."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.ib.config import IbConfig
from api.enums import AssetClass, TimeInForce
from daemon.config import ConfigError, load_config


def test_defaults_follow_ibs_pacing_and_leave_fok_out() -> None:
    config = IbConfig()
    assert config.rate_limits.requests_per_second == 50
    assert config.max_messages_per_second < 50
    assert TimeInForce.FOK not in config.time_in_force
    assert set(config.asset_classes) == {AssetClass.EQUITY, AssetClass.FOREX, AssetClass.CRYPTO}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"port": 0}, "port"),
        ({"client_id": -1}, "client_id"),
        ({"submit_timeout": 0}, "timeouts"),
        ({"max_messages_per_second": 60}, "max_messages_per_second"),
        ({"asset_classes": (AssetClass.OPTIONS,)}, "does not trade"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IbConfig(**changes)  # type: ignore[arg-type]


def test_a_daemon_configured_with_ib_alone_runs_no_simulated_broker(tmp_path: Path) -> None:
    path = tmp_path / "ib.toml"
    path.write_text(
        """
[[ib_brokers]]
broker_id = "ib-paper"
port = 4002
client_id = 7
account = "DU1234567"
asset_classes = ["EQUITY", "FOREX"]
time_in_force = ["DAY", "GTC", "IOC", "FOK"]
"""
    )
    config = load_config(path, environ={})
    (ib,) = config.ib_brokers
    assert (ib.broker_id, ib.port, ib.client_id, ib.account) == ("ib-paper", 4002, 7, "DU1234567")
    assert TimeInForce.FOK in ib.time_in_force
    assert config.broker_ids == ["ib-paper"]
    assert config.market_data.publish_simulated is False


def test_an_unknown_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "ib.toml"
    path.write_text('[[ib_brokers]]\nbroker_id = "ib"\npassword = "x"\n')
    with pytest.raises(ConfigError, match="password"):
        load_config(path, environ={})
