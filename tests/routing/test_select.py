"""routing.select: eligibility with reasons, preferences, then cost, latency and broker id."""

from __future__ import annotations

import copy
import math
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.capabilities import Capabilities
from api.commission import commission
from api.contracts import CommissionStructure, OrderRoutingRequest, TieredRate
from api.enums import (
    AssetClass,
    BrokerFeature,
    ConnectionStatus,
    ExecutionStrategy,
    OrderType,
    Side,
    TimeInForce,
    Urgency,
)
from routing import IStarImpact, MarketStats, RoutingConfig, RoutingStats
from routing.select import BrokerCandidate, Selection, ineligibility, select_broker
from tests.routing.builders import EVERYTHING, D, bps, broker

PRICE = D("100")  # reference price: 10 shares are 1 000 of notional


def order(**changes: Any) -> OrderRoutingRequest:
    request = OrderRoutingRequest(
        order_id="ord-1",
        account_id="acc-1",
        symbol="AAPL",
        side=Side.BUY,
        type=OrderType.MARKET,
        quantity=D("10"),
    )
    return msgspec.structs.replace(request, **changes) if changes else request


def select(
    candidates: list[BrokerCandidate],
    request: OrderRoutingRequest | None = None,
    asset_class: AssetClass = AssetClass.EQUITY,
    reference_price: Decimal | None = PRICE,
) -> Selection:
    return select_broker(candidates, request or order(), asset_class, reference_price)


# --- eligibility ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [ConnectionStatus.DISCONNECTED, ConnectionStatus.MAINTENANCE])
def test_disconnected_or_maintenance_broker_is_excluded_with_its_status(status: ConnectionStatus) -> None:
    selection = select([broker("down", status=status), broker("up")])
    assert selection.ranked == ("up",)
    assert selection.ineligible == (("down", f"status {status.value}"),)


def test_degraded_broker_is_still_eligible() -> None:
    selection = select([broker("slow", status=ConnectionStatus.DEGRADED)])
    assert selection.chosen == "slow"
    assert selection.ineligible == ()


def test_broker_without_the_asset_class_is_excluded() -> None:
    fx_only = Capabilities(asset_classes=frozenset({AssetClass.FOREX}), features=frozenset(BrokerFeature))
    selection = select([broker("fx", capabilities=fx_only)], asset_class=AssetClass.EQUITY)
    assert selection.chosen is None
    assert selection.ineligible == (("fx", "does not trade EQUITY"),)


def test_broker_without_the_order_type_feature_is_excluded() -> None:
    no_stop_limit = Capabilities(
        asset_classes=frozenset(AssetClass),
        features=frozenset(
            {BrokerFeature.MARKET_ORDERS, BrokerFeature.LIMIT_ORDERS, BrokerFeature.STOP_ORDERS}
        ),
    )
    request = order(type=OrderType.STOP_LIMIT, price=D("101"), stop_price=D("100"))
    selection = select([broker("basic", capabilities=no_stop_limit), broker("full")], request)
    assert selection.ranked == ("full",)
    assert selection.ineligible == (("basic", "does not support STOP_LIMIT orders"),)


def test_broker_without_the_time_in_force_is_excluded() -> None:
    no_fok = Capabilities(
        asset_classes=frozenset(AssetClass),
        features=frozenset(BrokerFeature),
        time_in_force=frozenset({TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC}),
    )
    selection = select([broker("nofok", capabilities=no_fok)], order(time_in_force=TimeInForce.FOK))
    assert selection.ineligible == (("nofok", "does not support time in force FOK"),)


def test_status_is_reported_before_capabilities() -> None:
    fx_only = Capabilities(asset_classes=frozenset({AssetClass.FOREX}), features=frozenset())
    candidate = broker("x", status=ConnectionStatus.DISCONNECTED, capabilities=fx_only)
    assert ineligibility(candidate, order(), AssetClass.EQUITY) == "status DISCONNECTED"


def test_eligible_broker_has_no_ineligibility() -> None:
    assert ineligibility(broker("x"), order(), AssetClass.EQUITY) is None


# --- preferences ----------------------------------------------------------------------------


def test_preferred_brokers_are_ranked_first_in_the_given_order_even_when_dearer() -> None:
    candidates = [
        broker("cheap", commission=bps("1")),
        broker("mid", commission=bps("5")),
        broker("dear", commission=bps("20")),
    ]
    selection = select(candidates, order(preferred_brokers=("dear", "mid")))
    assert selection.ranked == ("dear", "mid", "cheap")
    assert selection.chosen == "dear"


