"""Pure matching of one venue's orders against the market's top of book (no Trio, no I/O).

The venue takes liquidity, it does not make it: its orders execute against the market's best
bid and ask, never against each other, and a resting limit order fills only when a quote makes
it marketable (a trade print does not fill it; prints only trigger stops).

Semantics, per quote update of a symbol:
- Liquidity: each order may take `size * liquidity_share` (rounded down to the size's decimals)
  at the ask (buys) or the bid (sells) per quote update; the rest waits for later quotes. The
  market is exogenous (the venue's fills do not move it), so the allowance is per order, not a
  pool shared by the venue's orders: a burst of small orders all fill, a large one fills in parts.
- MARKET buys at the ask, sells at the bid. LIMIT buys when ask <= limit (at the ask: price
  improvement goes to the client), sells when bid >= limit.
- STOP / STOP_LIMIT trigger when a buy's stop is reached by the ask (or by a trade print at or
  above it), a sell's by the bid (or a print at or below it), then behave as MARKET / LIMIT.
- IOC takes what is available on arrival and cancels the rest; FOK fills in full on arrival or
  is canceled with no fill; DAY rests until `end_of_day`; GTC rests until canceled.
- Each fill has an id unique within the engine (`<prefix>F<n>`) and a fee from
  `api.commission.commission` over the venue's running traded notional (tiers apply; the volume
  never resets: the simulated "period" is the engine's life). The minimum commission is per
  order, as brokers charge it: the first fill pays at least the minimum, later fills only what
  the rates add beyond it, so an order's fees total max(minimum, rate x notional).

Resting orders are kept in price levels (stops by stop price), best level first, each level in
arrival order, so a quote touches only the orders it makes marketable or triggers, however many
rest away from the market; and a resting order costs its record and one list slot, however many
share its price (~240 bytes, plus a broker order id the daemon holds anyway).

Every method returns the broker events it produced, in order, for the driver to deliver.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable
from datetime import datetime
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Protocol

import msgspec

from adapters.base import BrokerOrderSnapshot, CancelRejected, SubmitRequest
from api.commission import commission
from api.contracts import CommissionStructure
from api.enums import BrokerOrderStatus, OrderType, Side, TimeInForce
from api.events import AnyBrokerEvent, OrderAccepted, OrderCanceled, OrderExpired, OrderFilled
from api.lifecycle import PRICE_QUANTUM

_INFINITY = Decimal("Infinity")
_ZERO = Decimal(0)
#: How many fills a venue remembers for `fills_since` (a real broker keeps days of them).
FILL_MEMORY = 100_000
#: How many finished orders (filled, canceled, expired) a venue remembers, the oldest forgotten
#: first: what `order`, `snapshot`, `cancel` and the duplicate check still know of. Open orders
#: are always kept. Without a bound a venue under a steady flow grew by ~1 kB per order for as
#: long as the daemon ran.
FINISHED_MEMORY = 100_000
_OPEN = frozenset({BrokerOrderStatus.ACCEPTED, BrokerOrderStatus.PARTIALLY_FILLED})
_LIMIT_TYPES = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT})
_STOP_TYPES = frozenset({OrderType.STOP, OrderType.STOP_LIMIT})


class TopOfBook(Protocol):
    """What matching needs of a quote (`market.Quote` and `market.QuoteEvent` both fit)."""

    @property
    def symbol(self) -> str: ...
    @property
    def bid(self) -> Decimal: ...
    @property
    def ask(self) -> Decimal: ...
    @property
    def bid_size(self) -> Decimal: ...
    @property
    def ask_size(self) -> Decimal: ...
    @property
    def at(self) -> datetime: ...


def order_problem(request: SubmitRequest) -> str | None:
    """Why a venue would refuse this order's shape, or None if it is well formed."""
    if request.quantity <= 0:
        return "quantity must be positive"
    if request.order_type.needs_price and request.price is None:
        return f"{request.order_type} order needs a limit price"
    if request.order_type.needs_stop_price and request.stop_price is None:
        return f"{request.order_type} order needs a stop price"
    if request.price is not None and request.price <= 0:
        return "limit price must be positive"
    if request.stop_price is not None and request.stop_price <= 0:
        return "stop price must be positive"
    return None


