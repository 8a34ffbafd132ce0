"""Translation between our orders and events and Alpaca's (pure: no I/O, no clock).

Outgoing. `order_body` is the JSON of `POST /v2/orders`: quantities and prices as decimal
strings, exactly as given (alpaca-py's request models would turn them into floats), always with
our `client_order_id` (Alpaca's idempotency key). Crypto symbols are written `BASE/QUOTE`.

Incoming. Two tables say what every Alpaca word means; a word in neither is not guessed at:

- `ORDER_STATUSES`: an order's `status` -> our `BrokerOrderStatus`. The working statuses
  (new, accepted, pending_*, held, stopped, done_for_day, ...) become ACCEPTED, or
  PARTIALLY_FILLED / FILLED from the filled quantity; `replaced` is final for the old order and
  becomes CANCELED. An unknown status raises `UnknownAlpacaWord`.
- `TRADE_EVENTS`: a trade update's `event` -> the event we emit, if any. `new`, `accepted` and
  `pending_new` mean the order exists at Alpaca (OrderAccepted); informational events
  (`done_for_day`, `pending_cancel`, `order_cancel_rejected`, ...) emit nothing. An unknown
  event raises `UnknownAlpacaWord` (the caller logs it and emits nothing).

Fill ids. The stream reports a fill with an `execution_id`; the FILL activities report it
with an activity `id` (`<time>::<uuid>`). Alpaca does not document that the two are related,
and the daemon stores fills by id, so a fill seen on both paths under two ids would be stored
twice (an overfill). So neither is used: a fill's id is `<alpaca order id>:<cumulative filled
quantity after it>`, which both paths carry (`order.filled_qty` of the trade update,
`cum_qty` of the activity) and which is unique per order because every execution raises it.
Quantities are written canonically (`10`, `0.5`), so "10" and "10.000" give the same id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType

from adapters.alpaca.wire import AlpacaOrder, FillActivity, TradeUpdate
from adapters.base import BrokerOrderSnapshot, SubmitRequest, shape_problem
from api.enums import AssetClass, BrokerOrderStatus, OrderType, Side, TimeInForce
from api.events import (
    AnyBrokerEvent,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)

#: notional -> fee of one execution (the adapter computes it from its CommissionStructure).
FeeFor = Callable[[Decimal], Decimal]


class UnknownAlpacaWord(ValueError):
    """Alpaca sent a status or event name this adapter does not know."""


class IncompleteExecution(ValueError):
    """A fill trade update without its execution's quantity or price: recover it from the
    FILL activities instead of guessing."""


ORDER_TYPES: Mapping[OrderType, str] = MappingProxyType(
    {
        OrderType.MARKET: "market",
        OrderType.LIMIT: "limit",
        OrderType.STOP: "stop",
        OrderType.STOP_LIMIT: "stop_limit",
    }
)
TIMES_IN_FORCE: Mapping[TimeInForce, str] = MappingProxyType(
    {TimeInForce.DAY: "day", TimeInForce.GTC: "gtc", TimeInForce.IOC: "ioc", TimeInForce.FOK: "fok"}
)
SIDES: Mapping[Side, str] = MappingProxyType({Side.BUY: "buy", Side.SELL: "sell"})
ASSET_CLASSES: Mapping[AssetClass, str] = MappingProxyType(
    {AssetClass.EQUITY: "us_equity", AssetClass.CRYPTO: "crypto"}
)
#: What Alpaca accepts for crypto (equities take every type and time in force we have).
CRYPTO_ORDER_TYPES = frozenset({OrderType.MARKET, OrderType.LIMIT, OrderType.STOP_LIMIT})
CRYPTO_TIMES_IN_FORCE = frozenset({TimeInForce.GTC, TimeInForce.IOC})


class StatusRule(StrEnum):
    """How an Alpaca order status maps: WORKING is decided by the filled quantity."""

    WORKING = "WORKING"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"


ORDER_STATUSES: Mapping[str, StatusRule] = MappingProxyType(
    {
        "new": StatusRule.WORKING,
        "accepted": StatusRule.WORKING,
        "pending_new": StatusRule.WORKING,
        "accepted_for_bidding": StatusRule.WORKING,
        "pending_review": StatusRule.WORKING,
        "held": StatusRule.WORKING,
        "partially_filled": StatusRule.WORKING,
        "done_for_day": StatusRule.WORKING,
        "pending_cancel": StatusRule.WORKING,
        "pending_replace": StatusRule.WORKING,
        "stopped": StatusRule.WORKING,
        "suspended": StatusRule.WORKING,
        "calculated": StatusRule.WORKING,
        "filled": StatusRule.FILLED,
        "canceled": StatusRule.CANCELED,
        "replaced": StatusRule.CANCELED,
        "expired": StatusRule.EXPIRED,
        "rejected": StatusRule.REJECTED,
    }
)


class EventKind(StrEnum):
    ACCEPTED = "ACCEPTED"
    FILL = "FILL"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"
    NONE = "NONE"  # informational: nothing to emit


TRADE_EVENTS: Mapping[str, EventKind] = MappingProxyType(
    {
        "pending_new": EventKind.ACCEPTED,
        "accepted": EventKind.ACCEPTED,
        "new": EventKind.ACCEPTED,
        "partial_fill": EventKind.FILL,
        "fill": EventKind.FILL,
        "canceled": EventKind.CANCELED,
        "replaced": EventKind.CANCELED,
        "expired": EventKind.EXPIRED,
        "rejected": EventKind.REJECTED,
        "done_for_day": EventKind.NONE,
        "pending_cancel": EventKind.NONE,
        "pending_replace": EventKind.NONE,
        "calculated": EventKind.NONE,
        "stopped": EventKind.NONE,
        "suspended": EventKind.NONE,
        "held": EventKind.NONE,
        "restated": EventKind.NONE,
        "order_cancel_rejected": EventKind.NONE,
        "order_replace_rejected": EventKind.NONE,
    }
)


# --- outgoing --------------------------------------------------------------------------------


def decimal_text(value: Decimal) -> str:
    """`value` in plain notation without trailing zeros: 10, 0.5, 0.000000001 (never 1E+1)."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def alpaca_symbol(symbol: str, asset_class: AssetClass) -> str:
    """Alpaca writes crypto pairs BASE/QUOTE (`BTC/USD`); we may write `BTC-USD`."""
    if asset_class is AssetClass.CRYPTO:
        return symbol.replace("-", "/")
    return symbol


