"""Application messages <-> our order model: fields of the requests, execution reports into
events, snapshots and fees."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters.base import SubmitRequest
from adapters.fix.codec import Message, encode_message, parse_frame
from adapters.fix.config import CommissionReporting
from adapters.fix.orders import (
    ExecutionReport,
    events_of,
    fill_fee,
    new_order_single,
    order_details,
    order_status,
    parse_execution_report,
    snapshot_of,
)
from api.enums import AssetClass, BrokerOrderStatus, OrderType, Side, TimeInForce
from api.events import OrderAccepted, OrderCanceled, OrderExpired, OrderFilled, OrderRejected

D = Decimal
T0 = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)


def report_message(*fields: tuple[int, str]) -> Message:
    header = [(49, "BROKER"), (56, "BIS"), (34, "9"), (52, "20240603-14:30:00.000")]
    return parse_frame(encode_message("8", header, list(fields)))


def report(**changes: object) -> ExecutionReport:
    values: dict[str, object] = {
        "cl_ord_id": "c1",
        "exec_id": "E1",
        "exec_type": "F",
        "ord_status": "1",
        "cum_qty": D(4),
        "transact_time": T0,
        "seq": 9,
        "order_id": "O1",
        "last_qty": D(4),
        "last_px": D(50),
        "commission": D("0.2"),
    }
    values.update(changes)
    return ExecutionReport(**values)  # type: ignore[arg-type]


def test_new_order_single_fields() -> None:
    request = SubmitRequest(
        client_order_id="c1",
        account_id="acct",
        symbol="EUR/USD",
        asset_class=AssetClass.FOREX,
        side=Side.BUY,
        order_type=OrderType.STOP_LIMIT,
        quantity=D("1E+6"),
        time_in_force=TimeInForce.IOC,
        price=D("1.08500"),
        stop_price=D("1.0840"),
    )
    fields = dict(new_order_single(request, account="ACC", transact_time=T0))
    assert fields == {
        11: "c1",
        1: "ACC",
        55: "EUR/USD",
        54: "1",
        60: "20240603-14:30:00.000",
        38: "1000000",
        40: "4",
        44: "1.085",
        99: "1.084",
        59: "3",
    }
    stored = parse_frame(encode_message("D", [(34, "1")], list(fields.items())))
    details = order_details(stored)
    assert (details.symbol, details.side, details.quantity) == ("EUR/USD", Side.BUY, D(1_000_000))


def test_parse_execution_report_and_its_errors() -> None:
    parsed = parse_execution_report(
        report_message(
            (37, "O1"),
            (11, "cxl-1"),
            (41, "c1"),
            (17, "E9"),
            (150, "4"),
            (39, "4"),
            (14, "0"),
            (60, "20240603-14:31:00.000"),
        ),
        received_at=T0,
    )
    assert (parsed.cl_ord_id, parsed.orig_cl_ord_id, parsed.exec_type) == ("cxl-1", "c1", "4")
    assert parsed.transact_time == datetime(2024, 6, 3, 14, 31, tzinfo=UTC)
    with pytest.raises(ValueError, match="required tag 17"):
        parse_execution_report(report_message((11, "c1"), (150, "0"), (39, "0"), (14, "0")), received_at=T0)
    with pytest.raises(ValueError, match="negative"):
        parse_execution_report(
            report_message((11, "c1"), (17, "E"), (150, "0"), (39, "0"), (14, "-1")), received_at=T0
        )
    with pytest.raises(ValueError, match="LastPx"):
        parse_execution_report(
            report_message((11, "c1"), (17, "E"), (150, "F"), (39, "1"), (14, "1"), (32, "1")), received_at=T0
        )
    with pytest.raises(ValueError, match="unknown ExecType"):
        parse_execution_report(
            report_message((11, "c1"), (17, "E"), (150, "Z"), (39, "0"), (14, "0")), received_at=T0
        )


def test_events_per_exec_type() -> None:
    def events(**changes: object) -> list[object]:
        return list(events_of(report(**changes), client_order_id="c1", fee=D("0.2"), venue="SESSION"))

    assert events(exec_type="0", ord_status="0", last_qty=None) == [
        OrderAccepted("c1", T0, broker_order_id="O1")
    ]
    assert events() == [
        OrderFilled(
            "c1",
            T0,
            fill_id="E1",
            quantity=D(4),
            price=D(50),
            fee=D("0.2"),
            venue="SESSION",
            broker_order_id="O1",
            cumulative_quantity=D(4),  # CumQty: tells a late report from a new fill
        )
    ]
    assert events(last_mkt="XNAS")[0].venue == "XNAS"  # type: ignore[attr-defined]
    assert events(exec_type="4", ord_status="4", text="user") == [OrderCanceled("c1", T0, reason="user")]
    assert events(exec_type="8", ord_status="8", text=None) == [
        OrderRejected("c1", T0, reason="rejected by the broker")
    ]
    assert events(exec_type="C", ord_status="C") == [OrderExpired("c1", T0)]
    assert events(exec_type="F", last_qty=D(0)) == []
    assert events(exec_type="6", ord_status="6") == []
    assert events(exec_type="I", ord_status="1") == []


def test_order_status_mapping() -> None:
    assert order_status("0", D(0)) is BrokerOrderStatus.ACCEPTED
    assert order_status("1", D(2)) is BrokerOrderStatus.PARTIALLY_FILLED
    assert order_status("2", D(5)) is BrokerOrderStatus.FILLED
    assert order_status("6", D(0)) is BrokerOrderStatus.ACCEPTED  # pending cancel: still open
    assert order_status("6", D(1)) is BrokerOrderStatus.PARTIALLY_FILLED
    assert order_status("A", D(0)) is BrokerOrderStatus.PENDING
    assert order_status("C", D(1)) is BrokerOrderStatus.EXPIRED


def test_status_reports_as_snapshots() -> None:
    status = report(exec_type="I", ord_status="1", last_qty=None, avg_px=D("50.5"))
    snapshot = snapshot_of(status, "c1")
    assert (snapshot.status, snapshot.filled_quantity, snapshot.average_price) == (
        BrokerOrderStatus.PARTIALLY_FILLED,
        D(4),
        D("50.5"),
    )
    unknown = report(exec_type="I", ord_status="8", ord_rej_reason="5", cum_qty=D(0), last_qty=None)
    assert unknown.unknown_order and unknown.answers_status_request
    assert not report(exec_type="I", ord_status="8", ord_rej_reason="3").unknown_order
    # Some brokers answer a status request for an order they do not know with ExecType 8:
    # still "unknown order" (the query's None), never a rejection of our order.
    rejected_unknown = report(exec_type="8", ord_status="8", ord_rej_reason="5", cum_qty=D(0), last_qty=None)
    assert rejected_unknown.unknown_order and rejected_unknown.answers_status_request
    refused = report(exec_type="8", ord_status="8", ord_rej_reason="3", cum_qty=D(0), last_qty=None)
    assert not refused.answers_status_request  # a real rejection: recorded, OrderRejected


def test_fees_by_comm_type_and_reporting() -> None:
    per_fill = CommissionReporting.PER_FILL
    assert fill_fee(report(), None, per_fill) == D("0.2")
    assert fill_fee(report(comm_type="3"), None, per_fill) == D("0.2")
    assert fill_fee(report(comm_type="1", commission=D("0.01")), None, per_fill) == D("0.04")
    assert fill_fee(report(comm_type="2", commission=D("0.5")), None, per_fill) == D("1")  # 0.5 % of 200
    assert fill_fee(report(comm_type="6"), None, per_fill) is None
    assert fill_fee(report(commission=None), None, per_fill) == 0
    assert fill_fee(report(exec_type="0", last_qty=None), None, per_fill) == 0
    cumulative = CommissionReporting.CUMULATIVE
    assert fill_fee(report(commission=D("0.5")), D("0.2"), cumulative) == D("0.3")
    assert fill_fee(report(commission=D("0.5")), None, cumulative) == D("0.5")
