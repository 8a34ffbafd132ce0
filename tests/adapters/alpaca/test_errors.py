"""The error boundary: every Alpaca failure lands in exactly one class of ours."""

from __future__ import annotations

import json

import pytest
import requests
from alpaca.common.exceptions import APIError

from adapters.alpaca.errors import (
    Call,
    DuplicateClientOrderId,
    NotCancelable,
    NotFound,
    map_error,
    retry_after,
)
from adapters.base import (
    AuthenticationFailed,
    BrokerError,
    BrokerRejected,
    ConnectionLost,
    OutcomeUnknown,
    RateLimited,
    ServerError,
)

NOW = 1_700_000_000.0


def api_error(status: int, message: str = "boom", headers: dict[str, str] | None = None) -> APIError:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    body = json.dumps({"code": status * 100000, "message": message})
    response._content = body.encode()
    return APIError(body, requests.HTTPError(response=response))  # type: ignore[no-untyped-call]


CASES: list[tuple[int, str, Call, type[BrokerError]]] = [
    (401, "request is not authorized", Call.SUBMIT, BrokerRejected),
    (403, "insufficient buying power", Call.SUBMIT, BrokerRejected),
    (422, "qty must be > 0", Call.SUBMIT, BrokerRejected),
    (422, "client_order_id must be unique", Call.SUBMIT, DuplicateClientOrderId),
    (400, "bad request", Call.SUBMIT, BrokerRejected),
    (408, "request timeout", Call.SUBMIT, OutcomeUnknown),
    (429, "rate limit exceeded", Call.SUBMIT, RateLimited),
    (500, "internal server error", Call.SUBMIT, ServerError),
    (502, "bad gateway", Call.SUBMIT, ServerError),
    (503, "unavailable", Call.SUBMIT, ServerError),
    (504, "gateway timeout", Call.SUBMIT, ServerError),
    (401, "request is not authorized", Call.OTHER, AuthenticationFailed),
    (403, "forbidden", Call.OTHER, AuthenticationFailed),
    (404, "order not found", Call.OTHER, NotFound),
    (404, "order not found", Call.CANCEL, NotFound),
    (422, 'order is already in "filled" state', Call.CANCEL, NotCancelable),
    (422, "unprocessable", Call.OTHER, OutcomeUnknown),
    (429, "rate limit exceeded", Call.OTHER, RateLimited),
    (500, "internal server error", Call.CANCEL, ServerError),
]


@pytest.mark.parametrize(("status", "message", "call", "expected"), CASES)
def test_http_errors(status: int, message: str, call: Call, expected: type[BrokerError]) -> None:
    mapped = map_error(api_error(status, message), call, NOW, 10.0)
    assert type(mapped) is expected
    assert str(status) in mapped.reason and message in mapped.reason


def test_ambiguous_failures_are_outcome_unknown() -> None:
    for error in (
        requests.exceptions.ReadTimeout("read timed out"),
        requests.exceptions.ChunkedEncodingError("truncated"),
        ValueError("Expecting value: line 1 column 1"),
        RuntimeError("something nobody thought of"),
    ):
        mapped = map_error(error, Call.SUBMIT, NOW, 10.0)
        assert isinstance(mapped, OutcomeUnknown) and not isinstance(mapped, ConnectionLost), error


def test_connection_failures_are_connection_lost() -> None:
    for error in (
        requests.exceptions.ConnectTimeout("connect timed out"),
        requests.exceptions.ConnectionError("connection refused"),
    ):
        assert type(map_error(error, Call.SUBMIT, NOW, 3.0)) is ConnectionLost


def test_non_json_error_body_is_kept_short() -> None:
    response = requests.Response()
    response.status_code = 504
    html = "<html>" + "x" * 1000 + "</html>"
    error = APIError(html, requests.HTTPError(response=response))  # type: ignore[no-untyped-call]
    mapped = map_error(error, Call.SUBMIT, NOW, 1.0)
    assert isinstance(mapped, ServerError) and len(mapped.reason) < 250


def test_rate_limited_carries_retry_after_from_the_headers() -> None:
    reset = api_error(429, headers={"X-RateLimit-Reset": str(int(NOW) + 7)})
    mapped = map_error(reset, Call.SUBMIT, NOW, 1.0)
    assert isinstance(mapped, RateLimited) and mapped.retry_after == pytest.approx(7.0)
    without = map_error(api_error(429), Call.SUBMIT, NOW, 1.0)
    assert isinstance(without, RateLimited) and without.retry_after is None


def test_retry_after_header_forms() -> None:
    assert retry_after({"Retry-After": "3"}, NOW) == 3.0
    assert retry_after({"Retry-After": "Tue, 14 Nov 2023 22:13:25 GMT"}, NOW) == pytest.approx(5.0)
    assert retry_after({"Retry-After": "3", "X-RateLimit-Reset": str(NOW + 9)}, NOW) == 3.0
    assert retry_after({"X-RateLimit-Reset": str(NOW - 5)}, NOW) == 0.0
    assert retry_after({"X-RateLimit-Reset": "soon"}, NOW) is None
    assert retry_after({}, NOW) is None
