"""api.validation: every bad input becomes one InvalidRequest naming each bad field.

`BAD_ORDERS`, `BAD_BODIES` and `BAD_CANCELS` are shared with test_rest.py, which sends the same
inputs over HTTP and checks that the service never sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from api.codec import encode
from api.contracts import CancelOrderRequest, ListBrokersRequest, OrderRoutingRequest
from api.enums import (
    AssetClass,
    BrokerListStatus,
    ExecutionStrategy,
    OrderType,
    Side,
    TimeInForce,
    Urgency,
)
from api.errors import InvalidRequest
from api.validation import (
    MAX_LENGTHS,
    convert_fields,
    decode_cancel,
    decode_get_execution,
    decode_order,
)

VALID_ORDER: dict[str, Any] = {
    "orderId": "ord-1",
    "accountId": "acc-1",
    "symbol": "AAPL",
    "side": "BUY",
    "type": "MARKET",
    "quantity": 100,
}
VALID_CANCEL: dict[str, Any] = {"orderId": "ord-1", "brokerId": "sim-a"}

ABSENT = object()


def with_fields(base: dict[str, Any], **changes: Any) -> bytes:
    """`base` as JSON with fields changed (`ABSENT` removes one; decimals are written as JSON
    numbers with their exact digits)."""
    fields = {k: v for k, v in {**base, **changes}.items() if v is not ABSENT}
    return encode(fields)


def with_number(body: bytes, field: str, number: str) -> bytes:
    """`body` with one more field whose value is the JSON number text `number` verbatim."""
    return body[:-1] + f',"{field}":{number}}}'.encode()


def order(**changes: Any) -> bytes:
    return with_fields(VALID_ORDER, **changes)


def cancel(**changes: Any) -> bytes:
    return with_fields(VALID_CANCEL, **changes)


@dataclass(frozen=True)
class Bad:
    """A bad body and the wire names of the fields its 400 must name (none for a body that is
    not a JSON object at all; then `message` is part of the 400's message)."""

    id: str
    body: bytes
    fields: frozenset[str] = frozenset()
    message: str = ""

    @property
    def param(self) -> Any:
        return pytest.param(self, id=self.id)


def bad(id: str, body: bytes, *fields: str, message: str = "") -> Bad:
    return Bad(id, body, frozenset(fields), message)


BAD_ORDERS = [
    bad("empty object", b"{}", "orderId", "accountId", "symbol", "side", "type", "quantity"),
    bad("missing orderId", order(orderId=ABSENT), "orderId"),
    bad("missing quantity and side", order(quantity=ABSENT, side=ABSENT), "quantity", "side"),
    bad("LIMIT without price", order(type="LIMIT"), "price"),
    bad("STOP_LIMIT without stopPrice", order(type="STOP_LIMIT", price=10), "stopPrice"),
    bad("STOP_LIMIT without either price", order(type="STOP_LIMIT"), "price", "stopPrice"),
    bad("STOP without stopPrice", order(type="STOP"), "stopPrice"),
    bad("MARKET with a price", order(price=10), "price"),
    bad("LIMIT with a stopPrice", order(type="LIMIT", price=10, stopPrice=9), "stopPrice"),
    bad("quantity 0", order(quantity=0), "quantity"),
    bad("quantity 0.0", order(quantity=0.0), "quantity"),
    bad("quantity negative", order(quantity=-5), "quantity"),
    bad("price negative", order(type="LIMIT", price=-1), "price"),
    bad("stopPrice 0", order(type="STOP", stopPrice=0), "stopPrice"),
    bad("side unknown", order(side="SHORT"), "side"),
    bad("side lower case", order(side="buy"), "side"),
    bad("type unknown", order(type="ICEBERG"), "type"),
    bad("timeInForce unknown", order(timeInForce="GTD"), "timeInForce"),
    bad("executionStrategy unknown", order(executionStrategy="VWAP"), "executionStrategy"),
    bad("urgency unknown", order(urgency="ASAP"), "urgency"),
    bad("quantity bool", order(quantity=True), "quantity"),
    bad("quantity object", order(quantity={"value": 1}), "quantity"),
    bad("quantity array", order(quantity=[1]), "quantity"),
    bad("symbol number", order(symbol=123), "symbol"),
    bad("orderId number", order(orderId=7), "orderId"),
    bad("preferredBrokers a string", order(preferredBrokers="sim-a"), "preferredBrokers"),
    bad("preferredBrokers of numbers", order(preferredBrokers=[1]), "preferredBrokers"),
    bad("unknown field", order(timeInForc="GTC"), "timeInForc"),
    bad("blank symbol", order(symbol="   "), "symbol"),
    bad("empty orderId", order(orderId=""), "orderId"),
    bad("explicit null for a required field", order(side=None), "side"),
    bad("9 decimal places", order(quantity=Decimal("1.000000001")), "quantity"),
    bad("10^12", order(quantity=10**12), "quantity"),
    bad("price beyond 10^12", order(type="LIMIT", price=-(10**13)), "price"),
    bad("infinite quantity", order(quantity="Infinity"), "quantity"),
    bad("symbol too long", order(symbol="S" * (MAX_LENGTHS["symbol"] + 1)), "symbol"),
    bad("orderId too long", order(orderId="o" * (MAX_LENGTHS["orderId"] + 1)), "orderId"),
    bad("accountId too long", order(accountId="a" * (MAX_LENGTHS["accountId"] + 1)), "accountId"),
    bad("duplicate preferredBrokers", order(preferredBrokers=["a", "b", "a"]), "preferredBrokers[2]"),
    bad("blank preferredBroker", order(preferredBrokers=["a", " "]), "preferredBrokers[1]"),
    bad(
        "every kind at once",
        order(side="SHORT", quantity=0, type="LIMIT", urgency=1, colour="red", orderId=ABSENT),
        "side",
        "quantity",
        "price",
        "urgency",
        "colour",
        "orderId",
    ),
]

BAD_BODIES = [
    bad("malformed JSON", b'{"orderId": "o1", ', message="malformed JSON"),
    bad("trailing garbage", order() + b" x", message="malformed JSON"),
    bad("empty body", b"", message="malformed JSON"),
    bad("NaN literal", b'{"quantity": NaN}', message="malformed JSON"),
    bad("JSON array", b"[" + order() + b"]", message="JSON object"),
    bad("JSON string", b'"order"', message="JSON object"),
    bad("JSON null", b"null", message="JSON object"),
    bad("JSON number", b"42", message="JSON object"),
]

BAD_CANCELS = [
    bad("empty object", b"{}", "orderId", "brokerId"),
    bad("missing brokerId", cancel(brokerId=ABSENT), "brokerId"),
    bad("brokerId number", cancel(brokerId=5), "brokerId"),
    bad("unknown field", cancel(force=True), "force"),
    bad("reason too long", cancel(reason="r" * (MAX_LENGTHS["reason"] + 1)), "reason"),
    bad("brokerOrderId too long", cancel(brokerOrderId="b" * 101), "brokerOrderId"),
    bad("blank orderId", cancel(orderId=" "), "orderId"),
]


def rejected(decode: Any, body: bytes) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        decode(body)
    return caught.value


def field_names(error: InvalidRequest) -> frozenset[str]:
    return frozenset(e.field for e in error.errors)


# --- orders -------------------------------------------------------------------------------


def test_valid_order_decodes_with_defaults() -> None:
    assert decode_order(order()) == OrderRoutingRequest(
        order_id="ord-1",
        account_id="acc-1",
        symbol="AAPL",
        side=Side.BUY,
        type=OrderType.MARKET,
        quantity=Decimal(100),
        time_in_force=TimeInForce.DAY,
        preferred_brokers=(),
        execution_strategy=ExecutionStrategy.SMART,
        urgency=Urgency.MEDIUM,
    )


def test_decimals_keep_their_exact_digits() -> None:
    body = order(type="STOP_LIMIT", quantity=ABSENT, price=ABSENT)
    body = with_number(body, "quantity", "0.10000001")
    body = with_number(body, "price", "123456789012.1")  # no float holds this exactly
    body = with_number(body, "stopPrice", "1e-8")
    decoded = decode_order(body)
    assert str(decoded.quantity) == "0.10000001"
    assert str(decoded.price) == "123456789012.1"
    assert decoded.stop_price == Decimal("0.00000001")


@pytest.mark.parametrize(
    "kind",
    [
        {"type": "LIMIT", "price": 1},
        {"type": "STOP", "stopPrice": 1},
        {"type": "STOP_LIMIT", "price": 1, "stopPrice": 1},
    ],
)
def test_priced_order_types_with_their_prices(kind: dict[str, Any]) -> None:
    decode_order(order(**kind))


def test_largest_values_that_fit_the_column() -> None:
    decoded = decode_order(order(quantity=Decimal("999999999999.99999999")))
    assert decoded.quantity == Decimal("999999999999.99999999")


def test_trailing_zeros_past_8_places_are_not_extra_precision() -> None:
    assert decode_order(order(quantity=Decimal("1.5000000000"))).quantity == Decimal("1.5")


def test_strings_at_their_length_limits() -> None:
    decode_order(order(orderId="o" * 36, accountId="a" * 36, symbol="S" * 20))


@pytest.mark.parametrize("case", [c.param for c in BAD_ORDERS])
def test_bad_order_names_each_bad_field(case: Bad) -> None:
    error = rejected(decode_order, case.body)
    assert error.code == 400
    assert field_names(error) == case.fields
    assert all(e.message for e in error.errors)
    for name in case.fields:  # the summary names them too
        assert name in error.message


@pytest.mark.parametrize("case", [c.param for c in BAD_BODIES])
def test_body_that_is_not_an_object(case: Bad) -> None:
    error = rejected(decode_order, case.body)
    assert error.errors == ()
    assert case.message in error.message


@pytest.mark.parametrize(
    "field",
    ["side", "type", "timeInForce", "executionStrategy", "urgency"],
)
def test_unknown_enum_value_is_named_in_the_message(field: str) -> None:
    error = rejected(decode_order, order(**{field: "NOPE"}))
    assert [(e.field, "NOPE" in e.message) for e in error.errors] == [(field, True)]


def test_explicit_null_for_an_optional_price_means_absent() -> None:
    decoded = decode_order(order(price=None, stopPrice=None))
    assert decoded.price is None
    assert decoded.stop_price is None


@pytest.mark.parametrize("field", ["timeInForce", "preferredBrokers", "executionStrategy", "urgency"])
def test_explicit_null_for_a_defaulted_field_means_absent(field: str) -> None:
    assert decode_order(order(**{field: None})) == decode_order(order())


def test_explicit_null_for_optional_cancel_fields_means_absent() -> None:
    decoded = decode_cancel(cancel(brokerOrderId=None, reason=None))
    assert decoded.broker_order_id is None
    assert decoded.reason is None


@pytest.mark.parametrize("quantity", ["1.0000000000000000000000000001", "99999999999.999999999999999999"])
def test_decimal_places_past_the_context_precision_are_still_rejected(quantity: str) -> None:
    body = with_number(order(quantity=ABSENT), "quantity", quantity)
    assert field_names(rejected(decode_order, body)) == {"quantity"}


def test_deeply_nested_json_is_a_400() -> None:
    body = b'{"orderId": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    rejected(decode_order, body)


@pytest.mark.parametrize("body", [b'{"orderId": "\xff"}', b'{"\xff": 1}'], ids=["value", "key"])
def test_invalid_utf8_is_a_400(body: bytes) -> None:
    rejected(decode_order, body)


def test_nul_character_in_an_id_is_rejected() -> None:
    assert field_names(rejected(decode_order, order(orderId="ord\u00001"))) == {"orderId"}


# --- cancels and lookups ------------------------------------------------------------------


def test_valid_cancel_decodes() -> None:
    assert decode_cancel(cancel(reason="desk request")) == CancelOrderRequest(
        order_id="ord-1", broker_id="sim-a", reason="desk request"
    )


@pytest.mark.parametrize("case", [c.param for c in BAD_CANCELS])
def test_bad_cancel_names_each_bad_field(case: Bad) -> None:
    assert field_names(rejected(decode_cancel, case.body)) == case.fields


@pytest.mark.parametrize("case", [c.param for c in BAD_BODIES])
def test_cancel_body_that_is_not_an_object(case: Bad) -> None:
    error = rejected(decode_cancel, case.body)
    assert error.errors == ()
    assert case.message in error.message


@pytest.mark.parametrize("body", [b"{}", b'{"executionId": "x-1", "orderId": "ord-1"}'])
def test_get_execution_needs_exactly_one_id(body: bytes) -> None:
    assert field_names(rejected(decode_get_execution, body)) == {"executionId"}


def test_get_execution_by_either_id() -> None:
    assert decode_get_execution(b'{"orderId": "ord-1"}').order_id == "ord-1"
    assert decode_get_execution(b'{"executionId": "x-1"}').execution_id == "x-1"


# --- query-string fields (convert_fields with plain strings) ------------------------------


def test_list_brokers_filters_from_strings() -> None:
    assert convert_fields({}, ListBrokersRequest) == ListBrokersRequest()
    assert convert_fields(
        {"status": "MAINTENANCE", "assetClass": "CRYPTO"}, ListBrokersRequest
    ) == ListBrokersRequest(status=BrokerListStatus.MAINTENANCE, asset_class=AssetClass.CRYPTO)


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ({"status": "active"}, {"status"}),
        ({"status": ""}, {"status"}),
        ({"assetClass": "BONDS"}, {"assetClass"}),
        ({"status": "UP", "assetClass": "BONDS"}, {"status", "assetClass"}),
        ({"status": ["ACTIVE", "INACTIVE"]}, {"status"}),
        ({"venue": "XNAS"}, {"venue"}),
    ],
)
def test_bad_list_brokers_filters(query: dict[str, Any], fields: set[str]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        convert_fields(query, ListBrokersRequest)
    assert field_names(caught.value) == fields
