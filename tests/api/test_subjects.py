"""api.subjects: reversible token escaping and execution-update subjects."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from api import subjects
from api.enums import ExecutionStatus
from api.subjects import (
    EXECUTIONS,
    escape_token,
    execution_subject,
    parse_execution_subject,
    unescape_token,
)

# Text biased towards the characters that matter: the escape character, NATS wildcards and
# separators, ASCII and Unicode whitespace, control characters and multi-byte characters.
AWKWARD = "%.*> \t\n\r\x0b\x0c\x00\x1f\x7f\x85\xa0\u1680\u2000\u2028\u2029\u202f\u3000é€𝄞"
tokens = st.text(
    alphabet=st.one_of(st.sampled_from(AWKWARD), st.characters(exclude_categories=["Cs"])), min_size=1
)


def test_endpoint_subjects_are_spelled_as_the_spec() -> None:
    assert subjects.ROUTE_ORDER == "trading.broker.v1.RouteOrder"
    assert subjects.GET_EXECUTION == "trading.broker.v1.GetExecution"
    assert subjects.CANCEL_ORDER == "trading.broker.v1.CancelOrder"
    assert subjects.GET_BROKER_STATUS == "trading.broker.v1.GetBrokerStatus"
    assert subjects.LIST_BROKERS == "trading.broker.v1.ListBrokers"
    assert EXECUTIONS == "trading.broker.v1.executions"


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("ord-1", "ord-1"),
        ("a.b", "a%2Eb"),
        ("a*b", "a%2Ab"),
        ("a>b", "a%3Eb"),
        ("a b", "a%20b"),
        ("a\tb", "a%09b"),
        ("50%", "50%25"),
        ("%2E", "%252E"),
        ("a\x00b", "a%00b"),
        ("a\x7fb", "a%7Fb"),
        ("a\u00a0b", "a%C2%A0b"),
        ("a\u3000b", "a%E3%80%80b"),
        ("é€", "é€"),
    ],
)
def test_escape_token_writes_unsafe_characters_as_upper_case_utf8_hex(raw: str, escaped: str) -> None:
    assert escape_token(raw) == escaped
    assert unescape_token(escaped) == raw


def test_escape_of_an_empty_token_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        escape_token("")


def test_unescape_keeps_a_percent_that_is_not_an_escape() -> None:
    assert unescape_token("100%") == "100%"
    assert unescape_token("%zz") == "%zz"
    assert unescape_token("%2e") == "%2e"  # lower-case hex is never produced, so it is literal


@given(tokens)
@example("%")
@example("%25")
@example(".")
@example("*")
@example(">")
@example("\u2028")
def test_unescape_inverts_escape_for_any_text(value: str) -> None:
    assert unescape_token(escape_token(value)) == value


@given(tokens)
def test_escaped_token_never_contains_separators_wildcards_or_whitespace(value: str) -> None:
    escaped = escape_token(value)
    assert escaped
    for forbidden in ".*> ":
        assert forbidden not in escaped
    assert not any(c.isspace() for c in escaped)
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in escaped)


@given(tokens)
def test_escape_is_the_identity_on_safe_text(value: str) -> None:
    safe = "".join(c for c in value if c not in "%.*>" and not c.isspace() and c.isprintable())
    if safe:
        assert escape_token(safe) == safe


def test_execution_subject_is_prefix_broker_status_order() -> None:
    assert (
        execution_subject("sim-fx", ExecutionStatus.COMPLETED, "ord.1 x")
        == "trading.broker.v1.executions.sim-fx.COMPLETED.ord%2E1%20x"
    )


@given(tokens, st.sampled_from(list(ExecutionStatus)), tokens)
def test_execution_subject_round_trips_through_parse(
    broker_id: str, status: ExecutionStatus, order_id: str
) -> None:
    subject = execution_subject(broker_id, status, order_id)
    assert subject.startswith(EXECUTIONS + ".")
    assert len(subject.split(".")) == len(EXECUTIONS.split(".")) + 3
    assert parse_execution_subject(subject) == (broker_id, status.value, order_id)


@pytest.mark.parametrize(("broker_id", "order_id"), [("", "ord-1"), ("sim-a", "")])
def test_execution_subject_with_an_empty_id_raises(broker_id: str, order_id: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        execution_subject(broker_id, "COMPLETED", order_id)


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param("", id="empty"),
        pytest.param("trading.broker.v1.executions", id="prefix only"),
        pytest.param("trading.broker.v1.executions.sim-a.COMPLETED", id="too few tokens"),
        pytest.param("trading.broker.v1.executions.sim-a.COMPLETED.ord-1.extra", id="too many tokens"),
        pytest.param("other.trading.broker.v1.executions.sim-a.COMPLETED.ord-1", id="prefix not at start"),
        pytest.param("trading.broker.v2.executions.sim-a.COMPLETED.ord-1", id="other version"),
        pytest.param("trading.broker.v1.RouteOrder", id="request subject"),
        pytest.param("trading.broker.v1.executions.sim-a.COMPLETED.%FF", id="escape not utf-8"),
    ],
)
def test_parse_of_a_malformed_subject_raises_value_error(subject: str) -> None:
    with pytest.raises(ValueError):
        parse_execution_subject(subject)


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param("trading.broker.v1.executions..COMPLETED.ord-1", id="empty broker"),
        pytest.param("trading.broker.v1.executions.sim-a..ord-1", id="empty status"),
        pytest.param("trading.broker.v1.executions.sim-a.COMPLETED.", id="empty order"),
    ],
)
def test_parse_of_a_subject_with_an_empty_token_raises_value_error(subject: str) -> None:
    with pytest.raises(ValueError):
        parse_execution_subject(subject)
