"""Pre-trade market impact, and the market statistics it is fed with.

Two models, both in basis points of the arrival price, both pure functions:

- **Square-root law** (Tóth et al. 2011; Bouchaud, Bonart, Donier & Gould 2018, ch. 12):
  `I = Y · sigma · sqrt(Q / ADV) · 10⁴`, sigma the *daily* volatility (a fraction), Q the order size
  and ADV the average daily volume in the same units. `Y` is of order 1 in every market
  studied; default 1.0. The law depends on size only, not on the trading rate.
- **I-Star** (Kissell & Malamut; Kissell, Glantz & Malamut 2004; Kissell, *The Science of
  Algorithmic Trading and Portfolio Management*, 2013):
  instantaneous impact `I* = a1 · (Q/ADV)^a2 · sigma_annual^a3` (bps), market impact of trading
  it at participation rate POV `MI = b1 · I* · POV^a4 + (1 - b1) · I*`. Published all-US-equity
  estimates, the defaults: a1 = 708, a2 = 0.55, a3 = 0.71, a4 = 0.50, b1 = 0.98 (b1 is the
  temporary share of the impact). sigma_annual = sigma_daily · sqrt(252).

Brokers differ by `venue_access` (the share of the market's volume their venues reach: the
accessible ADV is `venue_access · ADV`) and `max_participation` (a cap on POV). A lower cap
lowers I-Star's temporary impact and lengthens the trading schedule; the square-root law sees
only the size.

`MarketStatsEstimator` estimates sigma, ADV and the spread online from the quotes and trades the
service receives (floats; timestamps are passed in, never read).
"""

from __future__ import annotations

import math

import msgspec

TRADING_DAYS = 252.0
EQUITY_SESSION_S = 6.5 * 3600.0


class MarketStats(msgspec.Struct, frozen=True):
    """A snapshot of one instrument's market: daily volatility (fraction of price, e.g. 0.02),
    average daily volume (order units: shares, contracts, coins), quoted spread (bps of mid),
    and the length of its trading day (what one ADV is traded over)."""

    daily_volatility: float
    adv: float
    spread_bps: float
    session_seconds: float = EQUITY_SESSION_S

    def __post_init__(self) -> None:
        values = (self.daily_volatility, self.adv, self.spread_bps, self.session_seconds)
        if (
            not all(math.isfinite(v) and v >= 0.0 for v in values)
            or min(self.adv, self.session_seconds) <= 0.0
        ):
            raise ValueError(
                f"market statistics must be finite, non-negative, ADV and session positive: {self!r}"
            )


class SquareRootImpact(msgspec.Struct, frozen=True, tag="sqrt", forbid_unknown_fields=True):
    y: float = 1.0


class IStarImpact(msgspec.Struct, frozen=True, tag="istar", forbid_unknown_fields=True):
    a1: float = 708.0
    a2: float = 0.55
    a3: float = 0.71
    a4: float = 0.50
    b1: float = 0.98


ImpactModel = SquareRootImpact | IStarImpact


def square_root_impact_bps(y: float, daily_volatility: float, quantity: float, adv: float) -> float:
    """`Y · sigma · sqrt(Q/ADV)` in bps; 0 for an empty order, +inf without volume."""
    if quantity <= 0.0:
        return 0.0
    if adv <= 0.0:
        return math.inf
    return y * daily_volatility * math.sqrt(quantity / adv) * 10_000.0


def istar_instantaneous_bps(
    model: IStarImpact, daily_volatility: float, quantity: float, adv: float
) -> float:
    """I-Star's `I* = a1 · (Q/ADV)^a2 · sigma_annual^a3` (bps)."""
    if quantity <= 0.0:
        return 0.0
    if adv <= 0.0:
        return math.inf
    annual = daily_volatility * math.sqrt(TRADING_DAYS)
    return model.a1 * math.pow(quantity / adv, model.a2) * math.pow(annual, model.a3)


def istar_impact_bps(
    model: IStarImpact, daily_volatility: float, quantity: float, adv: float, participation: float
) -> float:
    """I-Star's market impact `b1 · I* · POV^a4 + (1 - b1) · I*` (bps) at `participation`."""
    instantaneous = istar_instantaneous_bps(model, daily_volatility, quantity, adv)
    pov = min(max(participation, 0.0), 1.0)
    return model.b1 * instantaneous * math.pow(pov, model.a4) + (1.0 - model.b1) * instantaneous


def impact_bps(
    model: ImpactModel,
    market: MarketStats,
    quantity: float,
    venue_access: float = 1.0,
    participation: float = 1.0,
) -> float:
    """Expected impact of `quantity` through a broker reaching `venue_access` of the volume,
    trading at `participation` of it."""
    adv = market.adv * venue_access
    if isinstance(model, SquareRootImpact):
        return square_root_impact_bps(model.y, market.daily_volatility, quantity, adv)
    return istar_impact_bps(model, market.daily_volatility, quantity, adv, participation)


def schedule_ms(
    market: MarketStats,
    quantity: float,
    venue_access: float,
    participation: float,
    immediate_fraction: float,
) -> float:
    """How long working `quantity` at `participation` of the accessible volume takes, beyond
    what executes at once (`immediate_fraction` of the accessible ADV, a stand-in for the
    displayed depth). 0 for an order that fits; +inf when nothing can be traded."""
    accessible = market.adv * venue_access
    rest = quantity - immediate_fraction * accessible
    if rest <= 0.0:
        return 0.0
    rate = participation * accessible
    if rate <= 0.0:
        return math.inf
    return rest / rate * (market.session_seconds * 1000.0)


