"""Decode a request body into a contract Struct, reporting *every* bad field at once.

msgspec stops at the first error; a desk fixing an order wants them all. So the body is split
into raw fields first, each field is decoded on its own into its declared type (exact decimals:
the field's JSON text goes straight to `Decimal`, never through a float), and the semantic rules
of the order (prices by order type, positive quantities, column sizes) run over the result.
Nothing here has side effects: a request either becomes a Struct or raises `InvalidRequest`.

Input is strict, because what a proxy, a log or a screen reads must be what we act on:

- numbers are JSON numbers (msgspec decodes a `Decimal` from a JSON string too, even in its
  strict mode, so the raw text of each decimal field is checked);
- a key given twice, at any depth of the body, is refused (msgspec keeps the last one silently);
- text fields refuse Unicode control and format characters (categories Cc and Cf: NUL, ESC,
  U+202E RIGHT-TO-LEFT OVERRIDE, zero-width characters), which can spoof logs and screens.
"""

from __future__ import annotations

import functools
import json
import types
import typing
import unicodedata
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
#: Unicode general categories refused in text fields: controls and (invisible) format characters.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf"})

QUOTED_NUMBER = "must be a JSON number, not a string"
DUPLICATE_KEY = "is given more than once"

Rule = Callable[[Any], list[FieldError]]  # takes a view of the decoded fields
Check = Callable[[Any], str | None]  # why a decoded field value is not acceptable, or None

_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw])


class _Schema:
    """What decoding one Struct class needs, computed once per class (msgspec.structs.fields
    re-evaluates annotations on every call: ~250 us, more than the rest of a request's decode)."""

    __slots__ = ("checks", "decoder", "field_decoders", "info", "known", "numbers")

    def __init__(self, cls: type[msgspec.Struct]) -> None:
        self.info = msgspec.structs.fields(cls)
        self.known = {f.encode_name: f for f in self.info}
        self.decoder = msgspec.json.Decoder(cls)
        self.field_decoders = {f.encode_name: msgspec.json.Decoder(f.type) for f in self.info}
        #: Wire names of the decimal fields, whose JSON text must not be a string.
        self.numbers = frozenset(f.encode_name for f in self.info if _holds(f.type, Decimal))
        #: (wire name, attribute, check) of every text and decimal field, in declaration order.
        self.checks: tuple[tuple[str, str, Check], ...] = tuple(
            (f.encode_name, f.name, check) for f in self.info if (check := _check_of(f)) is not None
        )


def _holds(annotation: Any, kind: type) -> bool:
    """Whether a field declared as `annotation` holds a `kind` (`kind` alone, or with None)."""
    if annotation is kind:
        return True
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and kind in typing.get_args(
        annotation
    )


def _check_of(field: msgspec.structs.FieldInfo) -> Check | None:
    if _holds(field.type, str):
        return functools.partial(
            text_problem, limit=MAX_LENGTHS.get(field.encode_name), required=field.required
        )
    if _holds(field.type, Decimal):
        return decimal_problem
    return None  # enums, booleans and tuples: msgspec checked them; rules check tuple items


@functools.cache
def _schema(cls: type[msgspec.Struct]) -> _Schema:
    return _Schema(cls)


def decode_request(body: bytes | str, cls: type[T], *, rules: tuple[Rule, ...] = ()) -> T:
    """Decode `body` (JSON) into `cls`, or raise `InvalidRequest` naming each bad field.

    Fast path: the body's top-level fields as raw JSON (for the strictness checks: repeated keys,
    quoted numbers), one typed decode, then the field and order rules over the result. Only when
    something fails does the body go field by field, to name every bad field at once."""
    schema = _schema(cls)
    try:
        fields = _OBJECT.decode(body)
    except msgspec.ValidationError:
        raise InvalidRequest("request body must be a JSON object", []) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc}", []) from None
    except UnicodeDecodeError:
        raise InvalidRequest("malformed JSON: not valid UTF-8", []) from None
    except RecursionError:
        raise InvalidRequest("malformed JSON: nested too deeply", []) from None
    repeated = _repeated_keys(body, fields)
    if not repeated and not _quoted_numbers(fields, schema):
        try:
            decoded = cast(T, schema.decoder.decode(body))
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            pass
        else:
            errors = _field_checks(schema, functools.partial(getattr, decoded))
            for rule in rules:
                errors.extend(rule(decoded))
            if errors:
                raise InvalidRequest(_summary(errors), errors)
            return decoded
    return _convert(fields, cls, rules, decode_raw=True, errors=repeated)


