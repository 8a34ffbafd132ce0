"""NATS request-reply endpoints: JSON bytes in, JSON bytes out, over the service facade.

One of the service's two drivers, side by side in `daemon/`: this one (NATS) and `daemon.rest`
(REST), both over the same `api.service.BrokerService` Protocol. Drivers live in `daemon/`
because they need what the daemon wires (this one the NATS bridge `daemon.bus` and the pre-trade
admin of `nursery`); `api/` keeps only the wire contracts and domain types every part imports.

Each endpoint decodes and validates with `api.validation`, calls the facade, and encodes the
reply. Every failure is an error reply (never silence): the `Nats-Service-Error-Code` header
carries the HTTP-like code and the payload is the REST error body with field errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from api import subjects
from api.codec import encode
from api.contracts import (
    ErrorBody,
    GetBrokerStatusRequest,
    ListBrokersRequest,
    MaintenanceRequest,
    SetMaintenanceRequest,
    TCARequest,
)
from api.errors import ServiceError
from api.observer import RouteObserver
from api.service import BrokerService
from api.validation import decode_cancel, decode_get_execution, decode_order, decode_request
from daemon.bus import Endpoint, Reply
from nursery.pretrade.admin import (
    LIST_KILL_SWITCHES,
    SET_KILL_SWITCH,
    KillSwitchAdmin,
    decode_set_kill_switch,
)
from nursery.pretrade.explain import EXPLAIN_ORDER, OrderExplainer, decode_explain

log = logging.getLogger(__name__)

OVERLOADED = encode(ErrorBody(message="service overloaded or stopping: retry shortly"))


def _endpoint(name: str, subject: str, call: Callable[[bytes], Awaitable[Any]]) -> Endpoint:
    async def handle(data: bytes) -> Reply:
        try:
            return Reply(encode(await call(data)))
        except ServiceError as exc:
            return Reply(encode(exc.body()), exc.code, exc.message)
        except Exception:
            log.exception("request failed", extra={"subject": subject})
            body = ErrorBody(message="internal error: the request was not completed; see the service log")
            return Reply(encode(body), 500, "internal error")

    return Endpoint(name=name, subject=subject, handler=handle)


class ReadModelsRefreshed(msgspec.Struct, frozen=True, rename="camel"):
    refreshed_at: datetime
    duration_ms: float


def admin_endpoints(
    service: BrokerService, refresh_read_models: Callable[[], Awaitable[None]]
) -> list[Endpoint]:
    """Operator endpoints: maintenance on/off for a broker; refresh the materialized read
    models now (they also refresh on a schedule)."""

    async def set_maintenance(data: bytes) -> Any:
        request = decode_request(data, SetMaintenanceRequest)
        body = MaintenanceRequest(enabled=request.enabled, reason=request.reason)
        return await service.set_maintenance(request.broker_id, body)

    async def refresh(data: bytes) -> Any:
        started = time.perf_counter()
        await refresh_read_models()
        return ReadModelsRefreshed(datetime.now(UTC), round((time.perf_counter() - started) * 1000, 3))

    return [
        _endpoint("RefreshReadModels", subjects.REFRESH_READ_MODELS, refresh),
        _endpoint("SetMaintenance", subjects.SET_MAINTENANCE, set_maintenance),
    ]


def pretrade_endpoints(admin: KillSwitchAdmin, explainer: OrderExplainer) -> list[Endpoint]:
    """Kill switches (operators: engage/release, list) and ExplainOrder (`why`, also for
    orders refused before routing)."""

    async def set_kill_switch(data: bytes) -> Any:
        return await admin.set(decode_set_kill_switch(data))

    async def list_kill_switches(data: bytes) -> Any:
        return admin.listed()

    async def explain_order(data: bytes) -> Any:
        return await explainer.explain(decode_explain(data))

    return [
        _endpoint("SetKillSwitch", SET_KILL_SWITCH, set_kill_switch),
        _endpoint("ListKillSwitches", LIST_KILL_SWITCHES, list_kill_switches),
        _endpoint("ExplainOrder", EXPLAIN_ORDER, explain_order),
    ]


def service_endpoints(
    service: BrokerService, *, route_observer: RouteObserver | None = None
) -> list[Endpoint]:
    """The OMS contract. `route_observer` hears how long each RouteOrder took and how it ended."""

    async def route_order(data: bytes) -> Any:
        if route_observer is None:
            return await service.route_order(decode_order(data))
        started = time.perf_counter()
        try:
            answer = await service.route_order(decode_order(data))
        except Exception:
            route_observer.observe_route_error(time.perf_counter() - started)
            raise
        route_observer.observe_route(answer, time.perf_counter() - started)
        return answer

    async def get_execution(data: bytes) -> Any:
        return await service.get_execution(decode_get_execution(data))

    async def cancel_order(data: bytes) -> Any:
        return await service.cancel_order(decode_cancel(data))

    async def get_broker_status(data: bytes) -> Any:
        request = decode_request(data, GetBrokerStatusRequest)
        return await service.get_broker_status(request.broker_id)

    async def list_brokers(data: bytes) -> Any:
        request = decode_request(data or b"{}", ListBrokersRequest)
        return await service.list_brokers(request)

    async def transaction_cost_analysis(data: bytes) -> Any:
        return await service.transaction_cost_analysis(decode_request(data, TCARequest))

    return [
        _endpoint("RouteOrder", subjects.ROUTE_ORDER, route_order),
        _endpoint("GetExecution", subjects.GET_EXECUTION, get_execution),
        _endpoint("CancelOrder", subjects.CANCEL_ORDER, cancel_order),
        _endpoint("GetBrokerStatus", subjects.GET_BROKER_STATUS, get_broker_status),
        _endpoint("ListBrokers", subjects.LIST_BROKERS, list_brokers),
        _endpoint("GetTransactionCostAnalysis", subjects.GET_TCA, transaction_cost_analysis),
    ]
