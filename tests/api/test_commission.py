"""api.commission: tiered brackets over the running volume, the minimum, and 8 dp quantization.

The worked structure below charges 10 bps on the first 1 000 of period volume, 5 bps from 1 000
and 2 bps from 5 000, so each case can be checked by hand.
"""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.commission import FEE_QUANTUM, commission
from api.contracts import CommissionStructure, TieredRate

D = Decimal

TIERED = CommissionStructure(
    base_rate=D("0.001"),
    tiered_rates=(
        TieredRate(volume_threshold=D(1000), rate=D("0.0005")),
        TieredRate(volume_threshold=D(5000), rate=D("0.0002")),
    ),
)


@pytest.mark.parametrize(
    ("notional", "running_volume", "fee"),
    [
        pytest.param("500", "0", "0.5", id="entirely below the first threshold"),
        pytest.param("1000", "0", "1", id="up to exactly the first threshold"),
        pytest.param("1", "1000", "0.0005", id="starting exactly at the first threshold"),
        pytest.param("400", "800", "0.3", id="straddling one threshold"),
        pytest.param("5000", "800", "2.36", id="straddling two thresholds"),
        pytest.param("10000", "0", "4", id="from zero across both thresholds"),
        pytest.param("1000", "6000", "0.2", id="entirely above the last threshold"),
        pytest.param("1000", "2000", "0.5", id="running volume already past the first tier"),
        pytest.param("4000", "1000", "2", id="exactly filling the middle bracket"),
        pytest.param("0.01", "999.99", "0.00001", id="a cent just below the threshold"),
    ],
)
def test_tiered_fee_charges_each_bracket_its_rate(notional: str, running_volume: str, fee: str) -> None:
    assert commission(TIERED, D(notional), D(running_volume)) == D(fee)


def test_fee_is_quantized_to_eight_decimal_places() -> None:
    fee = commission(TIERED, D("500"))
    assert str(fee) == "0.50000000"
    assert fee.as_tuple().exponent == FEE_QUANTUM.as_tuple().exponent == -8


def test_fee_rounds_half_up_at_the_ninth_decimal() -> None:
    structure = CommissionStructure(base_rate=D("0.000000005"))
    assert commission(structure, D("1")) == D("0.00000001")
    assert commission(structure, D("0.9")) == D("0")  # 0.0000000045 rounds down
    structure = CommissionStructure(base_rate=D("0.0000000025"))
    assert commission(structure, D("1")) == D("0")  # 0.0000000025 -> 0.00000000 (9th digit 2)
    assert commission(structure, D("3")) == D("0.00000001")  # 0.0000000075


def test_flat_rate_without_tiers_is_notional_times_base_rate() -> None:
    structure = CommissionStructure(base_rate=D("0.0008"))
    assert commission(structure, D("19000")) == D("15.2")
    assert commission(structure, D("19000"), running_volume=D("10000000")) == D("15.2")


def test_minimum_applies_when_the_fee_is_below_it() -> None:
    structure = CommissionStructure(base_rate=D("0.0001"), min_commission=D("0.35"))
    assert commission(structure, D("1900")) == D("0.35")  # 0.19 < 0.35
    assert str(commission(structure, D("1900"))) == "0.35000000"


def test_minimum_does_not_apply_when_the_fee_is_above_it() -> None:
    structure = CommissionStructure(base_rate=D("0.0001"), min_commission=D("0.35"))
    assert commission(structure, D("19000")) == D("1.9")


def test_fee_equal_to_the_minimum_is_the_minimum() -> None:
    structure = CommissionStructure(base_rate=D("0.0001"), min_commission=D("0.35"))
    assert commission(structure, D("3500")) == D("0.35")


def test_minimum_applies_to_a_tiered_fee_too() -> None:
    structure = CommissionStructure(
        base_rate=D("0.0003"),
        min_commission=D("2.00"),
        tiered_rates=(TieredRate(volume_threshold=D(1_000_000), rate=D("0.0002")),),
    )
    assert commission(structure, D("5000"), running_volume=D("2000000")) == D("2.00")  # 1.00 < 2
    assert commission(structure, D("20000"), running_volume=D("2000000")) == D("4")


def test_zero_notional_costs_nothing_even_with_a_minimum() -> None:
    structure = CommissionStructure(base_rate=D("0.001"), min_commission=D("5"))
    assert commission(structure, D("0")) == 0
    assert commission(structure, D("0"), running_volume=D("123456")) == 0


def test_negative_notional_costs_the_same_as_its_absolute_value() -> None:
    assert commission(TIERED, D("-5000"), D("800")) == commission(TIERED, D("5000"), D("800")) == D("2.36")


def test_negative_running_volume_counts_as_zero() -> None:
    assert commission(TIERED, D("1000"), D("-500")) == D("1")


def test_unsorted_tiers_give_the_same_fee_as_sorted_tiers() -> None:
    unsorted = CommissionStructure(
        base_rate=TIERED.base_rate, tiered_rates=tuple(reversed(TIERED.tiered_rates))
    )
    for notional, running in [("500", "0"), ("400", "800"), ("5000", "800"), ("1000", "6000")]:
        assert commission(unsorted, D(notional), D(running)) == commission(TIERED, D(notional), D(running))
    assert commission(unsorted, D("5000"), D("800")) == D("2.36")


