"""nursery.identity: deterministic attempt ids, client order id mapping, request fingerprints."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.contracts import OrderRoutingRequest
from api.enums import ExecutionStrategy, OrderType, Side, TimeInForce, Urgency
from nursery.identity import (
    CLIENT_ORDER_PREFIX,
    client_order_id,
    execution_id,
    execution_of_client_order,
    request_hash,
)

order_ids = st.text(min_size=1, max_size=64)
attempts = st.integers(min_value=0, max_value=1000)


def request(**changes: Any) -> OrderRoutingRequest:
    base = OrderRoutingRequest(
        order_id="ord-1",
        account_id="acc-1",
        symbol="AAPL",
        side=Side.BUY,
        type=OrderType.LIMIT,
        quantity=Decimal("100"),
        price=Decimal("190.5"),
    )
    return msgspec.structs.replace(base, **changes) if changes else base


# --- execution ids --------------------------------------------------------------------------


def test_execution_id_is_pinned_for_a_known_order_and_attempt() -> None:
    """Pinned: ids are stored and sent to brokers, so the derivation must never change."""
    assert execution_id("ord-1", 1) == "eb0a2f82-b883-5f33-9b13-ecec41d5464a"
    assert client_order_id(execution_id("ord-1", 1)) == "bis-eb0a2f82b8835f339b13ecec41d5464a"


@given(order_ids, attempts)
def test_execution_id_is_deterministic_per_order_and_attempt(order_id: str, attempt: int) -> None:
    first = execution_id(order_id, attempt)
    assert first == execution_id(order_id, attempt)
    assert uuid.UUID(first).version == 5
    assert str(uuid.UUID(first)) == first


@given(order_ids, attempts, attempts)
def test_execution_id_differs_across_attempts(order_id: str, a: int, b: int) -> None:
    if a != b:
        assert execution_id(order_id, a) != execution_id(order_id, b)


@given(order_ids, order_ids, attempts)
def test_execution_id_differs_across_orders(first: str, second: str, attempt: int) -> None:
    if first != second:
        assert execution_id(first, attempt) != execution_id(second, attempt)


def test_order_id_ending_in_digits_does_not_collide_with_another_attempt() -> None:
    assert execution_id("ord-1", 12) != execution_id("ord-11", 2)


_NAMESPACE = uuid.UUID("2b7d6f0e-3c1a-4e8b-9a55-7e0c4d1f9b21")


@given(st.one_of(order_ids, st.text(max_size=300)), st.one_of(attempts, st.integers()))
def test_execution_id_is_exactly_uuid5_of_the_order_and_attempt(order_id: str, attempt: int) -> None:
    """Computed without UUID objects, but the same ids as `uuid.uuid5` (stored and sent)."""
    assert execution_id(order_id, attempt) == str(uuid.uuid5(_NAMESPACE, f"{order_id}\x1f{attempt}"))


# --- client order ids -----------------------------------------------------------------------


@given(order_ids, attempts)
def test_client_order_id_maps_back_to_its_execution_id(order_id: str, attempt: int) -> None:
    execution = execution_id(order_id, attempt)
    client_id = client_order_id(execution)
    assert client_id == CLIENT_ORDER_PREFIX + uuid.UUID(execution).hex
    assert len(client_id) == 36  # "bis-" + 32 hex digits: fits every broker's limit we know
    assert execution_of_client_order(client_id) == execution


@pytest.mark.parametrize(
    "foreign",
    [
        pytest.param("", id="empty"),
        pytest.param("bis-", id="prefix only"),
        pytest.param("bis-not-a-uuid", id="prefix and junk"),
        pytest.param("bis-eb0a2f82b8835f339b13ecec41d5464", id="31 hex digits"),
        pytest.param("bis-eb0a2f82b8835f339b13ecec41d5464a11", id="34 hex digits"),
        pytest.param("eb0a2f82b8835f339b13ecec41d5464a", id="hex without prefix"),
        pytest.param("BIS-eb0a2f82b8835f339b13ecec41d5464a", id="upper-case prefix"),
        pytest.param("manual-order-17", id="placed by hand at the broker"),
    ],
)
def test_foreign_client_order_id_maps_to_none(foreign: str) -> None:
    assert execution_of_client_order(foreign) is None


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param("bis-eb0a2f82-b883-5f33-9b13-ecec41d5464a", id="dashed"),
        pytest.param("bis-{eb0a2f82-b883-5f33-9b13-ecec41d5464a}", id="braced"),
        pytest.param("bis-urn:uuid:eb0a2f82-b883-5f33-9b13-ecec41d5464a", id="urn"),
        pytest.param("bis-EB0A2F82B8835F339B13ECEC41D5464A", id="upper-case hex"),
    ],
)
def test_non_canonical_client_order_id_is_foreign(spelling: str) -> None:
    assert execution_of_client_order(spelling) is None


@given(st.uuids())
def test_client_order_id_of_any_uuid_round_trips(value: uuid.UUID) -> None:
    assert execution_of_client_order(client_order_id(str(value))) == str(value)


@given(st.uuids(), st.sampled_from(["{}", "urn:uuid:{}", "{{{}}}"]), st.booleans(), st.booleans())
def test_client_order_id_of_any_spelling_is_the_uuid_hex(
    value: uuid.UUID, form: str, upper: bool, dashes: bool
) -> None:
    text = str(value) if dashes else value.hex
    spelling = form.format(text.upper() if upper else text)
    assert client_order_id(spelling) == CLIENT_ORDER_PREFIX + value.hex


def test_client_order_id_refuses_what_is_not_a_uuid() -> None:
    with pytest.raises(ValueError):
        client_order_id("eb0a2f82-b883-5f33-9b13-ecec41d5464")


@given(st.text(max_size=40))
def test_text_after_the_prefix_that_is_not_hex_is_foreign(text: str) -> None:
    if not all(c in "0123456789abcdefABCDEF-{}:urnid" for c in text):
        assert execution_of_client_order(CLIENT_ORDER_PREFIX + text) is None


# --- request fingerprints -------------------------------------------------------------------


def test_request_hash_is_a_sha256_hex_digest_stable_for_equal_requests() -> None:
    fingerprint = request_hash(request())
    assert fingerprint == request_hash(request())
    assert len(fingerprint) == 64
    assert int(fingerprint, 16) >= 0


def test_request_hash_of_explicit_defaults_equals_omitted_defaults() -> None:
    explicit = request(
        time_in_force=TimeInForce.DAY,
        execution_strategy=ExecutionStrategy.SMART,
        urgency=Urgency.MEDIUM,
        preferred_brokers=(),
        stop_price=None,
    )
    assert explicit == request()
    assert request_hash(explicit) == request_hash(request())


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"order_id": "ord-2"}, id="orderId"),
        pytest.param({"account_id": "acc-2"}, id="accountId"),
        pytest.param({"symbol": "MSFT"}, id="symbol"),
        pytest.param({"side": Side.SELL}, id="side"),
        pytest.param({"type": OrderType.STOP_LIMIT, "stop_price": Decimal("190")}, id="type"),
        pytest.param({"quantity": Decimal("101")}, id="quantity"),
        pytest.param({"quantity": Decimal("100.00000001")}, id="quantity by 1e-8"),
        pytest.param({"price": Decimal("190.51")}, id="price"),
        pytest.param({"price": None}, id="price absent"),
        pytest.param({"stop_price": Decimal("189")}, id="stopPrice"),
        pytest.param({"time_in_force": TimeInForce.GTC}, id="timeInForce"),
        pytest.param({"preferred_brokers": ("sim-fx",)}, id="preferredBrokers"),
        pytest.param({"preferred_brokers": ("sim-a", "sim-b")}, id="preferredBrokers two"),
        pytest.param({"execution_strategy": ExecutionStrategy.LOWEST_COST}, id="executionStrategy"),
        pytest.param({"urgency": Urgency.CRITICAL}, id="urgency"),
    ],
)
def test_request_hash_differs_when_any_field_differs(change: dict[str, Any]) -> None:
    assert request_hash(request(**change)) != request_hash(request())


def test_request_hash_depends_on_preferred_broker_order() -> None:
    first = request(preferred_brokers=("sim-a", "sim-b"))
    second = request(preferred_brokers=("sim-b", "sim-a"))
    assert request_hash(first) != request_hash(second)


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param({"quantity": Decimal("100.0")}, id="quantity 100.0"),
        pytest.param({"quantity": Decimal("1E+2")}, id="quantity 1E+2"),
        pytest.param({"price": Decimal("190.50")}, id="price 190.50"),
    ],
)
def test_request_hash_is_equal_for_equal_requests_whatever_the_decimal_spelling(
    spelling: dict[str, Any],
) -> None:
    same = request(**spelling)
    assert same == request()
    assert request_hash(same) == request_hash(request())
