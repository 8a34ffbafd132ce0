"""What a driver (the NATS endpoints, the REST app) tells about each RouteOrder it answers.

The drivers time each RouteOrder from the request's arrival to its answer and report it here;
the daemon's metrics implement it (`daemon.metrics.DaemonMetrics`). Both calls must be cheap
and must not raise: they run once per order on the order path.
"""

from __future__ import annotations

from typing import Protocol

from api.contracts import OrderRoutingResponse


class RouteObserver(Protocol):
    def observe_route(self, response: OrderRoutingResponse, seconds: float) -> None:
        """An answer (ACCEPTED, PENDING or REJECTED) after `seconds`."""
        ...

    def observe_route_error(self, seconds: float) -> None:
        """An error answer (invalid request, unavailable, internal) after `seconds`."""
        ...
