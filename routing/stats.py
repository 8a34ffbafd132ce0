"""Adaptive per-broker statistics for routing: online, O(1) per event, forgetting, no clock.

Measured per broker (`BrokerStats`), from the events the daemon reports (`RoutingStats.on_*`):

| statistic | series | estimator |
|---|---|---|
| ack latency (ms) | per urgency, and pooled | ring of the last `latency_window` samples (p50/p95) |
| fill rate | per shape: asset class, order type, time in force | Beta counts of filled fractions |
| time to fill (ms) | per shape | decayed mean over attempts that filled |
| reject rate | per broker | Beta counts: ack = accepted, reject or timeout = refused |
| realised implicit cost (bps) | per asset class | TCA results, notional-weighted decayed mean |

Latency windows keep their samples sorted as they arrive (bisect), so p50/p95 (linearly
interpolated) cost no sort; they are cached until the next sample. Counts and means decay
(below).

Priors are applied when the statistics are read (`routing.strategies`), so a broker with no
history is ranked on its prior, never on zero samples; `RoutingStats` also keeps the pooled
(all brokers) fill rate and time to fill of each shape, reject rate and ack latencies: the
empirical-Bayes prior of a broker without history of its own is "like its peers" (the
configured priors stand in until the peers have history).

Forgetting, two ways:

1. Per series, in events: each observation first multiplies the older counts by
   `1 - 1/window`, so a broker that changes behaviour moves its estimate half way in
   ≈ 0.7 * window of its own events; the latency ring forgets completely after
   `latency_window` samples (p95 moves after ≈ 5 % of them).
2. Staleness, in time: a broker's evidence weighs `exp(-silence / stale_after_s)`, silence
   being the time since its last event (applied when read; made permanent at its next event,
   in steps of at least 1 %; a latency window that loses half its weight or more at once is
   summarised and restarted, see `LatencyWindow`). A broker that stopped getting orders
   because it degraded relaxes back to its prior, is tried again, and keeps its traffic if it
   recovered. Time is what the caller says (`advance(now)`, the events' `at`), never read
   from a clock here.

Priors for ack latency, in order: the broker's probe (heartbeat) round trips (`on_probe`),
the candidate's measured mean, all brokers' pooled acks, the configured value.

Mutable, single-threaded (the daemon's Trio thread); every method is synchronous and O(1)
amortised. The engine owns one `RoutingStats` and passes it to `select_broker`.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Hashable
from decimal import Decimal
from typing import Any

import msgspec

from api.enums import AssetClass, OrderType, TimeInForce, Urgency

#: What fill statistics are kept per: (asset class, order type, time in force).
ShapeKey = tuple[AssetClass, OrderType, TimeInForce]
#: Each shape as a small int (the key of the per-shape dicts: cheaper to hash than the tuple).
SHAPE_CODES: dict[ShapeKey, int] = {
    (a, t, f): i
    for i, (a, t, f) in enumerate((a, t, f) for a in AssetClass for t in OrderType for f in TimeInForce)
}
URGENCY_INDEX: dict[Urgency, int] = {u: i for i, u in enumerate(Urgency)}
PROBE_WINDOW = 16
#: Scopes, and keys per scope, `RoutingStats.derived` keeps memos for at once (more: it starts
#: afresh).
DERIVED_MAX = 256
POOLED_MEMORY = 10.0


class StatsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Memory of the statistics: windows in events of the series, staleness in seconds."""

    latency_window: int = 64
    fill_window: float = 50.0
    reject_window: float = 50.0
    time_to_fill_window: float = 30.0
    tca_window: float = 30.0
    #: Seconds of silence after which a broker's evidence weighs 1/e of what it did.
    stale_after_s: float = 300.0
    #: Below this many samples for the order's urgency, the broker's pooled latencies are used.
    min_urgency_samples: int = 8

    def __post_init__(self) -> None:
        if self.latency_window < 2:
            raise ValueError("latency_window must be at least 2")
        windows = (self.fill_window, self.reject_window, self.time_to_fill_window, self.tca_window)
        if min(windows) < 1.0:
            raise ValueError("windows must be at least 1 event")
        if not self.stale_after_s > 0.0:
            raise ValueError("stale_after_s must be positive")


