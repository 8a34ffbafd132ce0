"""Readiness: whether this daemon can take an order now, and if not, why.

Liveness (`GET /health/live`, `daemon.liveness`) only says the event loop turns. Readiness
(`GET /health/ready`, also `/health` and `/ready`) asks each dependency the order path needs —
PostgreSQL (write before send), NATS (requests and updates), the request endpoints subscribed,
at least one broker connected, not stopping — and is ready only when all are. A load balancer or
an operator's probe sends traffic elsewhere while it is not; nothing here changes behaviour
(orders are still refused or answered as the path itself decides).

Each check is a function returning None when fine, or a short reason; checks are cheap reads of
state the daemon keeps anyway (no query, no I/O), so probing is free.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

Check = Callable[[], str | None]


class ReadinessReport(msgspec.Struct, frozen=True):
    """`checks`: each dependency's state, "ok" or why not."""

    ready: bool
    checks: dict[str, str]


class Readiness:
    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def __repr__(self) -> str:
        return f"<Readiness {sorted(self._checks)}>"

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def report(self) -> ReadinessReport:
        checks: dict[str, str] = {}
        for name, check in self._checks.items():
            try:
                problem = check()
            except Exception as exc:  # a broken check reports itself, never breaks the probe
                problem = f"check failed: {exc!r}"
            checks[name] = "ok" if problem is None else problem
        return ReadinessReport(all(v == "ok" for v in checks.values()), checks)
