"""Adaptive statistics: estimators, decay within a bounded number of events, staleness."""

from __future__ import annotations

import math
import statistics
from decimal import Decimal

import pytest

from api.enums import AssetClass, OrderType, TimeInForce, Urgency
from routing.stats import (
    DecayedMean,
    DecayedRate,
    LatencyWindow,
    RoutingStats,
    StatsConfig,
    TcaObservation,
)

EQUITY, MARKET, DAY = AssetClass.EQUITY, OrderType.MARKET, TimeInForce.DAY


def test_latency_window_quantiles_are_interpolated_over_the_last_samples() -> None:
    window = LatencyWindow(5)
    assert window.quantiles() == (0.0, 0.0)
    for ms in (9.0, 1.0, 5.0, 3.0, 7.0):
        window.add(ms)
    assert window.quantiles() == (5.0, pytest.approx(8.6))  # 7 + 0.8 * (9 - 7)
    window.add(100.0)  # replaces the oldest (9)
    assert window.count == 5
    assert window.quantiles() == (5.0, pytest.approx(81.4))  # 7 + 0.8 * 93


def test_latency_quantiles_match_the_statistics_module_on_a_full_window() -> None:
    window = LatencyWindow(64)
    samples = [((i * 37) % 101) / 3 for i in range(64)]
    for ms in samples:
        window.add(ms)
    assert window.quantiles()[0] == pytest.approx(statistics.median(samples))
    assert window.quantiles()[1] == pytest.approx(statistics.quantiles(samples, n=20, method="inclusive")[-1])


def test_decayed_rate_posterior_mean_uses_the_prior_when_empty() -> None:
    rate = DecayedRate()
    assert rate.mean(0.9, 5.0) == pytest.approx(0.9)
    rate.observe(1.0, 0.98)
    rate.observe(0.0, 0.98)
    # counts: successes = 0.98, failures = 1: (0.98 + 4.5) / (1.98 + 5)
    assert rate.mean(0.9, 5.0) == pytest.approx((0.98 + 4.5) / 6.98)
    assert rate.mean(0.9, 5.0, discount=0.0) == pytest.approx(0.9)  # fully stale: the prior


def test_decayed_mean_weights_and_shrinks_toward_its_prior() -> None:
    mean = DecayedMean()
    mean.observe(10.0, 1.0, weight=3.0)
    mean.observe(20.0, 1.0, weight=1.0)
    assert mean.value == pytest.approx(12.5)
    assert mean.count == 2.0
    assert mean.mean(prior=0.0, prior_strength=2.0) == pytest.approx(6.25)


def test_latency_moves_within_the_window_when_a_broker_degrades_and_comes_back() -> None:
    stats = RoutingStats(StatsConfig(latency_window=64))
    for _ in range(64):
        stats.on_ack("a", 5.0, Urgency.HIGH)
    window = stats.brokers["a"].latency_for(Urgency.HIGH, 8)
    assert window.quantiles() == (5.0, 5.0)
    for n in range(1, 65):
        stats.on_ack("a", 200.0, Urgency.HIGH)
        p50, p95 = window.quantiles()
        if n >= 4:
            assert p95 > 100.0  # the tail shows after ~5 % of the window
        if n == 32:
            assert p50 == pytest.approx(102.5)  # half way: the median is between the regimes
        if n >= 33:
            assert p50 == 200.0
    for n in range(1, 65):
        stats.on_ack("a", 5.0, Urgency.HIGH)
        if n >= 33:
            assert window.quantiles()[0] == 5.0
    assert window.quantiles() == (5.0, 5.0)  # fully recovered after one window


def test_fill_rate_moves_half_way_within_a_bounded_number_of_events() -> None:
    config = StatsConfig(fill_window=50.0)
    stats = RoutingStats(config)
    for _ in range(300):
        stats.on_fill("a", EQUITY, MARKET, DAY, 1.0, 10.0)
    shape = stats.brokers["a"].shape(EQUITY, MARKET, DAY)
    assert shape is not None
    assert shape.fill.mean(0.5, 1.0) > 0.99
    # Degrades to nothing filling: half way (0.5) after ln 2 / -ln(1 - 1/50) ≈ 35 events.
    bound = math.ceil(math.log(0.5) / math.log(1 - 1 / config.fill_window)) + 1
    for _ in range(bound):
        stats.on_fill("a", EQUITY, MARKET, DAY, 0.0, None)
    assert shape.fill.mean(0.5, 1.0) < 0.5
    for _ in range(bound):
        stats.on_fill("a", EQUITY, MARKET, DAY, 1.0, 10.0)
    assert shape.fill.mean(0.5, 1.0) > 0.5  # and back


def test_reject_rate_counts_acks_against_rejects_and_timeouts() -> None:
    stats = RoutingStats()
    for _ in range(8):
        stats.on_ack("a", 5.0, Urgency.LOW)
    stats.on_reject("a")
    stats.on_timeout("a", 250.0, Urgency.LOW)
    rejects = stats.brokers["a"].rejects
    assert rejects.weight == pytest.approx(sum(0.98**k for k in range(10)))
    assert 0.15 < rejects.mean(0.0, 1e-9) < 0.25  # 2 of 10, recent ones weigh more
    assert stats.brokers["a"].latency_all.quantiles()[1] > 100  # the timeout shows in the tail


