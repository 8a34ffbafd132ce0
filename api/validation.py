"""Decode a request body into a contract Struct, reporting *every* bad field at once.

msgspec stops at the first error; a desk fixing an order wants them all. So the body is split
into raw fields first, each field is decoded on its own into its declared type (exact decimals:
the field's JSON text goes straight to `Decimal`, never through a float), and the semantic rules
of the order (prices by order type, positive quantities, column sizes) run over the result.
Nothing here has side effects: a request either becomes a Struct or raises `InvalidRequest`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from decimal import Context, Decimal
from typing import Any, TypeVar, cast

import msgspec

from api.contracts import (
    CancelOrderRequest,
    FieldError,
    GetExecutionRequest,
    OrderRoutingRequest,
    TCARequest,
)
from api.errors import InvalidRequest

T = TypeVar("T", bound=msgspec.Struct)

#: Largest magnitude and scale a DECIMAL(20, 8) column holds.
MAX_INTEGER_DIGITS = 12
MAX_SCALE = 8
#: VARCHAR sizes of the schema's columns, by wire field name.
MAX_LENGTHS = {
    "orderId": 36,
    "accountId": 36,
    "symbol": 20,
    "brokerId": 36,
    "brokerOrderId": 100,
    "executionId": 36,
    "reason": 500,
}

Rule = Callable[[Any], list[FieldError]]  # takes a view of the decoded fields


class _Schema:
    """What decoding one Struct class needs, computed once per class (msgspec.structs.fields
    re-evaluates annotations on every call: ~250 us, more than the rest of a request's decode)."""

    __slots__ = ("decoder", "field_decoders", "info", "known")

    def __init__(self, cls: type[msgspec.Struct]) -> None:
        self.info = msgspec.structs.fields(cls)
        self.known = {f.encode_name: f for f in self.info}
        self.decoder = msgspec.json.Decoder(cls, strict=False)
        self.field_decoders = {f.encode_name: msgspec.json.Decoder(f.type, strict=False) for f in self.info}


@functools.cache
def _schema(cls: type[msgspec.Struct]) -> _Schema:
    return _Schema(cls)


def decode_request(body: bytes | str, cls: type[T], *, rules: tuple[Rule, ...] = ()) -> T:
    """Decode `body` (JSON) into `cls`, or raise `InvalidRequest` naming each bad field.

    Fast path: one typed decode, then the field and order rules over the result. Only when that
    decode fails does the body go field by field, to name every bad field at once."""
    schema = _schema(cls)
    try:
        decoded = cast(T, schema.decoder.decode(body))
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        pass
    else:
        errors = _generic_checks({f.name: getattr(decoded, f.name) for f in schema.info}, schema.known)
        for rule in rules:
            errors.extend(rule(decoded))
        if errors:
            raise InvalidRequest(_summary(errors), errors)
        return decoded
    try:
        raw = msgspec.json.decode(body, type=dict[str, msgspec.Raw])
    except msgspec.ValidationError:
        raise InvalidRequest("request body must be a JSON object", []) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc}", []) from None
    except UnicodeDecodeError:
        raise InvalidRequest("malformed JSON: not valid UTF-8", []) from None
    except RecursionError:
        raise InvalidRequest("malformed JSON: nested too deeply", []) from None
    return convert_fields(raw, cls, rules=rules, decode_raw=True)


def convert_fields(
    fields: Mapping[str, Any], cls: type[T], *, rules: tuple[Rule, ...] = (), decode_raw: bool = False
) -> T:
    """Build `cls` from a mapping of wire-named fields (JSON raw values when `decode_raw`, else
    Python values such as query-string parameters), collecting every field error."""
    schema = _schema(cls)
    info, known = schema.info, schema.known
    errors: list[FieldError] = [FieldError(name, "unknown field") for name in fields if name not in known]
    values: dict[str, Any] = {}
    for name, field in known.items():
        if name not in fields:
            if field.required:
                errors.append(FieldError(name, "is required"))
            continue
        value = fields[name]
        if not field.required and (value is None or (decode_raw and bytes(value).strip() == b"null")):
            continue  # explicit null for an optional field means "absent" (its default)
        try:
            if decode_raw:
                decoded = schema.field_decoders[name].decode(value)
            else:
                decoded = msgspec.convert(value, field.type, strict=False)
        except msgspec.ValidationError as exc:
            errors.append(FieldError(name, _describe(exc, field.type)))
            continue
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            errors.append(FieldError(name, "is not valid JSON text"))
            continue
        values[field.name] = decoded
    errors.extend(_generic_checks(values, known))
    view = _FieldView(values, info)
    for rule in rules:
        errors.extend(rule(view))
    if errors:
        raise InvalidRequest(_summary(errors), errors)
    return cls(**values)