def order_problem(request: SubmitRequest) -> str | None:
    """Why Alpaca cannot take this order (so we refuse it locally), or None."""
    if request.asset_class not in ASSET_CLASSES:
        return f"Alpaca does not trade {request.asset_class}"
    problem = shape_problem(request)
    if problem is not None:
        return problem
    if request.asset_class is AssetClass.CRYPTO:
        if request.order_type not in CRYPTO_ORDER_TYPES:
            return f"Alpaca does not take {request.order_type} orders for crypto"
        if request.time_in_force not in CRYPTO_TIMES_IN_FORCE:
            return f"Alpaca takes only GTC and IOC crypto orders, not {request.time_in_force}"
    return None


def order_body(request: SubmitRequest) -> dict[str, str]:
    """The JSON body of `POST /v2/orders` for `request` (check `order_problem` first)."""
    body = {
        "symbol": alpaca_symbol(request.symbol, request.asset_class),
        "qty": decimal_text(request.quantity),
        "side": SIDES[request.side],
        "type": ORDER_TYPES[request.order_type],
        "time_in_force": TIMES_IN_FORCE[request.time_in_force],
        "client_order_id": request.client_order_id,
    }
    if request.order_type.needs_price and request.price is not None:
        body["limit_price"] = decimal_text(request.price)
    if request.order_type.needs_stop_price and request.stop_price is not None:
        body["stop_price"] = decimal_text(request.stop_price)
    return body


# --- incoming --------------------------------------------------------------------------------


def fill_id(alpaca_order_id: str, cumulative_quantity: Decimal) -> str:
    """The id of the execution that brought the order's filled quantity to `cumulative_quantity`."""
    return f"{alpaca_order_id}:{decimal_text(cumulative_quantity)}"


