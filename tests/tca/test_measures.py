"""Every measure of `tca.measures`, on both sides, with the issue's worked numbers exactly."""

from __future__ import annotations

import pytest

from tca import measures

S = 1_000_000_000  # one second in ns


def test_average_price_is_quantity_weighted_and_none_without_fills() -> None:
    assert measures.average_price([100, 300], [10.0, 11.0]) == pytest.approx(10.75)
    assert measures.average_price([], []) is None


def test_slippage_is_positive_when_a_buy_pays_more_and_when_a_sell_gets_less() -> None:
    assert measures.slippage_bps(+1, 10.1, 10.0) == pytest.approx(100.0)
    assert measures.slippage_bps(-1, 9.9, 10.0) == pytest.approx(100.0)
    assert measures.slippage_bps(-1, 10.1, 10.0) == pytest.approx(-100.0)


def test_worked_vwap_example_of_the_issue() -> None:
    times, prices, sizes = [0, 1, 2], [10.0, 11.0, 12.0], [100.0, 200.0, 300.0]
    vwap = measures.interval_vwap(times, prices, sizes, 0, 3)
    assert vwap == pytest.approx(11.333333333333334, rel=0, abs=1e-12)
    assert measures.slippage_bps(+1, 11.40, vwap) == pytest.approx(58.82, abs=0.005)
    assert measures.slippage_bps(-1, 11.40, vwap) == pytest.approx(-58.82, abs=0.005)


def test_vwap_window_includes_its_start_and_excludes_its_end() -> None:
    times, prices, sizes = [0, 10, 20], [10.0, 20.0, 30.0], [1.0, 1.0, 1.0]
    assert measures.interval_vwap(times, prices, sizes, 10, 20) == 20.0
    assert measures.interval_vwap(times, prices, sizes, 0, 20) == 15.0


def test_vwap_is_unavailable_without_prints_or_volume() -> None:
    assert measures.interval_vwap([0, 10], [10.0, 11.0], [1.0, 1.0], 1, 10) is None
    assert measures.interval_vwap([], [], [], 0, 10) is None
    assert measures.interval_vwap([5], [10.0], [0.0], 0, 10) is None


def test_twap_weights_each_price_by_how_long_it_prevailed_in_the_window() -> None:
    # 10 prevails from the window's start (5) to 10, then 20 until the window's end (20).
    twap = measures.interval_twap([0, 10], [10.0, 20.0], 5, 20)
    assert twap == pytest.approx((10.0 * 5 + 20.0 * 10) / 15)
    # Not the time since the previous tick (which would weight 20 by 10 and ignore 10's time).
    assert twap != pytest.approx(20.0)


def test_twap_without_a_prior_print_starts_at_the_first_print() -> None:
    assert measures.interval_twap([10, 15], [10.0, 20.0], 0, 20) == pytest.approx((10.0 * 5 + 20.0 * 5) / 10)


def test_twap_of_prints_at_one_time_takes_the_last_one() -> None:
    assert measures.interval_twap([10, 10], [10.0, 20.0], 10, 20) == pytest.approx(20.0)


def test_twap_is_unavailable_without_prints_in_the_window_or_for_an_empty_window() -> None:
    assert measures.interval_twap([0], [10.0], 5, 20) is None
    assert measures.interval_twap([0, 10], [10.0, 11.0], 10, 10) is None


def test_reference_price_prefers_the_quote_mid_then_the_last_print() -> None:
    assert measures.reference_price(5, [0], [10.0], [1], [10.5]) == 10.5
    assert measures.reference_price(5, [0], [10.0], [6], [10.5]) == 10.0
    assert measures.reference_price(5, [6], [10.0]) is None


def test_relative_performance_of_a_buy_and_a_sell() -> None:
    times, prices, sizes = [0, 1, 2], [10.0, 11.0, 12.0], [100.0, 200.0, 300.0]
    # A buy at 11.40: only the 300 at 12 traded worse (higher).
    assert measures.relative_performance(times, prices, sizes, 0, 3, +1, 11.40) == pytest.approx(0.5)
    # A sell at 11.40: the 100 at 10 and the 200 at 11 traded worse (lower).
    assert measures.relative_performance(times, prices, sizes, 0, 3, -1, 11.40) == pytest.approx(0.5)
    assert measures.relative_performance(times, prices, sizes, 0, 3, +1, 9.0) == 1.0
    assert measures.relative_performance(times, prices, sizes, 0, 3, -1, 9.0) == 0.0


def test_relative_performance_counts_prints_at_our_price_half() -> None:
    assert measures.relative_performance([0, 1], [11.0, 12.0], [100.0, 100.0], 0, 2, +1, 11.0) == 0.75
    assert measures.relative_performance([0], [11.0], [100.0], 5, 6, +1, 11.0) is None


def test_best_price_is_the_lowest_for_a_buy_and_the_highest_for_a_sell() -> None:
    assert measures.best_price([0, 1, 2], [11.0, 10.0, 12.0], 0, 3, +1) == 10.0
    assert measures.best_price([0, 1, 2], [11.0, 10.0, 12.0], 0, 3, -1) == 12.0
    assert measures.best_price([0], [11.0], 1, 3, -1) is None