class _FieldView:
    """Attribute access to the fields that decoded, defaults for absent optional ones, None for
    missing or invalid ones: rules check what they can and leave the rest to the field errors."""

    def __init__(self, values: Mapping[str, Any], info: tuple[msgspec.structs.FieldInfo, ...]) -> None:
        self._values = dict(values)
        for field in info:
            if field.name not in self._values:
                default = field.default if field.default is not msgspec.NODEFAULT else None
                if field.default_factory is not msgspec.NODEFAULT:
                    default = field.default_factory()
                self._values[field.name] = None if field.required else default

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None


def _describe(exc: msgspec.ValidationError, typ: Any) -> str:
    text = str(exc)
    # msgspec says "Expected `str`, got `int`"; drop its "- at `$`" suffix for a single field.
    return text.split(" - at ")[0]


def _generic_checks(
    values: Mapping[str, Any], known: Mapping[str, msgspec.structs.FieldInfo]
) -> list[FieldError]:
    errors: list[FieldError] = []
    for wire_name, field in known.items():
        value = values.get(field.name)
        if value is None:
            continue
        if isinstance(value, str):
            problem = text_problem(value, MAX_LENGTHS.get(wire_name), required=field.required)
            if problem:
                errors.append(FieldError(wire_name, problem))
        elif isinstance(value, Decimal):
            problem = decimal_problem(value)
            if problem:
                errors.append(FieldError(wire_name, problem))
    return errors


def text_problem(value: str, limit: int | None, *, required: bool = True) -> str | None:
    """Why `value` is not an acceptable identifier or text field, or None."""
    if not value.strip():
        return "must not be empty" if required else None
    if _CONTROL.search(value):
        return "must not contain control characters"
    if limit is not None and len(value) > limit:
        return f"must be at most {limit} characters"
    return None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EXACT = Context(prec=MAX_INTEGER_DIGITS + MAX_SCALE + 2)
_QUANTUM = Decimal(1).scaleb(-MAX_SCALE)


def decimal_problem(value: Decimal) -> str | None:
    """Why `value` cannot be stored exactly in a DECIMAL(20, 8) column, or None. Never rounds:
    a value with more than 8 significant decimal places is refused, not silently cut."""
    if not value.is_finite():
        return "must be a finite number"
    if value.copy_abs() >= Decimal(10) ** MAX_INTEGER_DIGITS:
        return f"must be less than 10^{MAX_INTEGER_DIGITS}"
    if value != value.quantize(_QUANTUM, context=_EXACT):
        return f"must have at most {MAX_SCALE} decimal places"
    return None


def _summary(errors: list[FieldError]) -> str:
    if not errors:
        return "invalid request"
    names = ", ".join(e.field for e in errors)
    return f"invalid request: {names}"


# --- rules of each request ----------------------------------------------------------------


def order_rules(order: Any) -> list[FieldError]:
    """Rules of an OrderRoutingRequest, over a view where invalid fields read as None."""
    errors: list[FieldError] = []
    if order.quantity is not None and order.quantity <= 0:
        errors.append(FieldError("quantity", "must be greater than 0"))
    if order.price is not None and order.price <= 0:
        errors.append(FieldError("price", "must be greater than 0"))
    if order.stop_price is not None and order.stop_price <= 0:
        errors.append(FieldError("stopPrice", "must be greater than 0"))
    kind = order.type
    if kind is not None:
        if kind.needs_price and order.price is None:
            errors.append(FieldError("price", f"is required for {kind} orders"))
        if not kind.needs_price and order.price is not None:
            errors.append(FieldError("price", f"is not allowed for {kind} orders"))
        if kind.needs_stop_price and order.stop_price is None:
            errors.append(FieldError("stopPrice", f"is required for {kind} orders"))
        if not kind.needs_stop_price and order.stop_price is not None:
            errors.append(FieldError("stopPrice", f"is not allowed for {kind} orders"))
    seen: set[str] = set()
    for i, broker in enumerate(order.preferred_brokers or ()):
        problem = text_problem(broker, MAX_LENGTHS["brokerId"])
        if problem:
            errors.append(FieldError(f"preferredBrokers[{i}]", problem))
        elif broker in seen:
            errors.append(FieldError(f"preferredBrokers[{i}]", f"duplicate broker {broker!r}"))
        seen.add(broker)
    return errors


def get_execution_rules(request: Any) -> list[FieldError]:
    if (request.execution_id is None) == (request.order_id is None):
        return [FieldError("executionId", "exactly one of executionId and orderId is required")]
    return []


def decode_order(body: bytes | str) -> OrderRoutingRequest:
    return decode_request(body, OrderRoutingRequest, rules=(order_rules,))


def decode_cancel(body: bytes | str) -> CancelOrderRequest:
    return decode_request(body, CancelOrderRequest)


def decode_get_execution(body: bytes | str) -> GetExecutionRequest:
    return decode_request(body, GetExecutionRequest, rules=(get_execution_rules,))


def decode_tca(body: bytes | str) -> TCARequest:
    return decode_request(body, TCARequest)