def test_ineligible_preferred_broker_is_skipped_with_its_reason() -> None:
    candidates = [
        broker("pref", status=ConnectionStatus.MAINTENANCE),
        broker("second"),
        broker("other", commission=bps("1")),
    ]
    selection = select(candidates, order(preferred_brokers=("pref", "second")))
    assert selection.chosen == "second"
    assert selection.ranked == ("second", "other")
    assert selection.ineligible == (("pref", "status MAINTENANCE"),)


def test_unknown_preferred_broker_is_listed_as_unknown_broker() -> None:
    selection = select([broker("a")], order(preferred_brokers=("ghost", "a")))
    assert selection.chosen == "a"
    assert selection.ineligible == (("ghost", "unknown broker"),)


def test_only_unknown_preferred_brokers_fall_back_to_the_cheapest() -> None:
    candidates = [broker("dear", commission=bps("9")), broker("cheap", commission=bps("2"))]
    selection = select(candidates, order(preferred_brokers=("ghost",)))
    assert selection.chosen == "cheap"


def test_repeated_preferred_broker_keeps_its_first_position() -> None:
    selection = select([broker("a"), broker("b")], order(preferred_brokers=("a", "b", "a")))
    assert selection.ranked == ("a", "b")


# --- cost, latency, id ----------------------------------------------------------------------


def test_cheapest_expected_commission_wins() -> None:
    candidates = [
        broker("fast-dear", commission=bps("8", "1.00"), latency_ms=2.0),  # 0.80 -> minimum 1.00
        broker("slow-cheap", commission=bps("1", "0.35"), latency_ms=25.0),  # 0.10 -> minimum 0.35
        broker("tiered", commission=bps("3", "2.00"), latency_ms=8.0),  # 0.30 -> minimum 2.00
    ]
    selection = select(candidates)
    assert selection.chosen == "slow-cheap"
    assert selection.ranked == ("slow-cheap", "fast-dear", "tiered")
    assert selection.expected_fees == (
        ("slow-cheap", D("0.35")),
        ("fast-dear", D("1.00")),
        ("tiered", D("2.00")),
    )


def test_expected_fee_uses_each_brokers_running_volume_for_tiers() -> None:
    tiered = CommissionStructure(
        base_rate=D("0.001"), tiered_rates=(TieredRate(volume_threshold=D(1_000_000), rate=D("0.0001")),)
    )
    candidates = [
        broker("flat-5bps", commission=bps("5")),  # 1000 * 5 bps = 0.50
        broker("tiered-past", commission=tiered, running_volume=D(2_000_000)),  # 1000 * 1 bp = 0.10
        broker("tiered-fresh", commission=tiered, running_volume=D(0)),  # 1000 * 10 bps = 1.00
    ]
    selection = select(candidates)
    assert selection.ranked == ("tiered-past", "flat-5bps", "tiered-fresh")
    assert dict(selection.expected_fees) == {
        "tiered-past": D("0.1"),
        "flat-5bps": D("0.5"),
        "tiered-fresh": D("1"),
    }


def test_notional_is_quantity_times_reference_price() -> None:
    selection = select([broker("a", commission=bps("10"))], order(quantity=D("3")), reference_price=D("12.5"))
    assert selection.expected_fees == (("a", D("0.0375")),)


def test_equal_fees_are_broken_by_lower_latency() -> None:
    selection = select(
        [broker("b", latency_ms=9.0), broker("a", latency_ms=12.0), broker("c", latency_ms=3.0)]
    )
    assert selection.ranked == ("c", "b", "a")


def test_equal_fees_and_latency_are_broken_by_broker_id() -> None:
    selection = select([broker("zeta"), broker("alpha"), broker("mu")])
    assert selection.ranked == ("alpha", "mu", "zeta")


def test_without_a_reference_price_brokers_tie_on_cost_and_latency_decides() -> None:
    candidates = [
        broker("cheap-slow", commission=bps("1", "0.35"), latency_ms=25.0),
        broker("dear-fast", commission=bps("8", "1.00"), latency_ms=2.0),
    ]
    selection = select(candidates, reference_price=None)
    assert selection.ranked == ("dear-fast", "cheap-slow")
    assert selection.expected_fees == (("dear-fast", D(0)), ("cheap-slow", D(0)))


# --- rejection ------------------------------------------------------------------------------


