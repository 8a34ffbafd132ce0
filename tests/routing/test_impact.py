"""Pre-trade impact models and the market statistics estimator."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.impact import (
    EQUITY_SESSION_S,
    IStarImpact,
    MarketStats,
    MarketStatsEstimator,
    OrderImpact,
    SquareRootImpact,
    impact_bps,
    istar_impact_bps,
    istar_instantaneous_bps,
    schedule_ms,
    square_root_impact_bps,
)

MARKET = MarketStats(daily_volatility=0.02, adv=1_000_000.0, spread_bps=4.0)


def test_square_root_law() -> None:
    # 1 % of ADV at 2 % daily volatility: 1 · 0.02 · sqrt(0.01) = 20 bps.
    assert square_root_impact_bps(1.0, 0.02, 10_000.0, 1_000_000.0) == pytest.approx(20.0)
    assert impact_bps(SquareRootImpact(y=0.5), MARKET, 10_000.0) == pytest.approx(10.0)
    assert square_root_impact_bps(1.0, 0.02, 0.0, 1_000_000.0) == 0.0


def test_istar_with_the_published_defaults() -> None:
    model = IStarImpact()
    assert (model.a1, model.a2, model.a3, model.a4, model.b1) == (708.0, 0.55, 0.71, 0.50, 0.98)
    # 1 % of ADV, sigma 2 % a day = 31.7 % a year: I* = 708 · 0.01^0.55 · 0.317^0.71 ≈ 24.9 bps.
    instantaneous = istar_instantaneous_bps(model, 0.02, 10_000.0, 1_000_000.0)
    assert instantaneous == pytest.approx(708 * 0.01**0.55 * (0.02 * math.sqrt(252)) ** 0.71)
    assert instantaneous == pytest.approx(24.9, abs=0.05)
    # Worked at 10 % of the volume: 0.98 · I* · 0.1^0.5 + 0.02 · I* ≈ 8.2 bps.
    at_ten_percent = istar_impact_bps(model, 0.02, 10_000.0, 1_000_000.0, 0.10)
    assert at_ten_percent == pytest.approx(0.98 * instantaneous * math.sqrt(0.1) + 0.02 * instantaneous)
    assert at_ten_percent == pytest.approx(8.2, abs=0.05)
    # All at once (POV 100 %) costs the whole instantaneous impact.
    assert istar_impact_bps(model, 0.02, 10_000.0, 1_000_000.0, 1.0) == pytest.approx(instantaneous)


def test_venue_access_and_participation_cap_change_the_impact() -> None:
    full = impact_bps(SquareRootImpact(), MARKET, 10_000.0, venue_access=1.0)
    quarter = impact_bps(SquareRootImpact(), MARKET, 10_000.0, venue_access=0.25)
    assert quarter == pytest.approx(2 * full)  # a quarter of the volume: sqrt(4) times the impact
    capped = impact_bps(IStarImpact(), MARKET, 10_000.0, participation=0.05)
    uncapped = impact_bps(IStarImpact(), MARKET, 10_000.0, participation=0.20)
    assert capped < uncapped  # trading slower costs less temporary impact


def test_schedule_is_the_time_to_work_what_does_not_execute_at_once() -> None:
    # 51,000 shares, 1,000 at once, the rest at 10 % of 1M a day: 0.5 day of 6.5 h.
    assert schedule_ms(MARKET, 51_000.0, 1.0, 0.10, 0.001) == pytest.approx(0.5 * EQUITY_SESSION_S * 1000)
    assert schedule_ms(MARKET, 900.0, 1.0, 0.10, 0.001) == 0.0
    assert schedule_ms(MARKET, 51_000.0, 0.5, 0.10, 0.001) > schedule_ms(MARKET, 51_000.0, 1.0, 0.10, 0.001)


@given(
    st.sampled_from([SquareRootImpact(), SquareRootImpact(y=0.7), IStarImpact()]),
    st.floats(min_value=0.0, max_value=1e7),
    st.floats(min_value=0.01, max_value=1.0),
    st.floats(min_value=0.01, max_value=1.0),
)
def test_order_impact_equals_the_definitions(
    model: SquareRootImpact | IStarImpact, quantity: float, access: float, participation: float
) -> None:
    impact, schedule = OrderImpact(model, MARKET, quantity, 0.001).at(access, participation)
    assert impact == pytest.approx(impact_bps(model, MARKET, quantity, access, participation), rel=1e-12)
    assert schedule == pytest.approx(schedule_ms(MARKET, quantity, access, participation, 0.001), rel=1e-12)
    assert math.isfinite(impact) and math.isfinite(schedule)


def test_market_stats_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        MarketStats(daily_volatility=-0.01, adv=1.0, spread_bps=1.0)
    with pytest.raises(ValueError):
        MarketStats(daily_volatility=0.01, adv=math.inf, spread_bps=1.0)
    with pytest.raises(ValueError):
        MarketStats(daily_volatility=0.01, adv=0.0, spread_bps=1.0)  # no volume: impact unbounded


def test_estimator_recovers_spread_volatility_and_volume() -> None:
    estimator = MarketStatsEstimator(window=10_000.0, min_events=20)
    r = 0.0005  # a log return of ±5 bps every second
    mid, at = 100.0, 0.0
    for n in range(2_000):
        half = mid * 1e-4  # a 2 bps spread
        estimator.on_quote(mid - half, mid + half, at)
        mid *= math.exp(r if n % 2 else -r)
        at += 1.0
    for n in range(2_000):
        estimator.on_trade(100.0, 100.0, n * 0.5)  # 100 shares every half second
    snapshot = estimator.snapshot()
    assert snapshot is not None
    assert snapshot.spread_bps == pytest.approx(2.0, rel=1e-6)
    assert snapshot.daily_volatility == pytest.approx(r * math.sqrt(EQUITY_SESSION_S), rel=1e-3)
    assert snapshot.adv == pytest.approx(200.0 * EQUITY_SESSION_S, rel=1e-3)


def test_estimator_uses_its_prior_until_it_has_seen_enough() -> None:
    prior = MarketStats(daily_volatility=0.03, adv=5e6, spread_bps=8.0)
    estimator = MarketStatsEstimator(min_events=20, prior=prior)
    assert estimator.snapshot() == prior
    for n in range(25):
        estimator.on_quote(99.99, 100.01, float(n))  # 2 bps, no movement
    snapshot = estimator.snapshot()
    assert snapshot is not None
    assert snapshot.spread_bps == pytest.approx(2.0)
    assert snapshot.daily_volatility == 0.0  # measured: the mid never moved
    assert snapshot.adv == prior.adv  # no trades yet: still the prior
    assert MarketStatsEstimator().snapshot() is None


def test_estimator_ignores_broken_quotes_and_trades() -> None:
    estimator = MarketStatsEstimator(min_events=1)
    estimator.on_quote(101.0, 100.0, 1.0)  # crossed
    estimator.on_quote(0.0, 100.0, 2.0)
    estimator.on_trade(100.0, 0.0, 3.0)
    estimator.on_trade(-1.0, 10.0, 4.0)
    assert estimator.snapshot() is None
