"""The daemon's Prometheus metrics: every name, its labels and where its value comes from.

Contract (the runbook and the alert rules rely on these names; change them only together):

| metric | type | labels | source |
|---|---|---|---|
| bis_route_order_duration_seconds | histogram | outcome (accepted, rejected, error) | NATS and REST drivers |
| bis_broker_ack_duration_seconds | histogram | broker | each broker attempt's ack |
| bis_broker_orders_total | counter | broker | attempts sent (acked, refused or unanswered) |
| bis_broker_fills_total | counter | broker | execution updates carrying a fill |
| bis_broker_cancels_total | counter | broker | execution updates ending CANCELED |
| bis_broker_rejects_total | counter | broker, reason_class | REJECTED updates; gateway refusals: "none" |
| bis_broker_connected | gauge | broker | 1 while the broker connection is up |
| bis_broker_circuit_state | gauge | broker | 0 closed, 1 half-open, 2 open |
| bis_broker_rate_limit_waits_total | counter | broker | orders that queued for rate-limit capacity |
| bis_outbox_depth | gauge | | unpublished execution updates (sampled) |
| bis_outbox_oldest_unpublished_age_seconds | gauge | | age of the oldest of them (sampled) |
| bis_jetstream_publish_failures_total | counter | | publishes JetStream did not acknowledge |
| bis_db_available | gauge | | 1 while PostgreSQL takes writes |
| bis_db_writer_batch_ops | histogram | | writes per group-commit transaction |
| bis_db_writer_commit_duration_seconds | histogram | | duration of each group commit |
| bis_market_data_age_seconds | gauge | | max over instruments of the time since their last quote or trade |
| bis_market_data_dropped_total | counter | | market-data messages dropped (slow intake, bad message) |
| bis_nats_connected | gauge | | 1 while connected to NATS |
| bis_nats_reconnects_total | counter | | NATS connections lost (each followed by reconnecting) |
| bis_reconciliations_total | counter | | completed reconciliations with a broker after a connect |
| bis_orders_stranded_total | counter | | orders a crash or dead peer left unanswered, taken over here |
| bis_orders_reconstructed_total | counter | | fills rebuilt from a broker's cumulative quantity |
| bis_safeguard_rejections_total | counter | safeguard (pretrade.checks.SAFEGUARDS) | refused before routing |
| bis_kill_switch_engaged | gauge | scope (global, account) | global: 1 or 0; account: accounts stopped |
| bis_risk_verdicts_total | counter | verdict (approved, refused, unavailable) | risk service answers |

Conventions: base units (seconds), `_total` counters, bounded label sets (a broker id, an
outcome, a reason class: never an order id). Each daemon has its own `CollectorRegistry`
(several daemons may share a process in tests); nothing registers in the global one.

Cost: most values are read at scrape time from state the daemon keeps anyway (`bind`). What
is counted as it happens uses `daemon.meters` (no lock, no allocation): per order, one route
observation in the driver and one ack observation per broker attempt; per execution update,
a byte search in its payload (`observe_update`). `bis_db_writer_*` come from the writer's
cumulative `WriterStats`, sampled at each scrape: exact counts and sums, each interval's batches
in the bucket of its mean size; commit durations only once the writer reports each batch
(`observe_db_batch`; see the hook note in `_db_families`). The pre-trade families are read from
the router's hooks (`bind_pretrade`): the gate's `rejections` and `kill_switches.gauge()`, the
risk client's `verdicts`; every label value is present from the start (0), whether or not the
safeguards or the risk service are on, so `rate()` and `increase()` see the first refusal.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from api.contracts import OrderRoutingResponse
from api.enums import ConnectionStatus, RoutingStatus, Urgency
from api.subjects import unescape_token
from daemon.meters import Histogram, LabelledCounter, counter_family, histogram_family
from nursery.breaker import BreakerState
from nursery.pretrade.checks import SAFEGUARDS
from routing.stats import RoutingStats, StatsConfig

if TYPE_CHECKING:
    from daemon.bus import NatsBus
    from daemon.publisher import Publisher
    from market.book import MarketBook
    from market.intake import Intake
    from nursery.brokers import BrokerHandle
    from nursery.orphans import OrphanSweeper
    from nursery.pretrade.gate import PreTradeGate
    from nursery.pretrade.risk import RiskAssessor
    from sql.store import Store

log = logging.getLogger(__name__)

__all__ = [
    "KILL_SWITCH_SCOPES",
    "OUTCOMES",
    "RISK_VERDICTS",
    "DaemonMetrics",
    "MeteredRoutingStats",
    "PreTradeHooks",
    "Sources",
    "reason_class",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OUTCOMES = ("accepted", "rejected", "error")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BREAKER_CODE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
#: Recent ack latencies kept per broker for the console's percentiles.
RECENT_ACKS = 1000
#: The broker label of refusals that no broker made (no eligible broker, a safeguard).
NO_BROKER = "none"

_SUBJECT_PREFIX_TOKENS = 4  # trading.broker.v1.executions
#: The label values of bis_kill_switch_engaged{scope} and bis_risk_verdicts_total{verdict}.
KILL_SWITCH_SCOPES = ("global", "account")
RISK_VERDICTS = ("APPROVED", "REFUSED", "UNAVAILABLE")


def reason_class(reason: str | None) -> str:
    """A bounded class for a free-text rejection reason (the label of bis_broker_rejects_total)."""
    text = (reason or "").lower()
    for needle, cls in _REASON_CLASSES:
        if needle in text:
            return cls
    return "broker"


_REASON_CLASSES = (
    ("kill switch", "safeguard"),
    ("safeguard", "safeguard"),
    ("risk", "risk"),
    ("rate limit", "rate_limited"),
    ("maintenance", "no_eligible_broker"),
    ("no broker", "no_eligible_broker"),
    ("eligible", "no_eligible_broker"),
    ("not supported", "unsupported"),
    ("does not support", "unsupported"),
    ("timeout", "timeout"),
    ("did not answer", "timeout"),
)


class PreTradeHooks(Protocol):
    """Where the pre-trade parts are found (`nursery.router.OrderRouter`): the daemon sets them
    after the metrics are bound, so the scrape reads them each time (None: not set, or off)."""

    @property
    def pre_trade(self) -> PreTradeGate | None: ...

    @property
    def risk(self) -> RiskAssessor | None: ...


@dataclass
class Sources:
    """The daemon state the scrape reads (all owned elsewhere; read, never changed)."""

    handles: Sequence[BrokerHandle]
    bus: NatsBus
    store: Store
    publisher: Publisher
    book: MarketBook
    intake: Intake
    sweeper: OrphanSweeper


class DaemonMetrics:
    """The metrics of one daemon, in their own registry (`render()` is the `/metrics` body)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.started = clock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.route = {outcome: Histogram(LATENCY_BUCKETS) for outcome in OUTCOMES}
        self.ack: dict[tuple[str, ...], Histogram] = {}
        self.recent_acks: dict[str, deque[float]] = {}
        self.orders = LabelledCounter("broker")
        self.fills = LabelledCounter("broker")
        self.cancels = LabelledCounter("broker")
        self.rejects = LabelledCounter("broker", "reason_class")
        self.reconciliations = 0
        self.reconstructed = 0
        self.db_batch_ops = Histogram(BATCH_BUCKETS)
        self.db_commit = Histogram(COMMIT_BUCKETS)
        self._db_reported = False  # the writer reports each batch (then no sampling)
        self._db_seen = (0, 0)  # (batches, ops) of WriterStats at the last scrape
        self.outbox_depth = 0.0
        self.outbox_oldest_age = 0.0
        self.sources: Sources | None = None
        self.pretrade: PreTradeHooks | None = None
        self.registry.register(self)  # type: ignore[arg-type]  # a collector: has collect()

    def __repr__(self) -> str:
        return f"<DaemonMetrics bound={self.sources is not None} brokers={len(self.ack)}>"

    def bind(self, sources: Sources) -> None:
        self.sources = sources

    def bind_pretrade(self, hooks: PreTradeHooks) -> None:
        """Read the safeguard refusals, kill switches and risk verdicts from `hooks` at scrape."""
        self.pretrade = hooks

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric now (call on the Trio thread)."""
        return generate_latest(self.registry)

    # --- observations (hot path: cheap) ---------------------------------------------------

    def observe_route(self, response: OrderRoutingResponse, seconds: float) -> None:
        """One RouteOrder answered by a driver. PENDING counts as accepted (the order was taken;
        its outcome follows as execution updates). A refusal no broker made is counted here
        (broker "none"); a broker's refusal arrives as its REJECTED execution update."""
        if response.status is RoutingStatus.REJECTED:
            self.route["rejected"].observe(seconds)
            if response.selected_broker is None:
                self.rejects.inc(NO_BROKER, reason_class(response.rejection_reason))
        else:
            self.route["accepted"].observe(seconds)

    def observe_route_error(self, seconds: float) -> None:
        """A RouteOrder answered with an error (invalid request, unavailable, internal)."""
        self.route["error"].observe(seconds)

    def observe_ack(self, broker_id: str, latency_ms: float) -> None:
        histogram = self.ack.get((broker_id,))
        if histogram is None:
            histogram = self.ack[(broker_id,)] = Histogram(LATENCY_BUCKETS)
            self.recent_acks[broker_id] = deque(maxlen=RECENT_ACKS)
        histogram.observe(latency_ms / 1000.0)
        self.recent_acks[broker_id].append(latency_ms)

    def observe_update(self, subject: str, payload: bytes) -> None:
        """One execution update on its way to JetStream."""
        tokens = subject.split(".")
        if len(tokens) != _SUBJECT_PREFIX_TOKENS + 3:
            return
        broker = tokens[_SUBJECT_PREFIX_TOKENS]
        if "%" in broker:
            broker = unescape_token(broker)
        status = tokens[_SUBJECT_PREFIX_TOKENS + 1]
        if b'"latestFill"' in payload:
            self.fills.inc(broker)
            if b'"reconstructed":true' in payload:
                self.reconstructed += 1
        if status == "CANCELED":
            self.cancels.inc(broker)
        elif status == "REJECTED":
            self.rejects.inc(broker, reason_class(_reason_of(payload)))

    def observe_db_batch(self, ops: int, seconds: float) -> None:
        """One group-commit transaction (for the writer to call per batch, see `_db_families`)."""
        self._db_reported = True
        self.db_batch_ops.observe(ops)
        self.db_commit.observe(seconds)

    def set_outbox(self, depth: int, oldest: datetime | None) -> None:
        self.outbox_depth = float(depth)
        age = 0.0 if oldest is None else (datetime.now(UTC) - oldest).total_seconds()
        self.outbox_oldest_age = max(0.0, age)

    # --- the scrape -----------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        route: dict[tuple[str, ...], Histogram] = {
            (outcome,): histogram for outcome, histogram in self.route.items()
        }
        yield histogram_family(
            "bis_route_order_duration_seconds",
            "RouteOrder time in the daemon, by outcome",
            ["outcome"],
            route,
        )
        yield histogram_family(
            "bis_broker_ack_duration_seconds", "Order send to broker acknowledgement", ["broker"], self.ack
        )
        yield counter_family(
            "bis_broker_orders_total", "Orders sent to the broker", ["broker"], self._per_broker(self.orders)
        )
        yield counter_family(
            "bis_broker_fills_total",
            "Fills received from the broker",
            ["broker"],
            self._per_broker(self.fills),
        )
        yield counter_family(
            "bis_broker_cancels_total", "Orders ended cancelled", ["broker"], self._per_broker(self.cancels)
        )
        yield counter_family(
            "bis_broker_rejects_total",
            "Orders refused, by broker (none: refused by the gateway) and reason class",
            ["broker", "reason_class"],
            self.rejects.counts.items(),
        )
        yield CounterMetricFamily(
            "bis_orders_reconstructed_total",
            "Fills reconstructed from cumulative quantities",
            value=self.reconstructed,
        )
        yield CounterMetricFamily(
            "bis_reconciliations_total", "Reconciliations with a broker completed", value=self.reconciliations
        )
        yield GaugeMetricFamily(
            "bis_outbox_depth", "Execution updates not yet published", value=self.outbox_depth
        )
        yield GaugeMetricFamily(
            "bis_outbox_oldest_unpublished_age_seconds",
            "Age of the oldest unpublished execution update",
            value=self.outbox_oldest_age,
        )
        if self.sources is not None:
            yield from self._state_families(self.sources)
        yield from self._db_families()
        yield from self._pretrade_families()

    def _per_broker(self, counter: LabelledCounter) -> Iterator[tuple[tuple[str, ...], float]]:
        """Every known broker, at 0 until it counts (so rate() works from the first event)."""
        known = {(h.broker_id,) for h in self.sources.handles} if self.sources is not None else set()
        for key in sorted(known | set(counter.counts)):
            yield key, counter.counts.get(key, 0.0)

    def _state_families(self, sources: Sources) -> Iterator[Metric]:
        connected = GaugeMetricFamily(
            "bis_broker_connected", "1 while the broker is connected", labels=["broker"]
        )
        circuit = GaugeMetricFamily(
            "bis_broker_circuit_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", labels=["broker"]
        )
        waits = CounterMetricFamily(
            "bis_broker_rate_limit_waits_total",
            "Orders that waited for rate-limit capacity",
            labels=["broker"],
        )
        for handle in sources.handles:
            up = handle.status in (ConnectionStatus.CONNECTED, ConnectionStatus.DEGRADED)
            connected.add_metric([handle.broker_id], 1.0 if up else 0.0)
            circuit.add_metric([handle.broker_id], BREAKER_CODE.get(handle.breaker.state, 2))
            count = getattr(handle.limiter, "waits", None)  # see the hook note in the report
            if isinstance(count, int):
                waits.add_metric([handle.broker_id], count)
        yield from (connected, circuit, waits)
        yield CounterMetricFamily(
            "bis_jetstream_publish_failures_total",
            "Execution updates JetStream did not acknowledge (the outbox sweep retries them)",
            value=sources.publisher.failed,
        )
        yield GaugeMetricFamily(
            "bis_db_available", "1 while PostgreSQL takes writes", value=float(sources.store.available)
        )
        yield GaugeMetricFamily(
            "bis_market_data_age_seconds",
            "Seconds since the last quote or trade, the oldest instrument's",
            value=self._market_data_age(sources.book),
        )
        yield CounterMetricFamily(
            "bis_market_data_dropped_total",
            "Market-data messages dropped (intake too slow, or malformed)",
            value=sources.bus.dropped + sources.intake.bad,
        )
        yield GaugeMetricFamily(
            "bis_nats_connected", "1 while connected to NATS", value=float(sources.bus.is_connected)
        )
        yield CounterMetricFamily(
            "bis_nats_reconnects_total",
            "NATS connections lost and reconnected",
            value=sources.bus.disconnects,
        )
        yield CounterMetricFamily(
            "bis_orders_stranded_total",
            "Orders a crash or a dead peer left unanswered, taken over by this daemon",
            value=sources.sweeper.adopted,
        )

    def _market_data_age(self, book: MarketBook) -> float:
        now_ns = int(self._clock() * 1e9)
        oldest = 0.0
        for symbol in book.symbols:
            latest = book.latest_ns(symbol)
            age = (now_ns - latest) / 1e9 if latest is not None else self._clock() - self.started
            oldest = max(oldest, age)
        return max(0.0, oldest)

    def _db_families(self) -> Iterator[Metric]:
        # Until the writer reports each batch (a hook in sql.writer: `WriterStats.on_batch`), the
        # batch sizes are sampled from its cumulative counters at each scrape.
        if not self._db_reported and self.sources is not None:
            stats = self.sources.store.writer_stats
            batches, ops = stats.batches - self._db_seen[0], stats.ops - self._db_seen[1]
            if batches > 0:
                self.db_batch_ops.observe_many(ops / batches, batches)
            self._db_seen = (stats.batches, stats.ops)
        yield histogram_family(
            "bis_db_writer_batch_ops", "Writes per group-commit transaction", [], {(): self.db_batch_ops}
        )
        yield histogram_family(
            "bis_db_writer_commit_duration_seconds", "Duration of one group commit", [], {(): self.db_commit}
        )

    def _pretrade_families(self) -> Iterator[Metric]:
        gate = self.pretrade.pre_trade if self.pretrade is not None else None
        risk = self.pretrade.risk if self.pretrade is not None else None
        refused = CounterMetricFamily(
            "bis_safeguard_rejections_total",
            "Orders refused before routing, by safeguard (kill_switch included)",
            labels=["safeguard"],
        )
        counted = gate.rejections if gate is not None else {}
        for safeguard in sorted(set(SAFEGUARDS) | set(counted)):
            refused.add_metric([safeguard], counted.get(safeguard, 0))
        yield refused
        engaged = GaugeMetricFamily(
            "bis_kill_switch_engaged",
            "Kill switches engaged: global 1 or 0; account: how many accounts are stopped",
            labels=["scope"],
        )
        gauge = gate.kill_switches.gauge() if gate is not None else {}
        for scope in KILL_SWITCH_SCOPES:
            engaged.add_metric([scope], gauge.get(scope, 0))
        yield engaged
        verdicts = CounterMetricFamily(
            "bis_risk_verdicts_total",
            "Risk Analysis Service verdicts (unavailable: no usable answer, the account's policy applied)",
            labels=["verdict"],
        )
        answered = risk.verdicts if risk is not None else {}
        for verdict in RISK_VERDICTS:
            verdicts.add_metric([verdict.lower()], answered.get(verdict, 0))
        yield verdicts


def _reason_of(payload: bytes) -> str | None:
    try:
        decoded = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return None
    reason = decoded.get("reason") if isinstance(decoded, dict) else None
    return reason if isinstance(reason, str) else None


class MeteredRoutingStats(RoutingStats):
    """The engine's routing statistics, also counting each broker attempt into `metrics` (the
    events the engine already reports: an ack with its latency, a refusal, a timeout)."""

    def __init__(self, metrics: DaemonMetrics, config: StatsConfig | None = None) -> None:
        super().__init__(config)
        self._metrics = metrics

    def on_ack(self, broker_id: str, latency_ms: float, urgency: Urgency, at: float | None = None) -> None:
        super().on_ack(broker_id, latency_ms, urgency, at)
        self._metrics.orders.inc(broker_id)
        self._metrics.observe_ack(broker_id, latency_ms)

    def on_reject(self, broker_id: str, at: float | None = None) -> None:
        super().on_reject(broker_id, at)
        self._metrics.orders.inc(broker_id)

    def on_timeout(self, broker_id: str, waited_ms: float, urgency: Urgency, at: float | None = None) -> None:
        super().on_timeout(broker_id, waited_ms, urgency, at)
        self._metrics.orders.inc(broker_id)