def test_tier_at_zero_volume_replaces_the_base_rate() -> None:
    structure = CommissionStructure(
        base_rate=D("0.01"), tiered_rates=(TieredRate(volume_threshold=D(0), rate=D("0.001")),)
    )
    assert commission(structure, D("1000")) == D("1")


def test_default_fx_broker_schedule_across_its_one_million_threshold() -> None:
    """The shipped sim-fx schedule: 3 bps, 2 bps past 1M, 1 bp past 10M, minimum 2.00."""
    structure = CommissionStructure(
        base_rate=D("0.0003"),
        min_commission=D("2.00"),
        tiered_rates=(
            TieredRate(volume_threshold=D(1_000_000), rate=D("0.0002")),
            TieredRate(volume_threshold=D(10_000_000), rate=D("0.0001")),
        ),
    )
    # 100k at 3 bps + 400k at 2 bps
    assert commission(structure, D(500_000), running_volume=D(900_000)) == D("110")
    # 500k at 2 bps (9.5M to 10M) + 500k at 1 bp (10M to 10.5M)
    assert commission(structure, D(1_000_000), running_volume=D(9_500_000)) == D("150")


# --- properties -----------------------------------------------------------------------------
# Notionals in cents and rates with at most 6 decimals make every bracket product exact at
# 8 dp, so the split property can demand exact equality.

rates = st.integers(min_value=0, max_value=20_000).map(lambda n: D(n).scaleb(-6))
thresholds = st.integers(min_value=0, max_value=10**7).map(D)
notionals = st.integers(min_value=0, max_value=10**10).map(lambda n: D(n).scaleb(-2))
minimums = st.integers(min_value=0, max_value=10_000).map(lambda n: D(n).scaleb(-2))


@st.composite
def structures(draw: st.DrawFn, min_commission: st.SearchStrategy[Decimal] = minimums) -> CommissionStructure:
    """Any schedule with distinct thresholds (see the duplicate-threshold test below)."""
    tiers = draw(st.lists(st.tuples(thresholds, rates), max_size=4, unique_by=lambda tier: tier[0]))
    return CommissionStructure(
        base_rate=draw(rates),
        min_commission=draw(min_commission),
        tiered_rates=tuple(TieredRate(volume_threshold=t, rate=r) for t, r in tiers),
    )


@given(structures(), notionals, notionals, notionals)
def test_fee_is_monotone_non_decreasing_in_notional(
    structure: CommissionStructure, a: Decimal, b: Decimal, running: Decimal
) -> None:
    low, high = sorted((a, b))
    assert commission(structure, low, running) <= commission(structure, high, running)


@given(structures(min_commission=st.just(D(0))), notionals, notionals, notionals)
def test_splitting_an_order_in_two_consecutive_parts_costs_the_same(
    structure: CommissionStructure, first: Decimal, second: Decimal, running: Decimal
) -> None:
    whole = commission(structure, first + second, running)
    parts = commission(structure, first, running) + commission(structure, second, running + first)
    assert parts == whole


@given(structures(), notionals.filter(lambda n: n > 0), notionals)
def test_fee_of_a_positive_notional_is_at_least_the_minimum(
    structure: CommissionStructure, notional: Decimal, running: Decimal
) -> None:
    assert commission(structure, notional, running) >= structure.min_commission


@given(structures(), notionals, notionals)
def test_fee_never_exceeds_the_highest_rate_or_the_minimum(
    structure: CommissionStructure, notional: Decimal, running: Decimal
) -> None:
    highest = max([structure.base_rate, *(t.rate for t in structure.tiered_rates)])
    fee = commission(structure, notional, running)
    assert fee <= max(notional * highest, structure.min_commission if notional else D(0))


@given(structures(), notionals, notionals, st.randoms(use_true_random=False))
def test_tier_order_never_changes_the_fee(
    structure: CommissionStructure, notional: Decimal, running: Decimal, rng: random.Random
) -> None:
    tiers = list(structure.tiered_rates)
    rng.shuffle(tiers)
    shuffled = CommissionStructure(
        base_rate=structure.base_rate, min_commission=structure.min_commission, tiered_rates=tuple(tiers)
    )
    assert commission(shuffled, notional, running) == commission(structure, notional, running)


def test_tiers_sharing_a_threshold_give_the_same_fee_in_either_order() -> None:
    first = TieredRate(volume_threshold=D(1000), rate=D("0.0005"))
    second = TieredRate(volume_threshold=D(1000), rate=D("0.0002"))
    listed = CommissionStructure(base_rate=D("0.001"), tiered_rates=(first, second))
    swapped = CommissionStructure(base_rate=D("0.001"), tiered_rates=(second, first))
    # today: 1000 at 10 bps + 1000 at 2 bps = 1.2 listed, but 1000 at 5 bps = 1.5 swapped
    assert commission(listed, D(2000)) == commission(swapped, D(2000))