def test_rejection_reason_lists_every_brokers_reason_in_order() -> None:
    fx_only = Capabilities(asset_classes=frozenset({AssetClass.FOREX}), features=frozenset(BrokerFeature))
    market_only = Capabilities(
        asset_classes=frozenset(AssetClass), features=frozenset({BrokerFeature.MARKET_ORDERS})
    )
    candidates = [
        broker("down", status=ConnectionStatus.DISCONNECTED),
        broker("fx", capabilities=fx_only),
        broker("basic", capabilities=market_only),
    ]
    request = order(type=OrderType.LIMIT, price=D("100"), preferred_brokers=("ghost",))
    selection = select(candidates, request)
    assert selection.chosen is None
    assert selection.ranked == ()
    assert selection.expected_fees == ()
    assert selection.rejection_reason() == (
        "no eligible broker (down: status DISCONNECTED; fx: does not trade EQUITY; "
        "basic: does not support LIMIT orders; ghost: unknown broker)"
    )


def test_rejection_reason_without_any_broker_says_none_is_configured() -> None:
    selection = select([])
    assert selection.chosen is None
    assert selection.rejection_reason() == "no broker is configured"


# --- properties -----------------------------------------------------------------------------

capabilities = st.builds(
    Capabilities,
    asset_classes=st.frozensets(st.sampled_from(list(AssetClass))),
    features=st.frozensets(st.sampled_from(list(BrokerFeature))),
    time_in_force=st.frozensets(st.sampled_from(list(TimeInForce))),
)
rates = st.integers(min_value=0, max_value=100).map(lambda n: D(n) / 10_000)
commissions = st.builds(
    CommissionStructure,
    base_rate=rates,
    min_commission=st.integers(min_value=0, max_value=500).map(lambda n: D(n) / 100),
    tiered_rates=st.lists(
        st.builds(TieredRate, volume_threshold=st.integers(0, 10**6).map(D), rate=rates),
        max_size=2,
        unique_by=lambda t: t.volume_threshold,
    ).map(tuple),
)
latencies = st.sampled_from([0.0, 1.0, 2.5, 10.0])
volumes = st.integers(min_value=0, max_value=2 * 10**6).map(D)


@st.composite
def candidate_lists(draw: st.DrawFn, eligible_only: bool = False) -> list[BrokerCandidate]:
    ids = draw(st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=6))
    return [
        BrokerCandidate(
            broker_id=broker_id,
            status=ConnectionStatus.CONNECTED
            if eligible_only
            else draw(st.sampled_from(list(ConnectionStatus))),
            capabilities=EVERYTHING if eligible_only else draw(capabilities),
            commission=draw(commissions),
            latency_ms=draw(latencies),
            running_volume=draw(volumes),
        )
        for broker_id in ids
    ]


requests = st.builds(
    order,
    type=st.sampled_from([OrderType.MARKET, OrderType.STOP]),
    time_in_force=st.sampled_from(list(TimeInForce)),
    quantity=st.integers(min_value=1, max_value=10_000).map(D),
    preferred_brokers=st.lists(st.sampled_from("abcdefghxyz"), unique=True, max_size=3).map(tuple),
)
prices = st.one_of(st.none(), st.integers(min_value=1, max_value=100_000).map(lambda n: D(n) / 100))


@given(candidate_lists(), requests, st.sampled_from(list(AssetClass)), prices)
def test_never_chooses_an_ineligible_broker_and_accounts_for_every_broker(
    candidates: list[BrokerCandidate],
    request: OrderRoutingRequest,
    asset_class: AssetClass,
    reference_price: Decimal | None,
) -> None:
    selection = select_broker(candidates, request, asset_class, reference_price)
    by_id = {c.broker_id: c for c in candidates}
    for broker_id in selection.ranked:
        assert ineligibility(by_id[broker_id], request, asset_class) is None
    excluded = {broker_id for broker_id, _ in selection.ineligible if broker_id in by_id}
    assert excluded.isdisjoint(selection.ranked)
    assert excluded | set(selection.ranked) == set(by_id)
    unknown = {broker_id for broker_id, why in selection.ineligible if why == "unknown broker"}
    assert unknown == set(request.preferred_brokers) - set(by_id)
    assert [b for b, _ in selection.expected_fees] == list(selection.ranked)


