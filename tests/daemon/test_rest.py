"""The REST app over the in-memory facade: status codes, JSON bodies, auth, limits.

Every rejected request is also checked to have never reached the service (nothing written).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import hypercorn.config
import hypercorn.trio
import pytest
import trio
from quart.testing import QuartClient as Client
from quart_trio import QuartTrio

from api.codec import to_builtins
from api.contracts import (
    CancelOrderRequest,
    GetExecutionRequest,
    ListBrokersRequest,
    OrderRoutingResponse,
    TCARequest,
)
from api.enums import AssetClass, BrokerListStatus, TCABenchmark
from api.errors import InvalidRequest, Unavailable
from api.openapi import openapi_bytes
from daemon.rest import create_app
from tests.api.fake_service import FakeBrokerService
from tests.api.test_validation import (
    BAD_BODIES,
    BAD_CANCELS,
    BAD_ORDERS,
    Bad,
    cancel,
    order,
)

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UNAUTHORIZED = {"message": "Authentication required"}
LIMIT = 4096


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


@pytest.fixture
def service() -> FakeBrokerService:
    return FakeBrokerService()


@pytest.fixture
def app(service: FakeBrokerService) -> QuartTrio:
    return create_app(service, tokens=frozenset({TOKEN, "second-token"}), max_body_bytes=LIMIT)


def client_of(app: QuartTrio) -> Client:
    client = app.test_client()
    assert isinstance(client, Client)  # quart types it as a Protocol missing open()'s defaults
    return client


@pytest.fixture
def client(app: QuartTrio) -> Client:
    return client_of(app)


async def call(
    client: Client,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request (authenticated unless `headers` says otherwise); every reply must be JSON."""
    response = await client.open(path, method=method, data=body, headers=AUTH if headers is None else headers)
    data = await response.get_data()
    assert response.content_type == "application/json", (response.status_code, data)
    return Reply(response.status_code, json.loads(data), dict(response.headers))


def assert_error_body(body: Any) -> None:
    """The ErrorBody shape: a message, and field errors only when there are some."""
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) <= {"message", "errors"}
    for error in body.get("errors", []):
        assert set(error) == {"field", "message"}


# --- the happy paths ----------------------------------------------------------------------


async def test_route_order_is_accepted_with_202(client: Client, service: FakeBrokerService) -> None:
    reply = await call(client, "POST", "/execution/route", order(quantity=12.5))
    assert reply.status == 202
    assert reply.body["orderId"] == "ord-1"
    assert reply.body["status"] == "ACCEPTED"
    assert set(reply.body) >= {"routingId", "orderId", "status", "timestamp", "executionId"}
    [(method, request)] = service.calls
    assert method == "route_order"
    assert to_builtins(request)["quantity"] == 12.5


async def test_repeated_order_gets_the_first_answer(client: Client) -> None:
    first = await call(client, "POST", "/execution/route", order())
    again = await call(client, "POST", "/execution/route", order())
    assert (again.status, again.body) == (202, first.body)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_body_is_parsed_whatever_its_content_type(client: Client, content_type: str | None) -> None:
    headers = dict(AUTH) if content_type is None else {**AUTH, "Content-Type": content_type}
    reply = await call(client, "POST", "/execution/route", order(), headers)
    assert reply.status == 202


async def test_cancel_order_is_accepted_with_202(client: Client, service: FakeBrokerService) -> None:
    await call(client, "POST", "/execution/route", order())
    reply = await call(client, "POST", "/execution/cancel", cancel(reason="desk"))
    assert reply.status == 202
    assert reply.body["orderId"] == "ord-1"
    assert set(reply.body) >= {"requestId", "orderId", "status", "timestamp"}
    assert service.calls[-1] == (
        "cancel_order",
        CancelOrderRequest(order_id="ord-1", broker_id="sim-a", reason="desk"),
    )


