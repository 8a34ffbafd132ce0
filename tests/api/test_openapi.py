"""api/openapi.json: a valid OpenAPI 3.0 document that agrees with the app and the wire Structs.

The Struct comparison fails when a field is added to, removed from or retyped in a contract
Struct without the document following, and when a new Struct is neither documented nor listed
in `NOT_DOCUMENTED` with a reason.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from openapi_spec_validator import OpenAPIV30SpecValidator, validate

import api
import api.contracts
from api.openapi import openapi_bytes, openapi_document
from api.validation import MAX_LENGTHS
from daemon.rest import PUBLIC_ENDPOINTS, create_app
from tests.api.fake_service import FakeBrokerService

DOCUMENT = openapi_document()
SCHEMAS: dict[str, Any] = DOCUMENT["components"]["schemas"]

#: Contract Structs that have no schema of their own in the document, and why.
NOT_DOCUMENTED: dict[str, str] = {
    "Wire": "base class",
    "WireOut": "base class",
    "GetExecutionRequest": "NATS body; REST carries it in the path (checked below)",
    "GetBrokerStatusRequest": "NATS body; REST carries it in the path (checked below)",
    "ListBrokersRequest": "NATS body; REST carries it in the query (checked below)",
    "SetMaintenanceRequest": "NATS body; REST carries the broker in the path and MaintenanceRequest",
}

CONTRACT_STRUCTS: dict[str, type[msgspec.Struct]] = {
    name: value
    for name, value in vars(api.contracts).items()
    if isinstance(value, type)
    and issubclass(value, msgspec.Struct)
    and value.__module__ == api.contracts.__name__
}
DOCUMENTED = {name: cls for name, cls in CONTRACT_STRUCTS.items() if name not in NOT_DOCUMENTED}


# --- the document itself ------------------------------------------------------------------


def test_document_is_valid_openapi_3_0() -> None:
    assert DOCUMENT["openapi"] == "3.0.3"
    validate(DOCUMENT, cls=OpenAPIV30SpecValidator)


def test_validator_catches_a_broken_document() -> None:
    broken = openapi_document()
    broken["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {
        "type": "dict"
    }
    with pytest.raises(Exception, match="dict"):
        validate(broken, cls=OpenAPIV30SpecValidator)


def test_document_is_package_data() -> None:
    on_disk = Path(api.__file__).with_name("openapi.json").read_bytes()
    assert openapi_bytes() == on_disk
    assert json.loads(on_disk) == DOCUMENT


def test_every_reference_resolves() -> None:
    refs = re.findall(r'"\$ref": "#/components/(\w+)/(\w+)"', openapi_bytes().decode())
    assert refs
    for section, name in refs:
        assert name in DOCUMENT["components"][section], f"{section}/{name}"


# --- the document and the app agree -------------------------------------------------------


def app_operations() -> dict[tuple[str, str], str]:
    app = create_app(FakeBrokerService(), tokens=frozenset({"t"}))
    operations: dict[tuple[str, str], str] = {}
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method != "HEAD":  # implied by every GET
                operations[(path, method.lower())] = rule.endpoint
    return operations


def document_operations() -> dict[tuple[str, str], str]:
    return {
        (path, method): operation["operationId"]
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
    }


def test_app_routes_are_exactly_the_documented_operations() -> None:
    assert app_operations() == document_operations()


def test_public_operations_are_exactly_those_without_security() -> None:
    assert DOCUMENT["security"] == [{"bearerAuth": []}]
    assert DOCUMENT["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    public = {
        operation["operationId"]
        for item in DOCUMENT["paths"].values()
        for operation in item.values()
        if operation.get("security") == []
    }
    assert public == PUBLIC_ENDPOINTS
    for item in DOCUMENT["paths"].values():
        for operation in item.values():
            assert ("401" in operation["responses"]) == (operation["operationId"] not in public)
            assert operation.get("security", []) == []  # only the global requirement applies


def test_path_parameters_match_the_route_variables_and_the_structs() -> None:
    structs: dict[str, type[msgspec.Struct]] = {
        "brokerId": api.contracts.GetBrokerStatusRequest,
        "executionId": api.contracts.GetExecutionRequest,
    }
    for path, item in DOCUMENT["paths"].items():
        variables = set(re.findall(r"{(\w+)}", path))
        for operation in item.values():
            declared = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "path"}
            assert set(declared) == variables, path
            for name, parameter in declared.items():
                assert parameter["required"] is True
                assert wire_names(structs[name]) >= {name}
                assert parameter["schema"] == {"type": "string", "maxLength": MAX_LENGTHS[name]}


def test_list_brokers_query_matches_its_struct() -> None:
    parameters = DOCUMENT["paths"]["/brokers"]["get"]["parameters"]
    documented = {p["name"]: p["schema"] for p in parameters if p["in"] == "query"}
    info = mi.type_info(api.contracts.ListBrokersRequest)
    assert isinstance(info, mi.StructType)
    fields = {f.encode_name: f for f in info.fields}
    assert set(documented) == set(fields)
    for name, schema in documented.items():
        assert shape(schema, SCHEMAS) == struct_shape(fields[name].type), name
        assert not fields[name].required


# --- the document and the Structs agree ---------------------------------------------------
#
# The Struct side is read with msgspec.inspect rather than msgspec.json.schema_components: the
# JSON schema writes Decimal as a string (our codec writes numbers) and a plain `datetime` as a
# bare string (it says `date-time` only for `Meta(tz=True)`), so it cannot tell a timestamp from
# an id. type_info keeps every distinction the document makes.


def wire_names(cls: type[msgspec.Struct]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(cls)}


def struct_shape(t: mi.Type) -> Any:
    """What a field of this msgspec type looks like on the wire (see `shape`)."""
    if isinstance(t, mi.UnionType):
        options = [o for o in t.types if not isinstance(o, mi.NoneType)]
        assert len(options) == 1, t
        return struct_shape(options[0])
    if isinstance(t, mi.EnumType):
        return ("enum", frozenset(member.value for member in t.cls))
    if isinstance(t, mi.StructType):
        return ("object", t.cls.__name__)
    if isinstance(t, (mi.VarTupleType, mi.ListType)):
        return ("array", struct_shape(t.item_type))
    if isinstance(t, mi.DictType):  # string keys: an object with additionalProperties
        return ("map", struct_shape(t.value_type))
    simple = {
        mi.StrType: "string",
        mi.IntType: "integer",
        mi.FloatType: "number",
        mi.DecimalType: "number",  # api.codec writes decimals as JSON numbers
        mi.BoolType: "boolean",
        mi.DateTimeType: "date-time",
    }
    return (simple[type(t)],)


def shape(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    """What a document schema looks like on the wire, in `struct_shape`'s terms."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        if "enum" in components[name]:
            return ("enum", frozenset(components[name]["enum"]))
        return ("object", name)
    if "enum" in schema:
        return ("enum", frozenset(schema["enum"]))
    kind = schema.get("type")
    if kind == "array":
        return ("array", shape(schema["items"], components))
    if kind == "string" and schema.get("format") == "date-time":
        return ("date-time",)
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return ("map", shape(schema["additionalProperties"], components))
    if kind == "object" and "properties" in schema:
        raise AssertionError(f"inline object {schema}: give it a component named after its Struct")
    assert kind in ("string", "number", "integer", "boolean"), schema
    return (kind,)