class LatencyWindow:
    """The last `size` latency samples: a ring (their order) and the same samples kept sorted
    (bisect: O(log n) to find, a C memmove to shift), so adding is cheap and p50/p95 need no
    sort; they are computed on the first read after a change and cached.

    `weight` is the evidence the samples carry (their count, shrunk by staleness). When
    staleness halves it or more at once (`fade`), the samples are summarised into
    `stale_p50`/`stale_p95` with `stale_weight` and dropped: a broker back after a long silence
    starts a fresh window, its old figures still counting for what little they are worth
    (rather than one old sample weighing as much as each new one). The scoring loop reads
    these fields directly (after `refresh` if `dirty`)."""

    __slots__ = (
        "_next",
        "_ring",
        "_size",
        "_sorted",
        "count",
        "dirty",
        "p50",
        "p95",
        "stale_p50",
        "stale_p95",
        "stale_weight",
        "weight",
    )

    def __init__(self, size: int) -> None:
        self._size = size
        self._ring: list[float] = []
        self._sorted: list[float] = []
        self._next = 0
        #: Samples in the window (at most `size`).
        self.count = 0
        self.weight = 0.0
        self.dirty = False
        self.p50 = 0.0
        self.p95 = 0.0
        self.stale_p50 = 0.0
        self.stale_p95 = 0.0
        self.stale_weight = 0.0

    def __repr__(self) -> str:
        p50, p95 = self.quantiles()
        return (
            f"<LatencyWindow n={self.count} weight={self.weight:.2f} p50={p50:.3f} p95={p95:.3f}"
            f" stale={self.stale_weight:.2f}>"
        )

    def add(self, milliseconds: float) -> None:
        if self.count < self._size:
            self._ring.append(milliseconds)
            self.count += 1
        else:
            evicted = self._ring[self._next]
            del self._sorted[bisect_left(self._sorted, evicted)]
            self._ring[self._next] = milliseconds
            self._next = (self._next + 1) % self._size
        insort(self._sorted, milliseconds)
        self.weight = min(self.weight + 1.0, float(self.count))
        self.dirty = True

    def fade(self, keep: float) -> None:
        """Staleness: multiply the evidence by `keep`; at `keep` <= 1/2, summarise and drop the
        samples (see the class)."""
        self.weight *= keep
        self.stale_weight *= keep
        if keep <= 0.5 and self.count:
            p50, p95 = self.quantiles()
            total = self.stale_weight + self.weight
            if total > 0.0:
                self.stale_p50 = (self.stale_weight * self.stale_p50 + self.weight * p50) / total
                self.stale_p95 = (self.stale_weight * self.stale_p95 + self.weight * p95) / total
            self.stale_weight = total
            self._ring, self._sorted, self._next = [], [], 0
            self.count, self.weight = 0, 0.0
            self.dirty = True

    def refresh(self) -> None:
        ordered = self._sorted
        if ordered:
            self.p50 = _quantile(ordered, 0.50)
            self.p95 = _quantile(ordered, 0.95)
        else:
            self.p50 = self.p95 = 0.0
        self.dirty = False

    def quantiles(self) -> tuple[float, float]:
        """(p50, p95) of the samples in the window, linearly interpolated; (0, 0) when empty."""
        if self.dirty:
            self.refresh()
        return self.p50, self.p95


