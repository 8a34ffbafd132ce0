"""Application messages <-> our order model. Pure: fields in, fields or events out.

Outgoing: NewOrderSingle (D), OrderCancelRequest (F), OrderStatusRequest (H) as lists of
(tag, value) fields for the session to frame. Incoming: an ExecutionReport (8) parsed into an
`ExecutionReport`, then translated into the broker events of `api.events` (what the order state
machine consumes) or into a `BrokerOrderSnapshot` (the answer to a status request).

Mapping of ExecType (150) to events:
    0 New -> OrderAccepted(broker_order_id = OrderID 37)
    F Trade (and 4.2's 1/2) with LastQty > 0 -> OrderFilled(fill_id = ExecID 17, quantity =
      LastQty 32, price = LastPx 31, fee = see `fill_fee`, venue = LastMkt 30 or the session's)
    4 Canceled -> OrderCanceled, 8 Rejected -> OrderRejected(Text 58), C Expired -> OrderExpired
    I Order status, and "unknown order" (OrdStatus 8 with OrdRejReason 5, whatever the
      ExecType) -> no event (it answers `query`: a snapshot, or None); anything else -> no event
      (pending states, restatements, done-for-day: the order's state does not change in our
      model).
A fill carries CumQty (14) as its `cumulative_quantity`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec

from adapters.base import BrokerOrderSnapshot, SubmitRequest
from adapters.fix.codec import Message, format_decimal, format_timestamp
from adapters.fix.config import CommissionReporting
from adapters.fix.tags import (
    COMM_TYPE_ABSOLUTE,
    COMM_TYPE_PER_UNIT,
    COMM_TYPE_PERCENT,
    FILL_EXEC_TYPES,
    ORD_REJ_UNKNOWN_ORDER,
    ExecType,
    OrdStatus,
    Tag,
)
from api.enums import BrokerOrderStatus, OrderType, Side, TimeInForce
from api.events import (
    AnyBrokerEvent,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)

__all__ = [
    "ExecutionReport",
    "OrderDetails",
    "events_of",
    "fill_fee",
    "new_order_single",
    "order_cancel_request",
    "order_details",
    "order_status",
    "order_status_request",
    "parse_execution_report",
    "snapshot_of",
]

Field = tuple[int, str]

_SIDE = {Side.BUY: "1", Side.SELL: "2"}
_SIDE_BACK = {code: side for side, code in _SIDE.items()}
_ORD_TYPE = {OrderType.MARKET: "1", OrderType.LIMIT: "2", OrderType.STOP: "3", OrderType.STOP_LIMIT: "4"}
_TIF = {TimeInForce.DAY: "0", TimeInForce.GTC: "1", TimeInForce.IOC: "3", TimeInForce.FOK: "4"}


_EXEC_TYPES = frozenset(t.value for t in ExecType)
_ORD_STATUSES = frozenset(s.value for s in OrdStatus)


class OrderDetails(msgspec.Struct, frozen=True):
    """What a cancel or a status request must repeat about an order (FIX requires Symbol and
    Side): taken from the NewOrderSingle we sent."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: Decimal


def new_order_single(request: SubmitRequest, *, account: str, transact_time: datetime) -> list[Field]:
    fields: list[Field] = [
        (Tag.CL_ORD_ID, request.client_order_id),
        (Tag.ACCOUNT, account),
        (Tag.SYMBOL, request.symbol),
        (Tag.SIDE, _SIDE[request.side]),
        (Tag.TRANSACT_TIME, format_timestamp(transact_time)),
        (Tag.ORDER_QTY, format_decimal(request.quantity)),
        (Tag.ORD_TYPE, _ORD_TYPE[request.order_type]),
    ]
    if request.price is not None:
        fields.append((Tag.PRICE, format_decimal(request.price)))
    if request.stop_price is not None:
        fields.append((Tag.STOP_PX, format_decimal(request.stop_price)))
    fields.append((Tag.TIME_IN_FORCE, _TIF[request.time_in_force]))
    return fields


def order_details(message: Message) -> OrderDetails:
    """The details of an order from the NewOrderSingle that placed it."""
    side = _SIDE_BACK.get(message.require(Tag.SIDE))
    quantity = message.decimal(Tag.ORDER_QTY)
    if side is None or quantity is None:
        raise ValueError("NewOrderSingle without a valid Side or OrderQty")
    return OrderDetails(
        client_order_id=message.require(Tag.CL_ORD_ID),
        symbol=message.require(Tag.SYMBOL),
        side=side,
        quantity=quantity,
    )


