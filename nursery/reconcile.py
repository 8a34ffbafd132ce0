"""What became of an attempt whose outcome is unknown: the broker is asked, never sent the order
again.

`find_order` queries the broker by client order id (idempotent, so retried with backoff through
timeouts and errors) until one of:

    EXISTS      the broker has the order (or its stream already said so): adopt or cancel it
    REFUSED     the broker has it, as rejected (a FIX broker remembers a refused ClOrdID):
                nothing lives there, exactly as after a rejection
    ABSENT      the broker, answering, has had no such order for `settle` seconds since the
                attempt ended: longer than a request can stay in flight to it, so it never will
    UNRESOLVED  the budget ran out without an answer: the order stays PENDING, asked again later

`settle` is the broker's in-flight horizon: an order stuck in the network can still arrive that
long after we stopped waiting for it (the "accepted after the deadline" case). Declaring an
order absent sooner would let the next broker get it while the first may still take it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum

import msgspec
import trio

from adapters.base import BrokerError, BrokerOrderSnapshot
from api.enums import BrokerOrderStatus
from nursery.brokers import BrokerHandle

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.05
MAX_BACKOFF = 2.0


class Resolution(StrEnum):
    EXISTS = "EXISTS"
    REFUSED = "REFUSED"
    ABSENT = "ABSENT"
    UNRESOLVED = "UNRESOLVED"


class Finding(msgspec.Struct, frozen=True):
    resolution: Resolution
    snapshot: BrokerOrderSnapshot | None = None
    queries: int = 0


async def find_order(
    handle: BrokerHandle,
    client_order_id: str,
    *,
    settle: float,
    until: float,
    query_timeout: float,
    known_to_exist: Callable[[], bool] = lambda: False,
) -> Finding:
    """Resolve an unknown outcome at `handle`'s broker by absolute trio time `until`."""
    unknown_since = trio.current_time()
    backoff = POLL_INTERVAL
    queries = 0
    while True:
        if known_to_exist():
            return Finding(Resolution.EXISTS, queries=queries)
        now = trio.current_time()
        if now >= until:
            return Finding(Resolution.UNRESOLVED, queries=queries)
        try:
            with trio.fail_after(min(query_timeout, until - now)):
                await handle.limiter.acquire(until)
                queries += 1
                snapshot = await handle.adapter.query(client_order_id)
        except (BrokerError, trio.TooSlowError) as exc:
            log.info(
                "reconciliation query failed; retrying",
                extra={"broker_id": handle.broker_id, "client_order_id": client_order_id, "error": repr(exc)},
            )
            await trio.sleep(min(backoff, max(0.0, until - trio.current_time())))
            backoff = min(MAX_BACKOFF, backoff * 2)
            continue
        if snapshot is not None:
            refused = snapshot.status is BrokerOrderStatus.REJECTED
            return Finding(Resolution.REFUSED if refused else Resolution.EXISTS, snapshot, queries)
        waited = trio.current_time() - unknown_since
        if waited >= settle:
            return Finding(Resolution.ABSENT, queries=queries)
        await trio.sleep(min(POLL_INTERVAL, settle - waited, max(0.0, until - trio.current_time())))
