"""daemon.config: embedded defaults, a full TOML file, environment overrides, and errors that name
what to fix."""

from __future__ import annotations

import os
import socket
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.simulated.config import LatencyConfig
from api.contracts import CommissionStructure, TieredRate
from api.enums import AssetClass, BrokerFeature, TimeInForce, Urgency
from daemon.config import Config, ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "daemon" / "example.toml"

FULL = """
[service]
instance_id = "desk-1"
state_dir = "/var/lib/bis"
log_level = "DEBUG"
queue_group = "desk-a"
request_workers = 16
request_backlog = 64
shutdown_grace_s = 4.5
duplicate_wait_s = 2.0

[service.attempt_deadline_ms]
LOW = 4000.0
HIGH = 1000.0

[nats]
url = "nats://nats-1:4222"
stream = "EXEC"
duplicate_window_s = 120.0
stream_max_age_s = 3600.0
connect_timeout_s = 2.0
publish_timeout_s = 3.0

[database]
url = "postgresql://bis@db-1/bis"
pool_size = 4
views_refresh_s = 30.0

[rest]
enabled = false
host = "0.0.0.0"
port = 9090
tokens = ["t1", "t2"]

[market]
seed = 42
tick_interval_ms = 50.0
session_close_utc = "20:30"

[[market.instruments]]
symbol = "AAPL"
asset_class = "EQUITY"
price = "190.00"
spread_bps = "2"
volatility_bps = "3"
top_size = "500"
tick_size = "0.01"
trade_probability = 0.6

[[brokers]]
broker_id = "b-one"
name = "Broker One"
asset_classes = ["EQUITY"]
features = ["MARKET_ORDERS", "LIMIT_ORDERS"]
time_in_force = ["DAY", "IOC"]
venue = "V1"
seed = 11
reject_rate = 0.25
liquidity_share = "0.5"
latency = { median_ms = 3.0, sigma = 0.1, connect_ms = 20.0 }
commission = { baseRate = "0.0002", minCommission = "0.50" }

[[brokers]]
broker_id = "b-two"
name = "Broker Two"
asset_classes = ["FOREX"]
features = ["MARKET_ORDERS"]
venue = "V2"
seed = 12

[brokers.commission]
baseRate = "0.0003"
tieredRates = [{ volumeThreshold = "1000000", rate = "0.0001" }]
"""

