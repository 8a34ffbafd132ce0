"""Alpaca's failures mapped into `adapters.base`'s hierarchy, at one place (pure).

    what failed                                   submit            other calls
    HTTP 401                                      BrokerRejected    AuthenticationFailed
    HTTP 403 (buying power, forbidden)            BrokerRejected    AuthenticationFailed
    HTTP 404                                      BrokerRejected    NotFound (query: None;
                                                                    cancel: CancelRejected)
    HTTP 422 client_order_id must be unique       DuplicateClientOrderId (the order exists:
                                                  the adapter adopts it, never fails over)
    HTTP 422 on cancel (not cancelable)                             NotCancelable (the adapter
                                                                    looks at the order)
    HTTP 408                                      OutcomeUnknown
    other HTTP 4xx (422 invalid, 400, ...)        BrokerRejected    OutcomeUnknown
    HTTP 429                                      RateLimited(retry_after from the headers)
    HTTP 5xx (500, 502, 503, 504)                 ServerError
    connect failed / refused / reset              ConnectionLost
    no response within the read timeout           OutcomeUnknown
    unreadable response, anything else            OutcomeUnknown

A submit's 4xx is a refusal: Alpaca answered and created nothing (401 and 403 included: the
order provably does not exist, so the daemon may fail over). The one 4xx that means the
opposite, a duplicate client order id, is told apart by Alpaca's message. Everything a
submit cannot classify is OutcomeUnknown: never resent, reconciled by `query`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from enum import StrEnum

import msgspec
import requests
from alpaca.common.exceptions import APIError

from adapters.base import (
    AuthenticationFailed,
    BrokerError,
    BrokerRejected,
    ConnectionLost,
    OutcomeUnknown,
    RateLimited,
    ServerError,
)


class Call(StrEnum):
    SUBMIT = "submit"
    CANCEL = "cancel"
    OTHER = "other"


class NotFound(BrokerError):
    """HTTP 404 outside submit: the order (or resource) does not exist at Alpaca."""


class DuplicateClientOrderId(BrokerError):
    """HTTP 422 on submit: an order with this client order id already exists at Alpaca."""


class NotCancelable(BrokerError):
    """HTTP 422 on cancel: Alpaca will not cancel the order (already final, or in transition)."""


def api_error_status(error: APIError) -> int | None:
    response = getattr(error.response, "status_code", None)
    return response if isinstance(response, int) else None


def api_error_message(error: APIError) -> str:
    """Alpaca's `message` when the body is its JSON error, else the body's start."""
    text = str(error)
    try:
        body = json.loads(text)
    except ValueError:
        return text[:200] or "no message"
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return text[:200]


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait after a 429: `Retry-After` (seconds or an HTTP date), else Alpaca's
    `X-RateLimit-Reset` (epoch seconds); None when neither says. `now` is epoch seconds."""
    value = headers.get("Retry-After")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError):
                pass
    reset = headers.get("X-RateLimit-Reset")
    if reset is not None:
        try:
            return max(0.0, float(reset) - now)
        except ValueError:
            return None
    return None


def _is_duplicate_client_order_id(message: str) -> bool:
    text = message.lower()
    return "client_order_id" in text and "unique" in text


def map_http_error(error: APIError, call: Call, now: float) -> BrokerError:
    status = api_error_status(error)
    message = api_error_message(error)
    what = f"HTTP {status}: {message}"
    if status is None:
        return OutcomeUnknown(f"Alpaca error without a status: {message}")
    if status == 429:
        headers = getattr(error.response, "headers", None) or {}
        return RateLimited(what, retry_after(headers, now))
    if status >= 500:
        return ServerError(what)
    if status == 408:
        return OutcomeUnknown(what)
    if call is Call.SUBMIT:
        if status == 422 and _is_duplicate_client_order_id(message):
            return DuplicateClientOrderId(what)
        if 400 <= status < 500:
            return BrokerRejected(what)
        return OutcomeUnknown(what)
    if status in (401, 403):
        return AuthenticationFailed(what)
    if status == 404:
        return NotFound(what)
    if call is Call.CANCEL and status == 422:
        return NotCancelable(what)
    return OutcomeUnknown(what)


def map_error(error: BaseException, call: Call, now: float, timeout: float) -> BrokerError:
    """Any exception from one REST call (run in a worker thread) as one of our errors."""
    if isinstance(error, BrokerError):
        return error
    if isinstance(error, APIError):
        return map_http_error(error, call, now)
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return ConnectionLost(f"could not connect to Alpaca within {timeout:g}s")
    if isinstance(error, requests.exceptions.Timeout):
        return OutcomeUnknown(f"no response from Alpaca within {timeout:g}s")
    if isinstance(error, requests.exceptions.ConnectionError):
        return ConnectionLost(f"connection to Alpaca failed: {type(error).__name__}")
    if isinstance(error, (msgspec.ValidationError, ValueError)):
        return OutcomeUnknown(f"unreadable response from Alpaca: {error}")
    return OutcomeUnknown(f"unexpected failure talking to Alpaca: {error!r}")