async def test_tca_answers_200_with_the_benchmark_asked_404_for_an_unknown_order_400_for_bad_fields(
    client: Client, service: FakeBrokerService
) -> None:
    await call(client, "POST", "/execution/route", order())
    reply = await call(client, "POST", "/analysis/tca", b'{"orderId": "ord-1", "benchmark": "VWAP"}')
    assert reply.status == 200
    assert reply.body["benchmark"] == "VWAP" and reply.body["orderId"] == "ord-1"
    asked = TCARequest(order_id="ord-1", benchmark=TCABenchmark.VWAP)
    assert service.calls[-1] == ("transaction_cost_analysis", asked)
    missing = await call(client, "POST", "/analysis/tca", b'{"orderId": "nope"}')
    assert missing.status == 404
    bad = await call(client, "POST", "/analysis/tca", b'{"orderId": "ord-1", "benchmark": "MID", "extra": 1}')
    assert bad.status == 400
    assert {e["field"] for e in bad.body["errors"]} == {"benchmark", "extra"}


async def test_get_execution_after_routing(client: Client, service: FakeBrokerService) -> None:
    routed = await call(client, "POST", "/execution/route", order())
    execution_id = routed.body["executionId"]
    reply = await call(client, "GET", f"/execution/{execution_id}")
    assert reply.status == 200
    assert reply.body["executionId"] == execution_id
    assert reply.body["orderId"] == "ord-1"
    assert service.calls[-1] == ("get_execution", GetExecutionRequest(execution_id=execution_id))


async def test_get_broker_status(client: Client, service: FakeBrokerService) -> None:
    reply = await call(client, "GET", "/brokers/sim-a/status")
    assert reply.status == 200
    assert reply.body["brokerId"] == "sim-a"
    assert reply.body["status"] == "CONNECTED"
    assert service.calls == [("get_broker_status", "sim-a")]


async def test_list_brokers(client: Client) -> None:
    reply = await call(client, "GET", "/brokers")
    assert reply.status == 200
    assert [b["id"] for b in reply.body] == ["sim-a", "sim-b", "sim-c"]


@pytest.mark.parametrize(
    ("query", "expected", "ids"),
    [
        ("status=ACTIVE", ListBrokersRequest(status=BrokerListStatus.ACTIVE), ["sim-a", "sim-b"]),
        ("assetClass=CRYPTO", ListBrokersRequest(asset_class=AssetClass.CRYPTO), ["sim-b"]),
        (
            "status=MAINTENANCE&assetClass=EQUITY",
            ListBrokersRequest(status=BrokerListStatus.MAINTENANCE, asset_class=AssetClass.EQUITY),
            ["sim-c"],
        ),
    ],
)
async def test_list_brokers_filters(
    client: Client,
    service: FakeBrokerService,
    query: str,
    expected: ListBrokersRequest,
    ids: list[str],
) -> None:
    reply = await call(client, "GET", f"/brokers?{query}")
    assert reply.status == 200
    assert [b["id"] for b in reply.body] == ids
    assert service.calls == [("list_brokers", expected)]


# --- 400: bad input never reaches the service ---------------------------------------------


async def assert_rejected(client: Client, service: FakeBrokerService, path: str, case: Bad) -> None:
    reply = await call(client, "POST", path, case.body)
    assert reply.status == 400, reply.body
    assert_error_body(reply.body)
    assert {e["field"] for e in reply.body.get("errors", [])} == case.fields
    assert case.message in reply.body["message"]
    assert service.calls == []


@pytest.mark.parametrize("case", [c.param for c in BAD_ORDERS + BAD_BODIES])
async def test_bad_order_is_a_400_naming_each_field(
    client: Client, service: FakeBrokerService, case: Bad
) -> None:
    await assert_rejected(client, service, "/execution/route", case)


@pytest.mark.parametrize("case", [c.param for c in BAD_CANCELS + BAD_BODIES])
async def test_bad_cancel_is_a_400_naming_each_field(
    client: Client, service: FakeBrokerService, case: Bad
) -> None:
    await assert_rejected(client, service, "/execution/cancel", case)


