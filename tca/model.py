"""Inputs of the TCA engine: one order, its fills, the market around it, and the settings.

Everything is a frozen msgspec Struct; market data are numpy arrays so the market-data intake
can hand over its ring buffers and the store can hand over query results without copying row
by row. Conventions (docs/tca.md):

- times are integers, nanoseconds since the Unix epoch (UTC); `ns_of` converts a `datetime`;
- prices and quantities are floats: TCA results are the spec's doubles, and float64 carries the
  worked examples exactly (see `tca.measures`); `from_broker_order` converts the service's
  `Decimal`s at this seam;
- `side` is `api.enums.Side`; `Side.sign` (+1 buy, -1 sell) is the sign of every cost.

The arrays of a `Trades` / `Quotes` must be sorted by time and must not be mutated after the
Struct is built (the constructor checks the order, shapes and values once).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import numpy as np
import numpy.typing as npt

from api.enums import Side
from api.orders import BrokerOrder, OrderFill

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ns_of(moment: datetime) -> int:
    """Nanoseconds since the epoch of an aware `datetime` (a naive one is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


class TcaFill(msgspec.Struct, frozen=True):
    """One execution of the order: time, quantity (> 0), price (> 0), explicit fees (>= 0, in
    the price currency)."""

    ts_ns: int
    quantity: float
    price: float
    fees: float = 0.0


class TcaOrder(msgspec.Struct, frozen=True):
    """The order as TCA sees it.

    `quantity` is the intended quantity S (the paper portfolio). `arrival_ns` is when the
    service received the order; `arrival_price` the mid stored with it (else the engine looks it
    up in the market data). `decision_price` is the OMS's decision price (default: arrival).
    `end_ns` / `end_price` are when the order completed or was cancelled and the price then (the
    opportunity cost of the unfilled remainder is valued at it). `window_start_ns` /
    `window_end_ns` request an explicit benchmark window (default: first fill -> last fill).
    `asset_class`, `order_type` and `strategy` are free text so desk files can carry their own
    vocabularies; they key the peer statistics. `commission` is an order-level explicit cost
    (price currency, >= 0) added to the fills' fees: an order with no fills can carry one.
    `price_decimals` is the instrument's price precision (decimal places): the response rounds
    prices to it (None: 6 places).
    """

    order_id: str
    symbol: str
    side: Side
    quantity: float
    broker_id: str
    arrival_ns: int
    execution_id: str = ""
    asset_class: str = "EQUITY"
    order_type: str = ""
    strategy: str = ""
    arrival_price: float | None = None
    decision_price: float | None = None
    end_ns: int | None = None
    end_price: float | None = None
    window_start_ns: int | None = None
    window_end_ns: int | None = None
    commission: float = 0.0
    price_decimals: int | None = None

    def __post_init__(self) -> None:
        if not self.quantity > 0:
            raise ValueError(f"order {self.order_id}: quantity must be > 0, got {self.quantity}")
        if not (np.isfinite(self.commission) and self.commission >= 0):
            raise ValueError(f"order {self.order_id}: commission must be >= 0, got {self.commission}")
        for name in ("arrival_price", "decision_price", "end_price"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"order {self.order_id}: {name} must be a positive price, got {value}")
        if (self.window_start_ns is None) != (self.window_end_ns is None):
            raise ValueError(
                f"order {self.order_id}: give both window_start_ns and window_end_ns, or neither"
            )
        if (
            self.window_start_ns is not None
            and self.window_end_ns is not None
            and (self.window_end_ns < self.window_start_ns)
        ):
            raise ValueError(f"order {self.order_id}: window ends before it starts")


def _frozen(values: npt.ArrayLike, dtype: type[np.generic]) -> npt.NDArray[np.generic]:
    array = np.array(values, dtype=dtype)
    array.setflags(write=False)
    return array


class Trades(msgspec.Struct, frozen=True):
    """Market trades (prints) of one symbol, sorted by time: `ts_ns`, `price` > 0, `size` >= 0."""

    ts_ns: I64
    price: F64
    size: F64

    def __post_init__(self) -> None:
        _check_series("trades", self.ts_ns, (self.price, self.size))
        if len(self.price) and not (np.all(self.price > 0) and np.all(self.size >= 0)):
            raise ValueError("trades: prices must be > 0 and sizes >= 0")

    @classmethod
    def of(cls, ts_ns: npt.ArrayLike, price: npt.ArrayLike, size: npt.ArrayLike) -> Trades:
        """Build from any array-likes (copied into read-only int64 / float64 arrays)."""
        return cls(_frozen(ts_ns, np.int64), _frozen(price, np.float64), _frozen(size, np.float64))  # type: ignore[arg-type]

    @classmethod
    def empty(cls) -> Trades:
        return cls.of([], [], [])

    def __len__(self) -> int:
        return len(self.ts_ns)


class Quotes(msgspec.Struct, frozen=True):
    """Top-of-book quotes of one symbol, sorted by time: `ts_ns`, `bid`, `ask` (0 < bid <= ask)."""

    ts_ns: I64
    bid: F64
    ask: F64

    def __post_init__(self) -> None:
        _check_series("quotes", self.ts_ns, (self.bid, self.ask))
        if len(self.bid) and not (np.all(self.bid > 0) and np.all(self.ask >= self.bid)):
            raise ValueError("quotes: need 0 < bid <= ask")

    @classmethod
    def of(cls, ts_ns: npt.ArrayLike, bid: npt.ArrayLike, ask: npt.ArrayLike) -> Quotes:
        return cls(_frozen(ts_ns, np.int64), _frozen(bid, np.float64), _frozen(ask, np.float64))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.ts_ns)


