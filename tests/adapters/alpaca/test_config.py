"""Configuration, and credentials that never show: not in reprs, errors or any log line."""

from __future__ import annotations

import logging
import pickle
from decimal import Decimal

import msgspec
import pytest

from adapters.alpaca.config import LIVE_URL, PAPER_URL, AlpacaConfig, AlpacaCredentials
from adapters.base import BrokerError, SubmitRequest
from api.enums import AssetClass, OrderType, Side, TimeInForce
from tests.support.alpaca_emulator import open_alpaca_adapter
from tests.support.polling import condition, wait_until

D = Decimal


def test_defaults_are_paper_and_commission_free() -> None:
    config = AlpacaConfig()
    assert (config.rest_url, config.trade_stream_url) == (PAPER_URL, "wss://paper-api.alpaca.markets/stream")
    assert config.commission.base_rate == 0 and config.rate_limits.requests_per_minute == 200
    live = AlpacaConfig(paper=False)
    assert (live.rest_url, live.trade_stream_url) == (LIVE_URL, "wss://api.alpaca.markets/stream")


def test_stream_url_follows_the_base_url() -> None:
    assert AlpacaConfig(base_url="http://127.0.0.1:8080/").trade_stream_url == "ws://127.0.0.1:8080/stream"
    explicit = AlpacaConfig(stream_url="wss://example.test/stream")
    assert explicit.trade_stream_url == "wss://example.test/stream"


def test_decodes_from_toml_shaped_data_and_refuses_typos() -> None:
    data = {"broker_id": "alpaca-paper", "key_env": "K", "commission": {"baseRate": "0.0001"}}
    config = msgspec.convert(data, AlpacaConfig)
    assert config.commission.base_rate == D("0.0001")
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"secret": "oops"}, AlpacaConfig)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"paper": True, "base_url": LIVE_URL}, "live endpoint"),
        ({"paper": False, "base_url": PAPER_URL}, "paper endpoint"),
        ({"base_url": "ftp://x"}, "http"),
        ({"stream_url": "https://x/stream"}, "ws"),
        ({"request_timeout": 0.0}, "positive"),
        ({"recovery_overlap": -1.0}, "negative"),
        ({"max_concurrent_requests": 0}, "at least 1"),
    ],
)
def test_invalid_configs_are_refused(changes: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        AlpacaConfig(**changes)  # type: ignore[arg-type]


def test_credentials_come_from_the_named_variables_only() -> None:
    config = AlpacaConfig(key_env="A_KEY", secret_env="A_SECRET")
    credentials = AlpacaCredentials.from_environment(config, {"A_KEY": "PKXYZ", "A_SECRET": "s3cr3t"})
    assert (credentials.key_id, credentials.secret) == ("PKXYZ", "s3cr3t")
    with pytest.raises(ValueError, match="A_KEY, A_SECRET") as missing:
        AlpacaCredentials.from_environment(config, {})
    assert "s3cr3t" not in str(missing.value)


def test_credentials_never_print_and_never_pickle() -> None:
    credentials = AlpacaCredentials("PKXYZ", "s3cr3t")
    for text in (repr(credentials), str(credentials), f"{credentials}", repr([credentials])):
        assert "PKXYZ" not in text and "s3cr3t" not in text
    with pytest.raises(TypeError):
        pickle.dumps(credentials)


async def test_credentials_appear_in_no_log_line_repr_or_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # requests/urllib3, trio-websocket, hypercorn, ours
    errors: list[BrokerError] = []
    async with open_alpaca_adapter(partial_fills=2) as (adapter, driver):
        emu = driver.emulator
        secret, key_id = emu.secret, emu.key_id
        request = SubmitRequest(
            client_order_id="c-1",
            account_id="acct",
            symbol="AAPL",
            asset_class=AssetClass.EQUITY,
            side=Side.BUY,
            order_type=OrderType.MARKET,
            quantity=D(4),
            time_in_force=TimeInForce.DAY,
        )
        await adapter.submit(request)
        emu.fail_next_post(504, create_anyway=True)
        await adapter.submit(msgspec.structs.replace(request, client_order_id="c-2"))
        emu.fail_next_post(429)
        with pytest.raises(BrokerError) as limited:
            await adapter.submit(msgspec.structs.replace(request, client_order_id="c-3"))
        errors.append(limited.value)
        emu.drop_stream()
        await wait_until(
            lambda: condition(lambda: adapter.connections),
            lambda connections: connections >= 2,
            what="the stream reconnected",
            timeout=1.5,
            interval=0.005,
        )
        emu.revoke_keys()
        with pytest.raises(BrokerError) as refused:
            await adapter.heartbeat()
        errors.append(refused.value)
        texts = [repr(adapter), repr(adapter.config), repr(adapter._rest), repr(adapter._rest.client)]
    texts += [str(e) for e in errors] + [str(e) for e in driver.run_failures]
    texts += [caplog.text] + [str(vars(record)) for record in caplog.records]
    assert len(caplog.records) > 10  # the libraries did log
    for text in texts:
        assert secret not in text and key_id not in text
