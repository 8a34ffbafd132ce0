"""Chaos fixtures: real servers the test owns and breaks, and the figures table.

- `postgres`: a PostgreSQL cluster of the test's own (pgserver's binaries, free TCP port, data
  in tmp_path) that it can stop (`-m fast` or `-m immediate`) and start again on the same port;
  `chaos_database` a database on it.
- `private_nats_server` (tests/conftest.py): a nats-server of the test's own, which it can kill
  and start again on the same port and JetStream store.
- `spawn_daemon`: daemons as processes (tests/support/daemon.py) on those servers, with
  simulated brokers slow enough (50-300 ms) that orders are in flight when something breaks —
  or, given `broker=`, trading at that broker outside them (tests/chaos/broker.py) on quotes the
  test publishes; every daemon still running at the end is stopped. Each keeps its log in
  `<tmp_path>/<instance>/daemon.log`.
- `broker`: parametrizes a test over where its daemons trade: None (the simulated brokers inside
  each daemon, id "sim") or a `SharedAlpaca` outside them that survives their crashes ("alpaca").
- `record_figures`: each test's figures (tests/chaos/ledger.py), written to
  `<tmp_path>/figures.json` and `<basetemp>/chaos-figures.jsonl`, and tabled at the end of the
  run with each test's outcome, passed or failed, so the numbers of today's code can be quoted.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.servers import NatsServer
from tests.chaos.broker import SharedAlpaca
from tests.chaos.ledger import Figures
from tests.chaos.scenario import CHAOS_BROKERS, CHAOS_SERVICE, ChaosDaemon, RecordFigures, SpawnDaemon
from tests.support.postgres import RestartablePostgres, running_postgres
from tests.support.quotes import QuotePublisher

#: Figures recorded in this run, in order, with the test's node id under "nodeid".
_FIGURES: list[dict[str, Any]] = []
#: Outcome of each test of this directory that ran (node id -> passed, failed, xfailed, ...).
_OUTCOMES: dict[str, str] = {}


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[RestartablePostgres]:
    with running_postgres(tmp_path / "pgdata") as server:
        yield server


@pytest.fixture
def chaos_database(postgres: RestartablePostgres) -> str:
    return postgres.create_database("bis_chaos")


@pytest.fixture
def spawn_daemon(
    tmp_path: Path, private_nats_server: NatsServer, chaos_database: str
) -> Iterator[SpawnDaemon]:
    """`spawn_daemon(instance, broker=None, **DaemonProcess kwargs)`: a started daemon on the test's NATS and
    database, instance id `instance` (config and BIS_INSTANCE_ID), its state in tmp_path."""
    started: list[ChaosDaemon] = []
    publishers: list[QuotePublisher] = []

    def spawn(
        instance: str,
        *,
        env: dict[str, str] | None = None,
        broker: SharedAlpaca | None = None,
        **kwargs: Any,
    ) -> ChaosDaemon:
        kwargs.setdefault("brokers_toml", CHAOS_BROKERS if broker is None else broker.brokers_toml)
        kwargs.setdefault("service_toml", CHAOS_SERVICE)
        if broker is not None:  # no simulated market then: quotes from a stand-in Market Data Service
            env = {**broker.env, **(env or {})}
            quotes = QuotePublisher(private_nats_server.url, f"marketdata.{instance}")
            publishers.append(quotes.__enter__())
        daemon = ChaosDaemon(
            tmp_path / instance, private_nats_server.url, chaos_database, instance=instance, **kwargs
        )
        started.append(daemon)
        daemon.start(env={"BIS_INSTANCE_ID": instance, **(env or {})})
        return daemon

    try:
        yield spawn
    finally:
        for daemon in started:
            if daemon.alive:
                try:
                    daemon.stop(signal.SIGTERM, timeout=15)
                except RuntimeError:
                    pass  # killed after the timeout; its log is in tmp_path
        for quotes in publishers:
            quotes.__exit__(None, None, None)


@pytest.fixture(params=["sim", "alpaca"])
def broker(request: pytest.FixtureRequest) -> Iterator[SharedAlpaca | None]:
    if request.param == "sim":
        yield None
        return
    with SharedAlpaca() as shared:
        yield shared


@pytest.fixture
def record_figures(
    request: pytest.FixtureRequest, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> RecordFigures:
    def record(figures: Figures) -> None:
        data = json.loads(figures.as_json())
        data["nodeid"] = request.node.nodeid
        (tmp_path / "figures.json").write_text(json.dumps(data, indent=2))
        with open(tmp_path_factory.getbasetemp() / "chaos-figures.jsonl", "a") as out:
            out.write(json.dumps(data) + "\n")
        _FIGURES.append(data)
        print(f"\nchaos figures of {figures.scenario}: {tmp_path / 'figures.json'}\n{_row(data)}")

    return record


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if item.nodeid.startswith("tests/chaos/") and (report.when == "call" or report.failed):
        _OUTCOMES[item.nodeid] = _outcome(report)  # a failed teardown overrides a passed call
    return report


def _outcome(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "XPASS"
    if report.failed and "XPASS(strict)" in str(report.longrepr):
        return "XPASS(strict)"
    if report.when != "call" and report.failed:
        return f"error ({report.when})"
    return report.outcome


#: The table's columns: (heading, key in the figures, width).
_COLUMNS = (
    ("sent", "sent", 5),
    ("answered", "answered", 8),
    ("unans", "unanswered", 5),
    ("strand", "stranded", 6),
    ("lost", "lost", 4),
    ("dup", "duplicated", 3),
    ("pend", "pending_attempts", 4),
    ("updates", "updates", 7),
    ("missing", "missing_updates", 7),
    ("unpub", "unpublished", 5),
    ("unrep", "unreported", 5),
    ("resumed_s", "resumed_s", 9),
    ("recovery_s", "recovery_s", 10),
)


_LEGEND = (
    "unans: no final answer at the OMS | strand: claims without a recorded answer | lost: answers the",
    "database does not hold | dup: orders held by a broker twice | pend: attempts still PENDING |",
    "missing: updates not in the stream | unpub: not marked published | unrep: finished executions",
    "without a TCA report (counted, not asserted) | resumed_s, recovery_s: from the fault's end to the",
    "first answer, to the answer of every order sent by then (see tests/chaos/ledger.py)",
)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _row(data: dict[str, Any], name_width: int = 0) -> str:
    name = str(data.get("scenario", "?")).ljust(name_width)
    cells = [_cell(data.get(key, data["extra"].get(key))).rjust(width) for _, key, width in _COLUMNS]
    outcome = _OUTCOMES.get(str(data.get("nodeid")), "")
    return " ".join([name, *cells, outcome]).rstrip()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("chaos figures")
    width = max(len("scenario"), *(len(str(d.get("scenario"))) for d in _FIGURES))
    heading = " ".join(["scenario".ljust(width), *(h.rjust(w) for h, _, w in _COLUMNS), "outcome"])
    terminalreporter.write_line(heading)
    for data in _FIGURES:
        terminalreporter.write_line(_row(data, width))
    for line in _LEGEND:
        terminalreporter.write_line(line)
    terminalreporter.write_line("")
    for data in _FIGURES:
        shown = {k: v for k, v in data.get("extra", {}).items() if v is not None}
        reasons = data.get("failure_reasons") or {}
        terminalreporter.write_line(
            f"{data.get('scenario')}: answers {data.get('answers')}, {data.get('requests')} requests, "
            f"OMS retries {reasons}; {json.dumps(shown)}"
        )
