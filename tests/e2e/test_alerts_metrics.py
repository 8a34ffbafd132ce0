"""The metrics docs/alerts.yml names are the ones a real daemon exposes: its GET /metrics,
scraped and parsed as Prometheus would, has a family for each (tests/test_docs_alerts.py checks
the file's shape and its names against daemon/metrics.py's contract)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import DaemonProcess
from tests.test_docs_alerts import contract_metrics, load_rules, metric_names


def scraped_families(daemon: DaemonProcess) -> dict[str, str]:
    """Family name -> type, as the Prometheus parser reads them (counters without `_total`)."""
    response = httpx.get(f"{daemon.rest_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return {family.name: family.type for family in text_string_to_metric_families(response.text)}


def exposed(name: str, families: dict[str, str]) -> bool:
    if name.endswith("_total"):
        return families.get(name.removesuffix("_total")) == "counter"
    return name in families


def test_every_metric_the_alerts_use_is_exposed_by_a_running_daemon(daemon: DaemonProcess) -> None:
    families = scraped_families(daemon)
    for rule in load_rules():
        missing = sorted(name for name in metric_names(rule["expr"]) if not exposed(name, families))
        assert not missing, f"{rule['alert']}: {missing} not in the daemon's /metrics ({sorted(families)})"


def test_the_daemon_exposes_every_metric_of_the_contract_with_its_type(daemon: DaemonProcess) -> None:
    families = scraped_families(daemon)
    for name, kind in contract_metrics().items():
        assert exposed(name, families), f"{name} is in daemon/metrics.py's table but not in /metrics"
        family = name.removesuffix("_total") if kind == "counter" else name
        assert families[family] == kind, f"{name}: exposed as a {families[family]}, documented a {kind}"
