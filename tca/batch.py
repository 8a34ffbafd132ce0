"""The TCA measures for many orders at once, vectorised with numpy (the offline path).

Same definitions as `tca.measures` (the tests hold every column to the scalar functions), laid
out for speed: fills are summed with `np.bincount`; market prints of every symbol sit in one
array sorted by (symbol, time) with per-symbol offsets, so a window is a pair of indices found
with `np.searchsorted` (one call per symbol, not per order). The windows' prints are then
expanded in small chunks — gathered once, summed with `np.add.reduceat` — for the volume, VWAP,
TWAP, the relative performance measure and the best print; the chunks run on a thread pool
(numpy releases the GIL). No Python loop runs per fill or per print.

Missing values: NaN for prices and amounts, `NO_TIME` for times. `Status` says why a window
benchmark is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from enum import IntEnum
from typing import Any, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from tca.model import DEFAULT_CONFIG, MarketData, TcaConfig

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

NO_TIME = np.iinfo(np.int64).min
DAY_NS = 86_400_000_000_000
BPS = 10_000.0
#: Prints per chunk when windows are expanded: small enough to stay in cache and reuse memory.
CHUNK = 1 << 16
#: Above this many symbols, `locate` bisects every symbol's rows at once (one numpy pass per
#: halving) instead of one `searchsorted` per symbol: the online reports lay out one "symbol"
#: per order (`Windows`), each a few dozen rows.
BISECT_ABOVE = 32


class Status(IntEnum):
    """Why a window benchmark (VWAP, TWAP, quality score, best print) is missing."""

    OK = 0
    NO_WINDOW = 1  # no fills and no requested window
    ZERO_LENGTH = 2  # every fill at one time and no requested window
    NO_TRADES = 3  # no market prints in [start, end)
    NO_VOLUME = 4  # prints, but of zero size

    @property
    def reason(self) -> str:
        return _REASONS[self]


_REASONS = {
    Status.OK: "",
    Status.NO_WINDOW: "no fills and no requested window",
    Status.ZERO_LENGTH: "zero-length window (every fill at one time; request a window)",
    Status.NO_TRADES: "no market trades in the window",
    Status.NO_VOLUME: "the prints in the window have no volume",
}


class Tape(msgspec.Struct, frozen=True):
    """Time series of many symbols in one set of arrays, sorted by (symbol code, time):
    symbol `c` is `[offsets[c], offsets[c + 1])`. For trades, `value` is the price and `size`
    the volume; for quotes, `value` is the mid and `size` is unused (empty)."""

    offsets: I64
    ts_ns: I64
    value: F64
    size: F64

    @property
    def symbols(self) -> int:
        return len(self.offsets) - 1


def tape_of(
    codes: npt.NDArray[np.integer[Any]], ts_ns: I64, value: F64, size: F64 | None, symbols: int
) -> Tape:
    """Build a `Tape` from rows in any order (`codes` in `[0, symbols)`): a stable sort by code
    (radix for small codes) when needed, then by time inside each symbol when needed."""
    codes = np.asarray(codes)  # any integer dtype: only compared and searched, never stored
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    n = len(codes)
    by_code_sorted = n < 2 or bool(np.all(codes[1:] >= codes[:-1]))
    if not by_code_sorted:
        small = codes.astype(np.uint16) if symbols <= 1 << 16 else codes
        order = np.argsort(small, kind="stable")
        codes, ts_ns, value = codes[order], ts_ns[order], value[order]
        size = None if size is None else size[order]
    same_symbol = codes[1:] == codes[:-1]
    if n > 1 and bool(np.any((ts_ns[1:] < ts_ns[:-1]) & same_symbol)):
        order = np.lexsort((ts_ns, codes))
        codes, ts_ns, value = codes[order], ts_ns[order], value[order]
        size = None if size is None else size[order]
    needle = np.arange(symbols + 1, dtype=np.int64)
    if np.issubdtype(codes.dtype, np.integer) and symbols < np.iinfo(codes.dtype).max:
        needle = needle.astype(codes.dtype)  # same dtype: searchsorted does not copy the codes
    offsets = np.searchsorted(codes, needle, side="left").astype(np.int64)
    empty = np.empty(0, dtype=np.float64)
    return Tape(offsets, ts_ns, np.asarray(value, dtype=np.float64), empty if size is None else size)


def locate(tape: Tape, codes: I64, times: I64, side: str) -> I64:
    """Global index, for each row of `times` (shape (n,) or (n, k)), of the `np.searchsorted`
    position in the tape of the order's symbol `codes[i]` (`side` "left" or "right").
    One searchsorted per symbol; with more than `BISECT_ABOVE` symbols, a bisection of every
    symbol's rows at once (same positions)."""
    times = np.asarray(times, dtype=np.int64)
    if len(codes) > BISECT_ABOVE and len(np.unique(codes)) > BISECT_ABOVE:
        return _bisect(tape, codes, times, side)
    out = np.empty(times.shape, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    present = np.unique(sorted_codes)
    bounds = np.searchsorted(sorted_codes, np.append(present, present[-1] + 1) if len(present) else present)
    for j, code in enumerate(present.tolist()):
        rows = order[bounds[j] : bounds[j + 1]]
        lo, hi = int(tape.offsets[code]), int(tape.offsets[code + 1])
        out[rows] = lo + np.searchsorted(tape.ts_ns[lo:hi], times[rows], side=side)  # type: ignore[call-overload]
    return out


def _bisect(tape: Tape, codes: I64, times: I64, side: str) -> I64:
    """`locate` by bisection inside each query's symbol, all queries in step: as many numpy
    passes as halvings of the longest symbol (`searchsorted`'s positions exactly)."""
    lo = tape.offsets[codes]
    hi = tape.offsets[codes + 1]
    if times.ndim == 2:
        lo, hi = (np.repeat(x[:, None], times.shape[1], axis=1) for x in (lo, hi))
    ts = tape.ts_ns
    if len(ts) == 0:
        return lo
    last = len(ts) - 1
    active = lo < hi
    while active.any():
        mid = (lo + hi) >> 1
        probe = ts[np.minimum(mid, last)]  # inactive queries may point one past the end
        after = probe <= times if side == "right" else probe < times
        right = active & after
        lo = np.where(right, mid + 1, lo)
        hi = np.where(active & ~after, mid, hi)
        active = lo < hi
    return lo


def prevailing(tape: Tape, codes: I64, times: I64) -> F64:
    """The tape's value of the last observation at or before each time (NaN when none); `times`
    NO_TIME gives NaN."""
    idx = locate(tape, codes, times, "right") - 1
    start = tape.offsets[codes]
    if times.ndim == 2:
        start = start[:, None]
    ok = (idx >= start) & (times != NO_TIME)
    out = np.full(times.shape, np.nan)
    out[ok] = tape.value[idx[ok]]
    return out


class OrderBatch(msgspec.Struct, frozen=True):
    """Orders, one element per order. Optional values: NaN / NO_TIME when absent."""

    symbol_code: I64
    sign: I64
    quantity: F64
    arrival_ns: I64
    arrival_price: F64
    decision_price: F64
    end_ns: I64
    end_price: F64
    window_start_ns: I64
    window_end_ns: I64
    close_price: F64
    #: Order-level explicit costs added to the fills' fees (None: none).
    commission: F64 | None = None

    def __len__(self) -> int:
        return len(self.sign)


class FillBatch(msgspec.Struct, frozen=True):
    """Fills sorted by (order index, time); `order` is the index into the `OrderBatch`."""

    order: I64
    ts_ns: I64
    quantity: F64
    price: F64
    fees: F64


class Windows(msgspec.Struct, frozen=True):
    """The market window of each of many orders, in the `Tape` layout with one "symbol" per
    order (code `i` = order `i`): what `compute` needs to measure each order on its own window,
    as `tca.engine.analyse` does. `quotes.value` is the mid `(bid + ask) / 2`; `close` the
    official close of each order (NaN: none)."""

    trades: Tape
    quotes: Tape | None
    close: F64

    def __len__(self) -> int:
        return len(self.close)

    @classmethod
    def of(cls, markets: Sequence[MarketData]) -> Windows:
        """From one `MarketData` per order."""
        t_len = np.array([len(m.trades) for m in markets], dtype=np.int64)
        q_len = np.array([0 if m.quotes is None else len(m.quotes) for m in markets], dtype=np.int64)

        def cat(columns: list[npt.NDArray[Any]], dtype: type[np.generic]) -> npt.NDArray[Any]:
            return np.concatenate(columns).astype(dtype, copy=False) if columns else np.empty(0, dtype)

        trades = Tape(
            _offsets(t_len),
            cat([m.trades.ts_ns for m in markets], np.int64),
            cat([m.trades.price for m in markets], np.float64),
            cat([m.trades.size for m in markets], np.float64),
        )
        quoted = [m.quotes for m in markets if m.quotes is not None]
        quotes = Tape(
            _offsets(q_len),
            cat([q.ts_ns for q in quoted], np.int64),
            cat([(q.bid + q.ask) / 2 for q in quoted], np.float64),
            np.empty(0, dtype=np.float64),
        )
        closes = [np.nan if m.close_price is None else m.close_price for m in markets]
        close = np.array(closes, dtype=np.float64)
        return cls(trades, quotes, close)


def _offsets(lengths: I64) -> I64:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


class Measures(msgspec.Struct, frozen=True):
    """Every per-order measure (see `TcaResult` for the definitions); NaN = unavailable."""

    fill_count: I64
    filled: F64
    notional: F64
    fees: F64
    average: F64
    first_fill_ns: I64
    last_fill_ns: I64
    window_start_ns: I64
    window_end_ns: I64
    window_status: npt.NDArray[np.int8]
    window_volume: F64
    arrival: F64
    vwap: F64
    twap: F64
    close: F64
    close_from_tape: BoolArray
    decision: F64
    end_ns: I64
    end_price: F64
    is_execution: F64
    is_opportunity: F64
    is_total: F64
    is_bps: F64
    wagner_delay: F64
    wagner_trading_delay: F64
    wagner_opportunity_delay: F64
    wagner_trading: F64
    wagner_opportunity: F64
    fees_bps: F64
    arrival_cost_bps: F64
    market_impact_bps: F64
    quality_score: F64
    best_print: F64
    size_bucket: I64

    def slippage_bps(self, sign: I64, benchmark_price: F64) -> F64:
        """`s·(P̄ - B)/B·10⁴` against any benchmark column."""
        with np.errstate(invalid="ignore", divide="ignore"):
            out: F64 = sign * (self.average - benchmark_price) / benchmark_price * BPS
        return out


def compute(
    orders: OrderBatch,
    fills: FillBatch,
    trades: Tape,
    quotes: Tape | None = None,
    *,
    close_from_tape: bool = True,
    config: TcaConfig = DEFAULT_CONFIG,
    workers: int = 2,
) -> Measures:
    """Every measure of every order. `close_from_tape`: where an order has no official close,
    use the last print of its UTC trade date (the day of its last fill, else its end, else its
    arrival) if the tape has one. `workers` threads share the passes over the prints (numpy
    releases the GIL in them); with `workers <= 1` everything runs on the calling thread (a
    small batch: no pool to start)."""
    if workers <= 1:
        return _compute(orders, fills, trades, quotes, close_from_tape, config, _Inline())
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return _compute(orders, fills, trades, quotes, close_from_tape, config, pool)


_T = TypeVar("_T")


class _Inline(Executor):
    """An executor that runs each task at once, on the calling thread."""

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        future: Future[_T] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _compute(
    orders: OrderBatch,
    fills: FillBatch,
    trades: Tape,
    quotes: Tape | None,
    close_from_tape: bool,
    config: TcaConfig,
    pool: Executor,
) -> Measures:
    n = len(orders)
    sign = orders.sign.astype(np.float64)
    codes = orders.symbol_code

    # --- fills ---------------------------------------------------------------------------
    fill_count = np.bincount(fills.order, minlength=n).astype(np.int64)
    filled = np.bincount(fills.order, weights=fills.quantity, minlength=n).astype(np.float64)
    notional = np.bincount(fills.order, weights=fills.quantity * fills.price, minlength=n).astype(np.float64)
    fees = np.bincount(fills.order, weights=fills.fees, minlength=n).astype(np.float64)
    if orders.commission is not None:
        fees += orders.commission
    has_fills = filled > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        average = np.where(has_fills, notional / filled, np.nan)
    first_idx = np.searchsorted(fills.order, np.arange(n), side="left")
    last_idx = np.searchsorted(fills.order, np.arange(n), side="right") - 1
    any_fill = fill_count > 0
    if len(fills.ts_ns):
        first_fill = np.where(any_fill, fills.ts_ns[np.minimum(first_idx, len(fills.ts_ns) - 1)], NO_TIME)
        last_fill = np.where(any_fill, fills.ts_ns[np.maximum(last_idx, 0)], NO_TIME)
    else:
        first_fill = last_fill = np.full(n, NO_TIME, dtype=np.int64)

    # --- window --------------------------------------------------------------------------
    requested = orders.window_start_ns != NO_TIME
    w_start = np.where(requested, orders.window_start_ns, first_fill)
    w_end = np.where(requested, orders.window_end_ns, last_fill)
    status = np.full(n, Status.OK, dtype=np.int8)
    status[w_start == NO_TIME] = Status.NO_WINDOW
    status[(status == Status.OK) & (w_end <= w_start)] = Status.ZERO_LENGTH
    bounds = locate(trades, codes, np.stack([w_start, w_end], axis=1), "left")
    i0, i1 = bounds[:, 0], bounds[:, 1]
    i1 = np.where(status == Status.OK, i1, i0)
    status[(status == Status.OK) & (i1 == i0)] = Status.NO_TRADES
    # One pass over every window's prints (in chunks, on the pool): volume, VWAP, TWAP, RPM, best.
    windows = _window_sums(trades, i0, i1, w_start, w_end, sign, average, config.tie_tolerance, pool)

    # --- reference prices (mid, else last print) ------------------------------------------
    end_ns = np.where(orders.end_ns != NO_TIME, orders.end_ns, last_fill)
    impact_ns = np.where(end_ns != NO_TIME, end_ns + config.impact_horizon_ns, NO_TIME)
    probe = np.stack([orders.arrival_ns, end_ns, impact_ns], axis=1)
    reference = prevailing(trades, codes, probe)
    if quotes is not None:
        mids = prevailing(quotes, codes, probe)
        reference = np.where(np.isnan(mids), reference, mids)
    arrival = np.where(np.isnan(orders.arrival_price), reference[:, 0], orders.arrival_price)
    end_price = np.where(np.isnan(orders.end_price), reference[:, 1], orders.end_price)
    later = reference[:, 2]

    close = orders.close_price.copy()
    from_tape = np.zeros(n, dtype=np.bool_)
    if close_from_tape:
        anchor = np.where(
            last_fill != NO_TIME, last_fill, np.where(end_ns != NO_TIME, end_ns, orders.arrival_ns)
        )
        day_start = np.floor_divide(anchor, DAY_NS) * DAY_NS
        last_of_day = locate(trades, codes, day_start + DAY_NS - 1, "right") - 1
        valid = (last_of_day >= trades.offsets[codes]) & np.isnan(close)
        valid[valid] = trades.ts_ns[last_of_day[valid]] >= day_start[valid]
        close[valid] = trades.value[last_of_day[valid]]
        from_tape = valid

    decision = np.where(np.isnan(orders.decision_price), arrival, orders.decision_price)

    # --- implementation shortfall (Perold) and Wagner's split ------------------------------
    unfilled = np.maximum(orders.quantity - filled, 0.0)
    has_unfilled = unfilled > 0
    with np.errstate(invalid="ignore"):
        is_execution = sign * (notional - filled * decision)
        is_opportunity = np.where(has_unfilled, sign * unfilled * (end_price - decision), 0.0)
        is_total = is_execution + is_opportunity + fees
        is_bps = is_total / (orders.quantity * decision) * BPS
        trading_delay = sign * filled * (arrival - decision)
        opportunity_delay = sign * unfilled * (arrival - decision)
        wagner_trading = sign * (notional - filled * arrival)
        wagner_opportunity = np.where(has_unfilled, sign * unfilled * (end_price - arrival), 0.0)
    wagner_opportunity[np.isnan(arrival)] = np.nan
    # Unfilled with no end price (or no decision price): no shortfall at all, as in `measures`.
    unknown = np.isnan(is_total)
    for column in (is_execution, is_opportunity, is_bps, trading_delay, opportunity_delay, wagner_trading):
        column[unknown] = np.nan
    wagner_opportunity[unknown] = np.nan

    # --- costs ---------------------------------------------------------------------------
    with np.errstate(invalid="ignore", divide="ignore"):
        fees_bps = np.where(has_fills, fees / notional * BPS, np.nan)
        arrival_cost = sign * (average - arrival) / arrival * BPS + fees_bps
        impact = np.where(has_fills, sign * (later - arrival) / arrival * BPS, np.nan)

    volume, pv, pt, credit, best = windows.result(n)
    status[(status == Status.OK) & ~(volume > 0)] = Status.NO_VOLUME
    ok = status == Status.OK
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.where(ok, pv / volume, np.nan)
        quality = np.where(ok & has_fills, 100.0 * credit / volume, np.nan)
    best = np.where(ok & has_fills, best, np.nan)
    twap = _twap(trades, codes, i0, i1, w_start, w_end, pt)

    size_ref = np.where(np.isnan(arrival), np.where(np.isnan(decision), average, decision), arrival)
    intended_notional = orders.quantity * size_ref
    bucket = np.searchsorted(np.asarray(config.size_bucket_edges), intended_notional, side="right")
    bucket = np.where(np.isnan(intended_notional), -1, bucket).astype(np.int64)

    return Measures(
        fill_count=fill_count,
        filled=filled,
        notional=notional,
        fees=fees,
        average=average,
        first_fill_ns=first_fill,
        last_fill_ns=last_fill,
        window_start_ns=w_start,
        window_end_ns=w_end,
        window_status=status,
        window_volume=np.where(ok, volume, np.nan),
        arrival=arrival,
        vwap=vwap,
        twap=twap,
        close=close,
        close_from_tape=from_tape,
        decision=decision,
        end_ns=end_ns,
        end_price=end_price,
        is_execution=is_execution,
        is_opportunity=is_opportunity,
        is_total=is_total,
        is_bps=is_bps,
        wagner_delay=trading_delay + opportunity_delay,
        wagner_trading_delay=trading_delay,
        wagner_opportunity_delay=opportunity_delay,
        wagner_trading=wagner_trading,
        wagner_opportunity=wagner_opportunity,
        fees_bps=fees_bps,
        arrival_cost_bps=arrival_cost,
        market_impact_bps=impact,
        quality_score=quality,
        best_print=best,
        size_bucket=bucket,
    )


class _Windows:
    """The per-window sums being computed on the pool, chunk by chunk."""

    def __init__(self, pending: list[tuple[I64, Future[tuple[F64, ...]]]]) -> None:
        self.pending = pending

    def result(self, n: int) -> tuple[F64, F64, F64, F64, F64]:
        """Volume, Σprice·volume, Σprice·time-held, RPM credit (volume traded worse, ties
        half), and the best print, per order (0 / NaN for orders without a window)."""
        columns = [np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.full(n, np.nan)]
        for rows, future in self.pending:
            for column, values in zip(columns, future.result(), strict=True):
                column[rows] = values
        return columns[0], columns[1], columns[2], columns[3], columns[4]


def _window_sums(
    trades: Tape,
    i0: I64,
    i1: I64,
    start: I64,
    end: I64,
    sign: F64,
    average: F64,
    tie_tolerance: float,
    pool: Executor,
) -> _Windows:
    """Start the sums over the prints of every non-empty window on `pool`, in chunks of at most
    `CHUNK` prints (small chunks keep the buffers in cache and out of fresh memory)."""
    rows = np.flatnonzero(i1 > i0)
    if len(rows) == 0:
        return _Windows([])
    lengths = (i1[rows] - i0[rows]).astype(np.int64)
    chunk_of = (np.cumsum(lengths) - 1) // CHUNK
    parts = np.split(rows, np.flatnonzero(np.diff(chunk_of)) + 1)
    return _Windows(
        [
            (
                r,
                pool.submit(
                    _window_chunk, trades, i0[r], i1[r] - i0[r], end[r], sign[r], average[r], tie_tolerance
                ),
            )
            for r in parts
        ]
    )


def _window_chunk(
    trades: Tape, first: I64, length: I64, end: I64, sign: F64, average: F64, tie_tolerance: float
) -> tuple[F64, ...]:
    """The sums of windows `[first, first + length)` (every length > 0) of the tape: volume,
    Σp·v, Σp·(time until the next print of the window, or the window's end), the RPM credit and
    the best print. Prices are multiplied by the side's sign, so "worse than ours" is "greater"
    for both sides; a NaN average (no fills) gives no credit."""
    starts = np.zeros(len(length), dtype=np.int64)
    np.cumsum(length[:-1], out=starts[1:])
    last = starts + length - 1
    idx = np.repeat(first - starts, length)
    idx += np.arange(int(last[-1]) + 1, dtype=np.int64)
    price = trades.value.take(idx)
    size = trades.size.take(idx)
    ts = trades.ts_ns.take(idx)
    volume = np.add.reduceat(size, starts)
    pv = np.add.reduceat(price * size, starts)
    held = np.empty(len(idx), dtype=np.float64)
    np.subtract(ts[1:], ts[:-1], out=held[:-1], casting="unsafe")
    held[last] = end - ts[last]
    pt = np.add.reduceat(price * held, starts)
    signed = price
    signed *= np.repeat(sign, length)
    gap = signed - np.repeat(average * sign, length)
    tolerance = np.repeat(tie_tolerance * average, length)
    with np.errstate(invalid="ignore"):
        credit = np.where(gap > tolerance, size, 0.0)
        ties = np.abs(gap) <= tolerance
    credit[ties] = 0.5 * size[ties]
    best = np.minimum.reduceat(signed, starts) * sign
    return volume, pv, pt, np.add.reduceat(credit, starts), best


def _twap(trades: Tape, codes: I64, i0: I64, i1: I64, start: I64, end: I64, held_sum: F64) -> F64:
    """Time-weighted average price of each window with prints (see `measures.interval_twap`):
    Σ price x time held inside the window, plus the prior print's time from the window's
    start to the first print inside, over the time covered."""
    ts = trades.ts_ns
    out = np.full(len(i0), np.nan)
    rows = np.flatnonzero(i1 > i0)
    if len(rows) == 0:
        return out
    j0 = i0[rows]
    a, b = start[rows], end[rows]
    has_prior = j0 > trades.offsets[codes[rows]]
    prior = np.where(has_prior, trades.value[np.maximum(j0 - 1, 0)] * (ts[j0] - a).astype(np.float64), 0.0)
    duration = np.where(has_prior, b - a, b - ts[j0]).astype(np.float64)
    out[rows] = (held_sum[rows] + prior) / duration
    return out
