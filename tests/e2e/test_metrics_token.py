"""`BIS_METRICS_TOKEN`: a real daemon started with it in its environment (none in its
configuration) serves `/metrics` only with that token, and its log never carries it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from daemon.cli import _register_secrets
from daemon.config import load_config
from daemon.logs import MASK, redact_text
from daemon.observability import METRICS_TOKEN_VARIABLE, resolve_metrics_token
from tests.support.daemon import TEST_TOKEN, DaemonProcess

TOKEN = "scrape-Token-51fe0c"


def test_the_environment_token_closes_metrics_and_is_never_logged(
    tmp_path: Path, own_nats: str, own_database: str
) -> None:
    daemon = DaemonProcess(tmp_path / "daemon", own_nats, own_database, instance="metrics-token")
    daemon.start(env={METRICS_TOKEN_VARIABLE: TOKEN})
    try:
        url = f"{daemon.rest_url}/metrics"
        assert httpx.get(url, timeout=10).status_code == 401
        api_token = {"Authorization": f"Bearer {TEST_TOKEN}"}
        assert httpx.get(url, headers=api_token, timeout=10).status_code == 401
        scraped = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert scraped.status_code == 200 and "bis_db_available" in scraped.text
    finally:
        assert daemon.stop() == 0, daemon.log()
    log = daemon.log()
    assert "/metrics" in log  # the access lines were written
    assert TOKEN not in log, log


def test_the_environment_token_wins_over_the_configured_one() -> None:
    assert resolve_metrics_token("from-file", {METRICS_TOKEN_VARIABLE: TOKEN}) == TOKEN
    assert resolve_metrics_token("from-file", {METRICS_TOKEN_VARIABLE: ""}) == "from-file"
    assert resolve_metrics_token(None, {}) is None


def test_the_metrics_tokens_are_masked_in_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[rest]\nmetrics_token = "file-Token-9a7b"\n')
    monkeypatch.setenv(METRICS_TOKEN_VARIABLE, TOKEN)
    _register_secrets(load_config(config, environ={}))
    for token in (TOKEN, "file-Token-9a7b"):
        assert redact_text(f"scraped with {token}") == f"scraped with {MASK}"