def test_pooled_shape_statistics_cover_every_broker() -> None:
    stats = RoutingStats()
    stats.on_fill("a", EQUITY, MARKET, DAY, 1.0, 10.0)
    stats.on_fill("b", EQUITY, MARKET, DAY, 0.0, None)
    pooled = stats.pooled_shape(EQUITY, MARKET, DAY)
    assert pooled is not None
    assert pooled.fill.successes == 0.998 and pooled.fill.weight == 1.998  # decayed once, 10x memory
    assert pooled.time_to_fill.count == 1.0 and pooled.time_to_fill.value == 10.0
    assert stats.pooled_shape(EQUITY, OrderType.LIMIT, DAY) is None


def test_staleness_discounts_a_silent_brokers_evidence_with_time() -> None:
    stats = RoutingStats(StatsConfig(stale_after_s=100.0))
    stats.on_reject("a", at=10.0)
    a = stats.brokers["a"]
    assert stats.discount(a) == 1.0
    for t in range(11, 111):
        stats.on_ack("b", 1.0, Urgency.LOW, at=float(t))
    assert stats.discount(a) == pytest.approx(math.exp(-1.0))
    assert stats.discount(stats.brokers["b"]) == pytest.approx(1.0, abs=0.01)  # busy: within 1 %
    stats.advance(50.0)  # time never goes back
    assert stats.now == 110.0


def test_a_new_event_does_not_revive_stale_evidence() -> None:
    stats = RoutingStats(StatsConfig(stale_after_s=10.0))
    for _ in range(64):
        stats.on_ack("a", 100.0, Urgency.LOW, at=0.0)
    window = stats.brokers["a"].latency_all
    assert (window.count, window.weight) == (64, 64.0)
    stats.on_reject("a", at=0.05)  # staleness below the 1 % step: nothing is faded yet
    assert window.weight == 64.0
    stats.on_ack("a", 2.0, Urgency.LOW, at=30.0)  # silent for 3 e-foldings: 64 -> 3.2
    # The old samples are summarised (what they are still worth) and a fresh window starts.
    assert window.stale_weight == pytest.approx(64 * math.exp(-3.0))
    assert (window.stale_p50, window.stale_p95) == (100.0, 100.0)
    assert (window.count, window.weight) == (1, 1.0)
    assert window.quantiles() == (2.0, 2.0)


def test_small_staleness_only_shrinks_the_evidence() -> None:
    stats = RoutingStats(StatsConfig(stale_after_s=100.0))
    for _ in range(10):
        stats.on_ack("a", 5.0, Urgency.LOW, at=0.0)
    stats.on_ack("a", 5.0, Urgency.LOW, at=30.0)  # keep = exp(-0.3) = 0.74: no summary
    window = stats.brokers["a"].latency_all
    assert window.count == 11 and window.stale_weight == 0.0
    assert window.weight == pytest.approx(10 * math.exp(-0.3) + 1)


def test_no_time_passes_without_being_told() -> None:
    stats = RoutingStats()
    stats.on_reject("a")
    stats.on_ack("b", 1.0, Urgency.LOW)
    assert stats.now == 0.0 and stats.discount(stats.brokers["a"]) == 1.0


def test_tca_results_are_notional_weighted_and_accept_a_plain_tuple() -> None:
    stats = RoutingStats()
    stats.on_tca(("a", EQUITY, 10.0, Decimal("3000")))
    stats.on_tca(TcaObservation("a", EQUITY, 2.0, 1000.0))
    tca = stats.brokers["a"].tca[EQUITY]
    assert tca.value == pytest.approx(
        (10.0 * 3000 * (1 - 1 / 30) + 2.0 * 1000) / (3000 * (1 - 1 / 30) + 1000)
    )
    assert tca.count == pytest.approx(1 + (1 - 1 / 30))


@pytest.mark.parametrize(
    "bad",
    [
        lambda s: s.on_ack("a", -1.0, Urgency.LOW),
        lambda s: s.on_ack("a", math.nan, Urgency.LOW),
        lambda s: s.on_timeout("a", math.inf, Urgency.LOW),
        lambda s: s.on_fill("a", EQUITY, MARKET, DAY, 1.5, 1.0),
        lambda s: s.on_fill("a", EQUITY, MARKET, DAY, 1.0, -3.0),
        lambda s: s.on_tca(("a", EQUITY, math.nan, 100.0)),
        lambda s: s.on_tca(("a", EQUITY, 1.0, 0)),
    ],
)
def test_bad_observations_are_refused_and_change_nothing(bad: object) -> None:
    stats = RoutingStats()
    with pytest.raises(ValueError):
        bad(stats)  # type: ignore[operator]
    assert stats.sequence == 0 and stats.brokers == {}


def test_config_rejects_windows_shorter_than_an_event() -> None:
    with pytest.raises(ValueError):
        StatsConfig(fill_window=0.5)
    with pytest.raises(ValueError):
        StatsConfig(latency_window=1)
    with pytest.raises(ValueError):
        StatsConfig(stale_after_s=0.0)