MINIMAL_BROKER = """
[[brokers]]
broker_id = "{broker_id}"
name = "n"
asset_classes = ["EQUITY"]
features = ["MARKET_ORDERS"]
venue = "v"
seed = 1
{extra}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def broker_toml(broker_id: str = "x", extra: str = 'commission = { baseRate = "0.001" }') -> str:
    return MINIMAL_BROKER.format(broker_id=broker_id, extra=extra)


def config_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_config(write(tmp_path, text), environ or {})
    return str(excinfo.value)


# --- defaults -------------------------------------------------------------------------------


def test_no_file_and_no_environment_gives_the_embedded_setup() -> None:
    config = load_config(None, {})
    assert config == Config()
    assert [b.broker_id for b in config.brokers] == ["sim-lowcost", "sim-fast", "sim-fx"]
    assert [i.symbol for i in config.market.instruments] == [
        "AAPL",
        "MSFT",
        "SPY",
        "EUR/USD",
        "GBP/USD",
        "BTC-USD",
        "ETH-USD",
    ]
    assert config.market.seed == 7
    assert config.market.tick_interval_ms == 250.0
    assert config.nats.url == ""
    assert config.database.url == ""
    assert config.rest.port == 8080
    assert config.rest.host == "127.0.0.1"
    assert config.rest.tokens == ()
    assert config.service.log_level == "INFO"
    assert config.service.attempt_deadline_ms == {
        "LOW": 5000.0,
        "MEDIUM": 3000.0,
        "HIGH": 1500.0,
        "CRITICAL": 750.0,
    }


def test_default_state_dir_is_dot_state_resolved() -> None:
    assert load_config(None, {}).state_dir == Path(".state").resolve()


def test_default_instance_id_is_host_and_pid() -> None:
    assert load_config(None, {}).instance_id == f"{socket.gethostname()}-{os.getpid()}"


@pytest.mark.parametrize(
    ("urgency", "seconds"),
    [(Urgency.LOW, 5.0), (Urgency.MEDIUM, 3.0), (Urgency.HIGH, 1.5), (Urgency.CRITICAL, 0.75)],
)
def test_attempt_deadline_by_urgency_in_seconds(urgency: Urgency, seconds: float) -> None:
    assert load_config(None, {}).service.attempt_deadline(urgency) == seconds


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), {}) == Config()


# --- files ----------------------------------------------------------------------------------


def test_the_shipped_example_loads() -> None:
    config = load_config(EXAMPLE, {})
    assert [b.broker_id for b in config.brokers] == ["sim-lowcost", "sim-fx"]
    assert [i.symbol for i in config.market.instruments] == ["AAPL", "EUR/USD", "BTC-USD"]
    fx = config.brokers[1]
    assert fx.commission == CommissionStructure(
        base_rate=Decimal("0.0003"),
        min_commission=Decimal("2.00"),
        tiered_rates=(
            TieredRate(volume_threshold=Decimal(1_000_000), rate=Decimal("0.0002")),
            TieredRate(volume_threshold=Decimal(10_000_000), rate=Decimal("0.0001")),
        ),
    )
    assert config.brokers[0].time_in_force == (TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC)
    assert config.service.attempt_deadline_ms == Config().service.attempt_deadline_ms
    assert config.rest.tokens == ()


def test_file_with_every_section_decodes_every_key(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), {})
    service = config.service
    assert service.instance_id == "desk-1" == config.instance_id
    assert config.state_dir == Path("/var/lib/bis")
    assert service.log_level == "DEBUG"
    assert service.queue_group == "desk-a"
    assert service.request_workers == 16
    assert service.request_backlog == 64
    assert service.shutdown_grace_s == 4.5
    assert service.duplicate_wait_s == 2.0
    assert service.attempt_deadline_ms == {"LOW": 4000.0, "HIGH": 1000.0}
    assert service.attempt_deadline(Urgency.HIGH) == 1.0
    assert service.attempt_deadline(Urgency.MEDIUM) == 3.0  # absent urgencies fall back to 3 s
    assert config.nats.url == "nats://nats-1:4222"
    assert config.nats.stream == "EXEC"
    assert config.nats.duplicate_window_s == 120.0
    assert config.nats.stream_max_age_s == 3600.0
    assert config.nats.connect_timeout_s == 2.0
    assert config.nats.publish_timeout_s == 3.0
    assert config.database.url == "postgresql://bis@db-1/bis"
    assert config.database.pool_size == 4
    assert config.database.views_refresh_s == 30.0
    assert config.rest.enabled is False
    assert config.rest.host == "0.0.0.0"
    assert config.rest.port == 9090
    assert config.rest.tokens == ("t1", "t2")
    assert config.market.seed == 42
    assert config.market.tick_interval_ms == 50.0
    assert config.market.session_close_utc == "20:30"
    (instrument,) = config.market.instruments
    assert instrument.symbol == "AAPL"
    assert instrument.asset_class is AssetClass.EQUITY
    assert instrument.price == Decimal("190.00")
    assert instrument.tick_size == Decimal("0.01")
    assert instrument.trade_probability == 0.6
    one, two = config.brokers
    assert one.broker_id == "b-one"
    assert one.name == "Broker One"
    assert one.asset_classes == (AssetClass.EQUITY,)
    assert one.features == (BrokerFeature.MARKET_ORDERS, BrokerFeature.LIMIT_ORDERS)
    assert one.time_in_force == (TimeInForce.DAY, TimeInForce.IOC)
    assert one.venue == "V1"
    assert one.seed == 11
    assert one.reject_rate == 0.25
    assert one.liquidity_share == Decimal("0.5")
    assert one.latency == LatencyConfig(median_ms=3.0, sigma=0.1, connect_ms=20.0)
    assert one.commission == CommissionStructure(base_rate=Decimal("0.0002"), min_commission=Decimal("0.50"))
    assert two.time_in_force == tuple(TimeInForce)
    assert two.latency == LatencyConfig()
    assert two.commission == CommissionStructure(
        base_rate=Decimal("0.0003"),
        tiered_rates=(TieredRate(volume_threshold=Decimal(1_000_000), rate=Decimal("0.0001")),),
    )


def test_file_sections_that_are_absent_keep_their_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[rest]\nport = 9999\n"), {})
    assert config.rest.port == 9999
    assert config.brokers == Config().brokers
    assert config.market == Config().market
    assert config.nats == Config().nats


# --- environment ----------------------------------------------------------------------------


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    environ = {
        "NATS_URL": "nats://env:4222",
        "DATABASE_URL": "postgresql://env/bis",
        "BIS_STATE_DIR": "/srv/bis",
        "BIS_REST_HOST": "10.0.0.1",
        "BIS_REST_PORT": "8443",
        "BIS_REST_TOKENS": "alpha, beta ,,  ,gamma",
        "BIS_INSTANCE_ID": "env-instance",
        "BIS_LOG_LEVEL": "WARNING",
    }
    config = load_config(write(tmp_path, FULL), environ)
    assert config.nats.url == "nats://env:4222"
    assert config.database.url == "postgresql://env/bis"
    assert config.service.state_dir == "/srv/bis"
    assert config.rest.host == "10.0.0.1"
    assert config.rest.port == 8443
    assert config.rest.tokens == ("alpha", "beta", "gamma")
    assert config.service.instance_id == "env-instance" == config.instance_id
    assert config.service.log_level == "WARNING"
    # what the environment does not name stays as the file says
    assert config.nats.stream == "EXEC"
    assert config.service.queue_group == "desk-a"
    assert config.rest.enabled is False


def test_environment_overrides_the_defaults_without_a_file() -> None:
    config = load_config(None, {"NATS_URL": "nats://n:1", "BIS_REST_PORT": "0"})
    assert config.nats.url == "nats://n:1"
    assert config.rest.port == 0
    assert config.brokers == Config().brokers


def test_empty_environment_values_do_not_override(tmp_path: Path) -> None:
    environ = {
        "NATS_URL": "",
        "DATABASE_URL": "",
        "BIS_STATE_DIR": "",
        "BIS_REST_PORT": "",
        "BIS_INSTANCE_ID": "",
        "BIS_LOG_LEVEL": "",
    }
    config = load_config(write(tmp_path, FULL), environ)
    assert config.nats.url == "nats://nats-1:4222"
    assert config.database.url == "postgresql://bis@db-1/bis"
    assert config.service.state_dir == "/var/lib/bis"
    assert config.rest.port == 9090
    assert config.service.instance_id == "desk-1"
    assert config.service.log_level == "DEBUG"


def test_empty_rest_tokens_in_the_environment_disable_the_file_tokens(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, FULL), {"BIS_REST_TOKENS": ""}).rest.tokens == ()
    assert load_config(write(tmp_path, FULL), {"BIS_REST_TOKENS": " , ,"}).rest.tokens == ()


def test_systemd_state_directory_is_used_and_only_its_first_entry() -> None:
    config = load_config(None, {"STATE_DIRECTORY": "/var/lib/broker-integration:/var/lib/other"})
    assert config.service.state_dir == "/var/lib/broker-integration"
    assert config.state_dir == Path("/var/lib/broker-integration")


def test_bis_state_dir_wins_over_systemd_state_directory() -> None:
    config = load_config(
        None, {"BIS_STATE_DIR": "/srv/bis", "STATE_DIRECTORY": "/var/lib/broker-integration"}
    )
    assert config.service.state_dir == "/srv/bis"


def test_process_environment_is_read_when_none_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIS_INSTANCE_ID", "from-os-environ")
    assert load_config().service.instance_id == "from-os-environ"


# --- errors ---------------------------------------------------------------------------------


def test_missing_file_raises_config_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="config file not found") as excinfo:
        load_config(missing, {})
    assert str(missing) in str(excinfo.value)


def test_config_path_that_is_a_directory_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(tmp_path, {})


def test_toml_syntax_error_raises_config_error_naming_the_file(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[service\n")
    assert str(tmp_path / "config.toml") in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param("[service]\nlog_levle = 'INFO'\n", "log_levle", id="service"),
        pytest.param("[nats]\nurls = 'x'\n", "urls", id="nats"),
        pytest.param("[database]\npoolsize = 1\n", "poolsize", id="database"),
        pytest.param("[rest]\ntoken = ['x']\n", "token", id="rest"),
        pytest.param("[market]\nseeds = 1\n", "seeds", id="market"),
        pytest.param("[logging]\nlevel = 'INFO'\n", "logging", id="top level"),
        pytest.param(
            broker_toml(extra='commission = { baseRate = "0" }\nrejectrate = 0.1'), "rejectrate", id="broker"
        ),
    ],
)
def test_unknown_key_raises_config_error_naming_it(tmp_path: Path, text: str, key: str) -> None:
    message = config_error(tmp_path, text)
    assert f"unknown field `{key}`" in message


def test_unknown_key_in_a_commission_table_raises_config_error(tmp_path: Path) -> None:
    text = broker_toml(extra='commission = { baseRate = "0.001", minCommision = "5" }')
    assert "minCommision" in config_error(tmp_path, text)


def test_wrong_type_raises_config_error_naming_the_key(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[rest]\nport = 'eighty'\n")
    assert "$.rest.port" in message


def test_duplicate_broker_id_raises_config_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, broker_toml("twin") + broker_toml("twin") + broker_toml("other"))
    assert message == "brokers: duplicate broker_id ['twin']"


def test_empty_broker_list_raises_config_error(tmp_path: Path) -> None:
    assert config_error(tmp_path, "brokers = []\n") == "brokers: at least one broker must be configured"


@pytest.mark.parametrize("port", ["http", "80.5", "8080x"])
def test_non_numeric_bis_rest_port_raises_config_error_naming_it(port: str) -> None:
    with pytest.raises(ConfigError, match="BIS_REST_PORT") as excinfo:
        load_config(None, {"BIS_REST_PORT": port})
    assert repr(port) in str(excinfo.value)


@pytest.mark.parametrize("port", ["65536", "-1", "100000"])
def test_out_of_range_bis_rest_port_raises_config_error(port: str) -> None:
    with pytest.raises(ConfigError, match=f"rest.port: {port} is not a port number"):
        load_config(None, {"BIS_REST_PORT": port})


def test_out_of_range_port_in_the_file_raises_config_error(tmp_path: Path) -> None:
    assert config_error(tmp_path, "[rest]\nport = 70000\n") == "rest.port: 70000 is not a port number"


def test_zero_request_workers_raises_config_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[service]\nrequest_workers = 0\n")
    assert message == "service.request_workers must be at least 1"


def test_unknown_urgency_in_attempt_deadlines_raises_config_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[service.attempt_deadline_ms]\nURGENT = 10.0\nlow = 5.0\n")
    assert message == "service.attempt_deadline_ms: unknown urgency ['URGENT', 'low']"


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        pytest.param(
            'reject_rate = -0.1\ncommission = { baseRate = "0" }', "reject_rate", id="reject_rate<0"
        ),
        pytest.param('reject_rate = 1.5\ncommission = { baseRate = "0" }', "reject_rate", id="reject_rate>1"),
        pytest.param(
            'liquidity_share = "0"\ncommission = { baseRate = "0" }', "liquidity_share", id="liquidity 0"
        ),
        pytest.param(
            'latency = { median_ms = -1.0 }\ncommission = { baseRate = "0" }',
            "latency",
            id="negative latency",
        ),
        pytest.param("", "commission", id="commission missing"),
        pytest.param("commission = { minCommission = '1' }", "baseRate", id="baseRate missing"),
        pytest.param("commission = { baseRate = 'cheap' }", "baseRate", id="baseRate not a number"),
    ],
)
def test_invalid_broker_raises_config_error_naming_the_problem(
    tmp_path: Path, extra: str, problem: str
) -> None:
    message = config_error(tmp_path, broker_toml("bad", extra))
    assert problem in message
    assert "brokers[0]" in message


@pytest.mark.parametrize(
    "commission",
    [
        pytest.param('{ baseRate = "-0.001" }', id="negative baseRate"),
        pytest.param('{ baseRate = "0.001", minCommission = "-1" }', id="negative minCommission"),
        pytest.param(
            '{ baseRate = "0.001", tieredRates = [{ volumeThreshold = "1000", rate = "-0.001" }] }',
            id="negative tier rate",
        ),
        pytest.param(
            '{ baseRate = "0.001", tieredRates = [{ volumeThreshold = "-5", rate = "0.001" }] }',
            id="negative volumeThreshold",
        ),
    ],
)
def test_negative_commission_raises_config_error(tmp_path: Path, commission: str) -> None:
    message = config_error(tmp_path, broker_toml("bad", f"commission = {commission}"))
    assert "commission" in message


def test_invalid_market_raises_config_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[market]\nsession_close_utc = '25:99'\n")
    assert "session_close_utc" in message


# --- real brokers -------------------------------------------------------------------------


ALPACA = """
[[alpaca_brokers]]
broker_id = "alpaca-paper"
key_env = "MY_KEY"
secret_env = "MY_SECRET"
"""


def test_a_real_broker_replaces_the_simulated_defaults_and_their_market_data(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ALPACA), {})
    assert config.broker_ids == ["alpaca-paper"]
    assert config.simulated_brokers == ()
    assert config.market_data.publish_simulated is False  # a real Market Data Service publishes
    assert config.alpaca_brokers[0].rest_url == "https://paper-api.alpaca.markets"  # paper unless said


def test_simulated_brokers_beside_a_real_one_only_when_asked(tmp_path: Path) -> None:
    text = (
        ALPACA + '\n[market_data]\npublish_simulated = true\n\n[[brokers]]\nbroker_id = "sim"\nname = "Sim"\n'
    )
    text += 'asset_classes = ["EQUITY"]\nfeatures = ["MARKET_ORDERS"]\ncommission = { baseRate = "0.001" }\n'
    text += 'venue = "SIM"\nseed = 1\n'
    config = load_config(write(tmp_path, text), {})
    assert config.broker_ids == ["sim", "alpaca-paper"]
    assert config.market_data.publish_simulated is True


def test_alpaca_mistakes_name_the_key(tmp_path: Path) -> None:
    assert "alpaca" in config_error(
        tmp_path, ALPACA + 'paper = true\nbase_url = "https://api.alpaca.markets"\n'
    )
    assert "duplicate broker_id" in config_error(tmp_path, ALPACA + ALPACA)
