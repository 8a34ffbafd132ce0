"""docs/alerts.yml, the example Prometheus alert rules: well-formed rule groups, every metric
they name in daemon/metrics.py's contract, every runbook link a real section of
docs/operations.md, and `promtool check rules` accepting the file when promtool is installed
(Debian's `prometheus` package ships it; `make test` installs it where it can). Without it
those tests are skipped with the reason and a warning, so the skip shows in the summary; under
CI=true a missing promtool is a failure, as a missing browser is for the console's test.

The metrics a real daemon exposes are checked against the same file in
tests/e2e/test_alerts_metrics.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

import daemon.metrics

REPO = Path(__file__).resolve().parents[1]
ALERTS = REPO / "docs" / "alerts.yml"
RUNBOOK = REPO / "docs" / "operations.md"

#: Metrics an expression may use that are Prometheus's own, not the daemon's.
PROMETHEUS_OWN = frozenset({"up"})
SEVERITIES = frozenset({"critical", "warning", "info"})
RULE_KEYS = frozenset({"alert", "expr", "for", "labels", "annotations"})
#: A metric name in PromQL: an identifier not followed by "(" (a function) and not inside {...}.
_METRIC = re.compile(r"\b(bis_[a-z0-9_]+)\b")
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def load_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    assert isinstance(document, dict) and set(document) == {"groups"}, "the file holds `groups:` only"
    rules: list[dict[str, Any]] = []
    for group in document["groups"]:
        rules.extend(group["rules"])
    return rules


def metric_names(expr: str) -> set[str]:
    """The daemon's metric names an expression uses (histogram series folded to their family)."""
    names = set()
    for name in _METRIC.findall(expr):
        for suffix in _HISTOGRAM_SUFFIXES:
            if name.endswith(suffix):
                name = name.removesuffix(suffix)
                break
        names.add(name)
    return names


def contract_metrics() -> dict[str, str]:
    """daemon/metrics.py's docstring table: metric name -> type."""
    table = re.findall(r"^\| (bis_[a-z0-9_]+) \| (\w+) \|", daemon.metrics.__doc__ or "", re.MULTILINE)
    assert len(table) >= 20, "daemon/metrics.py's docstring no longer tables the metrics"
    return dict(table)


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def runbook_anchors() -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", RUNBOOK.read_text(), re.MULTILINE)
    return {github_anchor(h) for h in headings}


def test_the_file_is_rule_groups_of_complete_alerting_rules() -> None:
    document = yaml.safe_load(ALERTS.read_text())
    groups = document["groups"]
    assert groups, "no rule group"
    names = [group["name"] for group in groups]
    assert len(names) == len(set(names)), f"duplicate group names: {names}"
    for group in groups:
        assert set(group) == {"name", "rules"}, group.keys()
        assert group["rules"], f"group {group['name']} has no rule"
    alerts = [rule["alert"] for rule in load_rules()]
    assert len(alerts) == len(set(alerts)), f"duplicate alert names: {alerts}"


@pytest.mark.parametrize("rule", load_rules(), ids=lambda rule: str(rule.get("alert")))
def test_each_rule_has_expr_for_labels_and_annotations(rule: dict[str, Any]) -> None:
    assert set(rule) == RULE_KEYS, f"keys {sorted(rule)}, expected {sorted(RULE_KEYS)}"
    assert re.fullmatch(r"Bis[A-Z][A-Za-z]+", rule["alert"]), rule["alert"]
    assert isinstance(rule["expr"], str) and rule["expr"].strip()
    assert re.fullmatch(r"\d+[smh]", str(rule["for"])), f"for: {rule['for']!r} is not a duration"
    assert rule["labels"]["severity"] in SEVERITIES, rule["labels"]
    assert rule["labels"]["service"] == "broker-integration"
    annotations = rule["annotations"]
    assert {"summary", "description", "runbook"} <= set(annotations), annotations.keys()
    assert all(isinstance(value, str) and value.strip() for value in annotations.values())


