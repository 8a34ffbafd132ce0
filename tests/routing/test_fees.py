"""The compiled fee schedule is `api.commission`, exactly: tier boundaries, minimum, rounding."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.commission import commission
from api.contracts import CommissionStructure, TieredRate
from routing import select_broker
from routing.fees import VOLUME_DIGITS, FeeSchedule, exact_units, fee_decimal, scaled
from tests.routing.builders import EQUITY, broker, order

D = Decimal
TIERED = CommissionStructure(
    base_rate=D("0.001"),  # 10 bps below 1M
    min_commission=D("1"),
    tiered_rates=(
        TieredRate(volume_threshold=D(5_000_000), rate=D("0.0001")),  # given out of order on purpose
        TieredRate(volume_threshold=D(1_000_000), rate=D("0.0005")),
    ),
)


def fee(structure: CommissionStructure, notional: str, running: str = "0") -> Decimal:
    return fee_decimal(FeeSchedule(structure).fee(D(notional), D(running)))


@pytest.mark.parametrize(
    ("notional", "running", "expected"),
    [
        ("10000", "0", "10"),  # all below the first threshold: 10 bps
        ("10000", "990000", "10"),  # ends exactly at 1M: still all at 10 bps
        ("10000", "1000000", "5"),  # starts exactly at 1M: all at 5 bps
        ("20000", "990000", "15"),  # 10k at 10 bps + 10k at 5 bps
        ("5000000", "0", "3000"),  # 1M at 10 bps + 4M at 5 bps
        ("6000000", "0", "3100"),  # ... + 1M at 1 bp
        ("10000", "7000000", "1"),  # 1 bp = 1.00: exactly the minimum
        ("5000", "7000000", "1"),  # 0.50 -> the minimum
        ("0.01", "0", "1"),  # a tiny order pays the minimum
        ("0", "0", "0"),  # nothing traded costs nothing, not the minimum
        ("-20000", "990000", "15"),  # the notional's sign does not matter
        ("10000", "-5", "10"),  # a negative running volume counts as none
    ],
)
def test_tiered_brackets_at_their_boundaries(notional: str, running: str, expected: str) -> None:
    assert fee(TIERED, notional, running) == D(expected)
    assert fee(TIERED, notional, running) == commission(TIERED, D(notional), D(running))


@pytest.mark.parametrize(
    ("notional", "expected"),
    [
        ("0.00005", "0.00000001"),  # 0.000000005 rounds half up to 1e-8
        ("0.00004", "0"),  # 0.000000004 rounds down
        ("1234.56789", "0.12345679"),  # 0.123456789 -> ...79
    ],
)
def test_rounding_is_half_up_to_the_fee_quantum(notional: str, expected: str) -> None:
    one_bp = CommissionStructure(base_rate=D("0.0001"))
    assert fee(one_bp, notional) == D(expected)
    assert fee(one_bp, notional) == commission(one_bp, D(notional))


def test_a_fee_comes_back_with_api_commissions_representation() -> None:
    result = fee(TIERED, "20000", "990000")
    assert str(result) == str(commission(TIERED, D(20000), D(990000))) == "15.00000000"


def test_more_decimal_places_than_the_scale_fall_back_to_api_commission() -> None:
    precise = CommissionStructure(base_rate=D("0.0000000000001"))  # 1e-13: finer than 1e-12
    assert not FeeSchedule(precise).exact
    notional = D("123456789.123")
    assert fee_decimal(FeeSchedule(precise).fee(notional, D(0))) == commission(precise, notional)
    odd_notional = D("1.00000000001")  # 11 places: not exact at 1e-10
    assert scaled(odd_notional, VOLUME_DIGITS) is None
    assert fee_decimal(FeeSchedule(TIERED).fee(odd_notional, D(0))) == commission(TIERED, odd_notional)


def test_flat_schedule_ignores_the_running_volume() -> None:
    flat = FeeSchedule(CommissionStructure(base_rate=D("0.0003"), min_commission=D("0.35")))
    assert flat.flat_rate is not None
    assert flat.fee(D(10_000), D(0)) == flat.fee(D(10_000), D(9_000_000)) == exact_units(D(3))


money = st.decimals(min_value=0, max_value=10**7, places=2, allow_nan=False, allow_infinity=False)
rates = st.integers(min_value=0, max_value=200).map(lambda n: D(n) / 100_000)
structures = st.builds(
    CommissionStructure,
    base_rate=rates,
    min_commission=st.integers(min_value=0, max_value=1000).map(lambda n: D(n) / 100),
    tiered_rates=st.lists(
        st.builds(TieredRate, volume_threshold=st.integers(0, 5 * 10**6).map(D), rate=rates),
        max_size=3,
    ).map(tuple),
)


@given(structures, money, st.integers(min_value=-10, max_value=8 * 10**6).map(D))
def test_compiled_schedule_equals_api_commission(
    structure: CommissionStructure, notional: Decimal, running: Decimal
) -> None:
    assert fee_decimal(FeeSchedule(structure).fee(notional, running)) == commission(
        structure, notional, running
    )


def test_the_scoring_loops_bracket_shortcut_agrees_at_and_across_the_boundary() -> None:
    tiered = CommissionStructure(
        base_rate=D("0.001"), tiered_rates=(TieredRate(volume_threshold=D(1_000_000), rate=D("0.0001")),)
    )
    candidate = broker("t", commission=tiered, running_volume=D(990_000))  # 10,000 of room
    for quantity in ("1", "99", "100", "101", "5000", "100", "0.5"):  # price 100: 10k is the room
        notional = D(quantity) * 100
        selection = select_broker([candidate], order(quantity=D(quantity)), EQUITY, D(100))
        assert selection.scores[0].commission == commission(tiered, notional, D(990_000)), quantity
