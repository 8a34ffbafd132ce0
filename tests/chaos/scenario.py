"""What every chaos scenario shares: the brokers and orders of a flood, the wait for the end state
(with a deadline), the count, and the product's promises as assertions.

The promises are checked in two steps (`assert_promises`):

1. what must hold whatever else happened: no answer the database does not hold (`lost`), no
   order held by a broker twice (`duplicated`), every committed update in the stream and none
   that was never committed (`missing_updates`, `phantom_updates`), and the scenario's own
   checks (answers unchanged on a repeat, ...). A failure is a plain AssertionError.
2. every order resolved: no claim without an answer (`stranded`), no attempt still PENDING
   (`pending_attempts`), every order answered at the OMS (`unanswered`). A failure is an
   `Unresolved` (an AssertionError too), so that a scenario whose resolution is known to be
   missing can be marked `xfail(raises=Unresolved, strict=True)` without hiding a failure of
   step 1, or of the harness, behind it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from tests.chaos.broker import Holdings, SharedAlpaca, broker_problems
from tests.chaos.ledger import (
    Figures,
    Ledger,
    order_figures,
    poll,
    read_ledger,
    settled,
    stream_msg_ids,
    unreported_count,
)
from tests.support.daemon import DaemonProcess
from tests.support.flood import Flood

#: Two simulated brokers with real latency (lognormal, medians 60 and 150 ms): a flood keeps
#: orders in flight at them. One rejects 10 % of orders, so some orders fail over and some
#: answers are REJECTED-then-routed-elsewhere: legitimate second attempts, not duplicates.
#:
#: The simulated brokers live inside the daemon's process: a daemon killed with -9 takes its
#: brokers' memory with it, and two daemons each have their own. After a crash, the broker
#: asked about an attempt of the dead process answers "unknown" — as a real broker would for
#: an order that never reached it, not as one that holds it.
CHAOS_BROKERS = """
[[brokers]]
broker_id = "sim-steady"
name = "Simulated Steady (150 ms)"
asset_classes = ["EQUITY"]
features = ["MARKET_ORDERS", "LIMIT_ORDERS"]
commission = { baseRate = "0.0001", minCommission = "0.35" }
venue = "STEADY"
seed = 21
latency = { median_ms = 150.0, sigma = 0.5 }