def _check_series(what: str, ts_ns: I64, columns: Sequence[F64]) -> None:
    if ts_ns.ndim != 1 or any(c.shape != ts_ns.shape for c in columns):
        raise ValueError(f"{what}: every column must be one-dimensional and of the same length")
    if len(ts_ns) > 1 and bool(np.any(np.diff(ts_ns) < 0)):
        raise ValueError(f"{what}: times must be sorted")
    if any(not bool(np.all(np.isfinite(c))) for c in columns):
        raise ValueError(f"{what}: values must be finite")


class MarketData(msgspec.Struct, frozen=True):
    """What the market did around one order, for one symbol.

    `trades` should cover the benchmark window (and the impact horizon); `quotes`, when given,
    supply mids (arrival, impact); without them the last trade price stands in for the mid.
    `close_price` is the official close of the trade date (the close message or the configured
    session end's last price): the CLOSE_PRICE benchmark is unavailable without it.
    """

    trades: Trades
    quotes: Quotes | None = None
    close_price: float | None = None


class TcaConfig(msgspec.Struct, frozen=True):
    """Settings of the measures that are choices rather than definitions.

    - `impact_horizon_ns`: market impact compares the mid at arrival with the mid this long
      after the order's end (0: at the end itself).
    - `min_samples`: a broker (or any peer group) with fewer orders than this is not ranked and
      backs no recommendation.
    - `confidence`: a recommendation needs the peer difference to exceed the two-sided
      `confidence` critical value, Bonferroni-corrected for the number of alternatives compared
      (picking the best of k groups must not manufacture evidence): with one alternative and
      0.95, 1.96 standard errors.
    - `size_bucket_edges`: edges of the size buckets (ascending), in notional: the intended
      quantity at the arrival price (else the decision price, else the average price).
    - `tie_tolerance`: relative tolerance under which a print counts as "at our price" in the
      relative performance measure (float averages are rarely bit-equal to a print).
    """

    impact_horizon_ns: int = 0
    min_samples: int = 30
    confidence: float = 0.95
    size_bucket_edges: tuple[float, ...] = (1e4, 1e5, 1e6, 1e7)
    tie_tolerance: float = 1e-9

    def __post_init__(self) -> None:
        if self.impact_horizon_ns < 0:
            raise ValueError("impact_horizon_ns must be >= 0")
        if self.min_samples < 2:
            raise ValueError("min_samples must be >= 2 (a standard error needs two samples)")
        if not 0 < self.confidence < 1:
            raise ValueError("confidence must be in (0, 1)")
        if list(self.size_bucket_edges) != sorted(self.size_bucket_edges):
            raise ValueError("size_bucket_edges must be ascending")


DEFAULT_CONFIG = TcaConfig()


def from_broker_order(
    order: BrokerOrder,
    *,
    asset_class: str,
    arrival_price: float | None = None,
    decision_price: float | None = None,
    end_price: float | None = None,
    quantity: float | None = None,
) -> tuple[TcaOrder, tuple[TcaFill, ...]]:
    """The TCA view of one broker order (one execution) and its fills.

    `arrival_ns` is the order's `created_at`; `end_ns` is `updated_at` once the order is final
    (filled, cancelled, expired). `quantity` overrides the intended quantity (the OMS order's,
    when several attempts share it).
    """
    end_ns = ns_of(order.updated_at) if order.status.is_final else None
    tca_order = TcaOrder(
        order_id=order.order_id,
        execution_id=order.id,
        symbol=order.symbol,
        side=order.side,
        quantity=float(order.quantity if quantity is None else quantity),
        broker_id=order.broker_id,
        arrival_ns=ns_of(order.created_at),
        asset_class=asset_class,
        order_type=str(order.order_type),
        strategy=str(order.execution_strategy),
        arrival_price=arrival_price,
        decision_price=decision_price,
        end_ns=end_ns,
        end_price=end_price,
        price_decimals=price_decimals_of([f.price for f in order.fills] + [order.price, order.stop_price]),
    )
    return tca_order, tuple(fill_of(f) for f in order.fills)


def price_decimals_of(prices: Sequence[Decimal | None]) -> int | None:
    """The price precision the instrument's prices show (the most decimal places among them,
    at least 2), or None when no price is known."""
    places = [max(-int(p.normalize().as_tuple().exponent), 0) for p in prices if p is not None]
    return max(max(places), 2) if places else None


def fill_of(fill: OrderFill) -> TcaFill:
    return TcaFill(
        ts_ns=ns_of(fill.timestamp),
        quantity=float(fill.quantity),
        price=float(fill.price),
        fees=float(fill.fees),
    )
