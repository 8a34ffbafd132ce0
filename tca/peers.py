"""Peer statistics: what comparable orders cost, by broker, strategy, order type and hour.

A `CostStats` holds the mergeable moments of one group's per-order cost (the arrival cost in
bps, `TcaResult.arrival_cost_bps`) weighted by executed notional, so the store, the routing
statistics and the offline tool can all build, merge and compare groups the same way:

    mean = Σw·x / Σw,  n_eff = (Σw)² / Σw²  (Kish),  var = (Σw·x²/Σw - mean²)·n_eff/(n_eff - 1),
    standard error = √(var / n_eff).

Groups are keyed by (dimension, key, asset class, size bucket); `size_bucket=None` is every
size. From them: the broker rank (by mean cost among brokers of the asset class with at least
`min_samples` orders), the savings opportunity against the best-ranked broker of the size
bucket, and recommendations — each only when an alternative group of the same asset class and
size bucket, with enough samples, was cheaper by more than the critical value (`confidence`,
Bonferroni-corrected for the k alternatives compared) times the standard error of the
difference; its `estimated_improvement_bps` is that difference of means.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from enum import StrEnum
from statistics import NormalDist

import msgspec
import numpy as np
import numpy.typing as npt

from api.enums import RecommendationType
from tca.model import DEFAULT_CONFIG, TcaConfig
from tca.result import Recommendation, TcaResult

HOUR_NS = 3_600_000_000_000


class Dimension(StrEnum):
    BROKER = "BROKER"
    STRATEGY = "STRATEGY"
    ORDER_TYPE = "ORDER_TYPE"
    HOUR = "HOUR"  # UTC hour of arrival, "00".."23"


RECOMMENDATION_OF = {
    Dimension.BROKER: RecommendationType.BROKER_SELECTION,
    Dimension.STRATEGY: RecommendationType.EXECUTION_STRATEGY,
    Dimension.ORDER_TYPE: RecommendationType.ORDER_TYPE,
    Dimension.HOUR: RecommendationType.TIMING,
}


def size_bucket(notional: float, edges: Sequence[float] = DEFAULT_CONFIG.size_bucket_edges) -> int:
    """0 below the first edge, 1 between the first and the second, ..., len(edges) above the last."""
    return bisect_right(edges, notional)


def bucket_label(bucket: int, edges: Sequence[float] = DEFAULT_CONFIG.size_bucket_edges) -> str:
    if bucket < 0:
        return "unknown size"
    if bucket == 0:
        return f"< {_money(edges[0])}" if edges else "any size"
    if bucket >= len(edges):
        return f">= {_money(edges[-1])}"
    return f"{_money(edges[bucket - 1])}-{_money(edges[bucket])}"


def _money(value: float) -> str:
    for unit, scale in (("bn", 1e9), ("m", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:g}{unit}"
    return f"{value:g}"


def hour_key(arrival_ns: int) -> str:
    return f"{(arrival_ns // HOUR_NS) % 24:02d}"


class CostStats(msgspec.Struct, frozen=True):
    """Notional-weighted moments of the cost (bps) of one peer group."""

    dimension: Dimension
    key: str
    asset_class: str
    size_bucket: int | None
    count: int
    weight: float
    weighted_sum: float
    weighted_squares: float
    squared_weights: float

    @property
    def mean(self) -> float:
        return self.weighted_sum / self.weight

    @property
    def effective_n(self) -> float:
        return self.weight * self.weight / self.squared_weights

    @property
    def variance(self) -> float:
        n_eff = self.effective_n
        if n_eff <= 1:
            return math.inf
        raw = max(self.weighted_squares / self.weight - self.mean**2, 0.0)
        return raw * n_eff / (n_eff - 1)

    @property
    def standard_error(self) -> float:
        return math.sqrt(self.variance / self.effective_n)

    def merge(self, other: CostStats) -> CostStats:
        """The group of both samples (same dimension, key, asset class and bucket)."""
        if (self.dimension, self.key, self.asset_class, self.size_bucket) != (
            other.dimension,
            other.key,
            other.asset_class,
            other.size_bucket,
        ):
            raise ValueError("can only merge statistics of the same group")
        return msgspec.structs.replace(
            self,
            count=self.count + other.count,
            weight=self.weight + other.weight,
            weighted_sum=self.weighted_sum + other.weighted_sum,
            weighted_squares=self.weighted_squares + other.weighted_squares,
            squared_weights=self.squared_weights + other.squared_weights,
        )

    def __repr__(self) -> str:
        return (
            f"<CostStats {self.dimension}={self.key} {self.asset_class}/{self.size_bucket}"
            f" n={self.count} mean={self.mean:.2f}±{self.standard_error:.2f}bps>"
        )


class PeerStats(msgspec.Struct, frozen=True):
    """Every peer group known (e.g. a day, or a rolling month from `execution_reports`)."""

    groups: tuple[CostStats, ...] = ()

    def select(self, dimension: Dimension, asset_class: str, bucket: int | None) -> list[CostStats]:
        return [
            g
            for g in self.groups
            if g.dimension is dimension and g.asset_class == asset_class and g.size_bucket == bucket
        ]

    def merge(self, other: PeerStats) -> PeerStats:
        merged: dict[tuple[Dimension, str, str, int | None], CostStats] = {}
        for group in (*self.groups, *other.groups):
            k = (group.dimension, group.key, group.asset_class, group.size_bucket)
            merged[k] = merged[k].merge(group) if k in merged else group
        return PeerStats(tuple(merged.values()))


def aggregate(
    dimension: Dimension,
    keys: Sequence[str] | npt.NDArray[np.str_],
    asset_classes: Sequence[str] | npt.NDArray[np.str_],
    buckets: npt.ArrayLike,
    costs: npt.ArrayLike,
    weights: npt.ArrayLike,
) -> tuple[CostStats, ...]:
    """Group the per-order costs by (key, asset class, size bucket) and by (key, asset class)
    over every size (`size_bucket=None`). Orders with an unknown cost (NaN), no weight or an
    empty key are left out. Vectorised: one pass of `np.unique` + `np.bincount` per level."""
    cost = np.asarray(costs, dtype=np.float64)
    weight = np.asarray(weights, dtype=np.float64)
    bucket = np.asarray(buckets, dtype=np.int64)
    key_arr = np.asarray(keys, dtype=np.str_)
    ac_arr = np.asarray(asset_classes, dtype=np.str_)
    keep = np.isfinite(cost) & (weight > 0) & (key_arr != "") & (bucket >= 0)
    if not keep.any():
        return ()
    cost, weight, bucket, key_arr, ac_arr = (
        cost[keep],
        weight[keep],
        bucket[keep],
        key_arr[keep],
        ac_arr[keep],
    )
    key_names, key_code = np.unique(key_arr, return_inverse=True)
    ac_names, ac_code = np.unique(ac_arr, return_inverse=True)
    base = key_code.astype(np.int64) * len(ac_names) + ac_code
    out: list[CostStats] = []
    n_buckets = int(bucket.max()) + 1
    for combined, with_bucket in ((base * n_buckets + bucket, True), (base, False)):
        groups, inverse = np.unique(combined, return_inverse=True)
        sums = [
            np.bincount(inverse, weights=w, minlength=len(groups))
            for w in (np.ones_like(cost), weight, weight * cost, weight * cost * cost, weight * weight)
        ]
        for g, code in enumerate(groups.tolist()):
            b = code % n_buckets if with_bucket else None
            pair = code // n_buckets if with_bucket else code
            out.append(
                CostStats(
                    dimension=dimension,
                    key=str(key_names[pair // len(ac_names)]),
                    asset_class=str(ac_names[pair % len(ac_names)]),
                    size_bucket=b,
                    count=int(sums[0][g]),
                    weight=float(sums[1][g]),
                    weighted_sum=float(sums[2][g]),
                    weighted_squares=float(sums[3][g]),
                    squared_weights=float(sums[4][g]),
                )
            )
    return tuple(out)


def peer_stats(
    *,
    asset_classes: Sequence[str] | npt.NDArray[np.str_],
    buckets: npt.ArrayLike,
    costs: npt.ArrayLike,
    weights: npt.ArrayLike,
    brokers: Sequence[str] | npt.NDArray[np.str_],
    strategies: Sequence[str] | npt.NDArray[np.str_] | None = None,
    order_types: Sequence[str] | npt.NDArray[np.str_] | None = None,
    hours: Sequence[str] | npt.NDArray[np.str_] | None = None,
) -> PeerStats:
    """Peer statistics of many orders (one entry per order in every argument): `costs` are the
    arrival costs in bps (NaN when unknown), `weights` the executed notionals."""
    groups: list[CostStats] = []
    for dimension, keys in (
        (Dimension.BROKER, brokers),
        (Dimension.STRATEGY, strategies),
        (Dimension.ORDER_TYPE, order_types),
        (Dimension.HOUR, hours),
    ):
        if keys is not None:
            groups += aggregate(dimension, keys, asset_classes, buckets, costs, weights)
    return PeerStats(tuple(groups))


def peer_stats_of(results: Sequence[TcaResult]) -> PeerStats:
    """Peer statistics of analysed orders (e.g. the execution reports of the last month)."""
    return peer_stats(
        asset_classes=[r.asset_class for r in results],
        buckets=[r.size_bucket for r in results],
        costs=[math.nan if r.arrival_cost_bps is None else r.arrival_cost_bps for r in results],
        weights=[r.executed_notional for r in results],
        brokers=[r.broker_id for r in results],
        strategies=[r.strategy for r in results],
        order_types=[r.order_type for r in results],
        hours=[hour_key(r.arrival_ns) for r in results],
    )


#: What `rank_brokers` ranks by, named in every response and report that shows a rank.
RANKED_BY = (
    "arrivalCostBps: notional-weighted mean of slippage against the arrival price plus fees, per"
    " broker and asset class; brokers whose 95% intervals overlap share a rank"
)


class BrokerRank(msgspec.Struct, frozen=True):
    """One broker's standing in an asset class; `rank` is None (with `reason`) when unranked.

    `rank` is 1 + the number of ranked brokers that are cheaper beyond doubt (their whole
    confidence interval below this broker's), so brokers whose intervals overlap share a rank
    (`tied_with` names them, a broker can tie with two that do not tie with each other).
    `low_bps`/`high_bps` is the interval `mean ± z·SE` at the configured confidence.
    """

    broker_id: str
    rank: int | None
    mean_cost_bps: float
    standard_error_bps: float
    samples: int
    notional: float
    reason: str | None = None
    tied_with: tuple[str, ...] = ()
    low_bps: float = -math.inf
    high_bps: float = math.inf


def rank_brokers(
    peers: PeerStats,
    asset_class: str,
    min_samples: int = DEFAULT_CONFIG.min_samples,
    confidence: float = DEFAULT_CONFIG.confidence,
) -> tuple[BrokerRank, ...]:
    """Brokers of the asset class by notional-weighted mean arrival cost (`RANKED_BY`), cheapest
    first; a broker's rank counts only the brokers cheaper beyond the overlap of the two
    `confidence` intervals (shared ranks, competition style: 1, 1, 3). Order: rank, mean,
    broker id. Brokers with fewer than `min_samples` orders follow, unranked (no interval)."""
    z = critical_z(confidence, 1)
    groups = peers.select(Dimension.BROKER, asset_class, None)
    ranked = sorted((g for g in groups if g.count >= min_samples), key=lambda g: (g.mean, g.key))
    bounds = [_interval(g.mean, g.standard_error, z) for g in ranked]
    out: list[BrokerRank] = []
    for g, (low, high) in zip(ranked, bounds, strict=True):
        better = sum(1 for _, other_high in bounds if other_high < low)
        tied = tuple(
            o.key for o, (o_low, o_high) in zip(ranked, bounds, strict=True)
            if o.key != g.key and o_low <= high and low <= o_high
        )  # fmt: skip
        out.append(
            BrokerRank(
                g.key, 1 + better, g.mean, g.standard_error, g.count, g.weight,
                tied_with=tied, low_bps=low, high_bps=high,
            )
        )  # fmt: skip
    out.sort(key=lambda r: (r.rank or 0, r.mean_cost_bps, r.broker_id))
    unranked = sorted((g for g in groups if g.count < min_samples), key=lambda g: g.key)
    out += [
        BrokerRank(
            g.key,
            None,
            g.mean,
            g.standard_error,
            g.count,
            g.weight,
            reason=f"unranked: {g.count} orders, fewer than the minimum of {min_samples}",
        )
        for g in unranked
    ]
    return tuple(out)


def _interval(mean: float, standard_error: float, z: float) -> tuple[float, float]:
    """`mean ± z·SE`; an unknown SE (NaN, too few effective samples) is an unbounded interval."""
    if math.isnan(standard_error) or math.isinf(standard_error):
        return -math.inf, math.inf
    return mean - z * standard_error, mean + z * standard_error


def best_broker(peers: PeerStats, asset_class: str, bucket: int, min_samples: int) -> CostStats | None:
    """The cheapest broker (by mean arrival cost) of the asset class and size bucket with at least
    `min_samples` orders there."""
    eligible = [g for g in peers.select(Dimension.BROKER, asset_class, bucket) if g.count >= min_samples]
    return min(eligible, key=lambda g: (g.mean, g.key)) if eligible else None


def critical_z(confidence: float, comparisons: int) -> float:
    """Two-sided normal critical value at `confidence`, Bonferroni-corrected for `comparisons`."""
    return NormalDist().inv_cdf(1 - (1 - confidence) / (2 * max(comparisons, 1)))


_PHRASE = {
    Dimension.BROKER: ("Route to {alt}", "at {own}"),
    Dimension.STRATEGY: ("Use the {alt} strategy", "with {own}"),
    Dimension.ORDER_TYPE: ("Use {alt} orders", "with {own} orders"),
    Dimension.HOUR: ("Trade in the {alt}:00 UTC hour", "in the {own}:00 hour"),
}


def recommend(
    peers: PeerStats,
    *,
    asset_class: str,
    bucket: int,
    keys: Mapping[Dimension, str],
    config: TcaConfig = DEFAULT_CONFIG,
) -> tuple[Recommendation, ...]:
    """Recommendations for an order with these peer keys (its broker, strategy, order type,
    arrival hour) in this asset class and size bucket; see the module docstring for the rule."""
    if bucket < 0:
        return ()
    out: list[Recommendation] = []
    for dimension, key in keys.items():
        if not key:
            continue
        groups = peers.select(dimension, asset_class, bucket)
        own = next((g for g in groups if g.key == key), None)
        if own is None or own.count < config.min_samples:
            continue
        alternatives = [g for g in groups if g.key != key and g.count >= config.min_samples]
        if not alternatives:
            continue
        best = min(alternatives, key=lambda g: (g.mean, g.key))
        difference = own.mean - best.mean
        error = math.hypot(own.standard_error, best.standard_error)
        if not (difference > 0 and difference > critical_z(config.confidence, len(alternatives)) * error):
            continue
        action, current = _PHRASE[dimension]
        description = (
            f"{action.format(alt=best.key)}: {asset_class} orders of"
            f" {bucket_label(bucket, config.size_bucket_edges)}"
            f" notional cost {best.mean:.2f} bps there over {best.count} orders against {own.mean:.2f} bps"
            f" {current.format(own=own.key)} over {own.count} (difference {difference:.2f} ± {error:.2f} bps)"
        )
        out.append(
            Recommendation(
                type=RECOMMENDATION_OF[dimension],
                description=description,
                estimated_improvement_bps=difference,
                current=own.key,
                alternative=best.key,
                samples=own.count,
                alternative_samples=best.count,
            )
        )
    return tuple(out)