def _quantile(ordered: list[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


class DecayedRate:
    """Beta counts of a rate with exponential forgetting: observing x in [0, 1] does
    `successes = λ·successes + x`, `failures = λ·failures + (1 - x)`."""

    __slots__ = ("failures", "successes")

    def __init__(self) -> None:
        self.successes = 0.0
        self.failures = 0.0

    def __repr__(self) -> str:
        return f"<DecayedRate {self.successes:.2f}/{self.successes + self.failures:.2f}>"

    def observe(self, outcome: float, keep: float) -> None:
        self.successes = keep * self.successes + outcome
        self.failures = keep * self.failures + (1.0 - outcome)

    def fade(self, keep: float) -> None:
        self.successes *= keep
        self.failures *= keep

    @property
    def weight(self) -> float:
        return self.successes + self.failures

    def mean(self, prior_mean: float, prior_strength: float, discount: float = 1.0) -> float:
        """Posterior mean under a Beta(prior_mean·k, (1 - prior_mean)·k) prior, the evidence
        weighted by `discount` (staleness)."""
        return (discount * self.successes + prior_mean * prior_strength) / (
            discount * (self.successes + self.failures) + prior_strength
        )


class DecayedMean:
    """A weighted mean with exponential forgetting; `count` is the decayed number of
    observations (the evidence behind the mean, whatever the weights)."""

    __slots__ = ("count", "value", "weight")

    def __init__(self) -> None:
        self.value = 0.0
        self.weight = 0.0
        self.count = 0.0

    def __repr__(self) -> str:
        return f"<DecayedMean {self.value:.3f} n={self.count:.2f}>"

    def observe(self, value: float, keep: float, weight: float = 1.0) -> None:
        self.weight = keep * self.weight + weight
        self.count = keep * self.count + 1.0
        if self.weight > 0.0:
            self.value += (value - self.value) * weight / self.weight

    def fade(self, keep: float) -> None:
        self.weight *= keep
        self.count *= keep

    def mean(self, prior: float, prior_strength: float, discount: float = 1.0) -> float:
        """Shrunk toward `prior` with the weight of `prior_strength` observations."""
        evidence = discount * self.count
        return (evidence * self.value + prior_strength * prior) / (evidence + prior_strength)


class TcaObservation(msgspec.Struct, frozen=True):
    """One TCA result as routing uses it: the broker's realised implicit cost of one execution
    (slippage against the arrival mid, spread included, commission excluded; bps, positive =
    cost) and its notional (the weight)."""

    broker_id: str
    asset_class: AssetClass
    cost_bps: float
    notional: Decimal | float


class ShapeStats:
    """Fill statistics of one order shape (at one broker, or pooled over all brokers)."""

    __slots__ = ("fill", "time_to_fill")

    def __init__(self) -> None:
        self.fill = DecayedRate()
        self.time_to_fill = DecayedMean()

    def __repr__(self) -> str:
        return f"<ShapeStats fill={self.fill!r} time_to_fill={self.time_to_fill!r}>"


class BrokerStats:
    """Everything measured about one broker. Updated only through `RoutingStats`."""

    __slots__ = ("broker_id", "last_seen", "latency", "latency_all", "probes", "rejects", "shapes", "tca")

    def __init__(self, broker_id: str, config: StatsConfig) -> None:
        self.broker_id = broker_id
        size = config.latency_window
        #: Latency windows by `URGENCY_INDEX[urgency]` (a list: read on every routing decision).
        self.latency = [LatencyWindow(size) for _ in Urgency]
        self.latency_all = LatencyWindow(size)
        #: Round trips of probes (heartbeats): the broker's latency prior when it has some.
        self.probes = LatencyWindow(PROBE_WINDOW)
        #: Fill statistics by `shape_code(...)`.
        self.shapes: dict[int, ShapeStats] = {}
        self.rejects = DecayedRate()  # "success" = refused
        self.tca: dict[AssetClass, DecayedMean] = {}
        #: When its evidence was last brought up to date (its last event, to within 1 % of
        #: staleness): read-time staleness counts from here.
        self.last_seen = 0.0

    def __repr__(self) -> str:
        p50, p95 = self.latency_all.quantiles()
        return (
            f"<BrokerStats {self.broker_id} acks+rejects={self.rejects.weight:.1f} "
            f"p50={p50:.2f}ms p95={p95:.2f}ms shapes={len(self.shapes)}>"
        )

    def latency_for(self, urgency: Urgency, min_samples: int) -> LatencyWindow:
        """The window of this urgency when it has enough samples, else the pooled one."""
        window = self.latency[URGENCY_INDEX[urgency]]
        return window if window.count >= min_samples else self.latency_all

    def shape(self, asset_class: AssetClass, order_type: OrderType, tif: TimeInForce) -> ShapeStats | None:
        return self.shapes.get(SHAPE_CODES[asset_class, order_type, tif])

    def fade(self, keep: float) -> None:
        """Multiply all the evidence by `keep` (staleness made permanent)."""
        for window in self.latency:
            window.fade(keep)
        self.latency_all.fade(keep)
        self.rejects.fade(keep)
        for shape in self.shapes.values():
            shape.fill.fade(keep)
            shape.time_to_fill.fade(keep)
        for mean in self.tca.values():
            mean.fade(keep)


class RoutingStats:
    """The statistics of every broker, plus the pooled (all brokers) series per shape."""

    def __init__(self, config: StatsConfig | None = None) -> None:
        self.config = config or StatsConfig()
        self.brokers: dict[str, BrokerStats] = {}
        #: Fill statistics of every broker together, by `shape_code(...)`: a new broker's prior.
        self.pooled: dict[int, ShapeStats] = {}
        #: Ack latencies of every broker together: the latency prior of a broker without any.
        self.pooled_latency = LatencyWindow(self.config.latency_window)
        #: Refusals of every broker together: the prior of each broker's reject rate.
        self.pooled_rejects = DecayedRate()
        #: Events recorded so far (any broker).
        self.sequence = 0
        #: Bumped by every change: each event (probes included) and each `advance` that moves
        #: the clock. What is derived from the statistics at one version holds until the next.
        self.version = 0
        self._derived: dict[int, tuple[object, dict[Hashable, dict[str, Any] | None]]] = {}
        self._derived_version = -1
        #: The latest time the statistics were told (`advance`, or an event's `at`), seconds.
        self.now = 0.0
        c = self.config
        self._keep_fill = 1.0 - 1.0 / c.fill_window
        self._keep_reject = 1.0 - 1.0 / c.reject_window
        self._keep_ttf = 1.0 - 1.0 / c.time_to_fill_window
        # The pooled series see every broker's events: POOLED_MEMORY times the memory, so as
        # priors they are steady and barely shrunk toward the configured values.
        self._pooled_keep_fill = 1.0 - 1.0 / (c.fill_window * POOLED_MEMORY)
        self._pooled_keep_reject = 1.0 - 1.0 / (c.reject_window * POOLED_MEMORY)
        self._pooled_keep_ttf = 1.0 - 1.0 / (c.time_to_fill_window * POOLED_MEMORY)
        self._keep_tca = 1.0 - 1.0 / c.tca_window
        #: -1/stale_after_s: a silent broker's evidence is multiplied by exp(silence * this).
        self.stale_rate = -1.0 / c.stale_after_s
        # Staleness is made permanent (BrokerStats.fade) only once it amounts to 1 %: events
        # closer together than that leave `last_seen` alone, so evidence added since weighs at
        # most 1 % less than it should, and a busy broker does not pay a fade per event.
        self._fade_every = -math.log(0.99) * c.stale_after_s

    def __repr__(self) -> str:
        return f"<RoutingStats brokers={len(self.brokers)} events={self.sequence} now={self.now}>"

    def broker(self, broker_id: str) -> BrokerStats | None:
        return self.brokers.get(broker_id)

    def pooled_shape(
        self, asset_class: AssetClass, order_type: OrderType, tif: TimeInForce
    ) -> ShapeStats | None:
        return self.pooled.get(SHAPE_CODES[asset_class, order_type, tif])

    def advance(self, now: float) -> None:
        """Tell the statistics the time (seconds on the caller's monotonic clock; never read
        here). Call it before routing: evidence is discounted by the silence up to `now`. Time
        never goes back: an earlier `now` is ignored."""
        if now > self.now:
            self.now = now
            self.version += 1

    def derived(self, scope: object, key: Hashable) -> dict[str, Any] | None:
        """A memo for figures derived from these statistics (`routing.select` keeps each
        broker's figures for one order class in it), per `scope` (by identity, e.g. the
        routing config; held until the memo is dropped, so its id cannot be reused) and `key`,
        valid for one `version`: all memos are dropped at the first call after the statistics
        changed. None at the first call for a scope and key: a memo pays only when a second
        call comes before the statistics change, so it is made for the second (when every call
        sees new statistics, as when each order advances the clock, nothing is kept). The
        statistics change only through this class's methods, and each bumps `version`."""
        if self._derived_version != self.version:
            self._derived = {}
            self._derived_version = self.version
        scoped = self._derived.get(id(scope))
        if scoped is None or scoped[0] is not scope:
            if len(self._derived) >= DERIVED_MAX:
                self._derived = {}
            self._derived[id(scope)] = (scope, {key: None})
            return None
        memos = scoped[1]
        if key not in memos:
            if len(memos) >= DERIVED_MAX:
                memos.clear()
            memos[key] = None
            return None
        memo = memos[key]
        if memo is None:
            memo = memos[key] = {}
        return memo

    def discount(self, stats: BrokerStats) -> float:
        """How much of a broker's evidence still counts: 1 at its last event, then
        `exp(-silence / stale_after_s)`."""
        silence = self.now - stats.last_seen
        return math.exp(silence * self.stale_rate) if silence > 0.0 else 1.0

    def _touch(self, broker_id: str, at: float | None) -> BrokerStats:
        """The broker's statistics at time `at` (None: `now`), its staleness so far made
        permanent, so a new event does not revive old evidence at full weight."""
        if at is not None:
            self.advance(at)
        stats = self.brokers.get(broker_id)
        if stats is None:
            stats = self.brokers[broker_id] = BrokerStats(broker_id, self.config)
            stats.last_seen = self.now
        elif self.now - stats.last_seen > self._fade_every:
            stats.fade(self.discount(stats))
            stats.last_seen = self.now
        self.sequence += 1
        self.version += 1
        return stats

    # --- events -----------------------------------------------------------------------------

    def on_ack(self, broker_id: str, latency_ms: float, urgency: Urgency, at: float | None = None) -> None:
        """The broker accepted an order `latency_ms` after it was sent (at time `at`)."""
        if not math.isfinite(latency_ms) or latency_ms < 0.0:
            raise ValueError(f"latency must be a finite non-negative number, not {latency_ms!r}")
        stats = self._touch(broker_id, at)
        stats.latency[URGENCY_INDEX[urgency]].add(latency_ms)
        stats.latency_all.add(latency_ms)
        self.pooled_latency.add(latency_ms)
        stats.rejects.observe(0.0, self._keep_reject)
        self.pooled_rejects.observe(0.0, self._pooled_keep_reject)

    def on_probe(self, broker_id: str, round_trip_ms: float, at: float | None = None) -> None:
        """A probe (heartbeat) answered in `round_trip_ms`. Not an order: it only sets the
        broker's latency prior, which its ack statistics relax to when they go stale — so a
        broker that recovered looks fast again before it gets orders again."""
        if not math.isfinite(round_trip_ms) or round_trip_ms < 0.0:
            raise ValueError(f"round trip must be a finite non-negative number, not {round_trip_ms!r}")
        if at is not None:
            self.advance(at)
        stats = self.brokers.get(broker_id)
        if stats is None:
            stats = self.brokers[broker_id] = BrokerStats(broker_id, self.config)
            stats.last_seen = self.now
        self.version += 1
        stats.probes.add(round_trip_ms)

    def on_reject(self, broker_id: str, at: float | None = None) -> None:
        """The broker refused an order (a reject, not a failure of ours to send it)."""
        self._touch(broker_id, at).rejects.observe(1.0, self._keep_reject)
        self.pooled_rejects.observe(1.0, self._pooled_keep_reject)

    def on_timeout(self, broker_id: str, waited_ms: float, urgency: Urgency, at: float | None = None) -> None:
        """No answer within the attempt's deadline: counts as refused, and `waited_ms` (a lower
        bound of the real latency) enters the latency windows, so a hanging broker's tail shows."""
        if not math.isfinite(waited_ms) or waited_ms < 0.0:
            raise ValueError(f"waited time must be a finite non-negative number, not {waited_ms!r}")
        stats = self._touch(broker_id, at)
        stats.latency[URGENCY_INDEX[urgency]].add(waited_ms)
        stats.latency_all.add(waited_ms)
        stats.rejects.observe(1.0, self._keep_reject)
        self.pooled_rejects.observe(1.0, self._pooled_keep_reject)

    def on_fill(
        self,
        broker_id: str,
        asset_class: AssetClass,
        order_type: OrderType,
        time_in_force: TimeInForce,
        filled_fraction: float,
        time_to_fill_ms: float | None,
        at: float | None = None,
    ) -> None:
        """An accepted attempt ended (filled, or cancelled/expired by the broker or the market):
        `filled_fraction` = filled / ordered quantity; `time_to_fill_ms` from the ack to the last
        fill, None when nothing filled. Call it once per attempt; not for an OMS cancel, which
        says nothing about the broker."""
        if not 0.0 <= filled_fraction <= 1.0:
            raise ValueError(f"filled fraction must be in [0, 1], not {filled_fraction!r}")
        if time_to_fill_ms is not None and not (math.isfinite(time_to_fill_ms) and time_to_fill_ms >= 0.0):
            raise ValueError(f"time to fill must be finite and non-negative, not {time_to_fill_ms!r}")
        code = SHAPE_CODES[asset_class, order_type, time_in_force]
        stats = self._touch(broker_id, at)
        mine = stats.shapes.get(code)
        if mine is None:
            mine = stats.shapes[code] = ShapeStats()
        pooled = self.pooled.get(code)
        if pooled is None:
            pooled = self.pooled[code] = ShapeStats()
        filled = time_to_fill_ms is not None and filled_fraction > 0.0
        mine.fill.observe(filled_fraction, self._keep_fill)
        pooled.fill.observe(filled_fraction, self._pooled_keep_fill)
        if filled:
            assert time_to_fill_ms is not None
            mine.time_to_fill.observe(time_to_fill_ms, self._keep_ttf)
            pooled.time_to_fill.observe(time_to_fill_ms, self._pooled_keep_ttf)

    def on_tca(
        self, result: TcaObservation | tuple[str, AssetClass, float, Decimal | float], at: float | None = None
    ) -> None:
        """A TCA result: (broker, asset class, implicit cost bps, notional)."""
        broker_id, asset_class, cost_bps, notional = (
            (result.broker_id, result.asset_class, result.cost_bps, result.notional)
            if isinstance(result, TcaObservation)
            else result
        )
        weight = float(notional)
        if not math.isfinite(cost_bps) or not math.isfinite(weight) or weight <= 0.0:
            raise ValueError("TCA cost must be finite and the notional positive")
        stats = self._touch(broker_id, at)
        mean = stats.tca.get(asset_class)
        if mean is None:
            mean = stats.tca[asset_class] = DecayedMean()
        mean.observe(cost_bps, self._keep_tca, weight)