async def test_field_errors_in_a_400_body(client: Client) -> None:
    reply = await call(client, "POST", "/execution/route", order(type="LIMIT", quantity=0))
    assert reply.body == {
        "message": "invalid request: quantity, price",
        "errors": [
            {"field": "quantity", "message": "must be greater than 0"},
            {"field": "price", "message": "is required for LIMIT orders"},
        ],
    }


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("status=active", {"status"}),
        ("status=", {"status"}),
        ("assetClass=BONDS", {"assetClass"}),
        ("status=UP&assetClass=BONDS", {"status", "assetClass"}),
        ("status=ACTIVE&status=INACTIVE", {"status"}),
        ("stauts=ACTIVE", {"stauts"}),
    ],
)
async def test_bad_list_brokers_filter_is_a_400(
    client: Client, service: FakeBrokerService, query: str, fields: set[str]
) -> None:
    reply = await call(client, "GET", f"/brokers?{query}")
    assert reply.status == 400
    assert_error_body(reply.body)
    assert {e["field"] for e in reply.body["errors"]} == fields
    assert service.calls == []


@pytest.mark.parametrize(
    ("path", "field"),
    [("/execution/" + "x" * 37, "executionId"), ("/brokers/" + "b" * 37 + "/status", "brokerId")],
)
async def test_overlong_path_id_is_a_400(
    client: Client, service: FakeBrokerService, path: str, field: str
) -> None:
    reply = await call(client, "GET", path)
    assert reply.status == 400
    assert [e["field"] for e in reply.body["errors"]] == [field]
    assert service.calls == []


async def test_invalid_request_from_the_service_is_a_400(client: Client, service: FakeBrokerService) -> None:
    service.fail_with = InvalidRequest("unknown broker", [])
    reply = await call(client, "POST", "/execution/route", order(preferredBrokers=["nope"]))
    assert (reply.status, reply.body) == (400, {"message": "unknown broker"})


# --- 401 ----------------------------------------------------------------------------------

PROTECTED = [
    ("GET", "/brokers", None),
    ("GET", "/brokers/sim-a/status", None),
    ("POST", "/execution/route", order()),
    ("GET", "/execution/x-1", None),
    ("POST", "/execution/cancel", cancel()),
    ("POST", "/analysis/tca", b'{"orderId": "ord-1"}'),
]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong-token",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer s3cret-token\u00e9",
    ],
)
@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
async def test_missing_or_wrong_token_is_a_401(
    client: Client,
    service: FakeBrokerService,
    authorization: str | None,
    method: str,
    path: str,
    body: bytes | None,
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    reply = await call(client, method, path, body, headers)
    assert reply.status == 401
    assert reply.body == UNAUTHORIZED
    assert reply.headers["www-authenticate"] == "Bearer"
    assert service.calls == []


@pytest.mark.parametrize(
    "authorization", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"Bearer   {TOKEN} ", "Bearer second-token"]
)
@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
async def test_right_token_passes(
    client: Client, authorization: str, method: str, path: str, body: bytes | None
) -> None:
    await call(client, "POST", "/execution/route", order())  # so that x-1 and ord-1 exist
    reply = await call(client, method, path, body, {"Authorization": authorization})
    assert reply.status in (200, 202)


async def test_bad_body_without_a_token_is_a_401_not_a_400(client: Client) -> None:
    reply = await call(client, "POST", "/execution/route", b"{", {})
    assert (reply.status, reply.body) == (401, UNAUTHORIZED)


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
async def test_no_tokens_means_no_authentication(
    service: FakeBrokerService, method: str, path: str, body: bytes | None
) -> None:
    client = client_of(create_app(service, tokens=frozenset()))
    await call(client, "POST", "/execution/route", order(), {})
    for headers in ({}, {"Authorization": "Bearer anything"}):
        reply = await call(client, method, path, body, headers)
        assert reply.status in (200, 202)


@pytest.mark.parametrize("tokens", [{""}, {" "}, {"tok "}, {"two words"}, {"good", "\t"}, {"caf\u00e9"}])
def test_blank_tokens_are_refused(service: FakeBrokerService, tokens: set[str]) -> None:
    with pytest.raises(ValueError, match="tokens"):
        create_app(service, tokens=frozenset(tokens))


