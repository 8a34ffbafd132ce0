"""Translation between our orders and events and IB's (pure: no I/O, no clock).

Contracts. Our instruments become IB contracts: equities `STK` on `SMART` in USD; FX pairs
(`EUR/USD`, `EUR-USD`, `EUR.USD`, `EURUSD`) `CASH` on `IDEALPRO` (base as symbol, quote as
currency); crypto (`BTC`, `BTC-USD`, `BTC/USD`) `CRYPTO` on `PAXOS`. The adapter qualifies
each once with IB (contract details) and caches the answer.

Orders. MARKET -> MKT, LIMIT -> LMT (lmtPrice), STOP -> STP (auxPrice), STOP_LIMIT -> STP LMT;
DAY/GTC/IOC/FOK as IB spells them; our client order id travels as `orderRef`, which IB
carries to open orders, completed orders and executions. Crypto at PAXOS takes MARKET,
LIMIT and STOP_LIMIT orders, IOC or GTC (as the adapter declares; IB's own list is narrower
for some accounts). ib_async's Order carries quantities and prices as floats: a value whose
decimal text does not survive the float round trip (more digits than a double holds) is
refused locally rather than sent altered.

Statuses. `IB_STATUSES` maps every status IB (and ib_async) uses; an unknown word is not
guessed at. Inactive with an error is a rejection with IB's message; Cancelled because of an
order error (not 202) on an order that never filled is a rejection too.

Fill ids. IB identifies an execution by `execId`; a correction of it arrives with the same
id but for the digits after the final period (`...01.01` -> `...01.02`). The fill id is
the execId without that suffix, so an execution and its corrections are one fill.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType

import msgspec

from adapters.base import BrokerOrderSnapshot, SubmitRequest, shape_problem
from adapters.ib.codes import CANCEL_ANSWERS, is_rejection
from adapters.ib.wire import IbOrderState
from api.enums import AssetClass, BrokerOrderStatus, OrderType, Side, TimeInForce

ORDER_TYPES: Mapping[OrderType, str] = MappingProxyType(
    {
        OrderType.MARKET: "MKT",
        OrderType.LIMIT: "LMT",
        OrderType.STOP: "STP",
        OrderType.STOP_LIMIT: "STP LMT",
    }
)
TIMES_IN_FORCE: Mapping[TimeInForce, str] = MappingProxyType(
    {TimeInForce.DAY: "DAY", TimeInForce.GTC: "GTC", TimeInForce.IOC: "IOC", TimeInForce.FOK: "FOK"}
)
ACTIONS: Mapping[Side, str] = MappingProxyType({Side.BUY: "BUY", Side.SELL: "SELL"})
CRYPTO_ORDER_TYPES = frozenset({OrderType.MARKET, OrderType.LIMIT, OrderType.STOP_LIMIT})
CRYPTO_TIMES_IN_FORCE = frozenset({TimeInForce.GTC, TimeInForce.IOC})


class Rule(StrEnum):
    PENDING = "PENDING"  # not yet acknowledged by IB
    WORKING = "WORKING"  # live at IB: ACCEPTED or PARTIALLY_FILLED by the filled quantity
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    INACTIVE = "INACTIVE"  # rejected when an error came with it, else still working


IB_STATUSES: Mapping[str, Rule] = MappingProxyType(
    {
        "ApiPending": Rule.PENDING,
        "PendingSubmit": Rule.PENDING,
        "PreSubmitted": Rule.WORKING,
        "Submitted": Rule.WORKING,
        "PendingCancel": Rule.WORKING,
        "ValidationError": Rule.WORKING,  # ib_async's mark for a warning: the order is live
        "Filled": Rule.FILLED,
        "Cancelled": Rule.CANCELED,
        "ApiCancelled": Rule.CANCELED,
        "Inactive": Rule.INACTIVE,
    }
)


class UnknownIbWord(ValueError):
    """IB sent a status this adapter does not know."""


class ContractSpec(msgspec.Struct, frozen=True):
    symbol: str
    sec_type: str
    exchange: str
    currency: str


class OrderSpec(msgspec.Struct, frozen=True):
    action: str
    quantity: float
    order_type: str
    tif: str
    order_ref: str
    limit_price: float | None = None
    aux_price: float | None = None


# --- outgoing --------------------------------------------------------------------------------


def _pair(symbol: str) -> tuple[str, str]:
    for separator in ("/", "-", "."):
        if separator in symbol:
            base, _, quote = symbol.partition(separator)
            return base.upper(), quote.upper()
    if len(symbol) == 6:
        return symbol[:3].upper(), symbol[3:].upper()
    return symbol.upper(), "USD"


def contract_spec(symbol: str, asset_class: AssetClass) -> ContractSpec:
    if asset_class is AssetClass.FOREX:
        base, quote = _pair(symbol)
        return ContractSpec(base, "CASH", "IDEALPRO", quote)
    if asset_class is AssetClass.CRYPTO:
        base, quote = _pair(symbol)
        return ContractSpec(base, "CRYPTO", "PAXOS", quote)
    return ContractSpec(symbol.upper(), "STK", "SMART", "USD")


def _as_float(value: Decimal) -> float | None:
    """`value` as the float ib_async sends, None if its decimal text would change."""
    number = float(value)
    if Decimal(repr(number)).normalize() != value.normalize():
        return None
    return number


def order_problem(
    request: SubmitRequest,
    asset_classes: frozenset[AssetClass],
    times_in_force: frozenset[TimeInForce],
) -> str | None:
    """Why this adapter does not send the order to IB (refused locally), or None."""
    if request.asset_class not in asset_classes:
        return f"IB adapter does not trade {request.asset_class}"
    if request.time_in_force not in times_in_force:
        return f"IB adapter does not send {request.time_in_force} orders"
    problem = shape_problem(request)
    if problem is not None:
        return problem
    if request.asset_class is AssetClass.CRYPTO:
        if request.order_type not in CRYPTO_ORDER_TYPES:
            return f"IB does not take {request.order_type} orders for crypto"
        if request.time_in_force not in CRYPTO_TIMES_IN_FORCE:
            return f"IB takes only GTC and IOC crypto orders, not {request.time_in_force}"
    values = [request.quantity]
    if request.order_type.needs_price and request.price is not None:
        values.append(request.price)
    if request.order_type.needs_stop_price and request.stop_price is not None:
        values.append(request.stop_price)
    for value in values:
        if _as_float(value) is None:
            return f"{value} has more digits than IB's API carries"
    if not request.client_order_id:
        return "a client order id is required (it travels as orderRef)"
    return None


def order_spec(request: SubmitRequest) -> OrderSpec:
    """IB's order fields for `request` (check `order_problem` first)."""
    return OrderSpec(
        action=ACTIONS[request.side],
        quantity=float(request.quantity),
        order_type=ORDER_TYPES[request.order_type],
        tif=TIMES_IN_FORCE[request.time_in_force],
        order_ref=request.client_order_id,
        limit_price=float(request.price)
        if request.order_type.needs_price and request.price is not None
        else None,
        aux_price=float(request.stop_price)
        if request.order_type.needs_stop_price and request.stop_price is not None
        else None,
    )


