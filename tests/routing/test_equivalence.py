"""The fast routing path against the implementation it replaced (`tests/routing/reference.py`):
for the same snapshot, the same ranking, the same ineligible brokers and reasons, the same
components bit for bit, and the same decision record and explanation."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from api.capabilities import Capabilities
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
from routing import BrokerCandidate, IStarImpact, MarketStats, RoutingConfig, RoutingStats, select_broker
from routing.decision import decision_of, decode, encode, explain
from routing.select import Selection
from tests.routing import reference
from tests.routing.test_select import candidate_lists, configs, events, markets, prices, smart_requests

DECIDED = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
D = Decimal


def exactly(selection: Selection) -> tuple[object, ...]:
    """Everything in a selection, floats by their repr (bit for bit: 0.1 + 0.2 is not 0.3)."""
    return (
        selection.ranked,
        selection.ineligible,
        tuple(repr(msgspec.structs.astuple(s)) for s in selection.scores),
        selection.strategy,
        selection.urgency,
        selection.preferred,
        selection.measured,
        repr(selection.notional),
        selection.weights,
    )


def assert_same_decision(
    candidates: list[BrokerCandidate],
    request: OrderRoutingRequest,
    asset_class: AssetClass,
    price: Decimal | None,
    stats: RoutingStats | None,
    market: MarketStats | None,
    config: RoutingConfig,
) -> None:
    new = select_broker(candidates, request, asset_class, price, stats=stats, market=market, config=config)
    old = reference.select_broker(
        candidates, request, asset_class, price, stats=stats, market=market, config=config
    )
    assert exactly(new) == exactly(old)
    assert new.chosen == old.chosen
    assert new.rejection_reason() == old.rejection_reason()
    # The record: what is stored decodes to what the old code stored, and explains the same.
    stored = encode(decision_of(new, DECIDED, price))
    expected = reference.encode(reference.decision_of(old, DECIDED, price))
    assert reference.encode(decode(stored)) == expected
    assert explain(decode(stored)) == explain(decode(expected))


def replay(
    recorded: list[tuple[str, str, float, float, Urgency, OrderType]], gaps: list[float], tail: float
) -> RoutingStats:
    """Events at irregular times (gaps of up to hours: evidence fades, windows go stale)."""
    stats = RoutingStats()
    at = 0.0
    for n, (kind, broker_id, ms, fraction, urgency, order_type) in enumerate(recorded):
        at += gaps[n % len(gaps)] if gaps else 7.0
        if kind == "ack":
            stats.on_ack(broker_id, ms, urgency, at=at)
        elif kind == "reject":
            stats.on_reject(broker_id, at=at)
        elif kind == "timeout":
            stats.on_timeout(broker_id, ms, urgency, at=at)
        elif kind == "fill":
            filled = ms if fraction > 0.0 else None
            stats.on_fill(broker_id, AssetClass.EQUITY, order_type, TimeInForce.DAY, fraction, filled, at=at)
        elif kind == "tca":
            stats.on_tca((broker_id, AssetClass.EQUITY, ms / 100 - 10, 1.0 + ms), at=at)
        else:
            stats.on_probe(broker_id, ms, at=at)
    stats.advance(at + tail)
    return stats


gaps = st.lists(st.sampled_from([0.0, 0.5, 7.0, 60.0, 250.0, 3_600.0]), max_size=8)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(candidate_lists(), candidate_lists(eligible_only=True)),
    smart_requests,
    st.sampled_from(list(AssetClass)),
    prices,
    events,
    gaps,
    st.sampled_from([0.0, 30.0, 900.0]),
    markets,
    configs,
    st.booleans(),
)
def test_the_fast_path_decides_exactly_as_the_reference(
    candidates: list[BrokerCandidate],
    request: OrderRoutingRequest,
    asset_class: AssetClass,
    price: Decimal | None,
    recorded: list[tuple[str, str, float, float, Urgency, OrderType]],
    pauses: list[float],
    tail: float,
    market: MarketStats | None,
    config: RoutingConfig,
    with_stats: bool,
) -> None:
    stats = replay(recorded, pauses, tail) if with_stats else None
    for _ in range(3):  # the first decision on a snapshot, then those that find it worked out
        assert_same_decision(candidates, request, asset_class, price, stats, market, config)
    # Brokers that changed (new candidates) on the same statistics: worked out afresh.
    changed = [
        msgspec.structs.replace(
            c,
            latency_ms=c.latency_ms + n,
            rate_headroom=0.0 if n == 1 else c.rate_headroom,
            status=ConnectionStatus.DISCONNECTED if n == 2 else c.status,
        )
        for n, c in enumerate(candidates)
    ]
    assert_same_decision(changed, request, asset_class, price, stats, market, config)
    assert_same_decision(changed, request, asset_class, price, stats, market, config)
    if stats is None or not candidates:
        return
    # Each change of the statistics, after decisions that worked figures out on them: nothing
    # worked out before the change is used after it.
    first, last = candidates[0].broker_id, candidates[-1].broker_id
    changes = [
        lambda: stats.on_ack(first, 250.0, request.urgency),
        lambda: stats.on_fill(last, asset_class, request.type, request.time_in_force, 0.5, 900.0),
        lambda: stats.on_reject(last),
        lambda: stats.on_timeout(first, 900.0, request.urgency),
        lambda: stats.on_tca((first, asset_class, 25.0, 1e5)),
        lambda: stats.on_probe(first, 1.0),
        lambda: stats.advance(stats.now + 600.0),
    ]
    for change in changes:
        assert_same_decision(changed, request, asset_class, price, stats, market, config)
        assert_same_decision(changed, request, asset_class, price, stats, market, config)
        change()
        assert_same_decision(changed, request, asset_class, price, stats, market, config)


# --- a bench-like snapshot: many brokers, tiers, running volumes, caps, every order shape -----


def _brokers(count: int, rng: random.Random) -> list[BrokerCandidate]:
    everything = Capabilities(asset_classes=frozenset(AssetClass), features=frozenset(BrokerFeature))
    limited = Capabilities(
        asset_classes=frozenset({AssetClass.EQUITY, AssetClass.FOREX}),
        features=frozenset({BrokerFeature.MARKET_ORDERS, BrokerFeature.LIMIT_ORDERS}),
        time_in_force=frozenset({TimeInForce.DAY, TimeInForce.IOC}),
    )
    brokers = []
    for i in range(count):
        tiers: tuple[TieredRate, ...] = ()
        if i % 3 == 0:
            thresholds = sorted(rng.sample(range(500_000, 5_000_001, 500_000), rng.randint(1, 3)))
            tiers = tuple(TieredRate(D(t), D(rng.randint(1, 4)) / 10_000) for t in thresholds)
        structure = CommissionStructure(
            base_rate=D(rng.randint(0, 12)) / 10_000,
            min_commission=D(rng.choice(["0", "0.35", "1", "2.5"])),
            tiered_rates=tiers,
        )
        brokers.append(
            BrokerCandidate(
                broker_id=f"broker-{i:03d}",
                status=rng.choice(
                    [ConnectionStatus.CONNECTED] * 6
                    + [ConnectionStatus.DEGRADED, ConnectionStatus.DISCONNECTED]
                ),
                capabilities=rng.choice([everything, everything, limited]),
                commission=structure,
                latency_ms=rng.choice([0.0, round(rng.uniform(0.5, 40.0), 3)]),
                running_volume=D(
                    rng.choice([0, rng.randint(0, 6_000_000), rng.randint(0, 600_000_000) / 100])
                ),
                blocked=rng.choice([None] * 9 + ["circuit breaker open"]),
                rate_headroom=rng.choice([100.0, 40.0, 0.0, 0.01]),
                venue_access=rng.choice([1.0, 0.9, 0.7, 0.5]),
                max_participation=rng.choice([1.0, 0.25, 0.1]),
            )
        )
    return brokers


def _stats(brokers: list[BrokerCandidate], rng: random.Random) -> RoutingStats:
    stats = RoutingStats()
    at = 0.0
    for _ in range(60):
        for broker in brokers:
            if rng.random() < 0.3:
                continue
            at += rng.choice([0.001, 0.5, 5.0, 400.0]) if rng.random() < 0.05 else 0.01
            b = broker.broker_id
            stats.on_ack(b, rng.lognormvariate(1.5, 0.6), rng.choice(list(Urgency)), at=at)
            order_type = rng.choice([OrderType.MARKET, OrderType.LIMIT])
            filled = min(1.0, rng.random() * 1.3)
            stats.on_fill(
                b,
                AssetClass.EQUITY,
                order_type,
                TimeInForce.DAY,
                filled,
                rng.uniform(1, 500) if filled else None,
            )
            if rng.random() < 0.05:
                stats.on_reject(b, at=at)
            if rng.random() < 0.3:
                stats.on_tca((b, AssetClass.EQUITY, rng.gauss(3.0, 2.0), rng.uniform(1e3, 1e6)), at=at)
            if rng.random() < 0.2:
                stats.on_probe(b, rng.uniform(0.5, 30.0), at=at)
    stats.advance(at + rng.choice([0.0, 2.0, 600.0]))
    return stats


def test_bench_like_snapshots_decide_exactly_as_the_reference() -> None:
    """Many orders on one snapshot (as a burst is routed), with now and then an event."""
    rng = random.Random(11)
    market = MarketStats(daily_volatility=0.018, adv=8_000_000.0, spread_bps=2.5)
    configurations = [RoutingConfig(), RoutingConfig(impact=IStarImpact())]
    for count in (1, 2, 5, 20, 60):
        brokers = _brokers(count, rng)
        stats = _stats(brokers, rng)
        ids = [b.broker_id for b in brokers]
        for n in range(300):
            usual = rng.random() < 0.8  # most orders of a few classes: the memo is used
            order_type = rng.choice([OrderType.MARKET, OrderType.LIMIT] if usual else list(OrderType))
            price = D(rng.randint(1, 5_000_000)) / rng.choice([1, 100, 10_000, 10**12])
            request = OrderRoutingRequest(
                order_id=f"o-{n}",
                account_id="acc",
                symbol="AAPL",
                side=rng.choice(list(Side)),
                type=order_type,
                quantity=D(rng.choice([1, 10, 100, 500, 2_000, 25_000, 250_000, 10**7]))
                / rng.choice([1, 1, 1000]),
                price=price if order_type.needs_price else None,
                stop_price=price if order_type.needs_stop_price else None,
                time_in_force=TimeInForce.DAY if usual else rng.choice(list(TimeInForce)),
                preferred_brokers=tuple(rng.sample(ids, min(len(ids), rng.randint(1, 3))))
                if n % 7 == 0
                else (),
                execution_strategy=rng.choice(list(ExecutionStrategy)),
                urgency=Urgency.MEDIUM if usual else rng.choice(list(Urgency)),
            )
            config = configurations[0] if rng.random() < 0.8 else configurations[1]
            if rng.random() < 0.02:
                stats.on_ack(rng.choice(ids), rng.uniform(1.0, 50.0), rng.choice(list(Urgency)))
            if rng.random() < 0.02:
                brokers[0] = msgspec.structs.replace(brokers[0], latency_ms=rng.uniform(1.0, 9.0))
            assert_same_decision(
                brokers,
                request,
                AssetClass.EQUITY if usual else rng.choice([AssetClass.FOREX, AssetClass.CRYPTO]),
                price if usual else rng.choice([price, None]),
                stats if usual else rng.choice([stats, None]),
                market if usual else rng.choice([market, None]),
                config,
            )


def test_orders_of_every_class_on_one_snapshot_decide_exactly_as_the_reference() -> None:
    """What a broker's figures depend on besides the order's size — shape, urgency, spread,
    config — each varied on one snapshot, every combination routed twice (the second time on
    figures worked out the first time)."""
    rng = random.Random(7)
    brokers = _brokers(12, rng)
    stats = _stats(brokers, rng)
    markets = [
        MarketStats(daily_volatility=0.018, adv=8_000_000.0, spread_bps=2.5),
        MarketStats(daily_volatility=0.018, adv=8_000_000.0, spread_bps=9.0),
        MarketStats(daily_volatility=0.05, adv=50_000.0, spread_bps=2.5),
        None,
    ]
    configurations = [
        RoutingConfig(),
        RoutingConfig(impact=IStarImpact()),
        RoutingConfig(latency_prior_strength=1.0, fill_prior_strength=50.0, tca_prior_strength=2.0),
    ]
    combinations = [
        (order_type, tif, urgency, strategy, asset_class, market, config)
        for order_type in (OrderType.MARKET, OrderType.LIMIT, OrderType.STOP)
        for tif in (TimeInForce.DAY, TimeInForce.IOC)
        for urgency in Urgency
        for strategy in (ExecutionStrategy.SMART, ExecutionStrategy.FASTEST_EXECUTION)
        for asset_class in (AssetClass.EQUITY, AssetClass.FOREX)
        for market in markets
        for config in configurations
    ]
    for _ in range(2):
        rng.shuffle(combinations)
        for n, (order_type, tif, urgency, strategy, asset_class, market, config) in enumerate(combinations):
            request = OrderRoutingRequest(
                order_id=f"o-{n}",
                account_id="acc",
                symbol="AAPL",
                side=Side.BUY,
                type=order_type,
                quantity=D(rng.choice([10, 500, 25_000])),
                price=D("101.25") if order_type.needs_price else None,
                stop_price=D("101.25") if order_type.needs_stop_price else None,
                time_in_force=tif,
                execution_strategy=strategy,
                urgency=urgency,
            )
            assert_same_decision(brokers, request, asset_class, D("101.25"), stats, market, config)