class WorkingOrder:
    """The venue's mutable record of one order. `bound` is the worst price it accepts (a market
    buy: +inf, a market sell: -inf). Its place in the book follows from `bound` (or `stop`, until
    triggered) and `seq`, so it stores nothing more for it: a resting order costs this record,
    its broker order id and one slot in its price level (see `_Side`)."""

    __slots__ = (
        "bound",
        "broker_order_id",
        "client_order_id",
        "fees",
        "filled",
        "is_buy",
        "notional",
        "quantity",
        "rate_fees",
        "seq",
        "status",
        "stop",
        "symbol",
        "time_in_force",
        "triggered",
    )

    def __init__(self, request: SubmitRequest, broker_order_id: str, seq: int) -> None:
        self.client_order_id = request.client_order_id
        self.broker_order_id = broker_order_id
        self.rate_fees = _ZERO  # commission by rates alone, before the per-order minimum
        self.fees = _ZERO  # charged so far
        self.seq = seq
        self.symbol = request.symbol
        self.is_buy = request.side is Side.BUY
        self.time_in_force = request.time_in_force
        self.quantity = request.quantity
        limit = request.price if request.order_type in _LIMIT_TYPES else None
        if limit is None:
            self.bound = _INFINITY if self.is_buy else -_INFINITY
        else:
            self.bound = limit
        self.stop = request.stop_price if request.order_type in _STOP_TYPES else None
        self.triggered = self.stop is None
        self.filled = _ZERO
        self.notional = _ZERO
        self.status = BrokerOrderStatus.ACCEPTED

    def __repr__(self) -> str:
        return (
            f"<WorkingOrder {self.client_order_id} {self.side} {self.symbol} bound={self.bound}"
            f" stop={self.stop} {self.filled}/{self.quantity} {self.time_in_force} {self.status}>"
        )

    @property
    def side(self) -> Side:
        return Side.BUY if self.is_buy else Side.SELL

    @property
    def leaves(self) -> Decimal:
        return self.quantity - self.filled

    @property
    def is_open(self) -> bool:
        return self.status in _OPEN

    def snapshot(self) -> BrokerOrderSnapshot:
        average = None
        if self.filled:
            average = (self.notional / self.filled).quantize(PRICE_QUANTUM, rounding=ROUND_HALF_EVEN)
        return BrokerOrderSnapshot(
            client_order_id=self.client_order_id,
            broker_order_id=self.broker_order_id,
            status=self.status,
            filled_quantity=self.filled,
            average_price=average,
        )


def _seq(order: WorkingOrder) -> int:
    return order.seq


def _is_day(order: WorkingOrder) -> bool:
    return order.time_in_force is TimeInForce.DAY


class _Side:
    """One side of one symbol's book: price levels, best first; in each level the orders in
    arrival order. `prices` holds the levels' prices ascending; the best is the highest when
    `descending` (bids, sell stops), else the lowest (offers, buy stops).

    Orders at one price share one level: an order costs a list slot (8 bytes), not a sort key of
    its own. Adding at the back of a level is an append; a stop that triggers into a level with
    younger orders is inserted by arrival (`seq`); removing one order is a bisection by `seq`."""

    __slots__ = ("descending", "levels", "prices")

    def __init__(self, *, descending: bool) -> None:
        self.descending = descending
        self.prices: list[Decimal] = []
        self.levels: dict[Decimal, list[WorkingOrder]] = {}

    def __bool__(self) -> bool:
        return bool(self.prices)

    def __len__(self) -> int:
        return sum(len(level) for level in self.levels.values())

    def add(self, price: Decimal, order: WorkingOrder) -> None:
        level = self.levels.get(price)
        if level is None:
            self.levels[price] = [order]
            bisect.insort(self.prices, price)
        elif level[-1].seq < order.seq:
            level.append(order)
        else:  # an older order (a stop just triggered) keeps its arrival priority
            bisect.insort(level, order, key=_seq)

    def remove(self, price: Decimal, order: WorkingOrder) -> None:
        level = self.levels[price]
        index = bisect.bisect_left(level, order.seq, key=_seq)
        assert level[index] is order, (order, level[index])
        del level[index]
        if not level:
            self._drop(price)

    def levels_reached(self, threshold: Decimal) -> list[Decimal]:
        """The prices of the levels `threshold` reaches, best first: on a descending side those
        at or above it, on an ascending one those at or below it."""
        prices = self.prices
        if self.descending:
            return prices[bisect.bisect_left(prices, threshold) :][::-1]
        return prices[: bisect.bisect_right(prices, threshold)]

    def pop_level(self, price: Decimal) -> list[WorkingOrder]:
        """Take the whole level at `price` out of the book; its orders in arrival order."""
        level = self.levels[price]
        self._drop(price)
        return level

    def keep(self, price: Decimal, level: list[WorkingOrder]) -> None:
        """Replace the level at `price` by `level` (the same orders, fewer of them)."""
        if level:
            self.levels[price] = level
        else:
            self._drop(price)

    def remove_where(self, leaves: Callable[[WorkingOrder], bool]) -> list[WorkingOrder]:
        """Take out every order for which `leaves(order)`; returns them."""
        gone: list[WorkingOrder] = []
        for price, level in list(self.levels.items()):
            if any(leaves(o) for o in level):
                gone += (o for o in level if leaves(o))
                self.keep(price, [o for o in level if not leaves(o)])
        return gone

    def _drop(self, price: Decimal) -> None:
        del self.levels[price]
        del self.prices[bisect.bisect_left(self.prices, price)]


