"""The peer groups the server sums (`Store.load_peer_groups`) are the groups `tca.peers` makes in
Python from the same reports: same keys, same counts, the same moments."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from sql import Store
from sql.reports import ReportRecord
from tca.model import ns_of
from tca.peers import PeerStats, hour_key, peer_stats
from tca_online.peers import stats_of_groups
from tests.sql import broker_record, new_id, order_claim

#: Reports of this test are created in 2090: `since` leaves every other test's out.
SINCE = datetime(2090, 1, 1, tzinfo=UTC)


def report(order_id: str, execution_id: str, broker_id: str, i: int) -> ReportRecord:
    start = SINCE + timedelta(hours=5 * i, minutes=7)
    cost = None if i % 7 == 3 else (i % 5) * 1.7 - 2.5  # some unknown
    notional = Decimal(0) if i % 11 == 4 else Decimal(f"{1000 + 337 * i}.25")  # some without any
    return ReportRecord(
        execution_id=execution_id,
        order_id=order_id,
        broker_id=broker_id,
        symbol="AAPL",
        side="BUY",
        quantity=Decimal(10),
        filled_quantity=Decimal(10),
        average_price=Decimal(100),
        benchmark_type="ARRIVAL_PRICE",
        benchmark_price=None,
        slippage_bps=None,
        market_impact_bps=None,
        total_cost_bps=cost,
        execution_start=start,
        execution_end=start + timedelta(seconds=1),
        quality_score=None,
        rank=None,
        recommendations="[]",
        created_at=SINCE + timedelta(seconds=i),
        asset_class=("EQUITY", "CRYPTO")[i % 2],
        order_type=("LIMIT", "MARKET")[i % 3 % 2],
        strategy=("SMART", "TWAP", "")[i % 3],  # an empty key counts in no STRATEGY group
        size_bucket=i % 3,
        executed_notional=notional,
        fees=Decimal(0),
        arrival_price=Decimal(100),
        arrival_cost_bps=cost,
        end_price=None,
        benchmarks="{}",
        shortfall=None,
        unavailable="[]",
        market_window=b"",
    )


def in_python(records: list[ReportRecord]) -> PeerStats:
    return peer_stats(
        asset_classes=[r.asset_class for r in records],
        buckets=[r.size_bucket for r in records],
        costs=[math.nan if r.arrival_cost_bps is None else r.arrival_cost_bps for r in records],
        weights=[float(r.executed_notional) for r in records],
        brokers=[r.broker_id for r in records],
        strategies=[r.strategy for r in records],
        order_types=[r.order_type for r in records],
        hours=[hour_key(ns_of(r.execution_start)) for r in records],
    )


async def test_peer_groups_summed_by_the_server_match_python(store: Store, broker_id: str) -> None:
    other = broker_record()
    await store.upsert_brokers([other])
    records = []
    for i in range(40):
        claim = order_claim(new_id(), (broker_id, other.broker_id)[i % 2])
        assert claim.execution is not None
        await store.claim_order(claim)
        records.append(report(claim.order_id, claim.execution.id, claim.execution.broker_id, i))
    assert all(await store.save_reports([(r, False) for r in records]))

    got = stats_of_groups(await store.load_peer_groups(SINCE))
    expected = in_python(records)

    def by_key(stats: PeerStats) -> dict[tuple[object, ...], object]:
        return {(g.dimension, g.key, g.asset_class, g.size_bucket): g for g in stats.groups}

    got_groups, expected_groups = by_key(got), by_key(expected)
    assert got_groups.keys() == expected_groups.keys()
    assert {g.dimension for g in got.groups} == {"BROKER", "STRATEGY", "ORDER_TYPE", "HOUR"}
    assert not [g for g in got.groups if g.key == ""]
    for key, want in expected_groups.items():
        have = got_groups[key]
        assert have.count == want.count, key  # type: ignore[attr-defined]
        for field in ("weight", "weighted_sum", "weighted_squares", "squared_weights"):
            assert getattr(have, field) == pytest.approx(getattr(want, field), rel=1e-12), (key, field)
    assert not await store.load_peer_groups(SINCE + timedelta(days=3650))