async def test_health_routes_need_no_token(client: Client) -> None:
    for path in ("/health", "/health/ready"):
        reply = await call(client, "GET", path, headers={})
        assert (reply.status, reply.body) == (200, {"ready": True, "checks": {}})
    reply = await call(client, "GET", "/health/live", headers={})
    assert (reply.status, reply.body) == (200, {"status": "ok"})


async def test_health_is_readiness_and_live_is_the_liveness_source(service: FakeBrokerService) -> None:
    state = {"ready": False, "live": False}

    def readiness() -> tuple[bool, bytes]:
        flag = b"true" if state["ready"] else b"false"
        return state["ready"], b'{"ready":%s,"checks":{"nats":"x"}}' % flag

    def liveness() -> tuple[bool, bytes]:
        return state["live"], b'{"status":"%s"}' % (b"ok" if state["live"] else b"stalled")

    client = client_of(
        create_app(service, tokens=frozenset({TOKEN}), readiness=readiness, liveness=liveness)
    )
    for path in ("/health", "/health/ready", "/ready"):
        reply = await call(client, "GET", path, headers={})
        assert (reply.status, reply.body) == (503, {"ready": False, "checks": {"nats": "x"}}), path
    reply = await call(client, "GET", "/health/live", headers={})
    assert (reply.status, reply.body) == (503, {"status": "stalled"})
    state.update(ready=True, live=True)
    assert (await call(client, "GET", "/health", headers={})).status == 200
    assert (await call(client, "GET", "/health/live", headers={})).status == 200


async def test_route_observer_hears_answers_and_errors(service: FakeBrokerService) -> None:
    heard: list[tuple[str, float]] = []

    class Observer:
        def observe_route(self, response: OrderRoutingResponse, seconds: float) -> None:
            heard.append((response.status.value, seconds))

        def observe_route_error(self, seconds: float) -> None:
            heard.append(("error", seconds))

    client = client_of(create_app(service, tokens=frozenset({TOKEN}), route_observer=Observer()))
    assert (await call(client, "POST", "/execution/route", body=order())).status == 202
    assert (await call(client, "POST", "/execution/route", body=b"{")).status == 400
    assert [outcome for outcome, _ in heard] == ["ACCEPTED", "error"]
    assert all(0 <= seconds < 5 for _, seconds in heard)


async def test_readiness_needs_no_token_and_says_503_with_the_reasons_when_not_ready(
    service: FakeBrokerService,
) -> None:
    state = {"ready": True}

    def readiness() -> tuple[bool, bytes]:
        if state["ready"]:
            return True, b'{"ready":true,"checks":{"database":"ok"}}'
        return False, b'{"ready":false,"checks":{"database":"unavailable (reconnecting)"}}'

    client = client_of(create_app(service, tokens=frozenset({TOKEN}), readiness=readiness))
    reply = await call(client, "GET", "/ready", headers={})
    assert (reply.status, reply.body) == (200, {"ready": True, "checks": {"database": "ok"}})
    state["ready"] = False
    reply = await call(client, "GET", "/ready", headers={})
    assert reply.status == 503
    assert reply.body == {"ready": False, "checks": {"database": "unavailable (reconnecting)"}}


async def test_readiness_without_a_source_is_ready(client: Client) -> None:
    reply = await call(client, "GET", "/ready", headers={})
    assert (reply.status, reply.body) == (200, {"ready": True, "checks": {}})


async def test_openapi_document_needs_no_token(client: Client) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert await response.get_data() == openapi_bytes()


