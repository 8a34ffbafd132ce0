"""`analyse_many` (many orders at once, each on its own window, through `tca.batch`) against
`analyse` (one order, pure Python): the same result for every order, field by field; and the
pieces it added to `tca.batch` (the bisecting `locate`, inline `compute`) against the originals."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from api.enums import Side, TCABenchmark
from tca import MarketData, Quotes, TcaConfig, TcaFill, TcaOrder, Trades, analyse, peer_stats
from tca.batch import BISECT_ABOVE, FillBatch, OrderBatch, Tape, Windows, compute, locate, tape_of
from tca.engine import analyse_many
from tca.peers import PeerStats
from tca.result import TcaResult

S = 1_000_000_000


def close_enough(got: object, expected: object, path: str = "") -> None:
    """Equal, floats to 1e-9 relative (numpy and Python sum in different orders)."""
    if isinstance(expected, float) and isinstance(got, float | int):
        if math.isnan(expected):
            assert math.isnan(got), path
        else:
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-9), path
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), path
        for key in expected:
            close_enough(got[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), path
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            close_enough(g, e, f"{path}[{i}]")
    else:
        assert got == expected, path


def same_result(got: TcaResult, expected: TcaResult, where: str) -> None:
    close_enough(msgspec.to_builtins(got), msgspec.to_builtins(expected), where)


def random_case(rng: np.random.Generator, i: int) -> tuple[TcaOrder, list[TcaFill], MarketData]:
    """An order, its fills and its window: any side, filled, partly filled or not at all, with
    or without quotes, stored prices, a requested window, prints of no size, a close."""
    start = int(rng.integers(0, 100)) * S
    n_trades = int(rng.choice([0, 1, 3, 40]))
    ts = np.sort(start - S + rng.integers(0, 60 * S, n_trades))
    if n_trades > 3:
        ts[5] = ts[6]  # two prints at one time
    price = np.round(100 * np.exp(np.cumsum(rng.normal(0, 2e-3, n_trades))), 2)
    size = rng.integers(0, 300, n_trades).astype(np.float64)
    if rng.random() < 0.1:
        size[:] = 0.0  # prints of no size: no VWAP, TWAP still defined
    quotes = None
    if rng.random() < 0.7:
        q_ts = np.sort(start - 2 * S + rng.integers(0, 60 * S, 30))
        mid = 100 + np.cumsum(rng.normal(0, 0.05, 30))
        quotes = Quotes.of(q_ts, mid - 0.01, mid + 0.01)
    market = MarketData(
        Trades.of(ts, price, size), quotes, close_price=float(rng.choice([0.0, 101.5])) or None
    )
    count = int(rng.choice([0, 1, 2, 5]))
    fill_ts = start + rng.integers(0, 30 * S, count)
    if count == 2 and rng.random() < 0.5:
        fill_ts[1] = fill_ts[0]  # every fill at one time
    fills = [
        TcaFill(int(t), float(rng.integers(1, 50)), float(np.round(rng.uniform(98, 102), 2)), 0.25)
        for t in fill_ts
    ]
    filled = sum(f.quantity for f in fills)
    requested = rng.random() < 0.3
    order = TcaOrder(
        order_id=f"o{i}",
        execution_id=f"e{i}",
        symbol="X",
        side=Side.BUY if rng.random() < 0.5 else Side.SELL,
        quantity=filled + float(rng.choice([0, 0, 20])) or 10.0,
        broker_id=str(rng.choice(["a", "b", "c"])),
        arrival_ns=start,
        asset_class="EQUITY",
        order_type=str(rng.choice(["LIMIT", "MARKET"])),
        strategy="SMART",
        arrival_price=float(rng.choice([0.0, 100.0])) or None,
        end_ns=start + 40 * S if rng.random() < 0.7 else None,
        end_price=float(rng.choice([0.0, 100.2])) or None,
        window_start_ns=start if requested else None,
        window_end_ns=start + int(rng.integers(0, 50)) * S if requested else None,
    )
    return order, fills, market


def peers_of(rng: np.random.Generator) -> PeerStats:
    """Brokers a (dearer) and b over 80 orders each in the small buckets, c under the minimum:
    ranks, best-broker savings and recommendations all show up."""
    n = 164
    brokers = ["a"] * 80 + ["b"] * 80 + ["c"] * 4
    return peer_stats(
        asset_classes=["EQUITY"] * n,
        buckets=rng.integers(0, 2, n),
        costs=np.where(np.array(brokers) == "a", 9.0, 1.0) + rng.normal(0, 0.5, n),
        weights=rng.uniform(1e3, 1e4, n),
        brokers=brokers,
        strategies=["SMART"] * n,
        order_types=list(rng.choice(["LIMIT", "MARKET"], n)),
        hours=["00"] * n,
    )


@pytest.mark.parametrize("benchmark", list(TCABenchmark))
def test_many_orders_at_once_give_what_each_gives_alone(benchmark: TCABenchmark) -> None:
    rng = np.random.default_rng(42)
    cases = [random_case(rng, i) for i in range(300)]
    peers = peers_of(rng)
    orders = [c[0] for c in cases]
    fills = [c[1] for c in cases]
    windows = Windows.of([c[2] for c in cases])
    for with_peers in (peers, None):
        many = analyse_many(orders, fills, windows, benchmark, peers=with_peers)
        for (order, own, market), got in zip(cases, many, strict=True):
            alone = analyse(order, own, market, benchmark, peers=with_peers)
            same_result(got, alone, order.order_id)
    reasons = {u.measure for r in many for u in r.unavailable}
    assert {"VWAP", "averagePrice", "IMPLEMENTATION_SHORTFALL", "CLOSE_PRICE"} <= reasons  # edges hit
    ranked = analyse_many(orders, fills, windows, benchmark, peers=peers)
    assert any(r.recommendations for r in ranked) and any(r.broker_performance_rank for r in ranked)
    assert any(r.savings_basis == "BEST_BROKER" for r in ranked)


def test_an_impact_horizon_and_no_orders() -> None:
    rng = np.random.default_rng(3)
    cases = [random_case(rng, i) for i in range(50)]
    config = TcaConfig(impact_horizon_ns=2 * S, min_samples=5)
    windows = Windows.of([c[2] for c in cases])
    many = analyse_many([c[0] for c in cases], [c[1] for c in cases], windows, config=config)
    for (order, own, market), got in zip(cases, many, strict=True):
        same_result(got, analyse(order, own, market, config=config), order.order_id)
    assert analyse_many([], [], Windows.of([])) == []
    with pytest.raises(ValueError):
        analyse_many([cases[0][0]], [], Windows.of([cases[0][2]]))


def test_locate_bisects_many_symbols_to_the_same_positions() -> None:
    rng = np.random.default_rng(5)
    symbols = 200
    codes = rng.integers(0, symbols, 20_000)
    tape = tape_of(codes, rng.integers(0, 1_000, 20_000), rng.uniform(1, 2, 20_000), None, symbols + 3)
    queries = rng.integers(0, symbols + 3, 500)  # some symbols without rows
    for times in (rng.integers(-10, 1_010, 500), rng.integers(-10, 1_010, (500, 3))):
        for side in ("left", "right"):
            got = locate(tape, queries, times, side)
            expected = np.empty_like(got)
            for i, code in enumerate(queries.tolist()):
                lo, hi = int(tape.offsets[code]), int(tape.offsets[code + 1])
                expected[i] = lo + np.searchsorted(tape.ts_ns[lo:hi], times[i], side=side)  # type: ignore[call-overload]
            assert np.array_equal(got, expected), side
    assert len(np.unique(queries)) > BISECT_ABOVE  # the bisecting path was the one tested
    empty = Tape(np.zeros(41, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0))
    assert locate(empty, np.arange(40), np.arange(40), "left").tolist() == [0] * 40


def test_compute_on_the_calling_thread_equals_the_pool() -> None:
    rng = np.random.default_rng(8)
    n = 100
    tape = tape_of(
        np.zeros(2_000, np.int64),
        np.sort(rng.integers(0, 100 * S, 2_000)),
        rng.uniform(99, 101, 2_000),
        rng.uniform(0, 10, 2_000),
        1,
    )
    owner = np.sort(rng.integers(0, n, 300))
    fills = FillBatch(
        owner,
        rng.integers(0, 100 * S, 300)[np.argsort(owner, kind="stable")],
        np.ones(300),
        rng.uniform(99, 101, 300),
        np.zeros(300),
    )
    nan = np.full(n, np.nan)
    none = np.full(n, np.iinfo(np.int64).min)
    orders = OrderBatch(
        np.zeros(n, np.int64),
        np.ones(n, np.int64),
        np.full(n, 10.0),
        rng.integers(0, 50 * S, n),
        nan,
        nan,
        none,
        nan,
        none,
        none,
        nan,
    )
    inline = compute(orders, fills, tape, workers=1)
    pooled = compute(orders, fills, tape, workers=2)
    for field in msgspec.structs.fields(inline):
        assert np.array_equal(getattr(inline, field.name), getattr(pooled, field.name), equal_nan=True)