def filter_time(at_epoch_seconds: float) -> str:
    """An ExecutionFilter time: `yyyymmdd-hh:mm:ss` in UTC, floored to the second."""
    return datetime.fromtimestamp(int(at_epoch_seconds), UTC).strftime("%Y%m%d-%H:%M:%S")


# --- incoming --------------------------------------------------------------------------------


def fill_id(exec_id: str) -> str:
    """The execution's id without its correction suffix (`a.b.01.02` -> `a.b.01`)."""
    base, dot, suffix = exec_id.rpartition(".")
    return base if dot and base and suffix.isdigit() else exec_id


def correction_number(exec_id: str) -> int:
    _, dot, suffix = exec_id.rpartition(".")
    return int(suffix) if dot and suffix.isdigit() else 0


def rule(state: IbOrderState) -> Rule:
    found = IB_STATUSES.get(state.status)
    if found is None:
        raise UnknownIbWord(f"unknown IB order status {state.status!r}")
    return found


def is_cancel_answer(state: IbOrderState) -> bool:
    """ib_async marks an order Cancelled when a cancel request is answered 10147/10148: that
    is an answer to the request, not news about the order."""
    return state.error_code in CANCEL_ANSWERS and rule(state) is Rule.CANCELED


def rejection(state: IbOrderState) -> str | None:
    """IB's reason when this state means the order was refused, else None."""
    if state.filled > 0:
        return None
    found = rule(state)
    if found is Rule.INACTIVE and state.rejection_code:
        return f"IB {state.rejection_code}: {state.rejection_message}"
    if found is Rule.INACTIVE and state.completed:
        return "inactive at IB"
    if found is Rule.CANCELED and is_rejection(state.error_code):
        return f"IB {state.error_code}: {state.error_message}"
    return None


def broker_status(state: IbOrderState) -> BrokerOrderStatus:
    """Our status of an IB order. Raises UnknownIbWord for a status not in the table."""
    found = rule(state)
    if rejection(state) is not None:
        return BrokerOrderStatus.REJECTED
    if found is Rule.PENDING:
        return BrokerOrderStatus.PENDING
    if found is Rule.FILLED:
        return BrokerOrderStatus.FILLED
    if found is Rule.CANCELED:
        return BrokerOrderStatus.CANCELED
    if state.quantity > 0 and state.filled >= state.quantity:
        return BrokerOrderStatus.FILLED
    return BrokerOrderStatus.PARTIALLY_FILLED if state.filled > 0 else BrokerOrderStatus.ACCEPTED


def broker_order_id(state: IbOrderState) -> str:
    """IB's permanent id (stable across sessions and client ids); `clientId/orderId` before
    TWS assigned one."""
    return str(state.perm_id) if state.perm_id else f"{state.client_id}/{state.order_id}"


def snapshot(state: IbOrderState, average_price: Decimal | None = None) -> BrokerOrderSnapshot:
    return BrokerOrderSnapshot(
        client_order_id=state.order_ref,
        broker_order_id=broker_order_id(state),
        status=broker_status(state),
        filled_quantity=state.filled,
        average_price=(state.average_price or average_price) if state.filled > 0 else None,
    )