def always_present(cls: type[msgspec.Struct]) -> set[str]:
    """The fields every JSON body of `cls` has: those without a default, or all of them when
    the Struct does not omit defaults."""
    fields = msgspec.structs.fields(cls)
    if cls.__struct_config__.omit_defaults:
        return {f.encode_name for f in fields if f.required}
    return {f.encode_name for f in fields}


def struct_differences(cls: type[msgspec.Struct], documented: dict[str, Any]) -> list[str]:
    """How the document's schema of `cls` differs from the Struct (empty when they agree).

    Requests (Structs that forbid unknown fields): `required` is what a client must send,
    unknown fields are refused, defaults are documented. Responses: `required` is what a body
    always carries."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    fields = {f.encode_name: f for f in info.fields}
    properties: dict[str, Any] = documented.get("properties", {})
    differences: list[str] = []
    ours, theirs = set(properties), set(fields)
    if ours != theirs:
        differences.append(f"fields: undocumented {sorted(theirs - ours)}, unknown {sorted(ours - theirs)}")
    for name in sorted(ours & theirs):
        doc_shape, field_shape = shape(properties[name], SCHEMAS), struct_shape(fields[name].type)
        if doc_shape != field_shape:
            differences.append(f"{name}: documented {doc_shape}, Struct {field_shape}")
    is_request = issubclass(cls, api.contracts.Wire)  # requests refuse unknown fields
    required = {n for n, f in fields.items() if f.required} if is_request else always_present(cls)
    if set(documented.get("required", [])) != required:
        differences.append(f"required: documented {documented.get('required')}, Struct {sorted(required)}")
    if is_request and documented.get("additionalProperties") is not False:
        differences.append("unknown fields are refused: additionalProperties must be false")
    for name in sorted(ours & theirs):
        default = fields[name].default
        if is_request and isinstance(default, (str, int, float)):  # enums are str
            if properties[name].get("default") != default:
                differences.append(f"{name}: default {default!r} not documented")
        elif "default" in properties[name]:
            differences.append(f"{name}: documents a default the Struct does not have")
    return differences


def test_every_contract_struct_is_documented_or_excused() -> None:
    assert set(NOT_DOCUMENTED) <= set(CONTRACT_STRUCTS)
    undocumented = set(DOCUMENTED) - set(SCHEMAS)
    assert not undocumented, f"document these Structs (or excuse them in NOT_DOCUMENTED): {undocumented}"


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_schema_matches_its_struct(name: str) -> None:
    assert struct_differences(DOCUMENTED[name], SCHEMAS[name]) == []


def test_a_struct_with_an_undocumented_field_is_caught() -> None:
    class OrderRoutingRequest(api.contracts.OrderRoutingRequest, frozen=True):
        display_quantity: int | None = None

    differences = struct_differences(OrderRoutingRequest, SCHEMAS["OrderRoutingRequest"])
    assert differences == ["fields: undocumented ['displayQuantity'], unknown []"]


def test_a_retyped_or_reenumerated_field_is_caught() -> None:
    schema = json.loads(json.dumps(SCHEMAS["ExecutionDetails"]))
    schema["properties"]["fees"] = {"type": "string"}
    schema["properties"]["status"]["enum"].remove("CANCELED")
    schema["required"].remove("fees")
    assert len(struct_differences(api.contracts.ExecutionDetails, schema)) == 3


def test_string_limits_match_validation() -> None:
    for name in ("OrderRoutingRequest", "CancelOrderRequest"):
        for field, schema in SCHEMAS[name]["properties"].items():
            if schema.get("type") == "string":
                assert schema.get("maxLength") == MAX_LENGTHS.get(field), f"{name}.{field}"


def test_response_bodies_reference_the_right_schemas() -> None:
    def body(path: str, method: str, code: str) -> Any:
        return DOCUMENT["paths"][path][method]["responses"][code]["content"]["application/json"]["schema"]

    assert body("/execution/route", "post", "202") == {"$ref": "#/components/schemas/OrderRoutingResponse"}
    assert body("/execution/cancel", "post", "202") == {"$ref": "#/components/schemas/CancelOrderResponse"}
    assert body("/execution/{executionId}", "get", "200") == {"$ref": "#/components/schemas/ExecutionDetails"}
    assert body("/brokers/{brokerId}/status", "get", "200") == {"$ref": "#/components/schemas/BrokerStatus"}
    assert body("/brokers", "get", "200") == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/BrokerInfo"},
    }
    responses = DOCUMENT["components"]["responses"]
    assert responses["BadRequest"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    for path, item in DOCUMENT["paths"].items():
        for operation in item.values():
            if "404" in operation["responses"]:
                assert body(path, next(iter(item)), "404") == {"$ref": "#/components/schemas/Message"}
    assert SCHEMAS["Message"]["required"] == ["message"]
    assert set(SCHEMAS["Message"]["properties"]) == {"message"}


def test_every_code_the_app_answers_is_documented() -> None:
    """400 (validation, incl. path and query), 401, 503 (Unavailable) on every facade route,
    413 on every body, 404 where the facade looks something up."""
    looks_up = {
        "getBrokerStatus",
        "getExecution",
        "cancelOrder",
        "setBrokerMaintenance",
        "getTransactionCostAnalysis",
    }
    accepted_later = {"routeOrder", "cancelOrder"}  # 202: the work continues after the answer
    for item in DOCUMENT["paths"].values():
        for operation in item.values():
            codes = set(operation["responses"])
            if operation["operationId"] in PUBLIC_ENDPOINTS:  # health also says 503: not ready/live
                only_ok = operation["operationId"] == "getOpenApiDocument"
                assert codes == ({"200"} if only_ok else {"200", "503"})
                continue
            success = "202" if operation["operationId"] in accepted_later else "200"
            expected = {success, "400", "401", "503"}
            expected |= {"413"} if "requestBody" in operation else set()
            expected |= {"404"} if operation["operationId"] in looks_up else set()
            assert codes == expected, operation["operationId"]
