"""Translation tables and functions: every Alpaca word alpaca-py knows has a meaning here."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from alpaca.trading.enums import OrderStatus, TradeEvent

from adapters.alpaca.translate import (
    ORDER_STATUSES,
    TRADE_EVENTS,
    IncompleteExecution,
    UnknownAlpacaWord,
    broker_status,
    decimal_text,
    event_from_update,
    fill_from_activity,
    fill_id,
    final_event,
    order_body,
    order_problem,
    snapshot,
)
from adapters.alpaca.wire import AlpacaOrder, FillActivity, TradeUpdate
from adapters.base import SubmitRequest
from api.enums import AssetClass, BrokerOrderStatus, OrderType, Side, TimeInForce
from api.events import OrderAccepted, OrderCanceled, OrderExpired, OrderFilled, OrderRejected

D = Decimal
T0 = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)
ORDER_ID = "904837e3-3b76-47ec-b432-046db621571b"


def no_fee(notional: Decimal) -> Decimal:
    return D(0)


def alpaca_order(status: str, *, qty: str = "10", filled: str = "0", **changes: object) -> AlpacaOrder:
    fields: dict[str, object] = {
        "id": ORDER_ID,
        "client_order_id": "c-1",
        "status": status,
        "submitted_at": T0,
        "qty": D(qty),
        "filled_qty": D(filled),
        "filled_avg_price": D("101.5") if D(filled) > 0 else None,
        "updated_at": T0,
    }
    fields.update(changes)
    return AlpacaOrder(**fields)  # type: ignore[arg-type]


def request(**changes: object) -> SubmitRequest:
    fields: dict[str, object] = {
        "client_order_id": "c-1",
        "account_id": "acct",
        "symbol": "AAPL",
        "asset_class": AssetClass.EQUITY,
        "side": Side.BUY,
        "order_type": OrderType.LIMIT,
        "quantity": D("10"),
        "time_in_force": TimeInForce.DAY,
        "price": D("101.50"),
    }
    fields.update(changes)
    return SubmitRequest(**fields)  # type: ignore[arg-type]


# --- tables ----------------------------------------------------------------------------------


def test_every_order_status_alpaca_py_knows_has_a_meaning() -> None:
    assert {status.value for status in OrderStatus} <= set(ORDER_STATUSES)


def test_every_trade_event_alpaca_py_knows_has_a_meaning() -> None:
    assert {event.value for event in TradeEvent} <= set(TRADE_EVENTS)


EXPECTED_STATUS = {
    # (alpaca status, filled of 10) -> ours
    ("new", "0"): BrokerOrderStatus.ACCEPTED,
    ("accepted", "0"): BrokerOrderStatus.ACCEPTED,
    ("pending_new", "0"): BrokerOrderStatus.ACCEPTED,
    ("accepted_for_bidding", "0"): BrokerOrderStatus.ACCEPTED,
    ("pending_review", "0"): BrokerOrderStatus.ACCEPTED,
    ("held", "0"): BrokerOrderStatus.ACCEPTED,
    ("stopped", "0"): BrokerOrderStatus.ACCEPTED,
    ("suspended", "0"): BrokerOrderStatus.ACCEPTED,
    ("pending_cancel", "0"): BrokerOrderStatus.ACCEPTED,
    ("pending_replace", "4"): BrokerOrderStatus.PARTIALLY_FILLED,
    ("partially_filled", "4"): BrokerOrderStatus.PARTIALLY_FILLED,
    ("done_for_day", "4"): BrokerOrderStatus.PARTIALLY_FILLED,
    ("calculated", "10"): BrokerOrderStatus.FILLED,
    ("calculated", "4"): BrokerOrderStatus.PARTIALLY_FILLED,
    ("filled", "10"): BrokerOrderStatus.FILLED,
    ("canceled", "0"): BrokerOrderStatus.CANCELED,
    ("canceled", "4"): BrokerOrderStatus.CANCELED,
    ("replaced", "0"): BrokerOrderStatus.CANCELED,
    ("expired", "4"): BrokerOrderStatus.EXPIRED,
    ("rejected", "0"): BrokerOrderStatus.REJECTED,
}


@pytest.mark.parametrize(("status", "filled"), sorted(EXPECTED_STATUS))
def test_order_status_translation(status: str, filled: str) -> None:
    assert broker_status(alpaca_order(status, filled=filled)) is EXPECTED_STATUS[status, filled]


def test_every_status_in_the_table_is_covered_by_the_expectations() -> None:
    assert {status for status, _ in EXPECTED_STATUS} == set(ORDER_STATUSES)


def test_unknown_status_is_not_guessed() -> None:
    with pytest.raises(UnknownAlpacaWord):
        broker_status(alpaca_order("teleported"))


def test_snapshot_reports_average_price_only_with_fills() -> None:
    partial = snapshot(alpaca_order("partially_filled", filled="4"))
    assert (partial.status, partial.filled_quantity, partial.average_price) == (
        BrokerOrderStatus.PARTIALLY_FILLED,
        D(4),
        D("101.5"),
    )
    assert partial.broker_order_id == ORDER_ID
    assert snapshot(alpaca_order("new")).average_price is None


# --- trade updates ---------------------------------------------------------------------------


def update(event: str, **changes: object) -> TradeUpdate:
    order_status = {"fill": "filled", "partial_fill": "partially_filled"}.get(event, event)
    order = alpaca_order(order_status if order_status in ORDER_STATUSES else "new", filled="0")
    fields: dict[str, object] = {"event": event, "order": order, "timestamp": T0}
    fields.update(changes)
    return TradeUpdate(**fields)  # type: ignore[arg-type]


EXPECTED_EVENT: dict[str, type | None] = {
    "pending_new": OrderAccepted,
    "accepted": OrderAccepted,
    "new": OrderAccepted,
    "canceled": OrderCanceled,
    "replaced": OrderCanceled,
    "expired": OrderExpired,
    "rejected": OrderRejected,
    "done_for_day": None,
    "pending_cancel": None,
    "pending_replace": None,
    "calculated": None,
    "stopped": None,
    "suspended": None,
    "held": None,
    "restated": None,
    "order_cancel_rejected": None,
    "order_replace_rejected": None,
}


@pytest.mark.parametrize("event", sorted(EXPECTED_EVENT))
def test_non_fill_trade_update_translation(event: str) -> None:
    translated = event_from_update(update(event), venue="ALPACA", fee_for=no_fee)
    expected = EXPECTED_EVENT[event]
    if expected is None:
        assert translated is None
    else:
        assert translated is not None and type(translated) is expected
        assert translated.client_order_id == "c-1"
        assert translated.at == T0


def test_every_event_in_the_table_is_covered_by_the_expectations() -> None:
    assert set(EXPECTED_EVENT) | {"fill", "partial_fill"} == set(TRADE_EVENTS)


def test_fill_update_carries_this_execution_and_a_cumulative_fill_id() -> None:
    order = alpaca_order("partially_filled", filled="4")
    fill = event_from_update(
        TradeUpdate(event="partial_fill", order=order, timestamp=T0, qty=D("1.5"), price=D("101.25")),
        venue="ALPACA",
        fee_for=lambda notional: notional * D("0.001"),
    )
    assert isinstance(fill, OrderFilled)
    assert (fill.quantity, fill.price, fill.fee) == (D("1.5"), D("101.25"), D("0.151875"))
    assert fill.fill_id == f"{ORDER_ID}:4"
    assert fill.broker_order_id == ORDER_ID


def test_fill_update_without_quantity_is_not_guessed() -> None:
    with pytest.raises(IncompleteExecution):
        event_from_update(update("fill", price=D(1)), venue="ALPACA", fee_for=no_fee)


def test_unknown_trade_update_event_is_not_guessed() -> None:
    with pytest.raises(UnknownAlpacaWord):
        event_from_update(update("teleported"), venue="ALPACA", fee_for=no_fee)


def test_replaced_order_is_canceled_with_the_replacement_named() -> None:
    replaced = update("replaced", order=alpaca_order("replaced", replaced_by="new-order-id"))
    translated = event_from_update(replaced, venue="ALPACA", fee_for=no_fee)
    assert isinstance(translated, OrderCanceled)
    assert "new-order-id" in translated.reason


def test_final_event_of_a_closed_order() -> None:
    assert isinstance(final_event(alpaca_order("canceled"), T0), OrderCanceled)
    assert isinstance(final_event(alpaca_order("expired"), T0), OrderExpired)
    assert isinstance(final_event(alpaca_order("rejected"), T0), OrderRejected)
    assert final_event(alpaca_order("filled", filled="10"), T0) is None
    assert final_event(alpaca_order("new"), T0) is None


# --- fill ids --------------------------------------------------------------------------------


def test_stream_and_activity_give_the_same_fill_the_same_id() -> None:
    order = alpaca_order("partially_filled", filled="4.000")
    streamed = event_from_update(
        TradeUpdate(event="partial_fill", order=order, timestamp=T0, qty=D(4), price=D(100)),
        venue="ALPACA",
        fee_for=no_fee,
    )
    activity = FillActivity(
        id="20240603143000000::0ef90479-4a4a-44e4-b7a2-a4186c0d7dfb",
        transaction_time=T0,
        order_id=ORDER_ID,
        qty=D("4"),
        price=D("100"),
        cum_qty=D("4"),
    )
    recovered = fill_from_activity(activity, "c-1", venue="ALPACA", fee_for=no_fee)
    assert isinstance(streamed, OrderFilled)
    assert recovered.fill_id == streamed.fill_id
    assert (recovered.quantity, recovered.price, recovered.client_order_id) == (D(4), D(100), "c-1")


def test_fill_ids_are_canonical() -> None:
    assert fill_id("o", D("10.000")) == fill_id("o", D("1E+1")) == "o:10"
    assert fill_id("o", D("0.500")) == "o:0.5"


# --- outgoing --------------------------------------------------------------------------------


def test_decimal_text_is_plain_and_exact() -> None:
    assert decimal_text(D("100")) == "100"
    assert decimal_text(D("1E+2")) == "100"
    assert decimal_text(D("0.000000001")) == "0.000000001"
    assert decimal_text(D("101.50")) == "101.5"
    assert decimal_text(D("0.00")) == "0"


def test_order_body_sends_exact_decimal_strings_and_the_client_order_id() -> None:
    body = order_body(request(order_type=OrderType.STOP_LIMIT, stop_price=D("100.25"), quantity=D("0.5")))
    assert body == {
        "symbol": "AAPL",
        "qty": "0.5",
        "side": "buy",
        "type": "stop_limit",
        "time_in_force": "day",
        "client_order_id": "c-1",
        "limit_price": "101.5",
        "stop_price": "100.25",
    }


@pytest.mark.parametrize(
    ("order_type", "tif", "side", "wire"),
    [
        (OrderType.MARKET, TimeInForce.GTC, Side.SELL, ("market", "gtc", "sell")),
        (OrderType.LIMIT, TimeInForce.IOC, Side.BUY, ("limit", "ioc", "buy")),
        (OrderType.STOP, TimeInForce.FOK, Side.SELL, ("stop", "fok", "sell")),
        (OrderType.STOP_LIMIT, TimeInForce.DAY, Side.BUY, ("stop_limit", "day", "buy")),
    ],
)
def test_order_type_time_in_force_and_side_translation(
    order_type: OrderType, tif: TimeInForce, side: Side, wire: tuple[str, str, str]
) -> None:
    body = order_body(request(order_type=order_type, time_in_force=tif, side=side, stop_price=D(99)))
    assert (body["type"], body["time_in_force"], body["side"]) == wire
    assert ("limit_price" in body) == order_type.needs_price
    assert ("stop_price" in body) == order_type.needs_stop_price


def test_crypto_symbol_and_fractional_quantity() -> None:
    body = order_body(
        request(
            symbol="BTC-USD",
            asset_class=AssetClass.CRYPTO,
            order_type=OrderType.MARKET,
            time_in_force=TimeInForce.GTC,
            quantity=D("0.123456789"),
            price=None,
        )
    )
    assert (body["symbol"], body["qty"]) == ("BTC/USD", "0.123456789")


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"asset_class": AssetClass.FOREX, "symbol": "EUR/USD"}, "does not trade"),
        ({"quantity": D(0)}, "quantity"),
        ({"price": None}, "price"),
        ({"order_type": OrderType.STOP, "stop_price": None}, "stop price"),
        ({"asset_class": AssetClass.CRYPTO, "symbol": "BTC-USD", "time_in_force": TimeInForce.DAY}, "GTC"),
        (
            {"asset_class": AssetClass.CRYPTO, "order_type": OrderType.STOP, "stop_price": D(1)},
            "STOP orders for crypto",
        ),
    ],
)
def test_orders_alpaca_cannot_take_are_refused_locally(changes: dict[str, object], problem: str) -> None:
    reason = order_problem(request(**changes))
    assert reason is not None and problem in reason


def test_valid_orders_have_no_problem() -> None:
    assert order_problem(request()) is None
    crypto = request(asset_class=AssetClass.CRYPTO, symbol="ETH-USD", time_in_force=TimeInForce.IOC)
    assert order_problem(crypto) is None