@given(candidate_lists(eligible_only=True), requests, prices, st.data())
def test_adding_a_strictly_cheaper_identical_broker_never_raises_the_chosen_fee(
    candidates: list[BrokerCandidate],
    request: OrderRoutingRequest,
    reference_price: Decimal | None,
    data: st.DataObject,
) -> None:
    if not candidates:
        return
    before = select_broker(candidates, request, AssetClass.EQUITY, reference_price)
    model = data.draw(st.sampled_from(candidates))
    halved = CommissionStructure(
        base_rate=model.commission.base_rate / 2,
        min_commission=model.commission.min_commission / 2,
        tiered_rates=tuple(TieredRate(t.volume_threshold, t.rate / 2) for t in model.commission.tiered_rates),
    )
    cheaper = msgspec.structs.replace(model, broker_id="z-clone", commission=halved)
    notional = request.quantity * reference_price if reference_price is not None else D(0)
    assert commission(cheaper.commission, notional, cheaper.running_volume) <= commission(
        model.commission, notional, model.running_volume
    )
    after = select_broker([*candidates, cheaper], request, AssetClass.EQUITY, reference_price)
    fee_before = dict(before.expected_fees)[before.chosen]  # type: ignore[index]
    fee_after = dict(after.expected_fees)[after.chosen]  # type: ignore[index]
    assert fee_after <= fee_before


@given(candidate_lists(eligible_only=True), prices)
def test_without_preferences_the_chosen_broker_has_the_lowest_expected_fee(
    candidates: list[BrokerCandidate], reference_price: Decimal | None
) -> None:
    selection = select_broker(candidates, order(), AssetClass.EQUITY, reference_price)
    if not candidates:
        assert selection.chosen is None
        return
    fees = dict(selection.expected_fees)
    assert fees[selection.chosen] == min(fees.values())  # type: ignore[index]
    ranked_keys = [
        (fees[b], next(c.latency_ms for c in candidates if c.broker_id == b), b) for b in selection.ranked
    ]
    assert ranked_keys == sorted(ranked_keys)


# --- rate-limit headroom and blocks ---------------------------------------------------------


def test_broker_without_rate_limit_headroom_is_excluded_after_capability_reasons() -> None:
    fx_only = Capabilities(asset_classes=frozenset({AssetClass.FOREX}), features=frozenset(BrokerFeature))
    candidates = [
        broker("throttled", rate_headroom=0.0),
        broker("fx-throttled", capabilities=fx_only, rate_headroom=0.0),
        broker("open", rate_headroom=3.5),
    ]
    selection = select(candidates)
    assert selection.ranked == ("open",)
    assert selection.ineligible == (
        ("throttled", "rate limit exhausted (no headroom)"),
        ("fx-throttled", "does not trade EQUITY"),
    )


def test_blocked_broker_is_excluded_with_the_block_as_reason() -> None:
    selection = select([broker("a", blocked="circuit breaker open"), broker("b")])
    assert selection.ineligible == (("a", "circuit breaker open"),)


def test_candidate_refuses_impossible_configuration() -> None:
    with pytest.raises(ValueError):
        broker("a", venue_access=0.0)
    with pytest.raises(ValueError):
        broker("a", max_participation=1.5)
    with pytest.raises(ValueError):
        broker("a", rate_headroom=float("nan"))


# --- properties with statistics, market data and every strategy -----------------------------

events = st.lists(
    st.tuples(
        st.sampled_from(["ack", "reject", "timeout", "fill", "tca", "probe"]),
        st.sampled_from("abcdefgh"),
        st.floats(min_value=0.0, max_value=5_000.0),
        st.floats(min_value=0.0, max_value=1.0),
        st.sampled_from(list(Urgency)),
        st.sampled_from([OrderType.MARKET, OrderType.STOP]),
    ),
    max_size=60,
)
markets = st.one_of(
    st.none(),
    st.builds(
        MarketStats,
        daily_volatility=st.floats(min_value=0.0, max_value=0.5),
        adv=st.floats(min_value=1.0, max_value=1e9),
        spread_bps=st.floats(min_value=0.0, max_value=500.0),
    ),
)
smart_requests = st.builds(
    order,
    type=st.sampled_from([OrderType.MARKET, OrderType.STOP]),
    time_in_force=st.sampled_from(list(TimeInForce)),
    quantity=st.integers(min_value=1, max_value=10**7).map(D),
    preferred_brokers=st.lists(st.sampled_from("abcdefghxyz"), unique=True, max_size=3).map(tuple),
    execution_strategy=st.sampled_from(list(ExecutionStrategy)),
    urgency=st.sampled_from(list(Urgency)),
)
configs = st.sampled_from([RoutingConfig(), RoutingConfig(impact=IStarImpact())])