class _Book:
    """One symbol: its last quote (zeros until quoted), the allowance per order at it, and the
    resting orders.
    `bids`/`offers` hold triggered orders by bound, best first; `buy_stops` lowest stop first,
    `sell_stops` highest first; ties by arrival."""

    __slots__ = ("ask", "ask_available", "bid", "bid_available", "bids", "buy_stops", "offers", "sell_stops")

    def __init__(self) -> None:
        self.bid = self.ask = self.bid_available = self.ask_available = _ZERO
        self.bids = _Side(descending=True)
        self.offers = _Side(descending=False)
        self.buy_stops = _Side(descending=False)
        self.sell_stops = _Side(descending=True)

    def sides(self) -> tuple[_Side, ...]:
        return (self.bids, self.offers, self.buy_stops, self.sell_stops)

    def _place(self, order: WorkingOrder) -> tuple[_Side, Decimal]:
        """The side and price level where `order` rests."""
        if order.triggered:
            return (self.bids if order.is_buy else self.offers), order.bound
        assert order.stop is not None
        return (self.buy_stops if order.is_buy else self.sell_stops), order.stop

    def rest(self, order: WorkingOrder) -> None:
        side, price = self._place(order)
        side.add(price, order)

    def remove(self, order: WorkingOrder) -> None:
        side, price = self._place(order)
        side.remove(price, order)

    def trigger(self, buy_level: Decimal, sell_level: Decimal) -> list[WorkingOrder]:
        """Move the stops that `buy_level` (ask or print) / `sell_level` (bid or print) reach
        into the book (they keep their arrival priority); returns them."""
        fired: list[WorkingOrder] = []
        for stops, level in ((self.buy_stops, buy_level), (self.sell_stops, sell_level)):
            for price in stops.levels_reached(level):
                fired += stops.pop_level(price)
        for order in fired:
            order.triggered = True
            self.rest(order)
        return fired

    def reached(self, order: WorkingOrder) -> bool:
        """Whether this quote reaches the stop of `order`."""
        assert order.stop is not None
        return order.stop <= self.ask if order.is_buy else order.stop >= self.bid

    def executable(self, order: WorkingOrder) -> Decimal:
        """How much of `order` could execute at this quote now (nothing is taken)."""
        if not order.triggered and not self.reached(order):
            return _ZERO
        if order.is_buy:
            return min(order.leaves, self.ask_available) if order.bound >= self.ask else _ZERO
        return min(order.leaves, self.bid_available) if order.bound <= self.bid else _ZERO