[[brokers]]
broker_id = "sim-quick"
name = "Simulated Quick (60 ms, rejects 10 %)"
asset_classes = ["EQUITY"]
features = ["MARKET_ORDERS", "LIMIT_ORDERS"]
commission = { baseRate = "0.0002", minCommission = "0.35" }
venue = "QUICK"
seed = 22
reject_rate = 0.1
latency = { median_ms = 60.0, sigma = 0.5 }
"""

#: A repeated orderId waits 3 s (not 10) for the first request's answer before the 503 "still
#: being routed": shorter than the OMS's request timeout, so the OMS sees the daemon's reason.
CHAOS_SERVICE = "duplicate_wait_s = 3.0"

#: Every flood: this many orders, this many requests in flight at once, and the OMS's request
#: timeout: longer than the daemon's duplicate wait (3 s), so a repeat of an order still being
#: routed comes back as the daemon's 503, not as a timeout. 400 orders take ~3 s at the ~130
#: answers/s a daemon gives on 2 cores; the fault comes after the first quarter is answered.
ORDERS = 400
IN_FLIGHT = 24
REQUEST_TIMEOUT = 6.0

#: After the flood the fault hit: how long the daemon(s) get to answer every claim, reconcile
#: every PENDING attempt and publish the whole outbox.
SETTLE_S = 15.0

#: Once settled, how long the last TCA reports get to be written before they are counted.
REPORTS_WITHIN_S = 2.0


class ChaosDaemon(DaemonProcess):
    """A daemon process that remembers the environment it was started with, to restart it."""

    env: dict[str, str] | None = None

    def start(self, env: dict[str, str] | None = None, timeout: float = 60.0) -> None:
        if env is not None:
            self.env = env
        super().start(env=self.env, timeout=timeout)


#: `spawn_daemon(instance, broker=None, **DaemonProcess kwargs)` (the fixture in conftest.py).
SpawnDaemon = Callable[..., ChaosDaemon]
#: `record_figures(figures)` (the fixture in conftest.py).
RecordFigures = Callable[[Figures], None]


class Unresolved(AssertionError):
    """Orders left without a resolution: claims without an answer, attempts PENDING, orders the
    OMS never got a final answer for (step 2 of `assert_promises`)."""


def chaos_orders(prefix: str, count: int = ORDERS) -> list[tuple[str, dict[str, Any]]]:
    """`count` valid MARKET orders (AAPL, both sides, 1-40 shares), keyed by orderId, with ids
    unique to this run."""
    run = secrets.token_hex(3)
    orders: list[tuple[str, dict[str, Any]]] = []
    for i in range(count):
        order_id = f"{prefix}-{run}-{i:05d}"
        orders.append(
            (
                order_id,
                {
                    "orderId": order_id,
                    "accountId": "ACC-CHAOS",
                    "symbol": "AAPL",
                    "side": "BUY" if i % 2 == 0 else "SELL",
                    "type": "MARKET",
                    "quantity": 1 + (i * 7) % 40,
                },
            )
        )
    return orders


def start_flood(nats_url: str, orders: list[tuple[str, dict[str, Any]]]) -> Flood:
    """The OMS's flood of `orders`, started, once its first quarter is answered (the moment
    every scenario injects its fault, with `IN_FLIGHT` orders in flight)."""
    flood = Flood(nats_url, orders, in_flight=IN_FLIGHT, request_timeout=REQUEST_TIMEOUT).start()
    flood.wait_until(lambda: flood.answered >= len(orders) // 4, 60, "a quarter of the orders answered")
    return flood


def settle_and_count(
    scenario: str,
    floods: Sequence[Flood],
    database_url: str,
    nats_url: str,
    *,
    restored_at: float | None,
    settle_by: float | None = None,
    broker: SharedAlpaca | None = None,
) -> Figures:
    """Wait until nothing is left unanswered, PENDING or unpublished — at most until `settle_by`
    (time.monotonic(); default `SETTLE_S` after the first flood ended) — then read PostgreSQL and
    the stream (and `broker`'s orders, when the daemons trade at one outside them) and count.
    Never raises for what it finds: the figures say it."""
    if settle_by is None:
        settle_by = (floods[0].finished_at or time.monotonic()) + SETTLE_S
    done, waited = poll(lambda: settled(database_url), max(0.0, settle_by - time.monotonic()))
    # TCA reports are written after an execution ends: a moment for the last ones (no promise).
    poll(lambda: unreported_count(database_url) == 0 or None, REPORTS_WITHIN_S)
    ledger = read_ledger(database_url)
    stream_ids: list[str] | None
    stream_error: str | None = None
    try:
        stream_ids = stream_msg_ids(nats_url)
    except Exception as exc:  # counted as missing; the reason goes with the figures
        stream_ids = None
        stream_error = repr(exc)
    figures = order_figures(scenario, floods, ledger, stream_ids, restored_at=restored_at)
    if broker is not None:
        _count_at_broker(figures, floods, ledger, broker.holdings())
    figures.extra["settled_after_flood_s"] = round(waited, 2) if done else None
    if stream_error is not None:
        figures.extra["stream_error"] = stream_error
    return figures


def _count_at_broker(figures: Figures, floods: Sequence[Flood], ledger: Ledger, holdings: Holdings) -> None:
    """Fold the broker's side into `lost` and `duplicated` (tests/chaos/ledger.py), with examples."""
    answers = {key: t.status for flood in floods for key, t in flood.traces.items() if t.status is not None}
    attempts = {
        order_id: [a.client_order_id for a in tried] for order_id, tried in ledger.attempts_by_order().items()
    }
    held_twice, contradicted, reposted = broker_problems(answers, attempts, holdings)
    lost = {line.split(":", 1)[0] for line in figures.examples["lost"]}
    figures.lost += len({line.split(":", 1)[0] for line in contradicted} - lost)
    figures.duplicated += len({line.split(":", 1)[0] for line in held_twice} - set(ledger.duplicated))
    figures.examples["lost"] += contradicted[:5]
    figures.examples["duplicated"] += held_twice[:5]
    figures.examples["reposted"] = reposted[:5]
    figures.extra.update(
        broker_orders=len(holdings.orders),
        broker_held_twice=len(held_twice),
        broker_contradicted=len(contradicted),
        broker_reposted=len(reposted),
    )


def assert_promises(figures: Figures, more: Sequence[str] = ()) -> None:
    """The product's promises (see the module docstring): first what must hold whatever else
    happened (with the scenario's own failed checks, `more`), then that every order was resolved
    (an `Unresolved`). Each message names every figure that is not zero, with examples."""
    examples = {kind: shown for kind, shown in figures.examples.items() if shown}
    broken = list(more)
    if figures.lost:
        broken.append(f"{figures.lost} answers the database does not hold")
    if figures.duplicated:
        broken.append(f"{figures.duplicated} orders held by a broker more than once")
    if figures.missing_updates:
        broken.append(
            f"{figures.missing_updates} of {figures.updates} execution updates missing from the stream "
            f"({figures.unpublished} never published)"
        )
    if figures.phantom_updates:
        broken.append(f"{figures.phantom_updates} updates in the stream that no committed row has")
    if broken:
        raise AssertionError("; ".join(broken) + f"\nexamples: {examples}")
    unresolved = []
    if figures.unanswered:
        unresolved.append(
            f"{figures.unanswered} of {figures.sent} orders never got a final answer "
            f"(OMS failures: {figures.failure_reasons})"
        )
    if figures.stranded:
        unresolved.append(f"{figures.stranded} claims stranded without a recorded answer")
    if figures.pending_attempts:
        unresolved.append(f"{figures.pending_attempts} attempts left PENDING (never reconciled)")
    if figures.unpublished:
        unresolved.append(f"{figures.unpublished} updates in the stream but not marked published")
    if unresolved:
        raise Unresolved("; ".join(unresolved) + f"\nexamples: {examples}")