def replay(recorded: list[tuple[str, str, float, float, Urgency, OrderType]]) -> RoutingStats:
    stats = RoutingStats()
    for n, (kind, broker_id, ms, fraction, urgency, order_type) in enumerate(recorded):
        at = n * 7.0
        if kind == "ack":
            stats.on_ack(broker_id, ms, urgency, at=at)
        elif kind == "reject":
            stats.on_reject(broker_id, at=at)
        elif kind == "timeout":
            stats.on_timeout(broker_id, ms, urgency, at=at)
        elif kind == "fill":
            stats.on_fill(broker_id, AssetClass.EQUITY, order_type, TimeInForce.DAY, fraction, ms, at=at)
        elif kind == "tca":
            stats.on_tca((broker_id, AssetClass.EQUITY, ms / 100 - 10, 1.0 + ms), at=at)
        else:
            stats.on_probe(broker_id, ms, at=at)
    stats.advance(len(recorded) * 7.0 + 30.0)  # routed a little after the last event
    return stats


@settings(max_examples=200)
@given(candidate_lists(), smart_requests, st.sampled_from(list(AssetClass)), prices, events, markets, configs)
def test_with_statistics_and_market_never_an_ineligible_broker_and_every_score_finite(
    candidates: list[BrokerCandidate],
    request: OrderRoutingRequest,
    asset_class: AssetClass,
    reference_price: Decimal | None,
    recorded: list[tuple[str, str, float, float, Urgency, OrderType]],
    market: MarketStats | None,
    config: RoutingConfig,
) -> None:
    stats = replay(recorded)
    selection = select_broker(
        candidates, request, asset_class, reference_price, stats=stats, market=market, config=config
    )
    by_id = {c.broker_id: c for c in candidates}
    for broker_id in selection.ranked:
        assert ineligibility(by_id[broker_id], request, asset_class) is None
    excluded = {b for b, _ in selection.ineligible if b in by_id}
    assert excluded | set(selection.ranked) == set(by_id)
    assert excluded.isdisjoint(selection.ranked)
    assert [s.broker_id for s in selection.scores] == list(selection.ranked)
    for score in selection.scores:
        numbers = msgspec.structs.astuple(score)[1:]
        assert all(math.isfinite(float(x)) for x in numbers), score
        assert 0.0 <= score.fill_probability <= 1.0
        assert score.latency_p95_ms >= score.latency_p50_ms >= 0.0
    if selection.ranked:
        assert selection.estimated_execution_time_ms is not None
        assert math.isfinite(selection.estimated_execution_time_ms)
    # The preferred eligible brokers first, in the order given.
    eligible_preferred = [b for b in dict.fromkeys(request.preferred_brokers) if b in selection.ranked]
    assert list(selection.ranked[: len(eligible_preferred)]) == eligible_preferred


@settings(max_examples=200)
@given(candidate_lists(eligible_only=True), requests, prices, events, markets, st.data())
def test_a_strictly_cheaper_otherwise_identical_broker_never_worsens_lowest_cost(
    candidates: list[BrokerCandidate],
    request: OrderRoutingRequest,
    reference_price: Decimal | None,
    recorded: list[tuple[str, str, float, float, Urgency, OrderType]],
    market: MarketStats | None,
    data: st.DataObject,
) -> None:
    if not candidates:
        return
    request = msgspec.structs.replace(request, execution_strategy=ExecutionStrategy.LOWEST_COST)
    stats = replay(recorded)
    before = select_broker(
        candidates, request, AssetClass.EQUITY, reference_price, stats=stats, market=market
    )
    model = data.draw(st.sampled_from(candidates))
    halved = CommissionStructure(
        base_rate=model.commission.base_rate / 2,
        min_commission=model.commission.min_commission / 2,
        tiered_rates=tuple(TieredRate(t.volume_threshold, t.rate / 2) for t in model.commission.tiered_rates),
    )
    clone = msgspec.structs.replace(model, broker_id="z-clone", commission=halved)
    if model.broker_id in stats.brokers:  # otherwise identical: the same history too
        stats.brokers["z-clone"] = copy.deepcopy(stats.brokers[model.broker_id])
    after = select_broker(
        [*candidates, clone], request, AssetClass.EQUITY, reference_price, stats=stats, market=market
    )
    chosen_before, chosen_after = before.scores[0], after.scores[0]
    assert chosen_after.score <= chosen_before.score