@pytest.mark.parametrize("rule", load_rules(), ids=lambda rule: str(rule.get("alert")))
def test_each_rule_names_only_metrics_of_the_contract(rule: dict[str, Any]) -> None:
    contract = contract_metrics()
    used = metric_names(rule["expr"])
    assert used or PROMETHEUS_OWN & set(re.findall(r"\b[a-z_]+\b", rule["expr"])), (
        f"{rule['alert']} uses no metric of the daemon: {rule['expr']}"
    )
    unknown = used - set(contract)
    assert not unknown, f"{rule['alert']}: {sorted(unknown)} not in daemon/metrics.py"
    for series in _METRIC.findall(rule["expr"]):
        family = series
        for suffix in _HISTOGRAM_SUFFIXES:
            if series.endswith(suffix) and series.removesuffix(suffix) in contract:
                family = series.removesuffix(suffix)
                assert contract[family] == "histogram", f"{series}: {family} is a {contract[family]}"
        if contract[family] == "histogram":
            assert series != family, f"{rule['alert']}: a histogram is queried as {family}_bucket/_count/_sum"
        if series.endswith("_total"):
            assert contract[family] == "counter", f"{series} is a {contract[family]}"
            assert re.search(rf"(rate|increase)\(\s*{series}\b", rule["expr"]), (
                f"{rule['alert']}: counter {series} used without rate()/increase()"
            )


@pytest.mark.parametrize("rule", load_rules(), ids=lambda rule: str(rule.get("alert")))
def test_each_runbook_link_is_a_section_of_the_runbook(rule: dict[str, Any]) -> None:
    link = rule["annotations"]["runbook"]
    path, _, anchor = link.partition("#")
    assert path == "docs/operations.md", link
    assert anchor in runbook_anchors(), f"{rule['alert']}: docs/operations.md has no section #{anchor}"


def test_the_alertable_metrics_are_all_covered() -> None:
    """The metrics an operator is paged on: each has at least one rule."""
    used = set().union(*(metric_names(rule["expr"]) for rule in load_rules()))
    must = {
        "bis_db_available",
        "bis_nats_connected",
        "bis_broker_connected",
        "bis_broker_circuit_state",
        "bis_outbox_oldest_unpublished_age_seconds",
        "bis_jetstream_publish_failures_total",
        "bis_route_order_duration_seconds",
        "bis_broker_ack_duration_seconds",
        "bis_broker_rejects_total",
        "bis_market_data_age_seconds",
        "bis_orders_stranded_total",
        "bis_orders_reconstructed_total",
        "bis_safeguard_rejections_total",
        "bis_kill_switch_engaged",
        "bis_risk_verdicts_total",
    }
    assert must <= used, f"no alert on {sorted(must - used)}"


def promtool_or_skip(environ: Mapping[str, str] = os.environ) -> str:
    """The promtool executable; without one a skip with its reason, a failure under CI=true."""
    promtool = shutil.which("promtool", path=environ.get("PATH"))
    if promtool is not None:
        return promtool
    message = (
        "PROMTOOL CHECK NOT RUN: promtool not installed, docs/alerts.yml was not checked by "
        "Prometheus itself (`make promtool`, or apt-get install prometheus)"
    )
    if environ.get("CI", "").lower() == "true":
        pytest.fail(message + " — a missing promtool is a failure under CI=true")
    warnings.warn(message, stacklevel=2)
    pytest.skip(message)


def test_without_promtool_ci_fails_and_elsewhere_skips(tmp_path: Path) -> None:
    no_promtool = str(tmp_path)  # an empty PATH: no promtool on it
    with pytest.raises(pytest.fail.Exception, match="failure under CI=true"):
        promtool_or_skip({"PATH": no_promtool, "CI": "true"})
    with (
        pytest.raises(pytest.skip.Exception, match="PROMTOOL CHECK NOT RUN"),
        pytest.warns(UserWarning, match="promtool not installed"),
    ):
        promtool_or_skip({"PATH": no_promtool})


def test_promtool_accepts_the_rules() -> None:
    promtool = promtool_or_skip()
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rules = len(load_rules())
    assert f"SUCCESS: {rules} rules found" in result.stdout, result.stdout


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: the same promtool refuses a rule with a PromQL syntax error."""
    promtool = promtool_or_skip()
    broken = tmp_path / "broken.yml"
    broken.write_text(ALERTS.read_text().replace("bis_db_available == 0", "bis_db_available == == 0", 1))
    result = subprocess.run(
        [promtool, "check", "rules", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0, result.stdout