# --- 404, 405, 413, 500, 503 --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "service_called"),
    [
        ("/execution/x-404", True),
        ("/brokers/nope/status", True),
        ("/nope", False),
        ("/brokers/", False),
        ("/brokers/sim-a", False),
        ("/execution/cancel/x", False),
        ("/analysis/tca/x", False),
    ],
)
@pytest.mark.parametrize("headers", [AUTH, {}], ids=["token", "no token"])
async def test_unknown_is_a_json_404(
    client: Client,
    service: FakeBrokerService,
    path: str,
    service_called: bool,
    headers: dict[str, str],
) -> None:
    reply = await call(client, "GET", path, headers=headers)
    if service_called and not headers:
        assert reply.status == 401  # an existing route: the token comes first
        return
    assert reply.status == 404
    assert set(reply.body) == {"message"}
    assert bool(service.calls) == service_called


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/brokers", "GET, HEAD"),
        ("POST", "/brokers", "GET, HEAD"),
        ("OPTIONS", "/brokers", "GET, HEAD"),
        ("PUT", "/execution/route", "GET, HEAD, POST"),  # GET is /execution/{executionId}
        ("POST", "/health", "GET, HEAD"),
        ("POST", "/execution/x-1", "GET, HEAD"),
    ],
)
async def test_wrong_method_is_a_json_405(
    client: Client, service: FakeBrokerService, method: str, path: str, allow: str
) -> None:
    reply = await call(client, method, path, b"{}")
    assert reply.status == 405
    assert reply.body == {"message": "method not allowed"}
    assert reply.headers["allow"] == allow
    assert service.calls == []


@pytest.mark.parametrize("path", ["/execution/route", "/execution/cancel"])
async def test_body_over_the_limit_is_a_413(client: Client, service: FakeBrokerService, path: str) -> None:
    padding = "x" * LIMIT
    reply = await call(client, "POST", path, order(accountId=padding))
    assert reply.status == 413
    assert reply.body == {"message": f"request body larger than {LIMIT} bytes"}
    assert service.calls == []


async def test_body_at_the_limit_is_read(client: Client) -> None:
    body = order()
    body = body[:-1] + b" " * (LIMIT - len(body)) + b"}"
    assert len(body) == LIMIT
    assert (await call(client, "POST", "/execution/route", body)).status == 202


async def test_unexpected_error_is_a_generic_500_and_logged(
    client: Client, service: FakeBrokerService, caplog: pytest.LogCaptureFixture
) -> None:
    service.fail_with = RuntimeError("connection to postgres://admin:hunter2@db failed")
    with caplog.at_level(logging.ERROR, logger="daemon.rest"):
        reply = await call(client, "POST", "/execution/route", order())
    assert (reply.status, reply.body) == (500, {"message": "internal server error"})
    assert "hunter2" not in repr(reply.headers)
    [record] = [r for r in caplog.records if r.name == "daemon.rest"]
    assert record.exc_info is not None and record.exc_info[1] is service.fail_with


async def test_unavailable_is_a_503(client: Client, service: FakeBrokerService) -> None:
    service.fail_with = Unavailable("service is stopping")
    reply = await call(client, "GET", "/brokers")
    assert (reply.status, reply.body) == (503, {"message": "service is stopping"})


# --- served by hypercorn ------------------------------------------------------------------


@pytest.fixture
async def served(app: QuartTrio) -> AsyncIterator[str]:
    """The app behind a real hypercorn on a free port, started as the daemon will start it."""
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            lambda task_status: hypercorn.trio.serve(
                app, config, shutdown_trigger=stop.wait, task_status=task_status
            )
        )
        try:
            yield binds[0]
        finally:
            stop.set()


async def test_served_by_hypercorn(served: str, service: FakeBrokerService) -> None:
    async with httpx.AsyncClient(base_url=served, headers=AUTH) as http:
        health = await http.get("/health/live", headers={"Authorization": ""})
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        routed = await http.post("/execution/route", content=order())
        assert routed.status_code == 202
        assert routed.headers["content-type"] == "application/json"
        denied = await http.get("/brokers", headers={"Authorization": "Bearer nope"})
        assert (denied.status_code, denied.json()) == (401, UNAUTHORIZED)
        assert denied.headers["www-authenticate"] == "Bearer"


async def test_chunked_body_over_the_limit_is_a_413(served: str, service: FakeBrokerService) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit must hold anyway
        yield order()[:-1]
        for _ in range(LIMIT // 512 + 1):
            yield b" " * 512
        yield b"}"

    async with httpx.AsyncClient(base_url=served, headers=AUTH) as http:
        response = await http.post("/execution/route", content=chunks())
    assert response.status_code == 413
    assert response.json() == {"message": f"request body larger than {LIMIT} bytes"}
    assert service.calls == []