def order_cancel_request(
    cancel_id: str, order: OrderDetails, *, broker_order_id: str | None, transact_time: datetime
) -> list[Field]:
    fields: list[Field] = [(Tag.ORIG_CL_ORD_ID, order.client_order_id), (Tag.CL_ORD_ID, cancel_id)]
    if broker_order_id:
        fields.append((Tag.ORDER_ID, broker_order_id))
    fields += [
        (Tag.SYMBOL, order.symbol),
        (Tag.SIDE, _SIDE[order.side]),
        (Tag.TRANSACT_TIME, format_timestamp(transact_time)),
        (Tag.ORDER_QTY, format_decimal(order.quantity)),
    ]
    return fields


def order_status_request(order: OrderDetails, *, request_id: str, broker_order_id: str | None) -> list[Field]:
    fields: list[Field] = [(Tag.CL_ORD_ID, order.client_order_id)]
    if broker_order_id:
        fields.append((Tag.ORDER_ID, broker_order_id))
    fields += [
        (Tag.SYMBOL, order.symbol),
        (Tag.SIDE, _SIDE[order.side]),
        (Tag.ORD_STATUS_REQ_ID, request_id),
    ]
    return fields


class ExecutionReport(msgspec.Struct, frozen=True):
    """The fields of one ExecutionReport (8) that the adapter uses."""

    cl_ord_id: str
    exec_id: str
    exec_type: str
    ord_status: str
    cum_qty: Decimal
    transact_time: datetime
    seq: int
    orig_cl_ord_id: str | None = None
    order_id: str | None = None
    last_qty: Decimal | None = None
    last_px: Decimal | None = None
    avg_px: Decimal | None = None
    commission: Decimal | None = None
    comm_type: str | None = None
    last_mkt: str | None = None
    text: str | None = None
    ord_rej_reason: str | None = None
    status_req_id: str | None = None

    @property
    def is_status(self) -> bool:
        """The answer to a status request (ExecType I): a snapshot, not a change."""
        return self.exec_type == ExecType.ORDER_STATUS

    @property
    def is_fill(self) -> bool:
        return self.exec_type in FILL_EXEC_TYPES and self.last_qty is not None and self.last_qty > 0

    @property
    def unknown_order(self) -> bool:
        """The broker does not know the order (OrdStatus Rejected, OrdRejReason 5 "unknown
        order"): its answer to a status request, whether it says ExecType I (FIX 4.4) or
        ExecType Rejected (as some brokers do). Never a change of the order: an order the broker
        took and then rejected carries another reason."""
        return self.ord_status == OrdStatus.REJECTED and self.ord_rej_reason == ORD_REJ_UNKNOWN_ORDER

    @property
    def answers_status_request(self) -> bool:
        """A snapshot answering an OrderStatusRequest, not a change to record: ExecType I, or
        "unknown order" (see `unknown_order`)."""
        return self.is_status or self.unknown_order


def parse_execution_report(message: Message, *, received_at: datetime) -> ExecutionReport:
    """Raises ValueError when a required field is missing or a number is malformed/negative."""
    exec_type = message.require(Tag.EXEC_TYPE)
    ord_status = message.require(Tag.ORD_STATUS)
    if exec_type not in _EXEC_TYPES or ord_status not in _ORD_STATUSES:
        raise ValueError(f"unknown ExecType {exec_type!r} or OrdStatus {ord_status!r}")
    cum_qty = message.decimal(Tag.CUM_QTY)
    if cum_qty is None:
        raise ValueError("ExecutionReport without CumQty (14)")
    report = ExecutionReport(
        cl_ord_id=message.require(Tag.CL_ORD_ID),
        exec_id=message.require(Tag.EXEC_ID),
        exec_type=exec_type,
        ord_status=ord_status,
        cum_qty=cum_qty,
        transact_time=(
            message.timestamp(Tag.TRANSACT_TIME) or message.timestamp(Tag.SENDING_TIME) or received_at
        ),
        seq=message.seq,
        orig_cl_ord_id=message.text(Tag.ORIG_CL_ORD_ID),
        order_id=message.text(Tag.ORDER_ID),
        last_qty=message.decimal(Tag.LAST_QTY),
        last_px=message.decimal(Tag.LAST_PX),
        avg_px=message.decimal(Tag.AVG_PX),
        commission=message.decimal(Tag.COMMISSION),
        comm_type=message.text(Tag.COMM_TYPE),
        last_mkt=message.text(Tag.LAST_MKT),
        text=message.text(Tag.TEXT),
        ord_rej_reason=message.text(Tag.ORD_REJ_REASON),
        status_req_id=message.text(Tag.ORD_STATUS_REQ_ID),
    )
    if _negative(report.cum_qty, report.last_qty, report.last_px, report.avg_px):
        raise ValueError("negative quantity or price")
    if report.is_fill and (report.last_px is None or report.last_px <= 0):
        raise ValueError("fill without a positive LastPx (31)")
    return report


