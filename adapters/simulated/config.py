"""Configuration of the simulated market and the simulated brokers (the embedded default).

Frozen Structs decoded from the daemon's TOML config with snake_case keys; unknown keys are an
error so a typo never silently becomes a default. The one exception to snake_case is the
`commission` table: it is the wire contract's `CommissionStructure`, whose keys are camelCase
(`baseRate`, `minCommission`, `tieredRates` with `volumeThreshold` and `rate`).

Rates are fractions of notional (0.0005 = 5 bps), as everywhere in `api.commission`.
"""

from __future__ import annotations

from datetime import time
from decimal import Decimal

import msgspec

from api.capabilities import RateLimits
from api.contracts import CommissionStructure, TieredRate
from api.enums import AssetClass, BrokerFeature, TimeInForce


class InstrumentConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One simulated instrument. `volatility_bps` is the per-tick standard deviation of the mid's
    (geometric) random walk; `top_size` is the size shown at the best bid and at the best ask;
    traded sizes and venue liquidity are expressed with `top_size`'s number of decimals."""

    symbol: str
    asset_class: AssetClass
    price: Decimal
    spread_bps: Decimal
    volatility_bps: Decimal
    top_size: Decimal
    tick_size: Decimal
    trade_probability: float

    def __post_init__(self) -> None:
        if self.price <= 0:
            raise ValueError(f"{self.symbol}: price must be positive")
        if self.tick_size <= 0:
            raise ValueError(f"{self.symbol}: tick_size must be positive")
        if self.top_size <= 0:
            raise ValueError(f"{self.symbol}: top_size must be positive")
        if self.spread_bps < 0 or self.volatility_bps < 0:
            raise ValueError(f"{self.symbol}: spread_bps and volatility_bps must not be negative")
        if not 0.0 <= self.trade_probability <= 1.0:
            raise ValueError(f"{self.symbol}: trade_probability must be within [0, 1]")


def default_instruments() -> tuple[InstrumentConfig, ...]:
    """A handful of liquid instruments across equities, FX and crypto, priced near mid-2024."""

    def instrument(
        symbol: str,
        asset_class: AssetClass,
        price: str,
        spread_bps: str,
        volatility_bps: str,
        top_size: str,
        tick_size: str,
        trade_probability: float,
    ) -> InstrumentConfig:
        return InstrumentConfig(
            symbol=symbol,
            asset_class=asset_class,
            price=Decimal(price),
            spread_bps=Decimal(spread_bps),
            volatility_bps=Decimal(volatility_bps),
            top_size=Decimal(top_size),
            tick_size=Decimal(tick_size),
            trade_probability=trade_probability,
        )

    return (
        instrument("AAPL", AssetClass.EQUITY, "190.00", "1.0", "0.5", "500", "0.01", 0.30),
        instrument("MSFT", AssetClass.EQUITY, "420.00", "1.0", "0.5", "300", "0.01", 0.25),
        instrument("SPY", AssetClass.EQUITY, "560.00", "0.4", "0.3", "2000", "0.01", 0.50),
        instrument("EUR/USD", AssetClass.FOREX, "1.08000", "0.8", "0.2", "1000000", "0.00001", 0.40),
        instrument("GBP/USD", AssetClass.FOREX, "1.27000", "1.0", "0.25", "1000000", "0.00001", 0.30),
        instrument("BTC-USD", AssetClass.CRYPTO, "65000.00", "1.5", "1.0", "2.500", "0.01", 0.35),
        instrument("ETH-USD", AssetClass.CRYPTO, "3400.00", "2.0", "1.5", "40.000", "0.01", 0.30),
    )


class MarketConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`tick_interval_ms = None` means the market only moves when `tick()` (or a manual driver)
    is called: what tests use."""

    seed: int = 1
    tick_interval_ms: float | None = 100.0
    instruments: tuple[InstrumentConfig, ...] = msgspec.field(default_factory=default_instruments)
    #: The session's close, "HH:MM" in UTC: DAY orders still open then expire. None: never.
    session_close_utc: str | None = "21:00"

    def __post_init__(self) -> None:
        if self.session_close_utc is not None:
            try:
                hour, minute = (int(part) for part in self.session_close_utc.split(":"))
                time(hour, minute)
            except ValueError:
                raise ValueError(f"session_close_utc must be HH:MM, got {self.session_close_utc!r}") from None
        if self.tick_interval_ms is not None and self.tick_interval_ms <= 0:
            raise ValueError("tick_interval_ms must be positive (or absent for manual ticking)")
        symbols = [i.symbol for i in self.instruments]
        if len(set(symbols)) != len(symbols):
            raise ValueError("instrument symbols must be unique")


class LatencyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Request latency: lognormal with this median and shape `sigma` (`median_ms * e^(sigma*Z)`).
    A zero median means no latency at all: requests complete without even a checkpoint."""

    median_ms: float = 0.0
    sigma: float = 0.0
    connect_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.median_ms < 0 or self.sigma < 0 or self.connect_ms < 0:
            raise ValueError("latency figures must not be negative")


class SimulatedBrokerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One simulated broker. `liquidity_share` is the fraction of the market's top-of-book size
    this venue can take per quote update (below 1, large orders fill in parts); `reject_rate` is
    the probability that an otherwise valid order is refused with a venue-like reason."""

    broker_id: str
    name: str
    asset_classes: tuple[AssetClass, ...]
    features: tuple[BrokerFeature, ...]
    commission: CommissionStructure
    venue: str
    seed: int
    time_in_force: tuple[TimeInForce, ...] = tuple(TimeInForce)
    latency: LatencyConfig = msgspec.field(default_factory=LatencyConfig)
    reject_rate: float = 0.0
    liquidity_share: Decimal = Decimal(1)
    #: Routing's impact model: the share of the market's volume this broker's venues reach
    #: (default: its liquidity share) and the largest share of the volume it will take.
    venue_access: float | None = None
    max_participation: float = 1.0
    #: Requests per second / minute / hour the broker accepts (0: no limit), enforced by the
    #: daemon's limiter before anything is sent.
    rate_limits: RateLimits = msgspec.field(default_factory=RateLimits)

    def __post_init__(self) -> None:
        if not 0.0 <= self.reject_rate <= 1.0:
            raise ValueError(f"{self.broker_id}: reject_rate must be within [0, 1]")
        if not 0 < self.liquidity_share <= 1:
            raise ValueError(f"{self.broker_id}: liquidity_share must be within (0, 1]")
        if self.venue_access is None:
            msgspec.structs.force_setattr(self, "venue_access", float(self.liquidity_share))
        access = self.venue_access
        assert access is not None
        if not (0.0 < access <= 1.0 and 0.0 < self.max_participation <= 1.0):
            raise ValueError(f"{self.broker_id}: venue_access and max_participation must be within (0, 1]")


_ORDER_FEATURES = (
    BrokerFeature.MARKET_ORDERS,
    BrokerFeature.LIMIT_ORDERS,
    BrokerFeature.STOP_ORDERS,
    BrokerFeature.STOP_LIMIT_ORDERS,
)


def default_brokers() -> tuple[SimulatedBrokerConfig, ...]:
    """Three brokers that differ the way real ones do, so routing has real trade-offs:

    - sim-lowcost: 1 bp (min 0.35), slow (~25 ms), equities and crypto, no STOP_LIMIT, takes only
      40 % of the displayed size (large orders fill in parts).
    - sim-fast: 8 bps (min 1.00), ~2 ms, every asset class the market trades, every order type.
    - sim-fx: 3 bps falling to 2 and 1 bp past 1M and 10M traded, FX and equities, ~8 ms,
      rejects 2 % of orders, takes 75 % of the displayed size.
    """
    return (
        SimulatedBrokerConfig(
            broker_id="sim-lowcost",
            name="Simulated Low-Cost Broker",
            asset_classes=(AssetClass.EQUITY, AssetClass.CRYPTO),
            features=_ORDER_FEATURES[:3],
            time_in_force=(TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC),
            commission=CommissionStructure(base_rate=Decimal("0.0001"), min_commission=Decimal("0.35")),
            latency=LatencyConfig(median_ms=25.0, sigma=0.5, connect_ms=250.0),
            liquidity_share=Decimal("0.4"),
            venue="SIMX-LC",
            seed=101,
        ),
        SimulatedBrokerConfig(
            broker_id="sim-fast",
            name="Simulated Fast Broker",
            asset_classes=(AssetClass.EQUITY, AssetClass.FOREX, AssetClass.CRYPTO),
            features=_ORDER_FEATURES,
            commission=CommissionStructure(base_rate=Decimal("0.0008"), min_commission=Decimal("1.00")),
            latency=LatencyConfig(median_ms=2.0, sigma=0.25, connect_ms=50.0),
            venue="SIMX-FAST",
            seed=202,
        ),
        SimulatedBrokerConfig(
            broker_id="sim-fx",
            name="Simulated FX Broker",
            asset_classes=(AssetClass.FOREX, AssetClass.EQUITY),
            features=_ORDER_FEATURES,
            commission=CommissionStructure(
                base_rate=Decimal("0.0003"),
                min_commission=Decimal("2.00"),
                tiered_rates=(
                    TieredRate(volume_threshold=Decimal(1_000_000), rate=Decimal("0.0002")),
                    TieredRate(volume_threshold=Decimal(10_000_000), rate=Decimal("0.0001")),
                ),
            ),
            latency=LatencyConfig(median_ms=8.0, sigma=0.4, connect_ms=100.0),
            reject_rate=0.02,
            liquidity_share=Decimal("0.75"),
            venue="SIMX-FX",
            seed=303,
        ),
    )
