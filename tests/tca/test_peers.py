"""Peer statistics, the broker rank, and when the evidence supports a recommendation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from api.enums import RecommendationType
from tca import Dimension, PeerStats, TcaConfig, peer_stats, rank_brokers, recommend, size_bucket
from tca.peers import aggregate, best_broker, bucket_label, critical_z


def test_aggregate_moments_match_a_direct_computation() -> None:
    rng = np.random.default_rng(1)
    costs, weights = rng.normal(5, 3, 50), rng.uniform(1e4, 1e5, 50)
    (by_bucket, every_size) = aggregate(
        Dimension.BROKER, ["a"] * 50, ["EQUITY"] * 50, [2] * 50, costs, weights
    )
    assert by_bucket.size_bucket == 2 and every_size.size_bucket is None
    mean = float(np.average(costs, weights=weights))
    n_eff = weights.sum() ** 2 / (weights**2).sum()
    variance = float(np.average((costs - mean) ** 2, weights=weights)) * n_eff / (n_eff - 1)
    for group in (by_bucket, every_size):
        assert group.count == 50
        assert group.mean == pytest.approx(mean)
        assert group.effective_n == pytest.approx(n_eff)
        assert group.standard_error == pytest.approx(math.sqrt(variance / n_eff))


def test_aggregate_skips_unknown_costs_empty_keys_and_unknown_sizes() -> None:
    groups = aggregate(
        Dimension.STRATEGY,
        ["VWAP", "", "VWAP", "VWAP"],
        ["EQUITY"] * 4,
        [1, 1, -1, 1],
        [1.0, 2.0, 3.0, math.nan],
        [1.0, 1.0, 1.0, 1.0],
    )
    assert {(g.key, g.size_bucket, g.count) for g in groups} == {("VWAP", 1, 1), ("VWAP", None, 1)}


def test_merging_statistics_equals_aggregating_the_union() -> None:
    rng = np.random.default_rng(2)
    costs, weights = rng.normal(size=40), rng.uniform(1, 2, 40)
    args = (["b"] * 40, ["FX"] * 40, [0] * 40)
    whole = PeerStats(aggregate(Dimension.BROKER, *args, costs, weights))
    left = PeerStats(aggregate(Dimension.BROKER, *(a[:15] for a in args), costs[:15], weights[:15]))
    right = PeerStats(aggregate(Dimension.BROKER, *(a[15:] for a in args), costs[15:], weights[15:]))
    merged = left.merge(right)
    for a, b in zip(sorted(whole.groups, key=repr), sorted(merged.groups, key=repr), strict=True):
        assert (
            a.count == b.count and a.mean == pytest.approx(b.mean) and a.variance == pytest.approx(b.variance)
        )


def _peers(costs: dict[str, list[float]], dimension: str = "brokers") -> PeerStats:
    keys = [k for k, values in costs.items() for _ in values]
    values = [v for vs in costs.values() for v in vs]
    n = len(values)
    columns = {"brokers": ["x"] * n}
    columns[dimension] = keys
    return peer_stats(
        asset_classes=["EQUITY"] * n,
        buckets=[1] * n,
        costs=values,
        weights=[1.0] * n,
        **columns,  # type: ignore[arg-type]
    )


def test_rank_is_by_mean_cost_with_a_minimum_sample_size() -> None:
    peers = _peers({"cheap": [1.0, 2.0] * 20, "dear": [5.0, 6.0] * 20, "new": [0.0] * 3})
    ranking = rank_brokers(peers, "EQUITY", min_samples=30)
    assert [(r.broker_id, r.rank) for r in ranking] == [("cheap", 1), ("dear", 2), ("new", None)]
    assert ranking[2].reason == "unranked: 3 orders, fewer than the minimum of 30"
    assert ranking[0].mean_cost_bps == pytest.approx(1.5)
    assert rank_brokers(peers, "FX") == ()
    best = best_broker(peers, "EQUITY", 1, 30)
    assert best is not None and best.key == "cheap"


@pytest.mark.parametrize(
    ("dimension", "argument", "kind"),
    [
        (Dimension.BROKER, "brokers", RecommendationType.BROKER_SELECTION),
        (Dimension.STRATEGY, "strategies", RecommendationType.EXECUTION_STRATEGY),
        (Dimension.ORDER_TYPE, "order_types", RecommendationType.ORDER_TYPE),
        (Dimension.HOUR, "hours", RecommendationType.TIMING),
    ],
)
def test_each_recommendation_type_when_the_evidence_supports_it(
    dimension: Dimension, argument: str, kind: RecommendationType
) -> None:
    peers = _peers({"A": [10.0, 14.0] * 20, "B": [3.0, 5.0] * 20}, argument)
    (rec,) = recommend(peers, asset_class="EQUITY", bucket=1, keys={dimension: "A"})
    assert rec.type is kind
    assert rec.estimated_improvement_bps == pytest.approx(12.0 - 4.0)
    assert (rec.current, rec.alternative) == ("A", "B")
    assert recommend(peers, asset_class="EQUITY", bucket=1, keys={dimension: "B"}) == ()


def test_no_recommendation_when_the_difference_is_noise() -> None:
    peers = _peers({"A": [0.0, 20.0] * 20, "B": [-1.0, 19.0] * 20})  # 1 bps apart, sd 10
    assert recommend(peers, asset_class="EQUITY", bucket=1, keys={Dimension.BROKER: "A"}) == ()


def test_no_recommendation_below_the_minimum_sample_size() -> None:
    peers = _peers({"A": [10.0, 14.0] * 20, "B": [3.0, 5.0] * 5})
    assert recommend(peers, asset_class="EQUITY", bucket=1, keys={Dimension.BROKER: "A"}) == ()
    lenient = TcaConfig(min_samples=10)
    assert (
        len(recommend(peers, asset_class="EQUITY", bucket=1, keys={Dimension.BROKER: "A"}, config=lenient))
        == 1
    )


def test_picking_the_best_of_many_needs_stronger_evidence() -> None:
    assert critical_z(0.95, 1) == pytest.approx(1.959964, abs=1e-6)
    assert critical_z(0.95, 23) > 3.0
    # 24 hours of pure noise: the cheapest hour always looks better than some other hour by
    # a couple of standard errors, which is not evidence once the choice is accounted for.
    rng = np.random.default_rng(3)
    noise = {f"H{i:02d}": list(rng.normal(0, 10, 40)) for i in range(24)}
    peers = _peers(noise, "hours")
    recs = [recommend(peers, asset_class="EQUITY", bucket=1, keys={Dimension.HOUR: k}) for k in noise]
    assert sum(len(r) for r in recs) == 0


def test_size_buckets() -> None:
    assert [size_bucket(x) for x in (5e3, 1e4, 5e4, 5e5, 5e6, 5e7)] == [0, 1, 1, 2, 3, 4]
    assert bucket_label(0) == "< 10k" and bucket_label(2) == "100k-1m" and bucket_label(4) == ">= 10m"
    assert bucket_label(-1) == "unknown size"
