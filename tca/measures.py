"""The TCA measures, one pure function each, over plain Python sequences.

These are the definitions (docs/tca.md has the same formulas with worked examples); the engine
calls them for one order, and `tca.batch` computes the same numbers for many orders at once with
numpy (the tests hold the two to each other). Sign convention: `sign` is +1 for a buy and -1 for
a sell (`Side.sign`); every cost is positive when it is a cost.

Market series (`times`, `prices`, `sizes`) are sorted by time (ns since the epoch). A window
`[start, end)` includes prints at `start` and excludes prints at `end`. A function that cannot
give a number returns `None`; it never invents one.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from tca.result import Shortfall

BPS = 10_000.0


def average_price(quantities: Sequence[float], prices: Sequence[float]) -> float | None:
    """Quantity-weighted average price P̄ = Σq·p / Σq of the fills; None without fills."""
    filled = sum(quantities)
    if filled <= 0:
        return None
    return sum(q * p for q, p in zip(quantities, prices, strict=True)) / filled


def slippage_bps(sign: int, average: float, benchmark: float) -> float:
    """`s·(P̄ - B)/B·10⁴`: positive when a buy paid more (a sell got less) than the benchmark."""
    return sign * (average - benchmark) / benchmark * BPS


def fees_bps(fees: float, executed_notional: float) -> float | None:
    """Explicit fees in bps of the executed notional; None when nothing was executed."""
    if executed_notional <= 0:
        return None
    return fees / executed_notional * BPS


def last_at_or_before(times: Sequence[int], values: Sequence[float], t: int) -> float | None:
    """The value of the last observation at or before `t` (the one prevailing at `t`)."""
    i = bisect_right(times, t)
    return values[i - 1] if i else None


def reference_price(
    t: int,
    trade_times: Sequence[int],
    trade_prices: Sequence[float],
    quote_times: Sequence[int] = (),
    mids: Sequence[float] = (),
) -> float | None:
    """The market price at `t`: the mid of the last quote at or before `t`, else the last trade
    price at or before `t` (when there are no quotes, or none yet)."""
    mid = last_at_or_before(quote_times, mids, t)
    return mid if mid is not None else last_at_or_before(trade_times, trade_prices, t)


def interval_vwap(
    times: Sequence[int], prices: Sequence[float], sizes: Sequence[float], start: int, end: int
) -> float | None:
    """Volume-weighted average price of the prints in `[start, end)`: Σp·v / Σv.

    None when the window holds no prints (or only zero-size ones): the benchmark is unavailable.
    Prints 10x100, 11x200, 12x300 give 6,800/600 = 11.3333….
    """
    lo, hi = bisect_left(times, start), bisect_left(times, end)
    volume = sum(sizes[lo:hi])
    if volume <= 0:
        return None
    return sum(p * v for p, v in zip(prices[lo:hi], sizes[lo:hi], strict=True)) / volume


def interval_twap(times: Sequence[int], prices: Sequence[float], start: int, end: int) -> float | None:
    """Time-weighted average price over `[start, end)`: each price weighted by how long it
    prevailed inside the window.

    A print at `t_i` prevails from `t_i` until the next print (or the window's end). The print
    before the window, if any, prevails from `start` to the first print inside it. Prints at the
    same time: the last one prevails. None when the window is empty or holds no print.
    """
    if end <= start:
        return None
    lo, hi = bisect_left(times, start), bisect_left(times, end)
    if lo == hi:
        return None
    weighted = 0.0
    if lo > 0:
        weighted += prices[lo - 1] * (times[lo] - start)
    for i in range(lo, hi):
        until = times[i + 1] if i + 1 < hi else end
        weighted += prices[i] * (until - times[i])
    return weighted / (end - (start if lo > 0 else times[lo]))


def relative_performance(
    times: Sequence[int],
    prices: Sequence[float],
    sizes: Sequence[float],
    start: int,
    end: int,
    sign: int,
    average: float,
    tie_tolerance: float = 1e-9,
) -> float | None:
    """Kissell's relative performance measure (volume form), in [0, 1].

    The share of the market volume in `[start, end)` that traded at a worse price than our
    average — higher for a buy, lower for a sell — with prints at our price (within
    `tie_tolerance`, relative) counting half: `(V_worse + ½·V_equal) / V`. 0.5 is average,
    1 means every other print was worse than ours. None without volume in the window.
    """
    lo, hi = bisect_left(times, start), bisect_left(times, end)
    total = worse = equal = 0.0
    tolerance = tie_tolerance * average
    for p, v in zip(prices[lo:hi], sizes[lo:hi], strict=True):
        total += v
        gap = sign * (p - average)
        if abs(gap) <= tolerance:
            equal += v
        elif gap > 0:
            worse += v
    if total <= 0:
        return None
    return (worse + 0.5 * equal) / total


def best_price(
    times: Sequence[int], prices: Sequence[float], start: int, end: int, sign: int
) -> float | None:
    """The best print in `[start, end)` for our side: the lowest for a buy, the highest for a sell."""
    lo, hi = bisect_left(times, start), bisect_left(times, end)
    if lo == hi:
        return None
    window = prices[lo:hi]
    return min(window) if sign > 0 else max(window)


def market_impact_bps(sign: int, arrival_mid: float, later_mid: float) -> float:
    """The side-signed mid move from arrival to the order's end (plus the horizon), in bps of the
    arrival mid: positive when the price moved against us (up after a buy, down after a sell)."""
    return sign * (later_mid - arrival_mid) / arrival_mid * BPS


def implementation_shortfall(
    sign: int,
    intended: float,
    quantities: Sequence[float],
    prices: Sequence[float],
    fees: float,
    decision_price: float,
    end_price: float | None,
    arrival_price: float | None = None,
) -> Shortfall | None:
    """Perold's implementation shortfall with Wagner's split (see `Shortfall` for the formulas).

    `intended` is S, the paper quantity; the unfilled remainder `max(S - Σq, 0)` is valued at
    `end_price` (the price at the end or cancellation). None when something is unfilled and the
    end price is unknown. Blotter's example — ten buys of 500 alternating at 10 and 11, fee 10
    each, S = 5,000, P_d = 10, P_end = 11 — gives 2,600; with eight fills 3,080, which Wagner's
    split with P_0 = 10.25 reproduces (1,250 + 1,000 + 750 + 80).
    """
    filled = float(sum(quantities))
    notional = float(sum(q * p for q, p in zip(quantities, prices, strict=True)))
    intended, fees, decision_price = float(intended), float(fees), float(decision_price)
    end_price = None if end_price is None else float(end_price)
    arrival_price = None if arrival_price is None else float(arrival_price)
    unfilled = max(intended - filled, 0.0)
    if unfilled > 0 and end_price is None:
        return None
    execution_cost = sign * (notional - filled * decision_price)
    opportunity_cost = (
        sign * unfilled * (end_price - decision_price) if end_price is not None and unfilled else 0.0
    )
    total = execution_cost + opportunity_cost + fees
    paper_value = intended * decision_price
    wagner: dict[str, float] = {}
    if arrival_price is not None:
        trading_delay = sign * filled * (arrival_price - decision_price)
        opportunity_delay = sign * unfilled * (arrival_price - decision_price)
        wagner = {
            "trading_delay": trading_delay,
            "opportunity_delay": opportunity_delay,
            "delay_cost": trading_delay + opportunity_delay,
            "trading_cost": sign * (notional - filled * arrival_price),
            "wagner_opportunity_cost": (
                sign * unfilled * (end_price - arrival_price) if end_price is not None and unfilled else 0.0
            ),
        }
    return Shortfall(
        paper_value=paper_value,
        decision_price=decision_price,
        filled_quantity=filled,
        unfilled_quantity=unfilled,
        execution_cost=execution_cost,
        opportunity_cost=opportunity_cost,
        fees=fees,
        total=total,
        bps=total / paper_value * BPS,
        end_price=end_price,
        arrival_price=arrival_price,
        **wagner,
    )
