"""The vectorised engine (`tca.batch`) against the definitions, case by case and at random."""

from __future__ import annotations

import math

import numpy as np
import pytest

from api.enums import Side, TCABenchmark
from tca import MarketData, TcaFill, TcaOrder, Trades, analyse
from tca.batch import NO_TIME, FillBatch, OrderBatch, Status, compute, tape_of

S = 1_000_000_000
NAN = math.nan


def orders(n: int, **columns: object) -> OrderBatch:
    base: dict[str, object] = {
        "symbol_code": np.zeros(n, dtype=np.int64),
        "sign": np.ones(n, dtype=np.int64),
        "quantity": np.full(n, 100.0),
        "arrival_ns": np.zeros(n, dtype=np.int64),
        "arrival_price": np.full(n, NAN),
        "decision_price": np.full(n, NAN),
        "end_ns": np.full(n, NO_TIME, dtype=np.int64),
        "end_price": np.full(n, NAN),
        "window_start_ns": np.full(n, NO_TIME, dtype=np.int64),
        "window_end_ns": np.full(n, NO_TIME, dtype=np.int64),
        "close_price": np.full(n, NAN),
    }
    for key, value in columns.items():
        base[key] = np.asarray(value, dtype=np.asarray(base[key]).dtype)
    return OrderBatch(**base)  # type: ignore[arg-type]


def fills(
    order: list[int], ts: list[int], qty: list[float], price: list[float], fees: list[float] | None = None
) -> FillBatch:
    return FillBatch(
        np.asarray(order, dtype=np.int64),
        np.asarray(ts, dtype=np.int64),
        np.asarray(qty, dtype=np.float64),
        np.asarray(price, dtype=np.float64),
        np.asarray(fees if fees is not None else [0.0] * len(order), dtype=np.float64),
    )


WORKED = tape_of(
    np.zeros(3, np.int64),
    np.array([0, S, 2 * S]),
    np.array([10.0, 11.0, 12.0]),
    np.array([100.0, 200.0, 300.0]),
    1,
)


def test_worked_vwap_example_for_a_buy_and_a_sell() -> None:
    batch = orders(2, sign=[1, -1], window_start_ns=[0, 0], window_end_ns=[3 * S, 3 * S])
    m = compute(batch, fills([0, 1], [S, S], [100, 100], [11.40, 11.40]), WORKED)
    assert m.vwap[0] == pytest.approx(11.333333333333334)
    slippage = m.slippage_bps(batch.sign, m.vwap)
    assert slippage[0] == pytest.approx(58.8235294117647) and slippage[1] == pytest.approx(-58.8235294117647)
    assert list(m.quality_score) == pytest.approx([50.0, 50.0])
    assert m.twap[0] == pytest.approx(11.0)


def test_blotter_shortfall_numbers_exactly() -> None:
    prices = [10.0, 11.0] * 5
    keep = [i for i in range(10) if i not in (1, 2)]
    batch = orders(
        2,
        quantity=[5_000, 5_000],
        decision_price=[10.0, 10.0],
        arrival_price=[10.0, 10.25],
        end_price=[11.0, 11.0],
    )
    f = fills(
        [0] * 10 + [1] * 8,
        list(range(10)) + keep,
        [500.0] * 18,
        prices + [prices[i] for i in keep],
        [10.0] * 18,
    )
    m = compute(batch, f, WORKED)
    assert list(m.is_total) == [2_600.0, 3_080.0]
    assert list(m.is_bps) == [520.0, 616.0]
    assert (m.wagner_delay[1], m.wagner_trading[1], m.wagner_opportunity[1], m.fees[1]) == (
        1_250.0,
        1_000.0,
        750.0,
        80.0,
    )


def test_zero_fills_partial_fills_and_no_trade_windows() -> None:
    batch = orders(
        4,
        arrival_price=[10.0, 10.0, 10.0, 10.0],
        end_price=[10.5, NAN, 10.5, 10.5],
        window_start_ns=[NO_TIME, NO_TIME, NO_TIME, 5 * S],
        window_end_ns=[NO_TIME, NO_TIME, NO_TIME, 6 * S],
    )
    # 0: no fills; 1: half filled, no end price; 2: two fills; 3: a window without prints.
    f = fills([1, 2, 2, 3], [S, 0, 2 * S, 5 * S], [50, 50, 50, 100], [10.1, 10.0, 12.0, 10.0])
    m = compute(batch, f, WORKED)
    assert m.fill_count.tolist() == [0, 1, 2, 1]
    assert np.isnan(m.average[0]) and np.isnan(m.fees_bps[0]) and np.isnan(m.market_impact_bps[0])
    assert m.window_status.tolist() == [Status.NO_WINDOW, Status.ZERO_LENGTH, Status.OK, Status.NO_TRADES]
    assert np.isnan(m.vwap[[0, 1, 3]]).all() and np.isnan(m.quality_score[[0, 1, 3]]).all()
    assert m.is_total[0] == pytest.approx(50.0)  # all opportunity cost
    # Order 1's end is its last fill (1 s), where the prevailing print is 11.00.
    assert m.end_price[1] == 11.0 and m.is_opportunity[1] == pytest.approx(50.0)
    assert m.vwap[2] == pytest.approx((10 * 100 + 11 * 200) / 300)


