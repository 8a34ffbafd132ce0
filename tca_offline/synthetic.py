"""A generated trading day in the offline tool's file layout, for demos, tests and the benchmark.

Vectorised (a day of 10 million prints takes a few seconds, most of it writing CSV). Each symbol's
prints follow a random walk on a 0.01 tick; orders arrive through the session and are worked for
an exponential time; their fills sit at the prevailing print plus a broker-specific cost (so the
brokers differ measurably) plus noise. A share of orders is left partly filled and a few get no
fill at all, so every defined edge case appears.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import polars as pl

from tca.batch import prevailing, tape_of

SESSION_START_NS = 1_764_581_400_000_000_000  # 2025-12-01 09:30:00 UTC
SESSION_NS = 23_400_000_000_000  # 6.5 hours

#: Broker -> (extra cost in bps of price, fee in bps of notional): the "true" broker quality.
BROKERS = {"alpha": (1.0, 0.5), "bravo": (3.0, 0.3), "charlie": (6.0, 0.2), "delta": (2.0, 1.0)}
STRATEGIES = ("VWAP", "TWAP", "POV", "LOWEST_COST")
ORDER_TYPES = ("MARKET", "LIMIT")


class DayFiles(msgspec.Struct, frozen=True):
    orders: str
    fills: str
    trades: str
    quotes: str | None
    closes: str | None


def generate_day(
    out_dir: Path | str,
    *,
    orders: int = 1_000,
    fills: int = 20_000,
    trades: int = 200_000,
    symbols: int = 50,
    quotes: int = 0,
    closes: bool = False,
    iso_times: bool = False,
    mean_duration_s: float = 1_200.0,
    seed: int = 7,
) -> DayFiles:
    """Write `orders.csv`, `fills.csv`, `trades.csv` (+ `quotes.csv`, `closes.csv`) to `out_dir`.

    Times are integer ns since the epoch, or ISO-8601 text with `iso_times`. About 2 % of the
    orders get no fill and 15 % are partly filled; every order has at least one print of its
    symbol before it arrives.
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = np.array([f"S{i:04d}" for i in range(symbols)])

    # --- market prints: a random walk per symbol ------------------------------------------
    activity = rng.pareto(1.5, symbols) + 1.0
    per_symbol = rng.multinomial(trades - 2 * symbols, activity / activity.sum()) + 2
    code = np.repeat(np.arange(symbols), per_symbol)
    offsets = np.concatenate(([0], np.cumsum(per_symbol)))
    ts = SESSION_START_NS + rng.integers(0, SESSION_NS, trades, dtype=np.int64)
    ts[offsets[:-1]] = SESSION_START_NS  # an opening print for every symbol
    ts = ts[np.lexsort((ts, code))]
    base = np.exp(rng.uniform(np.log(10.0), np.log(500.0), symbols))
    sigma = rng.uniform(0.0002, 0.0008, symbols)[code]  # per-print relative volatility
    steps = rng.standard_normal(trades) * sigma
    walk = np.cumsum(steps)
    walk -= np.repeat(walk[offsets[:-1]], per_symbol)
    price = np.maximum(np.round(base[code] * np.exp(walk), 2), 0.01)
    size = np.maximum(np.round(rng.lognormal(4.0, 1.0, trades)), 1.0)
    tape = tape_of(code.astype(np.int64), ts, price, size, symbols)

    # --- orders ---------------------------------------------------------------------------
    order_symbol = rng.integers(0, symbols, orders)
    side = rng.choice(np.array(["BUY", "SELL"]), orders)
    sign = np.where(side == "BUY", 1.0, -1.0)
    broker_names = np.array(list(BROKERS))
    broker_idx = rng.integers(0, len(broker_names), orders)
    broker_cost = np.array([c for c, _ in BROKERS.values()])[broker_idx]
    broker_fee = np.array([f for _, f in BROKERS.values()])[broker_idx]
    arrival = SESSION_START_NS + 1 + rng.integers(0, SESSION_NS * 3 // 4, orders, dtype=np.int64)
    duration = np.minimum(
        rng.exponential(mean_duration_s, orders) * 1e9, SESSION_START_NS + SESSION_NS - arrival - 1
    ).astype(np.int64)
    duration = np.maximum(duration, 1_000_000_000)
    arrival_ref = prevailing(tape, order_symbol.astype(np.int64), arrival)
    quantity = np.round(rng.lognormal(7.5, 1.2, orders) / 10) * 10 + 10

    # --- fills ------------------------------------------------------------------------------
    no_fill = rng.random(orders) < 0.02
    weights = np.where(no_fill, 0.0, rng.uniform(0.2, 1.0, orders))
    per_order = rng.multinomial(fills, weights / weights.sum())
    owner = np.repeat(np.arange(orders), per_order)
    fill_ts = arrival[owner] + (rng.random(len(owner)) * duration[owner]).astype(np.int64)
    order_perm = np.lexsort((fill_ts, owner))
    owner, fill_ts = owner[order_perm], fill_ts[order_perm]
    market = prevailing(tape, order_symbol[owner].astype(np.int64), fill_ts)
    noise = rng.normal(0.0, 2.0, len(owner))
    fill_price = np.round(market * (1 + sign[owner] * (broker_cost[owner] + noise) / 1e4), 4)
    partial = rng.random(orders) < 0.15
    share = rng.uniform(0.5, 1.5, len(owner))
    share_sum = np.bincount(owner, weights=share, minlength=orders)
    fill_qty = np.maximum(np.round(quantity[owner] * share / share_sum[owner]), 1.0)
    filled = np.bincount(owner, weights=fill_qty, minlength=orders)
    fill_rate = np.where(partial, rng.uniform(0.3, 0.95, orders), 1.0)
    quantity = np.where(no_fill, quantity, np.ceil(filled / fill_rate))
    fill_fees = np.round(fill_qty * fill_price * broker_fee[owner] / 1e4, 4)
    end = arrival + duration

    def timecol(values: np.ndarray) -> pl.Series:  # type: ignore[type-arg]
        series = pl.Series(values.astype(np.int64))
        return series.cast(pl.Datetime("ns", "UTC")) if iso_times else series

    order_frame = pl.DataFrame(
        {
            "order_id": np.char.add("O", np.arange(orders).astype(np.str_)),
            "symbol": names[order_symbol],
            "side": side,
            "quantity": quantity,
            "broker_id": broker_names[broker_idx],
            "arrival_time": timecol(arrival),
            "asset_class": "EQUITY",
            "order_type": rng.choice(np.array(ORDER_TYPES), orders),
            "strategy": rng.choice(np.array(STRATEGIES), orders),
            "arrival_price": arrival_ref,
            "end_time": timecol(end),
        }
    )
    fill_frame = pl.DataFrame(
        {
            "order_id": np.char.add("O", owner.astype(np.str_)),
            "time": timecol(fill_ts),
            "quantity": fill_qty,
            "price": fill_price,
            "fees": fill_fees,
        }
    )
    trade_frame = pl.DataFrame(
        {"symbol": names[code], "time": timecol(ts), "price": price, "size": size.astype(np.int64)}
    )
    paths = DayFiles(
        orders=str(out / "orders.csv"),
        fills=str(out / "fills.csv"),
        trades=str(out / "trades.csv"),
        quotes=str(out / "quotes.csv") if quotes else None,
        closes=str(out / "closes.csv") if closes else None,
    )
    order_frame.write_csv(paths.orders)
    fill_frame.write_csv(paths.fills)
    trade_frame.write_csv(paths.trades)
    if quotes and paths.quotes is not None:
        q_code = np.sort(rng.integers(0, symbols, quotes))
        q_ts = SESSION_START_NS + rng.integers(0, SESSION_NS, quotes, dtype=np.int64)
        q_ts = q_ts[np.lexsort((q_ts, q_code))]
        mid = prevailing(tape, q_code.astype(np.int64), q_ts)
        mid = np.where(np.isnan(mid), base[q_code], mid)
        half = np.maximum(np.round(mid * 2e-4, 2), 0.01)
        pl.DataFrame(
            {"symbol": names[q_code], "time": timecol(q_ts), "bid": mid - half, "ask": mid + half}
        ).write_csv(paths.quotes)
    if closes and paths.closes is not None:
        last = price[offsets[1:] - 1]
        pl.DataFrame({"symbol": names, "date": "2025-12-01", "close": last}).write_csv(paths.closes)
    return paths
