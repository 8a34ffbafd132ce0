"""What the adapter reads from ib_async, as frozen messages with Decimal money (pure).

ib_async hands out mutable objects (`Trade`, `Fill`, `CommissionReport`) that it keeps
updating from its own event loop, with floats for quantities and prices. The bridge
(`adapters.ib.session`) copies each into one of these messages the moment ib_async reports
it, so Trio code never reads a live ib_async object. Floats become Decimal through their
shortest repr (`100.02` -> `Decimal("100.02")`); IB's "unset" double becomes None.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import msgspec
from ib_async import CommissionReport, Fill, Trade
from ib_async.util import UNSET_DOUBLE

from adapters.ib.codes import is_warning


def decimal(value: float) -> Decimal | None:
    """IB's double as Decimal (shortest repr), None when unset or not a number."""
    if value != value or abs(value) >= UNSET_DOUBLE / 2:
        return None
    return Decimal(repr(float(value)))


def decimal_or_zero(value: float) -> Decimal:
    found = decimal(value)
    return Decimal(0) if found is None else found


class IbOrderState(msgspec.Struct, frozen=True):
    """One order as ib_async knows it after a change (orderStatus, openOrder, an error)."""

    order_ref: str
    order_id: int
    client_id: int
    perm_id: int
    status: str
    quantity: Decimal
    filled: Decimal
    average_price: Decimal | None
    #: The error that changed the order last (ib_async records it in the trade's log), if any.
    error_code: int = 0
    error_message: str = ""
    #: The newest non-warning error in the order's whole log (an Inactive after a 201).
    rejection_code: int = 0
    rejection_message: str = ""
    completed: bool = False


class IbExecution(msgspec.Struct, frozen=True):
    exec_id: str
    order_ref: str
    order_id: int
    client_id: int
    perm_id: int
    shares: Decimal
    price: Decimal
    cumulative: Decimal
    average_price: Decimal | None
    at: datetime
    exchange: str
    side: str
    account: str


class IbCommission(msgspec.Struct, frozen=True):
    exec_id: str
    commission: Decimal
    currency: str


class IbError(msgspec.Struct, frozen=True):
    req_id: int
    code: int
    message: str


class IbDisconnected(msgspec.Struct, frozen=True):
    reason: str


IbMessage = IbOrderState | IbExecution | IbCommission | IbError | IbDisconnected


def order_state(trade: Trade, *, completed: bool = False) -> IbOrderState:
    order, status = trade.order, trade.orderStatus
    last = trade.log[-1] if trade.log else None
    rejection = next(
        (entry for entry in reversed(trade.log) if entry.errorCode and not is_warning(entry.errorCode)),
        None,
    )
    filled = decimal_or_zero(status.filled)
    if completed:
        filled = max(filled, decimal_or_zero(float(order.filledQuantity)))
    return IbOrderState(
        order_ref=order.orderRef or "",
        order_id=order.orderId or status.orderId,
        client_id=order.clientId or status.clientId,
        perm_id=order.permId or status.permId,
        status=status.status,
        quantity=decimal_or_zero(float(order.totalQuantity)),
        filled=filled,
        average_price=decimal(status.avgFillPrice) if status.avgFillPrice else None,
        error_code=last.errorCode if last is not None else 0,
        error_message=last.message if last is not None and last.errorCode else "",
        rejection_code=rejection.errorCode if rejection is not None else 0,
        rejection_message=rejection.message if rejection is not None else "",
        completed=completed,
    )


def execution(fill: Fill, order_ref: str = "") -> IbExecution:
    ex = fill.execution
    at = ex.time if ex.time.tzinfo is not None else ex.time.replace(tzinfo=UTC)
    return IbExecution(
        exec_id=ex.execId,
        order_ref=ex.orderRef or order_ref,
        order_id=ex.orderId,
        client_id=ex.clientId,
        perm_id=ex.permId,
        shares=decimal_or_zero(ex.shares),
        price=decimal_or_zero(ex.price),
        cumulative=decimal_or_zero(ex.cumQty),
        average_price=decimal(ex.avgPrice),
        at=at.astimezone(UTC),
        exchange=ex.exchange,
        side=ex.side,
        account=ex.acctNumber,
    )


def commission(report: CommissionReport) -> IbCommission | None:
    """None for an empty report (ib_async's placeholder before IB sent one)."""
    if not report.execId:
        return None
    return IbCommission(
        exec_id=report.execId, commission=decimal_or_zero(report.commission), currency=report.currency
    )