def convert_fields(
    fields: Mapping[str, Any], cls: type[T], *, rules: tuple[Rule, ...] = (), decode_raw: bool = False
) -> T:
    """Build `cls` from a mapping of wire-named fields (JSON raw values when `decode_raw`, else
    Python values such as query-string parameters), collecting every field error."""
    return _convert(fields, cls, rules, decode_raw=decode_raw, errors=[])


def _convert(
    fields: Mapping[str, Any],
    cls: type[T],
    rules: tuple[Rule, ...],
    *,
    decode_raw: bool,
    errors: list[FieldError],
) -> T:
    schema = _schema(cls)
    info, known = schema.info, schema.known
    errors = errors + [FieldError(shown(name), "unknown field") for name in fields if name not in known]
    values: dict[str, Any] = {}
    undecodable: set[str] = set()  # wire names already reported as not of their type
    for name, field in known.items():
        if name not in fields:
            if field.required:
                errors.append(FieldError(name, "is required"))
            continue
        value = fields[name]
        if not field.required and (value is None or (decode_raw and bytes(value).strip() == b"null")):
            continue  # explicit null for an optional field means "absent" (its default)
        try:
            if not decode_raw:
                # Query-string and path values are text by nature: lax conversion ("1" -> 1).
                values[field.name] = msgspec.convert(value, field.type, strict=False)
                continue
            if name in schema.numbers and bytes(value).lstrip()[:1] == b'"':
                problem = QUOTED_NUMBER
            else:
                values[field.name] = schema.field_decoders[name].decode(value)
                continue
        except msgspec.ValidationError as exc:
            problem = _describe(exc, field.type)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            problem = "is not valid JSON text"
        errors.append(FieldError(name, problem))
        undecodable.add(name)
    errors.extend(_field_checks(schema, values.get))
    view = _FieldView(values, info)
    for rule in rules:
        # A field that did not decode reads as None to the rules: its type error says enough.
        errors.extend(error for error in rule(view) if error.field not in undecodable)
    if errors:
        raise InvalidRequest(_summary(errors), errors)
    return cls(**values)


def _quoted_numbers(fields: Mapping[str, msgspec.Raw], schema: _Schema) -> bool:
    """Whether a decimal field of the body is written as a JSON string."""
    for name in schema.numbers:
        raw = fields.get(name)
        if raw is not None and bytes(raw).startswith(b'"'):
            return True
    return False


def _repeated_keys(body: bytes | str, fields: Mapping[str, msgspec.Raw]) -> list[FieldError]:
    """A field error for every key given more than once in `body`, at any depth, named by its
    path (`quantity.value`, `items[0].id`); `fields` is the body's top level as msgspec decoded it.

    Every key in JSON text is followed by exactly one `:` outside strings. So a body with no more
    colons than distinct top-level keys repeats no key and nests no object: that settles a typical
    request for the price of `bytes.count`. Failing that (a colon inside a string), when no
    top-level value holds a `{` and no key a colon, the colons inside the values are set aside
    and the same count decides. Anything else is parsed again by the json module, whose
    object_pairs_hook sees every pair."""
    colons = body.count(":") if isinstance(body, str) else body.count(b":")
    if colons == len(fields):
        return []
    if ":" not in "".join(fields):
        inner = b"".join(fields.values())  # the text of every top-level value
        if b"{" not in inner and colons - inner.count(b":") == len(fields):
            return []
    return _repeated_keys_parsed(body)