def _negative(*values: Decimal | None) -> bool:
    return any(value is not None and value < 0 for value in values)


def fill_fee(
    report: ExecutionReport, previous_cumulative: Decimal | None, reporting: CommissionReporting
) -> Decimal | None:
    """What this fill cost. `previous_cumulative` is the Commission of the order's previous fill
    report (cumulative reporting only). CommType (13): 3 or absent absolute, 1 per unit (times
    LastQty), 2 percent of the fill's notional (12=0.05 means 0.05 %). None when the CommType is
    one we cannot price (the caller records 0 and says so); 0 when nothing was reported."""
    commission = report.commission
    if commission is None or not report.is_fill:
        return Decimal(0)
    if reporting is CommissionReporting.CUMULATIVE:
        return commission - (previous_cumulative or Decimal(0))
    assert report.last_qty is not None and report.last_px is not None  # is_fill
    if report.comm_type in (None, COMM_TYPE_ABSOLUTE):
        return commission
    if report.comm_type == COMM_TYPE_PER_UNIT:
        return commission * report.last_qty
    if report.comm_type == COMM_TYPE_PERCENT:
        return commission / 100 * report.last_qty * report.last_px
    return None


def order_status(ord_status: str, cum_qty: Decimal) -> BrokerOrderStatus:
    """Our status for a FIX OrdStatus (39); states FIX has and we do not (pending cancel,
    stopped, suspended, done for day, ...) count as open: accepted or partially filled."""
    fixed = _FINAL_STATUS.get(ord_status)
    if fixed is not None:
        return fixed
    return BrokerOrderStatus.PARTIALLY_FILLED if cum_qty > 0 else BrokerOrderStatus.ACCEPTED


_FINAL_STATUS = {
    OrdStatus.FILLED.value: BrokerOrderStatus.FILLED,
    OrdStatus.CANCELED.value: BrokerOrderStatus.CANCELED,
    OrdStatus.REJECTED.value: BrokerOrderStatus.REJECTED,
    OrdStatus.EXPIRED.value: BrokerOrderStatus.EXPIRED,
    OrdStatus.PENDING_NEW.value: BrokerOrderStatus.PENDING,
}


def snapshot_of(report: ExecutionReport, client_order_id: str) -> BrokerOrderSnapshot:
    average = report.avg_px if report.avg_px and report.cum_qty > 0 else None
    return BrokerOrderSnapshot(
        client_order_id=client_order_id,
        broker_order_id=report.order_id or "",
        status=order_status(report.ord_status, report.cum_qty),
        filled_quantity=report.cum_qty,
        average_price=average,
    )


def events_of(
    report: ExecutionReport, *, client_order_id: str, fee: Decimal, venue: str
) -> list[AnyBrokerEvent]:
    """The broker events one (new, non-duplicate) ExecutionReport stands for."""
    at = report.transact_time
    exec_type = report.exec_type
    if exec_type == ExecType.NEW:
        return [OrderAccepted(client_order_id, at, broker_order_id=report.order_id or "")]
    if report.is_fill:
        assert report.last_qty is not None and report.last_px is not None
        return [
            OrderFilled(
                client_order_id,
                at,
                fill_id=report.exec_id,
                quantity=report.last_qty,
                price=report.last_px,
                fee=fee,
                venue=report.last_mkt or venue,
                broker_order_id=report.order_id,
                cumulative_quantity=report.cum_qty,
            )
        ]
    if exec_type == ExecType.CANCELED:
        return [OrderCanceled(client_order_id, at, reason=report.text or "")]
    if exec_type == ExecType.REJECTED:
        return [OrderRejected(client_order_id, at, reason=report.text or "rejected by the broker")]
    if exec_type == ExecType.EXPIRED:
        return [OrderExpired(client_order_id, at, reason=report.text or "")]
    return []