def broker_status(order: AlpacaOrder) -> BrokerOrderStatus:
    """Our status of an Alpaca order. Raises UnknownAlpacaWord for a status not in the table."""
    rule = ORDER_STATUSES.get(order.status)
    if rule is None:
        raise UnknownAlpacaWord(f"unknown Alpaca order status {order.status!r}")
    if rule is StatusRule.WORKING:
        if order.qty is not None and order.filled_qty >= order.qty > 0:
            return BrokerOrderStatus.FILLED
        return BrokerOrderStatus.PARTIALLY_FILLED if order.filled_qty > 0 else BrokerOrderStatus.ACCEPTED
    return BrokerOrderStatus(rule.value)


def snapshot(order: AlpacaOrder) -> BrokerOrderSnapshot:
    filled = order.filled_qty
    return BrokerOrderSnapshot(
        client_order_id=order.client_order_id,
        broker_order_id=order.id,
        status=broker_status(order),
        filled_quantity=filled,
        average_price=order.filled_avg_price if filled > 0 else None,
    )


def is_open(order: AlpacaOrder) -> bool:
    return not broker_status(order).is_final


def event_time(update: TradeUpdate) -> datetime:
    return update.timestamp or update.order.updated_at or update.order.submitted_at


def event_from_update(update: TradeUpdate, *, venue: str, fee_for: FeeFor) -> AnyBrokerEvent | None:
    """The event one trade update means, or None for an informational one.

    Raises UnknownAlpacaWord for an unknown event name and IncompleteExecution for a fill
    without its quantity or price."""
    kind = TRADE_EVENTS.get(update.event)
    if kind is None:
        raise UnknownAlpacaWord(f"unknown Alpaca trade update event {update.event!r}")
    order = update.order
    at = event_time(update)
    if kind is EventKind.ACCEPTED:
        return OrderAccepted(client_order_id=order.client_order_id, at=at, broker_order_id=order.id)
    if kind is EventKind.FILL:
        if update.qty is None or update.price is None or update.qty <= 0:
            raise IncompleteExecution(f"{update.event} of order {order.id} without qty/price")
        return OrderFilled(
            client_order_id=order.client_order_id,
            at=at,
            fill_id=fill_id(order.id, order.filled_qty),
            quantity=update.qty,
            price=update.price,
            fee=fee_for(update.qty * update.price),
            venue=venue,
            broker_order_id=order.id,
        )
    if kind is EventKind.CANCELED:
        reason = f"replaced by order {order.replaced_by}" if update.event == "replaced" else ""
        return OrderCanceled(client_order_id=order.client_order_id, at=at, reason=reason)
    if kind is EventKind.EXPIRED:
        return OrderExpired(client_order_id=order.client_order_id, at=at, reason="expired at Alpaca")
    if kind is EventKind.REJECTED:
        return OrderRejected(client_order_id=order.client_order_id, at=at, reason="rejected by Alpaca")
    return None


def final_event(order: AlpacaOrder, at: datetime) -> AnyBrokerEvent | None:
    """The terminal non-fill event a final order implies (what a missed `canceled`, `expired`
    or `rejected` trade update would have said), or None for an open or filled order."""
    status = broker_status(order)
    if status is BrokerOrderStatus.CANCELED:
        reason = f"replaced by order {order.replaced_by}" if order.status == "replaced" else ""
        return OrderCanceled(client_order_id=order.client_order_id, at=at, reason=reason)
    if status is BrokerOrderStatus.EXPIRED:
        return OrderExpired(client_order_id=order.client_order_id, at=at, reason="expired at Alpaca")
    if status is BrokerOrderStatus.REJECTED:
        return OrderRejected(client_order_id=order.client_order_id, at=at, reason="rejected by Alpaca")
    return None


def fill_from_activity(
    activity: FillActivity, client_order_id: str, *, venue: str, fee_for: FeeFor
) -> OrderFilled:
    """One FILL activity as the OrderFilled the stream would have delivered (same fill id)."""
    return OrderFilled(
        client_order_id=client_order_id,
        at=activity.transaction_time,
        fill_id=fill_id(activity.order_id, activity.cum_qty),
        quantity=activity.qty,
        price=activity.price,
        fee=fee_for(activity.qty * activity.price),
        venue=venue,
        broker_order_id=activity.order_id,
    )
