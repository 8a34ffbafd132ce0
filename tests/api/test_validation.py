"""api.validation: every bad input becomes one InvalidRequest naming each bad field.

`BAD_ORDERS`, `BAD_BODIES` and `BAD_CANCELS` are shared with test_rest.py, which sends the same
inputs over HTTP and checks that the service never sees them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.codec import encode
from api.contracts import (
    CancelOrderRequest,
    FieldError,
    GetBrokerStatusRequest,
    GetExecutionRequest,
    ListBrokersRequest,
    MaintenanceRequest,
    OrderRoutingRequest,
    SetMaintenanceRequest,
)
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
    DUPLICATE_KEY,
    MAX_LENGTHS,
    QUOTED_NUMBER,
    convert_fields,
    decimal_problem,
    decode_cancel,
    decode_get_execution,
    decode_order,
    decode_request,
    decode_tca,
    shown,
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


def with_repeated(body: bytes, field: str, value: Any) -> bytes:
    """`body` with `field` given once more, as its last member (the one msgspec would keep)."""
    return body[:-1] + b',"' + field.encode() + b'":' + encode(value) + b"}"


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
    bad("quantity the string Infinity", order(quantity="Infinity"), "quantity"),
    bad("quantity a JSON string", order(quantity="100"), "quantity"),
    bad("price a JSON string", order(type="LIMIT", price="190.25"), "price"),
    bad("stopPrice a JSON string", order(type="STOP", stopPrice="189"), "stopPrice"),
    bad("orderId given twice", with_repeated(order(), "orderId", "ord-2"), "orderId"),
    bad("quantity given twice, same value", with_repeated(order(), "quantity", 100), "quantity"),
    bad("right-to-left override in orderId", order(orderId="ord-\u202e1"), "orderId"),
    bad("zero-width space in symbol", order(symbol="AA\u200bPL"), "symbol"),
    bad("C1 control in accountId", order(accountId="acc\x851"), "accountId"),
    bad("isolate in a preferredBroker", order(preferredBrokers=["a", "\u2066b"]), "preferredBrokers[1]"),
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
    bad("brokerId given twice", with_repeated(cancel(), "brokerId", "sim-b"), "brokerId"),
    bad("right-to-left override in reason", cancel(reason="fat finger \u202e"), "reason"),
    bad("escape character in brokerOrderId", cancel(brokerOrderId="B-\x1b[2J"), "brokerOrderId"),
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


# --- strict input: JSON numbers, no repeated keys, no control or format characters --------

#: A decoder of every request body the service takes, with a valid body of it.
VALID_REQUESTS: list[tuple[Any, dict[str, Any]]] = [
    (decode_order, VALID_ORDER),
    (decode_cancel, VALID_CANCEL),
    (decode_get_execution, {"orderId": "ord-1"}),
    (decode_tca, {"orderId": "ord-1", "executionId": "x-1"}),
    (lambda body: decode_request(body, GetBrokerStatusRequest), {"brokerId": "sim-a"}),
    (lambda body: decode_request(body, ListBrokersRequest), {"status": "ACTIVE", "assetClass": "CRYPTO"}),
    (lambda body: decode_request(body, MaintenanceRequest), {"enabled": True, "reason": "upgrade"}),
    (
        lambda body: decode_request(body, SetMaintenanceRequest),
        {"brokerId": "sim-a", "enabled": False, "reason": "upgrade"},
    ),
]
REQUEST_IDS = ["order", "cancel", "execution", "tca", "status", "list", "maintenance", "set-maintenance"]
#: Every text field of every request body, with a decoder that takes it.
TEXT_FIELDS = [
    pytest.param(decode, base, name, id=f"{kind}.{name}")
    for kind, (decode, base) in zip(REQUEST_IDS, VALID_REQUESTS, strict=True)
    for name in ("orderId", "accountId", "symbol", "brokerId", "brokerOrderId", "executionId", "reason")
    if name in base or (kind == "cancel" and name in ("brokerOrderId", "reason"))
]
#: Categories Cc (C0, DEL, C1) and Cf (bidi overrides and isolates, zero-width, BOM, soft hyphen,
#: tag characters).
REFUSED_CHARACTERS = [
    "\x00", "\t", "\x1b", "\x7f", "\x85", "\u202e", "\u202a", "\u2066", "\u200b", "\u200d", "\ufeff",
    "\u00ad", "\U000e0041",
]  # fmt: skip


@pytest.mark.parametrize(("decode", "base"), VALID_REQUESTS, ids=REQUEST_IDS)
def test_every_request_type_decodes_its_valid_body(decode: Any, base: dict[str, Any]) -> None:
    decode(with_fields(base))


@pytest.mark.parametrize("field", ["quantity", "price", "stopPrice"])
@pytest.mark.parametrize("text", ["190.25", "100", "1e3", "Infinity", "NaN", " 5", ""])
def test_number_written_as_a_json_string_is_refused(field: str, text: str) -> None:
    body = order(**{"type": "STOP_LIMIT", "quantity": 5, "price": 10, "stopPrice": 9, field: text})
    error = rejected(decode_order, body)
    assert error.errors == (FieldError(field, QUOTED_NUMBER),)  # not also "price is required"
    assert error.message == f"invalid request: {field}"


def test_quoted_number_is_reported_with_every_other_bad_field() -> None:
    body = order(type="LIMIT", price="190.25", quantity="100", side="SHORT")
    assert [(e.field, e.message == QUOTED_NUMBER) for e in rejected(decode_order, body).errors] == [
        ("side", False),
        ("quantity", True),
        ("price", True),
    ]


def test_numbers_still_decode_exactly_without_a_float() -> None:
    body = with_number(order(quantity=ABSENT), "quantity", "0.30000001")
    assert str(decode_order(body).quantity) == "0.30000001"  # 0.1 + 0.2 style floats never seen


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"enabled": "true"}', "enabled"),
        (b'{"enabled": 1}', "enabled"),
        (b'{"enabled": true, "reason": 5}', "reason"),
    ],
)
def test_booleans_and_strings_are_json_booleans_and_strings(body: bytes, field: str) -> None:
    assert field_names(rejected(lambda b: decode_request(b, MaintenanceRequest), body)) == {field}


@pytest.mark.parametrize(("decode", "base"), VALID_REQUESTS, ids=REQUEST_IDS)
def test_a_key_given_twice_is_refused_in_every_request_type(decode: Any, base: dict[str, Any]) -> None:
    name, value = next(iter(base.items()))
    error = rejected(decode, with_repeated(with_fields(base), name, value))
    assert error.errors == (FieldError(name, DUPLICATE_KEY),)
    assert error.message == f"invalid request: {name}"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        pytest.param(b'{"orderId" : "a" ,\n "orderId"\t: "b"}', {"orderId"}, id="whitespace"),
        pytest.param(b'{"orderId": "a", "order\\u0049d": "b"}', {"orderId"}, id="escaped key"),
        pytest.param(b'{"orderId": "a:b", "orderId": "c"}', {"orderId"}, id="colon in a value"),
        pytest.param(b'{"a:b": 1, "a:b": 2, "orderId": "o"}', {"a:b"}, id="colon in a key"),
        pytest.param(b'{"x": 1, "x": 2, "x": 3}', {"x"}, id="three times, named once"),
        pytest.param(b'{"x": {"a": 1, "a": 2}}', {"x.a"}, id="nested object"),
        pytest.param(b'{"x": [1, {"a": 1, "b": {"c": 0, "c": 0}}]}', {"x[1].b.c"}, id="inside an array"),
        pytest.param(b'{"x": {"a": 1}, "y": {"a": 1}}', set(), id="same key in two objects"),
    ],
)
def test_repeated_keys_are_named_at_any_depth(body: bytes, fields: set[str]) -> None:
    repeated = {e.field for e in rejected(decode_get_execution, body).errors if e.message == DUPLICATE_KEY}
    assert repeated == fields


def test_repeated_key_is_reported_with_every_other_bad_field() -> None:
    body = with_repeated(order(side="SHORT", quantity=ABSENT), "orderId", "ord-2")
    assert [(e.field, e.message) for e in rejected(decode_order, body).errors] == [
        ("orderId", DUPLICATE_KEY),
        ("side", "Invalid enum value 'SHORT'"),
        ("quantity", "is required"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        order(orderId="desk:7:ord-1", symbol="NASDAQ:AAPL"),
        order(orderId='{"a": 1, "a": 2}'),  # looks like a repeated key, but is text
        cancel(reason='{"note": "a:b", "note": "c"}, :::'),
        order(preferredBrokers=["x:1", "y{"]),
    ],
    ids=["colons in values", "object text in a value", "object text in reason", "in an array"],
)
def test_colons_and_braces_inside_strings_are_not_keys(body: bytes) -> None:
    decode = decode_cancel if b"brokerId" in body else decode_order
    decode(body)


@st.composite
def json_objects(draw: st.DrawFn, depth: int = 0) -> tuple[str, list[str]]:
    """A JSON object's text, members possibly repeated, keys and strings full of `:`, `{`, `"`
    and escapes, with the paths of its repeated keys as the decoder must name them (inside a
    repeated key, only its last value counts: that is the one decoded)."""
    members: list[str] = []
    inner: dict[str, list[str]] = {}  # by key: the repeated paths inside its last value
    repeated: list[str] = []
    for key in draw(st.lists(KEYS, max_size=5)):
        if key in inner and key not in repeated:
            repeated.append(key)
        inner[key] = []
        if depth < 2 and draw(st.booleans()):
            text, paths = draw(json_objects(depth + 1))
            value, index = draw(st.sampled_from([(text, ""), (f"[{text}]", "[0]"), (f"[1, {text}]", "[1]")]))
            inner[key] = [f"{key}{index}.{path}" for path in paths]
        else:
            value = json.dumps(draw(SCALARS), ensure_ascii=draw(st.booleans()))
        members.append(json.dumps(key, ensure_ascii=draw(st.booleans())) + ":" + value)
    paths = repeated + [path for key_paths in inner.values() for path in key_paths]
    return "{" + ", ".join(members) + "}", paths


KEYS = st.text(alphabet='ab:{}[]"\\ .\u00e9\u202e', max_size=3)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(alphabet='a:{}"\\,[] ', max_size=6))


@given(json_objects())
def test_repeated_keys_are_found_whatever_the_strings_hold(case: tuple[str, list[str]]) -> None:
    text, repeated = case
    found: list[str] = []
    try:
        decode_request(text.encode(), GetExecutionRequest)
    except InvalidRequest as error:
        found = [e.field for e in error.errors if e.message == DUPLICATE_KEY]
    assert sorted(found) == sorted(shown(path) for path in repeated)


@pytest.mark.parametrize("character", REFUSED_CHARACTERS)
@pytest.mark.parametrize(("decode", "base", "field"), TEXT_FIELDS)
def test_control_and_format_characters_are_refused_in_every_text_field(
    decode: Any, base: dict[str, Any], field: str, character: str
) -> None:
    error = rejected(decode, with_fields(base, **{field: f"x{character}y"}))
    assert [e.field for e in error.errors] == [field]
    assert f"U+{ord(character):04X}" in error.errors[0].message


def test_escaped_right_to_left_override_is_refused_too() -> None:
    body = order(orderId=ABSENT)[:-1] + b',"orderId":"ord-\\u202e1"}'
    assert field_names(rejected(decode_order, body)) == {"orderId"}


@pytest.mark.parametrize(
    "text", ["Z\u00fcrich desk: Gr\u00f6\u00dfe ge\u00e4ndert", "\u6ce8\u6587", "a\u00a0b", "\U0001f4c8"]
)
def test_printable_unicode_text_is_accepted(text: str) -> None:
    assert decode_cancel(cancel(reason=text)).reason == text


def test_unknown_key_is_echoed_with_its_control_characters_escaped() -> None:
    error = rejected(decode_order, order(**{"urgency\u202e": "HIGH", "x\ny": 1}))
    assert [e.field for e in error.errors] == ["urgency\\u202e", "x\\u000ay"]
    assert error.message.isprintable()


def test_path_parameter_with_a_format_character_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        convert_fields({"brokerId": "sim-\u202ea"}, GetBrokerStatusRequest)
    assert field_names(caught.value) == {"brokerId"}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("999999999999.99999999", None),
        ("-999999999999.99999999", None),
        ("1.000000000E+3", None),  # nine places written, all zero
        ("0E+20", None),
        ("0E-20", None),
        ("1E+11", None),
        ("1E+12", "must be less than 10^12"),
        ("1000000000000.0", "must be less than 10^12"),
        ("0.000000001", "must have at most 8 decimal places"),
        ("1.0000000010", "must have at most 8 decimal places"),
        ("Infinity", "must be a finite number"),
        ("NaN", "must be a finite number"),
    ],
)
def test_decimal_problem_at_the_edges_of_the_column(value: str, problem: str | None) -> None:
    assert decimal_problem(Decimal(value)) == problem


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