class _Members(dict[str, Any]):
    """A JSON object as the json module's object_pairs_hook sees it: also the keys it repeats."""

    __slots__ = ("repeated",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.repeated: list[str] = []
        if len(self) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen and key not in self.repeated:
                    self.repeated.append(key)
                seen.add(key)


def _repeated_keys_parsed(body: bytes | str) -> list[FieldError]:
    found: list[FieldError] = []
    try:
        text = body if isinstance(body, str) else body.decode()
        # The values are never used: numbers stay text (no int-digit limit, no float rounding).
        tree = json.loads(text, object_pairs_hook=_Members, parse_int=str, parse_float=str, strict=False)
        _collect_repeated(tree, None, found)
    except RecursionError:
        raise InvalidRequest("malformed JSON: nested too deeply", []) from None
    except UnicodeDecodeError:
        raise InvalidRequest("malformed JSON: not valid UTF-8", []) from None
    except ValueError as exc:  # msgspec accepted it; should not happen, but never let it through
        raise InvalidRequest(f"malformed JSON: {exc}", []) from None
    return found


def _collect_repeated(node: Any, path: str | None, found: list[FieldError]) -> None:
    """Append a field error for each key `node` (at `path`, None for the body) repeats, then
    for those of its values (the last one of a repeated key's)."""
    if isinstance(node, _Members):
        for key in node.repeated:
            found.append(FieldError(shown(key if path is None else f"{path}.{key}"), DUPLICATE_KEY))
        for key, value in node.items():
            _collect_repeated(value, key if path is None else f"{path}.{key}", found)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _collect_repeated(item, f"{path}[{index}]", found)


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


def _field_checks(schema: _Schema, value_of: Callable[[str], Any]) -> list[FieldError]:
    """The text and decimal checks of every field that has a value (`value_of(attribute)`)."""
    errors: list[FieldError] = []
    for wire_name, attribute, check in schema.checks:
        value = value_of(attribute)
        if value is not None:
            problem = check(value)
            if problem:
                errors.append(FieldError(wire_name, problem))
    return errors


def text_problem(value: str, limit: int | None, *, required: bool = True) -> str | None:
    """Why `value` is not an acceptable identifier or text field, or None."""
    if not value or value.isspace():
        return "must not be empty" if required else None
    if not value.isprintable():  # printable text has no Cc or Cf character: the common case
        refused = refused_character(value)
        if refused is not None:
            return f"must not contain control or format characters (U+{ord(refused):04X})"
    if limit is not None and len(value) > limit:
        return f"must be at most {limit} characters"
    return None


def shown(name: str) -> str:
    """`name`, a key of the request, fit to echo in an error, a log or a screen: every
    non-printable character (controls, format characters, line separators) as a `\\u` escape."""
    if name.isprintable():
        return name
    return "".join(char if char.isprintable() else _escape(char) for char in name)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def refused_character(value: str) -> str | None:
    """The first Unicode control or format character (category Cc or Cf) of `value`, or None."""
    for char in value:
        if unicodedata.category(char) in REFUSED_CATEGORIES:
            return char
    return None


_EXACT = Context(prec=MAX_INTEGER_DIGITS + MAX_SCALE + 2)
_QUANTUM = Decimal(1).scaleb(-MAX_SCALE)
_TOO_LARGE = Decimal(10) ** MAX_INTEGER_DIGITS


def decimal_problem(value: Decimal) -> str | None:
    """Why `value` cannot be stored exactly in a DECIMAL(20, 8) column, or None. Never rounds:
    a value with more than 8 significant decimal places is refused, not silently cut."""
    if not value.is_finite():
        return "must be a finite number"
    if value.adjusted() < MAX_INTEGER_DIGITS and cast(int, value.as_tuple().exponent) >= -MAX_SCALE:
        return None  # under 10^12 with at most 8 places written: the common case, no arithmetic
    if value.copy_abs() >= _TOO_LARGE:
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