def test_tape_of_sorts_by_symbol_then_time() -> None:
    tape = tape_of(
        np.array([1, 0, 1, 0]), np.array([5, 9, 1, 2]), np.array([1.0, 2.0, 3.0, 4.0]), np.ones(4), 3
    )
    assert tape.offsets.tolist() == [0, 2, 4, 4]
    assert tape.ts_ns.tolist() == [2, 9, 1, 5]
    assert tape.value.tolist() == [4.0, 2.0, 3.0, 1.0]


def test_close_from_the_tape_is_the_last_print_of_the_trade_date() -> None:
    day = 86_400 * S
    tape = tape_of(
        np.zeros(3, np.int64),
        np.array([day + S, day + 2 * S, 2 * day + S]),
        np.array([10.0, 11.0, 12.0]),
        np.ones(3),
        1,
    )
    batch = orders(2, arrival_ns=[day, day], close_price=[NAN, 10.5])
    m = compute(batch, fills([0], [day + S], [100], [10.0]), tape)
    assert m.close[0] == 11.0 and m.close_from_tape[0]
    assert m.close[1] == 10.5 and not m.close_from_tape[1]


def test_batch_matches_the_engine_on_random_orders() -> None:
    rng = np.random.default_rng(11)
    n_trades, n_orders = 3_000, 60
    ts = np.sort(rng.integers(0, 1_000 * S, n_trades))
    ts[10] = ts[11]  # prints at one time
    price = np.round(100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n_trades))), 2)
    size = rng.integers(0, 500, n_trades).astype(np.float64)
    tape = tape_of(np.zeros(n_trades, np.int64), ts, price, size, 1)
    market = MarketData(Trades.of(ts, price, size))
    sides = rng.choice([1, -1], n_orders)
    arrival = rng.integers(0, 900 * S, n_orders)
    counts = rng.integers(0, 6, n_orders)
    owner = np.repeat(np.arange(n_orders), counts)
    fill_ts = arrival[owner] + rng.integers(0, 60 * S, len(owner))
    perm = np.lexsort((fill_ts, owner))
    owner, fill_ts = owner[perm], fill_ts[perm]
    fill_qty = rng.integers(1, 100, len(owner)).astype(np.float64)
    fill_px = np.round(rng.uniform(95, 105, len(owner)), 2)
    fill_fee = np.round(rng.uniform(0, 1, len(owner)), 2)
    quantity = np.bincount(owner, weights=fill_qty, minlength=n_orders) + rng.integers(0, 50, n_orders)
    quantity = np.maximum(quantity, 1.0)
    batch = orders(n_orders, sign=sides, quantity=quantity, arrival_ns=arrival)
    m = compute(batch, FillBatch(owner, fill_ts, fill_qty, fill_px, fill_fee), tape, close_from_tape=False)
    for i in range(n_orders):
        mine = owner == i
        order = TcaOrder(
            order_id=str(i),
            symbol="X",
            side=Side.BUY if sides[i] > 0 else Side.SELL,
            quantity=float(quantity[i]),
            broker_id="b",
            arrival_ns=int(arrival[i]),
        )
        f = [
            TcaFill(int(t), float(q), float(p), float(e))
            for t, q, p, e in zip(fill_ts[mine], fill_qty[mine], fill_px[mine], fill_fee[mine], strict=True)
        ]
        r = analyse(order, f, market, TCABenchmark.VWAP)
        expected = {
            "average": r.average_price,
            "vwap": r.benchmarks.vwap,
            "twap": r.benchmarks.twap,
            "arrival": r.benchmarks.arrival,
            "quality_score": r.execution_quality_score,
            "market_impact_bps": r.market_impact_bps,
            "arrival_cost_bps": r.arrival_cost_bps,
            "is_total": None if r.shortfall is None else r.shortfall.total,
            "wagner_delay": None if r.shortfall is None else r.shortfall.delay_cost,
            "fees_bps": r.fees_bps,
        }
        for column, value in expected.items():
            got = float(getattr(m, column)[i])
            if value is None:
                assert math.isnan(got), (i, column, got)
            else:
                assert got == pytest.approx(value, rel=1e-9, abs=1e-7), (i, column)
        assert int(m.size_bucket[i]) == r.size_bucket
