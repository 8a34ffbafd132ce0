"""Structured logging: the JSON shape journald receives, and that secrets never get out."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon import logs
from daemon.logs import MASK, configure_logging, redact_text, register_secret


@pytest.fixture(autouse=True)
def restore_root_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def capture(fmt: logs.LogFormat | None = "json", level: str = "DEBUG") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, fmt, stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# -- shape ---------------------------------------------------------------------------------------


def test_json_line_carries_timestamp_level_logger_message_and_extras() -> None:
    stream = capture()
    logging.getLogger("nursery.broker").info(
        "routed %s to %s",
        "o-1",
        "sim-a",
        extra={
            "order_id": "o-1",
            "broker_id": "sim-a",
            "execution_id": "e-9",
            "quantity": Decimal("100.5"),
            "attempt": 2,
            "latency_s": 0.0004,
            "tags": ["a", "b"],
        },
    )
    (record,) = lines(stream)
    assert list(record)[:4] == ["timestamp", "level", "logger", "message"]
    assert record["level"] == "INFO"
    assert record["logger"] == "nursery.broker"
    assert record["message"] == "routed o-1 to sim-a"
    assert record["order_id"] == "o-1"
    assert record["broker_id"] == "sim-a"
    assert record["execution_id"] == "e-9"
    assert record["quantity"] == "100.5"  # Decimal stays exact, as a string
    assert record["attempt"] == 2
    assert record["latency_s"] == 0.0004
    assert record["tags"] == ["a", "b"]
    assert record["timestamp"].endswith("Z")
    moment = dt.datetime.fromisoformat(record["timestamp"])
    assert moment.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - moment).total_seconds()) < 60


def test_one_record_is_one_line_even_with_newlines_and_a_traceback() -> None:
    stream = capture()
    try:
        raise RuntimeError("broker went away")
    except RuntimeError:
        logging.getLogger("x").exception("attempt failed\nsecond line", extra={"order_id": "o-2"})
    (record,) = lines(stream)
    assert record["level"] == "ERROR"
    assert record["message"] == "attempt failed\nsecond line"
    assert "Traceback" in record["exception"]
    assert "RuntimeError: broker went away" in record["exception"]


def test_stack_info_is_a_field() -> None:
    stream = capture()
    logging.getLogger("x").warning("where", stack_info=True)
    (record,) = lines(stream)
    assert "test_stack_info_is_a_field" in record["stack"]


def test_extra_named_like_a_core_field_does_not_replace_it() -> None:
    stream = capture()
    logging.getLogger("x").info("m", extra={"level": "mine", "timestamp": "mine"})
    (record,) = lines(stream)
    assert record["level"] == "INFO"
    assert record["extra.level"] == "mine"
    assert record["extra.timestamp"] == "mine"


def test_values_json_cannot_encode_are_written_as_text() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque-thing"

    stream = capture()
    logging.getLogger("x").info("m", extra={"thing": Opaque(), "odd": {1: "int key"}})
    (record,) = lines(stream)
    assert record["thing"] == "opaque-thing"


def test_level_filters_and_bad_level_is_refused() -> None:
    stream = capture(level="warning")
    logging.getLogger("x").info("hidden")
    logging.getLogger("x").warning("shown")
    assert [r["message"] for r in lines(stream)] == ["shown"]
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD", stream=io.StringIO())


def test_format_is_json_off_a_terminal_and_text_on_one() -> None:
    piped = io.StringIO()
    configure_logging(stream=piped)
    logging.getLogger("x").info("hello", extra={"order_id": "o-1"})
    assert json.loads(piped.getvalue())["message"] == "hello"

    terminal = Terminal()
    configure_logging(stream=terminal)
    logging.getLogger("daemon.cli").info("hello there", extra={"order_id": "o-1", "note": "two words"})
    line = terminal.getvalue()
    assert not line.startswith("{")
    assert "INFO     daemon.cli: hello there order_id=o-1 note='two words'" in line


def test_reconfiguring_replaces_our_handler_and_keeps_others() -> None:
    root = logging.getLogger()
    other = logging.StreamHandler(io.StringIO())
    root.addHandler(other)
    first = configure_logging(stream=io.StringIO())
    second = configure_logging(stream=io.StringIO())
    assert first not in root.handlers
    assert second in root.handlers
    assert other in root.handlers


def test_journal_stream_gets_syslog_priority_prefixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(tmp_path / "journal", "w+") as stream:
        info = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        configure_logging("DEBUG", stream=stream)
        log = logging.getLogger("x")
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        log.critical("c")
        stream.seek(0)
        written = stream.read().splitlines()
    assert [line[:3] for line in written] == ["<7>", "<6>", "<4>", "<3>", "<2>"]
    assert json.loads(written[1][3:])["message"] == "i"


def test_another_stream_gets_no_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    stream = capture()
    logging.getLogger("x").info("i")
    assert stream.getvalue().startswith("{")


# -- secrets -------------------------------------------------------------------------------------

SECRETS = ["hunter2-pw", "sk-live-ABCDEF", "tok3n-value", "AKIAEXAMPLE", "p@ss/w0rd", "bearer-xyz.123"]


def assert_no_secret(output: str) -> None:
    for secret in SECRETS:
        assert secret not in output, f"{secret!r} leaked into: {output}"
    assert MASK in output


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secret_extras_are_masked_at_any_depth(fmt: logs.LogFormat) -> None:
    stream = capture(fmt)
    logging.getLogger("adapters.alpaca").info(
        "connected",
        extra={
            "broker_id": "alpaca",
            "password": "hunter2-pw",
            "api_key": "AKIAEXAMPLE",
            "credentials": {"key": "AKIAEXAMPLE", "secret": "sk-live-ABCDEF"},
            "headers": {"Authorization": "Bearer bearer-xyz.123", "APCA-API-SECRET-KEY": "sk-live-ABCDEF"},
            "attempts": [{"access_token": "tok3n-value"}],
            "dsn": "postgresql://bis:p@ss/w0rd@db.internal:5432/bis",
        },
    )
    output = stream.getvalue()
    assert_no_secret(output)
    assert "broker_id" in output
    if fmt == "json":
        (record,) = lines(stream)
        assert record["password"] == MASK
        assert record["credentials"] == MASK
        assert record["headers"] == {"Authorization": MASK, "APCA-API-SECRET-KEY": MASK}
        assert record["attempts"] == [{"access_token": MASK}]
        assert record["dsn"] == "postgresql://bis:***@db.internal:5432/bis"


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secrets_in_messages_and_arguments_are_masked(fmt: logs.LogFormat) -> None:
    stream = capture(fmt)
    log = logging.getLogger("daemon")
    log.info("joining %s", "postgresql://bis:hunter2-pw@db.internal/bis")
    log.info("request headers %s", {"Authorization": "Bearer bearer-xyz.123"})
    log.info("alpaca said: Authorization: Bearer bearer-xyz.123 rejected")
    log.warning("config api_key=AKIAEXAMPLE secret: sk-live-ABCDEF token='tok3n-value'")
    log.warning('body {"password": "hunter2-pw", "user": "bis"}')
    log.warning("libpq: host=db user=bis password=hunter2-pw dbname=bis")
    log.info("GET https://paper-api.example/v2/account?api_key=AKIAEXAMPLE&x=1")
    output = stream.getvalue()
    assert_no_secret(output)
    assert "postgresql://bis:***@db.internal/bis" in output
    assert "user=bis" in output  # what is not secret stays readable


def test_secrets_in_tracebacks_are_masked() -> None:
    stream = capture()
    try:
        raise ConnectionError("cannot reach postgresql://bis:hunter2-pw@db/bis (password=hunter2-pw)")
    except ConnectionError:
        logging.getLogger("x").exception("store down")
    (record,) = lines(stream)
    assert "ConnectionError" in record["exception"]
    assert_no_secret(stream.getvalue())


def test_a_registered_secret_is_masked_wherever_it_appears() -> None:
    register_secret("PKZZ9SECRETVALUE")
    stream = capture()
    logging.getLogger("alpaca").error(
        "key PKZZ9SECRETVALUE is not authorised", extra={"detail": "PKZZ9SECRETVALUE"}
    )
    output = stream.getvalue()
    assert "PKZZ9SECRETVALUE" not in output
    assert lines(stream)[0]["message"] == "key *** is not authorised"


def test_structs_are_logged_field_by_field_with_secrets_masked() -> None:
    class BrokerCredentials(msgspec.Struct):
        broker_id: str
        api_key: str
        api_secret: str

    stream = capture()
    logging.getLogger("x").info(
        "loaded", extra={"broker": BrokerCredentials("alpaca", "AKIAEXAMPLE", "sk-live-ABCDEF")}
    )
    (record,) = lines(stream)
    assert record["broker"] == {"broker_id": "alpaca", "api_key": MASK, "api_secret": MASK}


def test_an_unformattable_message_does_not_spill_its_arguments() -> None:
    # Through our handler alone: pytest's own capture handler rightly fails a test on a bad call.
    stream = io.StringIO()
    handler = configure_logging(stream=stream)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "two slots %s %s", ("hunter2-pw",), None)
    handler.handle(record)
    output = stream.getvalue()
    assert "hunter2-pw" not in output
    assert "unformattable" in output


def test_nothing_secret_is_left_alone() -> None:
    text = "routed order o-1 to sim-a in 412us: ACCEPTED 100 AAPL @ 187.25 (postgresql://db/bis)"
    assert redact_text(text) == text
    assert redact_text("password authentication failed for user bis") == (
        "password authentication failed for user bis"
    )


def test_redaction_is_idempotent() -> None:
    once = redact_text("password=x Bearer abc postgresql://u:p@h/db")
    assert redact_text(once) == once == "password=*** Bearer *** postgresql://u:***@h/db"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1))
def test_a_url_password_never_survives(password: str) -> None:
    # Raw '@', '/', ':' or quotes in the password included: the mask runs to the host's '@'.
    redacted = redact_text(f"connecting to postgresql://bis:{password}@db.internal:5432/bis now")
    assert redacted == "connecting to postgresql://bis:***@db.internal:5432/bis now"


# -- nothing but JSON off a terminal -------------------------------------------------------------

_LIBRARY_NOISE = """
import logging, os, sys, warnings
from daemon.logs import configure_logging
configure_logging("INFO")
os.environ.pop("XDG_RUNTIME_DIR", None)
import platformdirs
platformdirs.user_runtime_path("bis-test")  # RuntimeDirWarning without XDG_RUNTIME_DIR
warnings.warn("a library warns")
logging.getLogger("pgserver").info("Successful postgres command\\nstdout:\\ninitdb says hello")
logging.getLogger("pgserver").error("Failed to start server")
"""


def test_library_warnings_and_chatter_become_json_records_or_nothing(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "PYTHONWARNINGS")}
    done = subprocess.run(
        [sys.executable, "-c", _LIBRARY_NOISE],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    records = [json.loads(line) for line in done.stderr.splitlines()]  # each line is JSON
    warned = [r["message"] for r in records if r["logger"] == "py.warnings"]
    assert any("a library warns" in m for m in warned), records
    assert any("RuntimeDirWarning" in m for m in warned), records
    pgserver = [r for r in records if r["logger"] == "pgserver"]
    assert [r["level"] for r in pgserver] == ["ERROR"]  # its INFO narrative is held back
