"""The per-order safeguards, pure: an order, its limits and the last quote in; the first
safeguard it breaks out (a `Refusal`), or None.

Checked in this order (the first broken one is reported):

    quantity_increment     the quantity is a multiple of the instrument's step (no fractional
                           equities unless enabled)
    max_order_quantity     quantity <= limit
    market_without_quote   a MARKET order needs a fresh quote (unless allowed)
    price_collar           a LIMIT/STOP_LIMIT price at most `pct` % through the mid (a buy above,
                           a sell below); a STOP/STOP_LIMIT trigger at most `pct` % from the mid
    max_order_notional     quantity x (limit price, else stop price, else mid) <= limit

The account-wide ones (rate, daily notional) and the kill switch are the gate's
(`nursery.pretrade.gate`): they need state. A limit of 0 is off.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from api.contracts import OrderRoutingRequest
from api.enums import OrderType, Side
from nursery.pretrade.limits import Limits

__all__ = ["SAFEGUARDS", "Refusal", "check_order", "order_notional", "plain"]

#: Every safeguard's name: the label values of `bis_safeguard_rejections_total{safeguard}`.
SAFEGUARDS = (
    "kill_switch",
    "quantity_increment",
    "max_order_quantity",
    "market_without_quote",
    "price_collar",
    "max_order_notional",
    "max_order_rate",
    "max_daily_notional",
    "risk_service",
)

_HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an order is refused: the safeguard, its limit and the order's value, and the
    sentence the OMS reads (`rejectionReason`)."""

    safeguard: str
    reason: str
    limit: str | None = None
    value: str | None = None

    @property
    def rejection_reason(self) -> str:
        if self.safeguard == "risk_service":
            return f"risk service: {self.reason}"
        return f"safeguard {self.safeguard}: {self.reason}"


def plain(value: Decimal) -> str:
    """A decimal as an operator writes it: no exponent, no trailing zeros."""
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def order_notional(request: OrderRoutingRequest, mid: Decimal | None) -> Decimal | None:
    """quantity x the order's own price (limit, else stop), else the mid; None without any."""
    price = request.price if request.price is not None else request.stop_price
    if price is None:
        price = mid
    return None if price is None else request.quantity * price


def check_order(request: OrderRoutingRequest, limits: Limits, mid: Decimal | None) -> Refusal | None:
    """The first per-order safeguard `request` breaks, or None. `mid`: the last quote's mid if
    it is fresh, else None."""
    quantity = request.quantity
    step = limits.quantity_increment
    if quantity % step:
        return Refusal(
            "quantity_increment",
            f"quantity {plain(quantity)} is not a multiple of {plain(step)} for {request.symbol}",
            plain(step),
            plain(quantity),
        )
    if limits.max_order_quantity and quantity > limits.max_order_quantity:
        return Refusal(
            "max_order_quantity",
            f"quantity {plain(quantity)} exceeds the limit {plain(limits.max_order_quantity)}",
            plain(limits.max_order_quantity),
            plain(quantity),
        )
    if mid is None:
        if request.type is OrderType.MARKET and not limits.market_orders_without_quote:
            return Refusal(
                "market_without_quote",
                f"no fresh quote for {request.symbol}: a MARKET order needs one (send a LIMIT order)",
            )
    elif limits.max_price_deviation_pct:
        refusal = _collar(request, limits.max_price_deviation_pct, mid)
        if refusal is not None:
            return refusal
    if limits.max_order_notional:
        notional = order_notional(request, mid)
        if notional is not None and notional > limits.max_order_notional:
            return Refusal(
                "max_order_notional",
                f"order notional {plain(notional)} exceeds the limit {plain(limits.max_order_notional)}",
                plain(limits.max_order_notional),
                plain(notional),
            )
    return None


def _collar(request: OrderRoutingRequest, pct: Decimal, mid: Decimal) -> Refusal | None:
    buy = request.side is Side.BUY
    if request.price is not None:
        through = (request.price - mid) if buy else (mid - request.price)
        deviation = through * _HUNDRED / mid
        if deviation > pct:
            return Refusal(
                "price_collar",
                f"limit price {plain(request.price)} is {plain(round(deviation, 2))} % "
                f"{'above' if buy else 'below'} the mid {plain(mid)}; the limit is {plain(pct)} %",
                plain(pct),
                plain(round(deviation, 2)),
            )
    if request.stop_price is not None:
        deviation = abs(request.stop_price - mid) * _HUNDRED / mid
        if deviation > pct:
            return Refusal(
                "price_collar",
                f"stop price {plain(request.stop_price)} is {plain(round(deviation, 2))} % "
                f"from the mid {plain(mid)}; the limit is {plain(pct)} %",
                plain(pct),
                plain(round(deviation, 2)),
            )
    return None