def test_market_impact_is_positive_when_the_mid_moves_against_us() -> None:
    assert measures.market_impact_bps(+1, 100.0, 100.5) == pytest.approx(50.0)
    assert measures.market_impact_bps(-1, 100.0, 99.5) == pytest.approx(50.0)
    assert measures.market_impact_bps(-1, 100.0, 100.5) == pytest.approx(-50.0)


def test_fees_bps_is_over_executed_notional_and_none_without_it() -> None:
    assert measures.fees_bps(10.0, 100_000.0) == pytest.approx(1.0)
    assert measures.fees_bps(0.0, 0.0) is None


# --- implementation shortfall: blotter's worked example -------------------------------------

TEN_PRICES = [10.0, 11.0] * 5


def test_perold_shortfall_of_the_fully_filled_blotter_example_is_2600() -> None:
    shortfall = measures.implementation_shortfall(
        +1, 5_000, [500.0] * 10, TEN_PRICES, fees=100.0, decision_price=10.0, end_price=11.0
    )
    assert shortfall is not None
    assert shortfall.total == 2_600.0
    assert (shortfall.execution_cost, shortfall.opportunity_cost, shortfall.fees) == (2_500.0, 0.0, 100.0)
    assert shortfall.paper_value == 50_000.0
    assert shortfall.bps == 520.0


def test_perold_shortfall_with_eight_fills_is_3080() -> None:
    prices = [p for i, p in enumerate(TEN_PRICES) if i not in (1, 2)]  # blotter drops rows 2:3
    shortfall = measures.implementation_shortfall(
        +1, 5_000, [500.0] * 8, prices, fees=80.0, decision_price=10.0, end_price=11.0
    )
    assert shortfall is not None
    assert shortfall.filled_quantity == 4_000.0
    assert shortfall.unfilled_quantity == 1_000.0
    assert (shortfall.execution_cost, shortfall.opportunity_cost, shortfall.fees) == (2_000.0, 1_000.0, 80.0)
    assert shortfall.total == 3_080.0
    assert shortfall.bps == 616.0


def test_wagner_split_with_arrival_10_25_gives_the_same_3080() -> None:
    prices = [p for i, p in enumerate(TEN_PRICES) if i not in (1, 2)]
    shortfall = measures.implementation_shortfall(
        +1, 5_000, [500.0] * 8, prices, fees=80.0, decision_price=10.0, end_price=11.0, arrival_price=10.25
    )
    assert shortfall is not None
    assert shortfall.delay_cost == 1_250.0
    assert (shortfall.trading_delay, shortfall.opportunity_delay) == (1_000.0, 250.0)
    assert shortfall.trading_cost == 1_000.0
    assert shortfall.wagner_opportunity_cost == 750.0
    wagner = (
        shortfall.delay_cost + shortfall.trading_cost + shortfall.wagner_opportunity_cost + shortfall.fees
    )
    assert wagner == shortfall.total == 3_080.0


def test_shortfall_of_the_mirrored_sell_is_the_same_cost() -> None:
    # Reflect every price through 10.5: a sell decided at 11, filled at 11 and 10, ending at 10.
    prices = [21.0 - p for i, p in enumerate(TEN_PRICES) if i not in (1, 2)]
    shortfall = measures.implementation_shortfall(
        -1, 5_000, [500.0] * 8, prices, fees=80.0, decision_price=11.0, end_price=10.0, arrival_price=10.75
    )
    assert shortfall is not None
    assert (shortfall.execution_cost, shortfall.opportunity_cost, shortfall.total) == (
        2_000.0,
        1_000.0,
        3_080.0,
    )
    assert (shortfall.delay_cost, shortfall.trading_cost, shortfall.wagner_opportunity_cost) == (
        1_250.0,
        1_000.0,
        750.0,
    )


def test_shortfall_without_fills_is_all_opportunity_cost() -> None:
    shortfall = measures.implementation_shortfall(+1, 1_000, [], [], 0.0, 10.0, 10.5, arrival_price=10.0)
    assert shortfall is not None
    assert shortfall.execution_cost == 0.0
    assert shortfall.opportunity_cost == 500.0
    assert shortfall.total == 500.0
    assert shortfall.bps == pytest.approx(500.0)


def test_shortfall_is_unavailable_when_the_unfilled_part_has_no_end_price() -> None:
    assert measures.implementation_shortfall(+1, 1_000, [500.0], [10.0], 0.0, 10.0, None) is None
    # Fully filled: the end price is not needed.
    done = measures.implementation_shortfall(+1, 500, [500.0], [10.0], 0.0, 10.0, None)
    assert done is not None and done.total == 0.0


def test_an_overfill_has_no_negative_opportunity_cost() -> None:
    shortfall = measures.implementation_shortfall(+1, 100, [150.0], [10.0], 0.0, 10.0, 12.0)
    assert shortfall is not None
    assert shortfall.unfilled_quantity == 0.0
    assert shortfall.opportunity_cost == 0.0