class MatchingEngine:
    """One venue's orders and fills: every open order, the last `FINISHED_MEMORY` finished ones
    and the last `FILL_MEMORY` fills. Ids are `<broker_id>-[<session>-]O<n>` for orders and
    `...F<n>` for fills; pass a `session` unique per engine life when ids must stay unique across
    restarts (the venue does)."""

    def __init__(
        self,
        *,
        broker_id: str,
        venue: str,
        commission: CommissionStructure,
        liquidity_share: Decimal = Decimal(1),
        session: str = "",
    ) -> None:
        if not 0 < liquidity_share <= 1:
            raise ValueError("liquidity_share must be within (0, 1]")
        self.broker_id = broker_id
        self.venue = venue
        self.commission = commission
        self._rates_only = msgspec.structs.replace(commission, min_commission=_ZERO)
        self.liquidity_share = liquidity_share
        self._prefix = f"{broker_id}-{session}-" if session else f"{broker_id}-"
        self._orders: dict[str, WorkingOrder] = {}
        #: Client order ids of the finished orders still in `_orders`, oldest first.
        self._finished: deque[str] = deque()
        self._books: dict[str, _Book] = {}
        self._order_count = 0
        self._fill_count = 0
        self._volume = _ZERO
        #: The last `FILL_MEMORY` fills, oldest first (what `fills_since` answers from).
        self.fills: deque[OrderFilled] = deque(maxlen=FILL_MEMORY)

    def __repr__(self) -> str:
        return (
            f"<MatchingEngine {self.broker_id} orders={len(self._orders)} open={self.open_orders}"
            f" fills={self._fill_count} volume={self._volume}>"
        )

    # --- reading -----------------------------------------------------------------------

    def __contains__(self, client_order_id: str) -> bool:
        return client_order_id in self._orders

    def order(self, client_order_id: str) -> WorkingOrder | None:
        return self._orders.get(client_order_id)

    def snapshot(self, client_order_id: str) -> BrokerOrderSnapshot | None:
        order = self._orders.get(client_order_id)
        return None if order is None else order.snapshot()

    @property
    def open_orders(self) -> int:
        return sum(len(side) for book in self._books.values() for side in book.sides())

    def open_snapshots(self) -> list[BrokerOrderSnapshot]:
        """Every open order (accepted, partially filled, or a stop not yet triggered)."""
        return [o.snapshot() for o in self._orders.values() if o.is_open]

    def fills_since(self, since: datetime) -> list[OrderFilled]:
        """The fills at or after `since`, oldest first."""
        return [f for f in self.fills if f.at >= since]

    @property
    def volume(self) -> Decimal:
        """Notional traded so far: the running volume commission tiers are applied over."""
        return self._volume

    # --- order entry -------------------------------------------------------------------

    def submit(self, request: SubmitRequest, at: datetime) -> tuple[str, list[AnyBrokerEvent]]:
        """Accept one well-formed order (see `order_problem`) and match it on arrival against
        the last quote seen for its symbol (no quote yet: nothing is available). Returns the
        broker order id and the events: OrderAccepted first, then fills and any cancel."""
        client_order_id = request.client_order_id
        if client_order_id in self._orders:
            raise ValueError(f"duplicate client order id {client_order_id!r}")
        self._order_count += 1
        order = WorkingOrder(request, f"{self._prefix}O{self._order_count}", self._order_count)
        self._orders[client_order_id] = order
        events: list[AnyBrokerEvent] = [OrderAccepted(client_order_id, at, order.broker_order_id)]
        book = self._book(order.symbol)
        quantity = _ZERO
        if book.ask > 0:  # the symbol has been quoted
            if not order.triggered and book.reached(order):
                order.triggered = True
            quantity = book.executable(order)
        tif = order.time_in_force
        if tif is TimeInForce.FOK and quantity < order.quantity:
            self._cancel(order, at, "FOK order canceled: not fillable in full on arrival", events)
            return order.broker_order_id, events
        if quantity > 0:
            self._fill(order, quantity, book.ask if order.is_buy else book.bid, at, events)
        if order.status is not BrokerOrderStatus.FILLED:
            if tif is TimeInForce.IOC:
                reason = (
                    f"IOC remainder of {order.leaves} canceled"
                    if order.filled
                    else "IOC order canceled: nothing available at an acceptable price"
                )
                self._cancel(order, at, reason, events)
            else:
                book.rest(order)
        return order.broker_order_id, events

    def cancel(
        self, client_order_id: str, at: datetime, reason: str = "canceled at the client's request"
    ) -> list[AnyBrokerEvent]:
        """Cancel an open order. Idempotent: an order already canceled gives no events. Raises
        CancelRejected for an unknown order or one that is otherwise final."""
        order = self._orders.get(client_order_id)
        if order is None:
            raise CancelRejected("unknown order")
        if order.status is BrokerOrderStatus.CANCELED:
            return []
        if not order.is_open:
            raise CancelRejected(f"order already {order.status.lower()}")
        self._books[order.symbol].remove(order)
        events: list[AnyBrokerEvent] = []
        self._cancel(order, at, reason, events)
        return events

    def end_of_day(self, at: datetime) -> list[AnyBrokerEvent]:
        """Expire every open DAY order (in arrival order); GTC orders keep resting."""
        expired: list[WorkingOrder] = []
        for book in self._books.values():
            for side in book.sides():
                expired += side.remove_where(_is_day)
        expired.sort(key=_seq)
        for order in expired:
            order.status = BrokerOrderStatus.EXPIRED
            self._ended(order)
        return [
            OrderExpired(o.client_order_id, at, "DAY order expired at the end of the day") for o in expired
        ]

    # --- market data -------------------------------------------------------------------

    def on_quote(self, quote: TopOfBook) -> list[AnyBrokerEvent]:
        """A new top of book: trigger the stops it reaches, then fill the orders it makes
        marketable (buys, then sells; best price first, then arrival)."""
        book = self._book(quote.symbol)
        book.bid, book.ask = quote.bid, quote.ask
        book.bid_available = self._share(quote.bid_size)
        book.ask_available = self._share(quote.ask_size)
        events: list[AnyBrokerEvent] = []
        if book.buy_stops or book.sell_stops:
            book.trigger(quote.ask, quote.bid)
        if book.bids:
            self._match(book.bids, book.ask, book.ask_available, quote.at, events)
        if book.offers:
            self._match(book.offers, book.bid, book.bid_available, quote.at, events)
        return events

    def on_trade(self, symbol: str, price: Decimal, at: datetime) -> list[AnyBrokerEvent]:
        """A trade print: it triggers stops (buy at or above, sell at or below the stop price),
        which then execute against the current quote."""
        book = self._books.get(symbol)
        if book is None or not (book.buy_stops or book.sell_stops):
            return []
        fired = {o.seq for o in book.trigger(price, price)}
        events: list[AnyBrokerEvent] = []
        if fired and book.ask > 0:
            # Only the newly triggered orders take liquidity: the others had their turn at this quote.
            self._match(book.bids, book.ask, book.ask_available, at, events, only=fired)
            self._match(book.offers, book.bid, book.bid_available, at, events, only=fired)
        return events

    # --- internals ---------------------------------------------------------------------

    def _book(self, symbol: str) -> _Book:
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = _Book()
        return book

    def _share(self, size: Decimal) -> Decimal:
        if self.liquidity_share == 1:
            return size
        return (size * self.liquidity_share).quantize(size, rounding=ROUND_FLOOR)

    def _match(
        self,
        side: _Side,
        price: Decimal,
        available: Decimal,
        at: datetime,
        events: list[AnyBrokerEvent],
        only: set[int] | None = None,
    ) -> None:
        """Fill the marketable levels of one side of the book at `price` (best first, each in
        arrival order), each order up to `available`; fully filled orders leave the book."""
        if available <= 0:
            return
        for level_price in side.levels_reached(price):
            level = side.levels[level_price]
            for order in level:
                if only is None or order.seq in only:
                    self._fill(order, min(order.leaves, available), price, at, events)
            side.keep(level_price, [o for o in level if o.status is not BrokerOrderStatus.FILLED])

    def _fill(
        self,
        order: WorkingOrder,
        quantity: Decimal,
        price: Decimal,
        at: datetime,
        events: list[AnyBrokerEvent],
    ) -> None:
        notional = quantity * price
        order.rate_fees += commission(self._rates_only, notional, self._volume)
        charged = max(order.rate_fees, self.commission.min_commission)
        fee = charged - order.fees
        order.fees = charged
        self._volume += notional
        self._fill_count += 1
        order.filled += quantity
        order.notional += notional
        order.status = (
            BrokerOrderStatus.FILLED if order.filled == order.quantity else BrokerOrderStatus.PARTIALLY_FILLED
        )
        filled = OrderFilled(
            client_order_id=order.client_order_id,
            at=at,
            fill_id=f"{self._prefix}F{self._fill_count}",
            quantity=quantity,
            price=price,
            fee=fee,
            venue=self.venue,
            broker_order_id=order.broker_order_id,
        )
        self.fills.append(filled)
        events.append(filled)
        if order.status is BrokerOrderStatus.FILLED:
            self._ended(order)

    def _cancel(self, order: WorkingOrder, at: datetime, reason: str, events: list[AnyBrokerEvent]) -> None:
        order.status = BrokerOrderStatus.CANCELED
        events.append(OrderCanceled(order.client_order_id, at, reason))
        self._ended(order)

    def _ended(self, order: WorkingOrder) -> None:
        """`order` reached a final status: remembered among the last `FINISHED_MEMORY` ones."""
        finished = self._finished
        finished.append(order.client_order_id)
        if len(finished) > FINISHED_MEMORY:
            self._orders.pop(finished.popleft(), None)
