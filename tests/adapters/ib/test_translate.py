"""The pure parts of the IB adapter: contracts, orders, statuses, fill ids, codes, the ledger."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters.ib.codes import CodeKind, LinkState, classify
from adapters.ib.ledger import FillLedger, Verdict
from adapters.ib.orders import OrderBook
from adapters.ib.translate import (
    IB_STATUSES,
    ContractSpec,
    broker_status,
    contract_spec,
    fill_id,
    filter_time,
    order_problem,
    order_spec,
)
from adapters.ib.wire import IbCommission, IbExecution, IbOrderState, decimal
from api.enums import AssetClass, BrokerOrderStatus, ConnectionStatus, OrderType, TimeInForce
from api.events import OrderAccepted, OrderCanceled, OrderRejected
from tests.adapters.ib.test_broker import order

EVERYTHING = frozenset(AssetClass)
ALL_TIF = frozenset(TimeInForce)
AT = datetime(2025, 1, 2, 15, 30, tzinfo=UTC)


def state(status: str, **fields: object) -> IbOrderState:
    base: dict[str, object] = dict(
        order_ref="c-1",
        order_id=5,
        client_id=17,
        perm_id=99,
        status=status,
        quantity=Decimal(10),
        filled=Decimal(0),
        average_price=None,
    )
    base.update(fields)
    return IbOrderState(**base)  # type: ignore[arg-type]


def execution(exec_id: str, shares: str = "10", price: str = "100") -> IbExecution:
    return IbExecution(
        exec_id=exec_id,
        order_ref="c-1",
        order_id=5,
        client_id=17,
        perm_id=99,
        shares=Decimal(shares),
        price=Decimal(price),
        cumulative=Decimal(shares),
        average_price=Decimal(price),
        at=AT,
        exchange="NASDAQ",
        side="BOT",
        account="DU1",
    )


@pytest.mark.parametrize(
    ("symbol", "asset_class", "expected"),
    [
        ("AAPL", AssetClass.EQUITY, ContractSpec("AAPL", "STK", "SMART", "USD")),
        ("EUR/USD", AssetClass.FOREX, ContractSpec("EUR", "CASH", "IDEALPRO", "USD")),
        ("GBP-JPY", AssetClass.FOREX, ContractSpec("GBP", "CASH", "IDEALPRO", "JPY")),
        ("EURCHF", AssetClass.FOREX, ContractSpec("EUR", "CASH", "IDEALPRO", "CHF")),
        ("BTC", AssetClass.CRYPTO, ContractSpec("BTC", "CRYPTO", "PAXOS", "USD")),
        ("ETH-USD", AssetClass.CRYPTO, ContractSpec("ETH", "CRYPTO", "PAXOS", "USD")),
    ],
)
def test_instruments_become_ib_contracts(
    symbol: str, asset_class: AssetClass, expected: ContractSpec
) -> None:
    assert contract_spec(symbol, asset_class) == expected


def test_orders_carry_the_client_order_id_as_order_ref_and_ibs_words() -> None:
    spec = order_spec(
        order("c-9", order_type=OrderType.STOP_LIMIT, price=Decimal("10.5"), stop_price=Decimal(11))
    )
    assert (spec.order_ref, spec.order_type, spec.limit_price, spec.aux_price) == (
        "c-9",
        "STP LMT",
        10.5,
        11.0,
    )
    assert order_spec(order("c-1", order_type=OrderType.STOP, stop_price=Decimal(9))).aux_price == 9.0


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"asset_class": AssetClass.OPTIONS}, "does not trade"),
        ({"time_in_force": TimeInForce.FOK}, "FOK"),
        ({"quantity": Decimal(0)}, "positive"),
        ({"order_type": OrderType.LIMIT}, "price"),
        ({"quantity": Decimal("1.00000000000000001")}, "digits"),
        (
            {"asset_class": AssetClass.CRYPTO, "symbol": "BTC", "time_in_force": TimeInForce.DAY},
            "GTC and IOC",
        ),
        (
            {
                "asset_class": AssetClass.CRYPTO,
                "symbol": "BTC",
                "order_type": OrderType.STOP,
                "stop_price": Decimal(1),
                "time_in_force": TimeInForce.IOC,
            },
            "crypto",
        ),
    ],
)
def test_orders_ib_cannot_take_are_refused_locally(fields: dict[str, object], problem: str) -> None:
    allowed = frozenset({TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC})
    found = order_problem(order("c-1", **fields), frozenset({AssetClass.EQUITY, AssetClass.CRYPTO}), allowed)
    assert found is not None and problem in found


def test_every_ib_status_maps_and_an_unknown_one_is_not_guessed() -> None:
    assert broker_status(state("PendingSubmit")) is BrokerOrderStatus.PENDING
    assert broker_status(state("PreSubmitted")) is BrokerOrderStatus.ACCEPTED
    assert broker_status(state("Submitted", filled=Decimal(4))) is BrokerOrderStatus.PARTIALLY_FILLED
    assert broker_status(state("Filled", filled=Decimal(10))) is BrokerOrderStatus.FILLED
    assert broker_status(state("ApiCancelled")) is BrokerOrderStatus.CANCELED
    assert broker_status(state("Cancelled", filled=Decimal(4))) is BrokerOrderStatus.CANCELED
    assert broker_status(state("Inactive")) is BrokerOrderStatus.ACCEPTED  # no error: still there
    assert (
        broker_status(state("Inactive", rejection_code=201, rejection_message="no"))
        is BrokerOrderStatus.REJECTED
    )
    assert broker_status(state("Cancelled", error_code=201, error_message="no")) is BrokerOrderStatus.REJECTED
    assert broker_status(state("Cancelled", error_code=202)) is BrokerOrderStatus.CANCELED
    assert set(IB_STATUSES) >= {
        "PendingSubmit",
        "PreSubmitted",
        "Submitted",
        "Filled",
        "Cancelled",
        "Inactive",
    }
    with pytest.raises(ValueError, match="Exploded"):
        broker_status(state("Exploded"))


def test_order_events_are_emitted_once_and_cancel_answers_are_not_order_news() -> None:
    book = OrderBook()
    assert book.update(state("PendingSubmit"), AT) == []
    (accepted,) = book.update(state("Submitted"), AT)
    assert isinstance(accepted, OrderAccepted) and accepted.broker_order_id == "99"
    assert book.update(state("Submitted"), AT) == []
    assert book.update(state("Cancelled", error_code=10148), AT) == []  # ib_async's mark of a refused cancel
    (canceled,) = book.update(state("Cancelled", error_code=202, error_message="Order Canceled"), AT)
    assert isinstance(canceled, OrderCanceled)
    assert book.update(state("Submitted"), AT) == []  # a stale lookup never reopens it

    rejected_book = OrderBook()
    (rejected,) = rejected_book.update(state("Cancelled", error_code=201, error_message="margin"), AT)
    assert isinstance(rejected, OrderRejected) and "201" in rejected.reason
    assert rejected_book.update(state("Inactive", rejection_code=201, rejection_message="margin"), AT) == []


def test_fill_ids_drop_the_correction_suffix() -> None:
    assert fill_id("0000e0d5.6581b3f2.01.01") == "0000e0d5.6581b3f2.01"
    assert fill_id("0000e0d5.6581b3f2.01.02") == fill_id("0000e0d5.6581b3f2.01.01")
    assert fill_id("plain") == "plain"


def test_the_ledger_joins_commissions_and_books_each_fill_once() -> None:
    ledger = FillLedger()
    assert ledger.execution(execution("a.b.01.01"), due=10.0) is Verdict.NEW
    assert ledger.execution(execution("a.b.01.01"), due=10.0) is Verdict.REPEAT
    assert ledger.execution(execution("a.b.01.02", price="99"), due=10.0) is Verdict.CORRECTION
    assert ledger.next_due() == 10.0
    joined = ledger.commission(IbCommission("a.b.01.01", Decimal("1.25"), "USD"))
    assert joined is not None and joined[1].commission == Decimal("1.25")
    assert ledger.commission(IbCommission("x.y.01.01", Decimal(1), "USD")) is None  # early: kept
    assert ledger.execution(execution("x.y.01.01"), due=10.0) is Verdict.NEW
    assert ledger.early_commission("x.y.01.01") is not None
    assert ledger.execution(execution("late.01.01"), due=5.0) is Verdict.NEW
    assert [e.exec_id for e in ledger.due(4.0)] == [] and [e.exec_id for e in ledger.due(5.0)] == [
        "late.01.01"
    ]


def test_connectivity_and_farm_codes_make_the_status() -> None:
    link = LinkState()
    assert link.apply(2104, "Market data farm connection is OK:usfarm") is None
    assert link.apply(2103, "Market data farm connection is broken:usfarm") is ConnectionStatus.DEGRADED
    assert link.apply(2105, "HMDS data farm connection is broken:ushmds") is None  # still degraded
    assert link.apply(1100, "Connectivity between IB and TWS has been lost.") is ConnectionStatus.DISCONNECTED
    assert link.apply(1102, "restored- data maintained") is ConnectionStatus.DEGRADED
    assert link.apply(2104, "Market data farm connection is OK:usfarm") is None
    assert link.apply(2106, "HMDS data farm connection is OK:ushmds") is ConnectionStatus.CONNECTED
    assert link.apply(399, "warning") is None
    assert classify(326) is CodeKind.CLIENT_ID_IN_USE and classify(10147) is CodeKind.CANCEL_ANSWER
    assert classify(202) is CodeKind.CANCELED and classify(2158) is CodeKind.FARM
    assert classify(201) is CodeKind.ERROR and classify(2137) is CodeKind.WARNING


def test_floats_from_ib_become_exact_decimals_and_filter_times_are_utc() -> None:
    assert decimal(100.02) == Decimal("100.02")
    assert decimal(1.7976931348623157e308) is None
    assert (
        filter_time(datetime(2025, 1, 2, 15, 30, 5, 900_000, tzinfo=UTC).timestamp()) == "20250102-15:30:05"
    )