class MarketStatsEstimator:
    """sigma, ADV and spread of one instrument, estimated online from its quotes and trades.

    - spread: decayed mean of `(ask - bid) / mid` in bps over quotes;
    - volatility: decayed sums of squared log returns of the mid and of the time they took,
      `sigma_daily = sqrt(Σ r² / Σ Δt · session)`;
    - ADV: decayed sums of traded size and of the time between trades,
      `ADV = Σ size / Σ Δt · session`.

    Each event multiplies the older sums by `1 - 1/window`. Times are seconds on any monotonic
    scale, passed in by the caller. Until `min_events` quotes (or trades) were seen, the
    corresponding figure comes from `prior` (None without one)."""

    def __init__(
        self,
        *,
        session_seconds: float = EQUITY_SESSION_S,
        window: float = 500.0,
        min_events: int = 20,
        prior: MarketStats | None = None,
    ) -> None:
        if window < 1.0 or session_seconds <= 0.0:
            raise ValueError("window must be at least 1 event and the session positive")
        self.session_seconds = session_seconds
        self.prior = prior
        self._keep = 1.0 - 1.0 / window
        self._min_events = min_events
        self._spread = 0.0
        self._spread_weight = 0.0
        self._quotes = 0
        self._mid: float | None = None
        self._mid_at = 0.0
        self._r2 = 0.0
        self._r2_time = 0.0
        self._returns = 0
        self._volume = 0.0
        self._volume_time = 0.0
        self._trade_at: float | None = None
        self._trades = 0
        self._snapshot: MarketStats | None = None
        self._dirty = True

    def __repr__(self) -> str:
        return f"<MarketStatsEstimator quotes={self._quotes} trades={self._trades} {self.snapshot()!r}>"

    def on_quote(self, bid: float, ask: float, at: float) -> None:
        if not (0.0 < bid <= ask) or not math.isfinite(ask):
            return  # a crossed, empty or broken quote says nothing about the spread
        keep = self._keep
        mid = (bid + ask) / 2.0
        self._spread = keep * self._spread + (ask - bid) / mid * 10_000.0
        self._spread_weight = keep * self._spread_weight + 1.0
        self._quotes += 1
        if self._mid is not None and at > self._mid_at:
            r = math.log(mid / self._mid)
            self._r2 = keep * self._r2 + r * r
            self._r2_time = keep * self._r2_time + (at - self._mid_at)
            self._returns += 1
        if self._mid is None or at > self._mid_at:
            self._mid, self._mid_at = mid, at
        self._dirty = True

    def on_trade(self, price: float, size: float, at: float) -> None:
        if not (price > 0.0 and size > 0.0 and math.isfinite(size)):
            return
        if self._trade_at is not None and at > self._trade_at:
            keep = self._keep
            self._volume = keep * self._volume + size
            self._volume_time = keep * self._volume_time + (at - self._trade_at)
            self._trades += 1
        if self._trade_at is None or at > self._trade_at:
            self._trade_at = at
        self._dirty = True

    def snapshot(self) -> MarketStats | None:
        """The current estimate (cached until the next event), or None when there is neither
        enough data nor a prior."""
        if not self._dirty:
            return self._snapshot
        prior = self.prior
        spread = self._spread / self._spread_weight if self._quotes >= self._min_events else None
        vol = (
            math.sqrt(self._r2 / self._r2_time * self.session_seconds)
            if self._returns >= self._min_events and self._r2_time > 0.0
            else None
        )
        adv = (
            self._volume / self._volume_time * self.session_seconds
            if self._trades >= self._min_events and self._volume_time > 0.0
            else None
        )
        if prior is not None:
            spread = prior.spread_bps if spread is None else spread
            vol = prior.daily_volatility if vol is None else vol
            adv = prior.adv if adv is None else adv
        self._dirty = False
        self._snapshot = (
            None
            if spread is None or vol is None or adv is None
            else MarketStats(
                daily_volatility=vol, adv=adv, spread_bps=spread, session_seconds=self.session_seconds
            )
        )
        return self._snapshot


class OrderImpact:
    """`impact_bps` and `schedule_ms` of one order on one market as functions of a broker's
    venue access and participation: what does not depend on the broker is computed once."""

    __slots__ = ("_adv", "_annual_a3", "_immediate", "_model", "_quantity", "_session_ms", "_sigma")

    def __init__(
        self, model: ImpactModel, market: MarketStats, quantity: float, immediate_fraction: float
    ) -> None:
        self._model = model
        self._quantity = quantity
        self._adv = market.adv
        self._sigma = market.daily_volatility
        self._session_ms = market.session_seconds * 1000.0
        self._immediate = immediate_fraction
        self._annual_a3 = (
            math.pow(market.daily_volatility * math.sqrt(TRADING_DAYS), model.a3)
            if isinstance(model, IStarImpact)
            else 0.0
        )

    def at(self, venue_access: float, participation: float) -> tuple[float, float]:
        """(impact bps, schedule ms) through a broker with this access, at this participation."""
        quantity = self._quantity
        accessible = self._adv * venue_access
        if quantity <= 0.0:
            impact = 0.0
        elif accessible <= 0.0:
            impact = math.inf
        elif isinstance(self._model, SquareRootImpact):
            impact = self._model.y * self._sigma * math.sqrt(quantity / accessible) * 10_000.0
        else:
            m = self._model
            instantaneous = m.a1 * math.pow(quantity / accessible, m.a2) * self._annual_a3
            pov = min(max(participation, 0.0), 1.0)
            impact = m.b1 * instantaneous * math.pow(pov, m.a4) + (1.0 - m.b1) * instantaneous
        rest = quantity - self._immediate * accessible
        if rest <= 0.0:
            return impact, 0.0
        rate = participation * accessible
        return impact, (rest / rate * self._session_ms if rate > 0.0 else math.inf)
