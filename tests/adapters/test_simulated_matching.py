"""The matching engine: pure, so every case is driven by hand with explicit quotes."""

from __future__ import annotations

import time
import tracemalloc
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.base import CancelRejected, SubmitRequest
from adapters.simulated import matching
from adapters.simulated.market import QuoteEvent
from adapters.simulated.matching import MatchingEngine, order_problem
from api.commission import commission
from api.contracts import CommissionStructure, TieredRate
from api.enums import (
    AssetClass,
    BrokerOrderStatus,
    ExecutionStrategy,
    OrderType,
    Side,
    TimeInForce,
    Urgency,
)
from api.events import AnyBrokerEvent, OrderAccepted, OrderCanceled, OrderExpired, OrderFilled
from api.lifecycle import apply_event
from api.orders import BrokerOrder

AT = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)
FLAT = CommissionStructure(base_rate=Decimal("0.001"))
D = Decimal


def make_engine(
    *, share: str = "1", structure: CommissionStructure = FLAT, session: str = ""
) -> MatchingEngine:
    return MatchingEngine(
        broker_id="sim", venue="SIMX", commission=structure, liquidity_share=D(share), session=session
    )


def quote(bid: str, ask: str, bid_size: str = "100", ask_size: str = "100") -> QuoteEvent:
    return QuoteEvent("AAPL", D(bid), D(ask), D(bid_size), D(ask_size), AT)


def request(
    client_order_id: str,
    side: Side,
    order_type: OrderType,
    quantity: str,
    tif: TimeInForce = TimeInForce.GTC,
    price: str | None = None,
    stop: str | None = None,
) -> SubmitRequest:
    return SubmitRequest(
        client_order_id=client_order_id,
        account_id="acct",
        symbol="AAPL",
        asset_class=AssetClass.EQUITY,
        side=side,
        order_type=order_type,
        quantity=D(quantity),
        time_in_force=tif,
        price=None if price is None else D(price),
        stop_price=None if stop is None else D(stop),
    )


def fills(events: list[AnyBrokerEvent]) -> list[tuple[str, Decimal, Decimal]]:
    return [(e.client_order_id, e.quantity, e.price) for e in events if isinstance(e, OrderFilled)]


def submit(engine: MatchingEngine, req: SubmitRequest) -> list[AnyBrokerEvent]:
    _, events = engine.submit(req, AT)
    return events


def status(engine: MatchingEngine, client_order_id: str) -> BrokerOrderStatus:
    snapshot = engine.snapshot(client_order_id)
    assert snapshot is not None
    return snapshot.status


# --- market orders ---------------------------------------------------------------------


@pytest.mark.parametrize(("side", "price"), [(Side.BUY, "100.02"), (Side.SELL, "100.00")])
def test_market_order_fills_at_the_far_touch(side: Side, price: str) -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    events = submit(engine, request("o1", side, OrderType.MARKET, "10"))
    assert isinstance(events[0], OrderAccepted)
    assert fills(events) == [("o1", D(10), D(price))]
    assert status(engine, "o1") is BrokerOrderStatus.FILLED
    assert engine.open_orders == 0


def test_market_order_larger_than_top_fills_in_parts_across_quotes() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    events = submit(engine, request("o1", Side.BUY, OrderType.MARKET, "250", TimeInForce.DAY))
    assert fills(events) == [("o1", D(100), D("100.02"))]
    assert status(engine, "o1") is BrokerOrderStatus.PARTIALLY_FILLED
    assert fills(engine.on_quote(quote("100.01", "100.03"))) == [("o1", D(100), D("100.03"))]
    assert fills(engine.on_quote(quote("100.02", "100.04"))) == [("o1", D(50), D("100.04"))]
    assert status(engine, "o1") is BrokerOrderStatus.FILLED
    assert engine.on_quote(quote("100.02", "100.04")) == []


def test_liquidity_share_limits_each_quote_and_rounds_down_to_the_size_decimals() -> None:
    engine = make_engine(share="0.4")
    engine.on_quote(quote("100.00", "100.02", ask_size="101"))
    events = submit(engine, request("o1", Side.BUY, OrderType.MARKET, "100"))
    assert fills(events) == [("o1", D(40), D("100.02"))]  # floor(101 * 0.4) = 40


def test_fractional_sizes_keep_their_decimals() -> None:
    engine = make_engine(share="0.4")
    engine.on_quote(quote("100.00", "100.02", ask_size="2.500"))
    events = submit(engine, request("o1", Side.BUY, OrderType.MARKET, "5"))
    assert fills(events) == [("o1", D("1.000"), D("100.02"))]


def test_each_order_may_take_its_share_of_each_quote() -> None:
    engine = make_engine(share="0.5")
    engine.on_quote(quote("100.00", "100.02"))
    first = submit(engine, request("o1", Side.BUY, OrderType.MARKET, "80"))
    second = submit(engine, request("o2", Side.BUY, OrderType.MARKET, "30"))
    sell = submit(engine, request("o3", Side.SELL, OrderType.MARKET, "80"))
    assert fills(first) == [("o1", D(50), D("100.02"))]
    assert fills(second) == [("o2", D(30), D("100.02"))]
    assert fills(sell) == [("o3", D(50), D("100.00"))]
    assert fills(engine.on_quote(quote("100.00", "100.02"))) == [
        ("o1", D(30), D("100.02")),
        ("o3", D(30), D("100.00")),
    ]


def test_marketable_orders_fill_best_price_first_then_by_arrival() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.10"))
    for name, limit in [("low", "100.03"), ("high", "100.06"), ("high2", "100.06"), ("far", "99.00")]:
        submit(engine, request(name, Side.BUY, OrderType.LIMIT, "10", price=limit))
    submit(engine, request("mkt", Side.BUY, OrderType.MARKET, "200"))  # takes 100, rests 100
    events = engine.on_quote(quote("100.00", "100.03"))
    assert [f[0] for f in fills(events)] == ["mkt", "high", "high2", "low"]
    assert engine.open_orders == 1  # "far"


def test_a_quote_with_no_size_fills_nothing() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02", ask_size="0"))
    assert fills(submit(engine, request("o1", Side.BUY, OrderType.MARKET, "10"))) == []
    assert fills(engine.on_quote(quote("100.00", "100.02"))) == [("o1", D(10), D("100.02"))]


def test_no_quote_yet_means_nothing_is_available() -> None:
    engine = make_engine()
    events = submit(engine, request("o1", Side.BUY, OrderType.MARKET, "10", TimeInForce.DAY))
    assert [type(e) for e in events] == [OrderAccepted]
    assert fills(engine.on_quote(quote("100.00", "100.02"))) == [("o1", D(10), D("100.02"))]


# --- limit orders ----------------------------------------------------------------------


def test_limit_buy_rests_until_the_ask_reaches_it_and_fills_at_the_ask() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.10"))
    events = submit(engine, request("o1", Side.BUY, OrderType.LIMIT, "10", price="100.05"))
    assert fills(events) == []
    assert status(engine, "o1") is BrokerOrderStatus.ACCEPTED
    assert fills(engine.on_quote(quote("100.00", "100.06"))) == []
    assert fills(engine.on_quote(quote("100.00", "100.03"))) == [("o1", D(10), D("100.03"))]


def test_limit_sell_rests_until_the_bid_reaches_it_and_fills_at_the_bid() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.10"))
    assert fills(submit(engine, request("o1", Side.SELL, OrderType.LIMIT, "10", price="100.05"))) == []
    assert fills(engine.on_quote(quote("100.04", "100.10"))) == []
    assert fills(engine.on_quote(quote("100.07", "100.10"))) == [("o1", D(10), D("100.07"))]


@pytest.mark.parametrize(("side", "limit"), [(Side.BUY, "100.02"), (Side.SELL, "100.00")])
def test_marketable_limit_at_the_touch_fills_on_arrival(side: Side, limit: str) -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    events = submit(engine, request("o1", side, OrderType.LIMIT, "10", price=limit))
    assert fills(events) == [("o1", D(10), D(limit))]


def test_trade_print_does_not_fill_a_resting_limit() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.10"))
    submit(engine, request("o1", Side.BUY, OrderType.LIMIT, "10", price="100.05"))
    assert engine.on_trade("AAPL", D("99.00"), AT) == []
    assert status(engine, "o1") is BrokerOrderStatus.ACCEPTED


# --- stops -----------------------------------------------------------------------------


def test_buy_stop_triggers_when_the_ask_reaches_the_stop_then_fills_as_market() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    assert fills(submit(engine, request("o1", Side.BUY, OrderType.STOP, "10", stop="101.00"))) == []
    assert fills(engine.on_quote(quote("100.97", "100.99"))) == []
    assert fills(engine.on_quote(quote("101.00", "101.04"))) == [("o1", D(10), D("101.04"))]


def test_sell_stop_triggers_when_the_bid_reaches_the_stop_then_fills_as_market() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    assert fills(submit(engine, request("o1", Side.SELL, OrderType.STOP, "10", stop="99.00"))) == []
    assert fills(engine.on_quote(quote("99.01", "99.03"))) == []
    assert fills(engine.on_quote(quote("98.95", "99.00"))) == [("o1", D(10), D("98.95"))]


@pytest.mark.parametrize(
    ("side", "stop", "miss", "hit", "price"),
    [
        (Side.BUY, "101.00", "100.99", "101.00", "100.02"),
        (Side.SELL, "99.00", "99.01", "99.00", "100.00"),
    ],
)
def test_stop_triggered_by_a_trade_print(side: Side, stop: str, miss: str, hit: str, price: str) -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    submit(engine, request("o1", side, OrderType.STOP, "10", stop=stop))
    assert engine.on_trade("AAPL", D(miss), AT) == []
    assert fills(engine.on_trade("AAPL", D(hit), AT)) == [("o1", D(10), D(price))]


def test_stop_already_through_the_market_triggers_on_arrival() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    events = submit(engine, request("o1", Side.BUY, OrderType.STOP, "10", stop="99.50"))
    assert fills(events) == [("o1", D(10), D("100.02"))]


def test_stop_limit_triggers_then_waits_for_its_limit_and_stays_triggered() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    submit(engine, request("o1", Side.BUY, OrderType.STOP_LIMIT, "10", price="101.02", stop="101.00"))
    assert fills(engine.on_quote(quote("101.03", "101.05"))) == []  # triggered, above the limit
    order = engine.order("o1")
    assert order is not None
    assert order.triggered
    assert fills(engine.on_quote(quote("100.95", "100.97"))) == [("o1", D(10), D("100.97"))]


def test_sell_stop_limit_fills_at_the_bid_once_triggered_and_marketable() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    submit(engine, request("o1", Side.SELL, OrderType.STOP_LIMIT, "10", price="98.90", stop="99.00"))
    assert fills(engine.on_quote(quote("98.80", "98.85"))) == []  # triggered, bid below the limit
    assert fills(engine.on_quote(quote("98.92", "98.95"))) == [("o1", D(10), D("98.92"))]


# --- time in force ---------------------------------------------------------------------


def test_ioc_fills_what_is_available_and_cancels_the_rest() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    events = submit(engine, request("o1", Side.BUY, OrderType.MARKET, "150", TimeInForce.IOC))
    assert [type(e) for e in events] == [OrderAccepted, OrderFilled, OrderCanceled]
    assert fills(events) == [("o1", D(100), D("100.02"))]
    canceled = events[-1]
    assert isinstance(canceled, OrderCanceled)
    assert "IOC remainder of 50" in canceled.reason
    assert status(engine, "o1") is BrokerOrderStatus.CANCELED
    assert engine.on_quote(quote("100.00", "100.02")) == []


def test_ioc_limit_with_nothing_at_its_price_is_canceled_without_fills() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    events = submit(engine, request("o1", Side.BUY, OrderType.LIMIT, "10", TimeInForce.IOC, price="99.00"))
    assert [type(e) for e in events] == [OrderAccepted, OrderCanceled]


def test_fok_fills_entirely_on_arrival() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    events = submit(engine, request("o1", Side.SELL, OrderType.MARKET, "100", TimeInForce.FOK))
    assert fills(events) == [("o1", D(100), D("100.00"))]
    assert status(engine, "o1") is BrokerOrderStatus.FILLED


@pytest.mark.parametrize(
    ("order_type", "quantity", "price"),
    [(OrderType.MARKET, "101", None), (OrderType.LIMIT, "10", "100.01")],
)
def test_fok_that_cannot_fill_entirely_is_canceled_with_no_fill(
    order_type: OrderType, quantity: str, price: str | None
) -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    events = submit(engine, request("o1", Side.BUY, order_type, quantity, TimeInForce.FOK, price=price))
    assert [type(e) for e in events] == [OrderAccepted, OrderCanceled]
    assert status(engine, "o1") is BrokerOrderStatus.CANCELED
    assert engine.volume == 0
    assert engine.on_quote(quote("100.00", "100.02", ask_size="1000")) == []


def test_fok_without_a_quote_is_canceled() -> None:
    engine = make_engine()
    events = submit(engine, request("o1", Side.BUY, OrderType.MARKET, "1", TimeInForce.FOK))
    assert [type(e) for e in events] == [OrderAccepted, OrderCanceled]


def test_day_orders_expire_at_end_of_day_and_gtc_orders_survive() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    submit(engine, request("day", Side.BUY, OrderType.LIMIT, "10", TimeInForce.DAY, price="99.00"))
    submit(engine, request("gtc", Side.BUY, OrderType.LIMIT, "10", TimeInForce.GTC, price="99.00"))
    events = engine.end_of_day(AT)
    assert [(type(e), e.client_order_id) for e in events] == [(OrderExpired, "day")]
    assert status(engine, "day") is BrokerOrderStatus.EXPIRED
    assert status(engine, "gtc") is BrokerOrderStatus.ACCEPTED
    assert fills(engine.on_quote(quote("98.98", "99.00"))) == [("gtc", D(10), D("99.00"))]
    assert engine.end_of_day(AT) == []


def test_partially_filled_day_order_expires_with_its_fills_kept() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    submit(engine, request("o1", Side.BUY, OrderType.MARKET, "150", TimeInForce.DAY))
    assert [type(e) for e in engine.end_of_day(AT)] == [OrderExpired]
    snapshot = engine.snapshot("o1")
    assert snapshot is not None
    assert (snapshot.status, snapshot.filled_quantity) == (BrokerOrderStatus.EXPIRED, D(100))


# --- cancel ----------------------------------------------------------------------------


def test_cancel_open_order_then_again_is_idempotent() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    submit(engine, request("o1", Side.BUY, OrderType.LIMIT, "10", price="99.00"))
    events = engine.cancel("o1", AT)
    assert [type(e) for e in events] == [OrderCanceled]
    assert engine.cancel("o1", AT) == []
    assert engine.open_orders == 0
    assert engine.on_quote(quote("98.00", "98.02")) == []


def test_cancel_final_or_unknown_order_is_rejected() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    submit(engine, request("filled", Side.BUY, OrderType.MARKET, "10"))
    submit(engine, request("expired", Side.BUY, OrderType.LIMIT, "10", TimeInForce.DAY, price="99.00"))
    engine.end_of_day(AT)
    with pytest.raises(CancelRejected, match="order already filled"):
        engine.cancel("filled", AT)
    with pytest.raises(CancelRejected, match="order already expired"):
        engine.cancel("expired", AT)
    with pytest.raises(CancelRejected, match="unknown order"):
        engine.cancel("nope", AT)


def test_cancel_keeps_other_resting_orders() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    submit(engine, request("a", Side.BUY, OrderType.LIMIT, "10", price="99.00"))
    submit(engine, request("b", Side.BUY, OrderType.LIMIT, "10", price="99.00"))
    engine.cancel("a", AT)
    assert fills(engine.on_quote(quote("98.98", "99.00"))) == [("b", D(10), D("99.00"))]


def test_cancel_in_the_middle_of_a_crowded_price_level_keeps_the_others_in_arrival_order() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    for name in "abcde":
        submit(engine, request(name, Side.SELL, OrderType.LIMIT, "10", price="101.00"))
    engine.cancel("c", AT)
    engine.cancel("a", AT)
    assert engine.open_orders == 3
    assert [f[0] for f in fills(engine.on_quote(quote("101.00", "101.02")))] == ["b", "d", "e"]
    assert engine.open_orders == 0


def test_a_triggered_stop_keeps_its_arrival_priority_within_its_price_level() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    submit(engine, request("stop", Side.BUY, OrderType.STOP_LIMIT, "10", price="100.01", stop="100.05"))
    submit(engine, request("limit", Side.BUY, OrderType.LIMIT, "10", price="100.01"))
    assert fills(engine.on_quote(quote("100.04", "100.06"))) == []  # triggers "stop": it rests at 100.01
    order = engine.order("stop")
    assert order is not None and order.triggered
    events = engine.on_quote(quote("99.99", "100.01"))
    assert [f[0] for f in fills(events)] == ["stop", "limit"]  # the older order first


# --- fees and ids ----------------------------------------------------------------------


def test_fee_is_the_commission_of_the_fill_notional() -> None:
    engine = make_engine(structure=CommissionStructure(base_rate=D("0.0005"), min_commission=D("1")))
    engine.on_quote(quote("100.00", "100.02"))
    (small,) = [
        e for e in submit(engine, request("a", Side.BUY, OrderType.MARKET, "1")) if isinstance(e, OrderFilled)
    ]
    (large,) = [
        e
        for e in submit(engine, request("b", Side.SELL, OrderType.MARKET, "100"))
        if isinstance(e, OrderFilled)
    ]
    assert small.fee == D("1.00000000")  # 0.05 below the minimum
    assert large.fee == D("5.00000000")  # 10,000 * 5 bps
    assert (small.venue, large.venue) == ("SIMX", "SIMX")


def test_tiered_fees_follow_the_venues_running_volume() -> None:
    structure = CommissionStructure(
        base_rate=D("0.001"), tiered_rates=(TieredRate(volume_threshold=D("10000"), rate=D("0.0005")),)
    )
    engine = make_engine(structure=structure)
    engine.on_quote(QuoteEvent("AAPL", D("100"), D("100"), D("1000"), D("1000"), AT))
    first = fills_with_fees(submit(engine, request("a", Side.BUY, OrderType.MARKET, "80")))
    second = fills_with_fees(submit(engine, request("b", Side.BUY, OrderType.MARKET, "40")))
    third = fills_with_fees(submit(engine, request("c", Side.SELL, OrderType.MARKET, "10")))
    assert first == [D("8.00000000")]  # 8,000 at 10 bps
    assert second == [D("3.00000000")]  # 2,000 at 10 bps + 2,000 at 5 bps
    assert third == [D("0.50000000")]  # 1,000 at 5 bps
    assert second == [commission(structure, D(4000), D(8000))]
    assert engine.volume == D(13000)


def test_minimum_commission_is_charged_once_per_order_not_per_fill() -> None:
    structure = CommissionStructure(base_rate=D("0.0005"), min_commission=D("1"))
    engine = make_engine(structure=structure)
    engine.on_quote(quote("100.00", "100.00", ask_size="10"))
    first = fills_with_fees(submit(engine, request("a", Side.BUY, OrderType.MARKET, "30")))
    later: list[Decimal] = []
    for _ in range(2):  # the rest fills on the next quotes, 10 at a time
        later += fills_with_fees(engine.on_quote(quote("100.00", "100.00", ask_size="10")))
    assert first == [D("1")]  # 1,000 at 5 bps = 0.50, raised to the 1.00 minimum
    assert later == [D("0"), D("0.50")]  # 0.50 + 0.50 -> still 1.00; then 0.50 beyond it
    assert sum(first + later) == commission(structure, D(3000))  # 1.50, as for one fill of 3,000


def fills_with_fees(events: list[AnyBrokerEvent]) -> list[Decimal]:
    return [e.fee for e in events if isinstance(e, OrderFilled)]


def test_fill_and_order_ids_are_unique_and_carry_the_session() -> None:
    engine = make_engine(session="s1")
    engine.on_quote(quote("100.00", "100.02"))
    events: list[AnyBrokerEvent] = []
    order_ids = set()
    for n in range(20):
        order_id, produced = engine.submit(
            request(f"o{n}", Side.BUY, OrderType.MARKET, "150", TimeInForce.DAY), AT
        )
        order_ids.add(order_id)
        events += produced
        events += engine.on_quote(quote("100.00", "100.02"))
    fill_ids = [e.fill_id for e in events if isinstance(e, OrderFilled)]
    assert len(fill_ids) == len(set(fill_ids)) > 20
    assert all(f.startswith("sim-s1-F") for f in fill_ids)
    assert len(order_ids) == 20
    assert all(o.startswith("sim-s1-O") for o in order_ids)


def test_fills_carry_the_broker_order_id_of_their_order() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    order_id, events = engine.submit(request("o1", Side.BUY, OrderType.MARKET, "10"), AT)
    assert [e.broker_order_id for e in events if isinstance(e, (OrderAccepted, OrderFilled))] == [
        order_id
    ] * 2


# --- snapshots and validation ----------------------------------------------------------


def test_snapshot_reports_the_average_price_of_the_fills() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    submit(engine, request("o1", Side.BUY, OrderType.MARKET, "200"))
    engine.on_quote(quote("100.00", "100.05"))
    snapshot = engine.snapshot("o1")
    assert snapshot is not None
    assert snapshot.status is BrokerOrderStatus.FILLED
    assert snapshot.filled_quantity == D(200)
    assert snapshot.average_price == D("100.035")
    assert engine.snapshot("unknown") is None


def test_unfilled_order_has_no_average_price() -> None:
    engine = make_engine()
    submit(engine, request("o1", Side.BUY, OrderType.LIMIT, "10", price="1.00"))
    snapshot = engine.snapshot("o1")
    assert snapshot is not None
    assert (snapshot.average_price, snapshot.filled_quantity) == (None, D(0))


def test_a_duplicate_client_order_id_is_a_programming_error() -> None:
    engine = make_engine()
    submit(engine, request("o1", Side.BUY, OrderType.LIMIT, "10", price="1.00"))
    assert "o1" in engine
    with pytest.raises(ValueError, match="duplicate"):
        submit(engine, request("o1", Side.BUY, OrderType.LIMIT, "10", price="1.00"))


@pytest.mark.parametrize(
    ("req", "problem"),
    [
        (request("x", Side.BUY, OrderType.MARKET, "0"), "quantity must be positive"),
        (request("x", Side.BUY, OrderType.LIMIT, "1"), "LIMIT order needs a limit price"),
        (request("x", Side.BUY, OrderType.STOP, "1"), "STOP order needs a stop price"),
        (request("x", Side.BUY, OrderType.STOP_LIMIT, "1", stop="1"), "STOP_LIMIT order needs a limit price"),
        (request("x", Side.BUY, OrderType.LIMIT, "1", price="-1"), "limit price must be positive"),
        (request("x", Side.BUY, OrderType.STOP, "1", stop="0"), "stop price must be positive"),
        (request("x", Side.BUY, OrderType.STOP_LIMIT, "1", price="1", stop="1"), None),
    ],
)
def test_order_problem(req: SubmitRequest, problem: str | None) -> None:
    assert order_problem(req) == problem


def test_liquidity_share_must_be_a_fraction() -> None:
    with pytest.raises(ValueError, match="liquidity_share"):
        make_engine(share="0")
    with pytest.raises(ValueError, match="liquidity_share"):
        make_engine(share="1.5")


def test_repr_shows_state() -> None:
    engine = make_engine()
    submit(engine, request("o1", Side.BUY, OrderType.LIMIT, "10", price="1.00"))
    assert "open=1" in repr(engine)
    assert "o1" in repr(engine.order("o1"))


# --- stops in the sorted book ----------------------------------------------------------


def test_a_quote_triggers_only_the_stops_it_reaches() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    for name, stop in [("s103", "103.00"), ("s101", "101.00"), ("s102", "102.00")]:
        submit(engine, request(name, Side.BUY, OrderType.STOP, "10", stop=stop))
    for name, stop in [("s97", "97.00"), ("s99", "99.00")]:
        submit(engine, request(name, Side.SELL, OrderType.STOP, "10", stop=stop))
    assert [f[0] for f in fills(engine.on_quote(quote("101.90", "102.00")))] == ["s101", "s102"]
    assert [f[0] for f in fills(engine.on_quote(quote("98.00", "98.02")))] == ["s99"]
    assert engine.open_orders == 2


def test_a_trade_print_fills_only_the_stops_it_triggers() -> None:
    engine = make_engine(share="0.5")
    engine.on_quote(quote("100.00", "100.02"))
    submit(engine, request("big", Side.BUY, OrderType.MARKET, "80"))  # took its 50 at this quote
    submit(engine, request("stop", Side.BUY, OrderType.STOP, "10", stop="100.50"))
    events = engine.on_trade("AAPL", D("100.50"), AT)
    assert fills(events) == [("stop", D(10), D("100.02"))]


def test_cancel_a_stop_before_and_after_it_triggers() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    submit(engine, request("waiting", Side.SELL, OrderType.STOP, "10", stop="99.00"))
    submit(engine, request("triggered", Side.SELL, OrderType.STOP_LIMIT, "10", price="98.00", stop="99.00"))
    engine.on_quote(quote("97.00", "97.02"))  # triggers both: "waiting" fills, the other rests at 98
    assert status(engine, "waiting") is BrokerOrderStatus.FILLED
    order = engine.order("triggered")
    assert order is not None
    assert order.triggered
    assert [type(e) for e in engine.cancel("triggered", AT)] == [OrderCanceled]
    submit(engine, request("again", Side.SELL, OrderType.STOP, "10", stop="90.00"))
    assert [type(e) for e in engine.cancel("again", AT)] == [OrderCanceled]
    assert engine.open_orders == 0


def test_end_of_day_expires_resting_stops_in_arrival_order() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    submit(engine, request("b", Side.BUY, OrderType.STOP, "10", TimeInForce.DAY, stop="105.00"))
    submit(engine, request("a", Side.SELL, OrderType.LIMIT, "10", TimeInForce.DAY, price="105.00"))
    submit(engine, request("c", Side.SELL, OrderType.STOP, "10", TimeInForce.GTC, stop="95.00"))
    assert [e.client_order_id for e in engine.end_of_day(AT)] == ["b", "a"]
    assert engine.open_orders == 1


def test_orders_resting_away_from_the_market_cost_a_quote_nothing() -> None:
    engine = make_engine()
    engine.on_quote(quote("100.00", "100.02"))
    for n in range(20_000):
        submit(engine, request(f"far{n}", Side.BUY, OrderType.LIMIT, "1", price="50.00"))
        submit(engine, request(f"stop{n}", Side.SELL, OrderType.STOP, "1", stop="40.00"))
    start = time.perf_counter()
    for _ in range(2_000):
        engine.on_quote(quote("100.00", "100.02"))
    assert time.perf_counter() - start < 0.5
    assert engine.open_orders == 40_000


def test_a_resting_order_costs_its_record_and_a_slot_in_its_price_level() -> None:
    """Orders at one price share a level: no sort key, no copy of the price per order. What
    remains is the record (~150 B), its broker order id and sequence number, and the index by
    client order id (~300 B in all; it was ~440 B with a sort key per order)."""
    engine = make_engine(session="1a2b3c4d")
    engine.on_quote(quote("100.00", "100.02"))
    requests = [
        request(f"rest-{n:027d}", Side.BUY if n % 2 else Side.SELL, OrderType.LIMIT, "1", price=limit)
        for n, limit in ((n, "50.00" if n % 2 else "150.00") for n in range(20_000))
    ]
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ids = [engine.submit(r, AT)[0] for r in requests]
        per_order = (tracemalloc.get_traced_memory()[0] - before) / len(requests)
    finally:
        if not was_tracing:
            tracemalloc.stop()
    assert len(ids) == engine.open_orders == 20_000
    assert per_order < 350, f"{per_order:.0f} bytes per resting order"


def test_finished_orders_are_forgotten_oldest_first_open_ones_never(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matching, "FINISHED_MEMORY", 3)
    engine = make_engine()
    engine.on_quote(quote("99.00", "100.00"))
    submit(engine, request("resting", Side.BUY, OrderType.LIMIT, "1", price="90.00"))
    for n in range(5):
        submit(engine, request(f"filled-{n}", Side.BUY, OrderType.MARKET, "1"))
    submit(engine, request("ioc", Side.BUY, OrderType.LIMIT, "1", TimeInForce.IOC, price="90.00"))  # canceled
    # the three last finished orders are known; the two oldest are forgotten; the open one stays
    assert [cid in engine for cid in ("filled-0", "filled-1", "filled-2", "filled-3", "filled-4", "ioc")] == [
        False, False, False, True, True, True,
    ]  # fmt: skip
    assert "resting" in engine and engine.open_orders == 1
    with pytest.raises(CancelRejected, match="already filled"):
        engine.cancel("filled-4", AT)
    with pytest.raises(CancelRejected, match="unknown order"):
        engine.cancel("filled-0", AT)
    cancel = engine.cancel("resting", AT)  # finishing it makes it the newest finished order
    assert [type(e) for e in cancel] == [OrderCanceled]
    assert ["filled-3" in engine, "resting" in engine] == [False, True]


# --- the engine against a naive model --------------------------------------------------


@dataclass
class ModelOrder:
    req: SubmitRequest
    triggered: bool
    filled: Decimal = field(default_factory=Decimal)
    status: str = "ACCEPTED"

    @property
    def is_open(self) -> bool:
        return self.status in ("ACCEPTED", "PARTIALLY_FILLED")


class Model:
    """The semantics, written the slow obvious way: every order looked at on every event."""

    def __init__(self, share: Decimal) -> None:
        self.share = share
        self.orders: dict[str, ModelOrder] = {}
        self.top: tuple[Decimal, Decimal, Decimal, Decimal] | None = None

    def executable(self, o: ModelOrder) -> Decimal:
        if self.top is None or not o.triggered:
            return D(0)
        bid, ask, bid_available, ask_available = self.top
        leaves = o.req.quantity - o.filled
        limit = o.req.price if o.req.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT) else None
        if o.req.side is Side.BUY:
            return min(leaves, ask_available) if limit is None or ask <= limit else D(0)
        return min(leaves, bid_available) if limit is None or bid >= limit else D(0)

    def fill(self, o: ModelOrder) -> None:
        quantity = self.executable(o)
        if quantity > 0:
            o.filled += quantity
            o.status = "FILLED" if o.filled == o.req.quantity else "PARTIALLY_FILLED"

    @staticmethod
    def reach(o: ModelOrder, buy_level: Decimal, sell_level: Decimal) -> None:
        stop = o.req.stop_price
        if not o.triggered and stop is not None:
            o.triggered = buy_level >= stop if o.req.side is Side.BUY else sell_level <= stop

    def submit(self, req: SubmitRequest) -> None:
        o = self.orders[req.client_order_id] = ModelOrder(req, triggered=req.stop_price is None)
        if self.top is not None:
            self.reach(o, self.top[1], self.top[0])
        if req.time_in_force is TimeInForce.FOK and self.executable(o) < req.quantity:
            o.status = "CANCELED"
            return
        self.fill(o)
        if req.time_in_force is TimeInForce.IOC and o.status != "FILLED":
            o.status = "CANCELED"

    def quote(self, bid: Decimal, ask: Decimal, bid_size: Decimal, ask_size: Decimal) -> None:
        share = self.share
        self.top = (
            bid,
            ask,
            (bid_size * share).quantize(bid_size, rounding=ROUND_FLOOR),
            (ask_size * share).quantize(ask_size, rounding=ROUND_FLOOR),
        )
        for o in self.orders.values():
            if o.is_open:
                self.reach(o, ask, bid)
                self.fill(o)

    def trade(self, price: Decimal) -> None:
        for o in self.orders.values():
            if o.is_open and not o.triggered:
                self.reach(o, price, price)
                if o.triggered:
                    self.fill(o)

    def cancel(self, client_order_id: str) -> str:
        o = self.orders.get(client_order_id)
        if o is None:
            return "unknown order"
        if o.status == "CANCELED":
            return "ok"
        if not o.is_open:
            return f"order already {o.status.lower()}"
        o.status = "CANCELED"
        return "ok"

    def end_of_day(self) -> None:
        for o in self.orders.values():
            if o.is_open and o.req.time_in_force is TimeInForce.DAY:
                o.status = "EXPIRED"


prices = st.integers(min_value=99, max_value=101).map(D)
sizes = st.integers(min_value=0, max_value=20).map(D)
order_shapes = st.tuples(
    st.sampled_from(Side),
    st.sampled_from(OrderType),
    st.sampled_from(TimeInForce),
    st.integers(min_value=1, max_value=90).map(D),
    prices,
    prices,
)
actions = st.lists(
    st.one_of(
        st.tuples(st.just("quote"), prices, st.integers(min_value=1, max_value=2), sizes, sizes),
        st.tuples(st.just("trade"), prices),
        st.tuples(st.just("submit"), order_shapes),
        st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=30)),
        st.tuples(st.just("eod")),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(actions=actions, share=st.sampled_from([D(1), D("0.5"), D("0.3")]))
def test_engine_matches_the_naive_model_and_drives_the_state_machine(
    actions: list[tuple[object, ...]], share: Decimal
) -> None:
    engine = MatchingEngine(broker_id="sim", venue="SIMX", commission=FLAT, liquidity_share=share)
    model = Model(share)
    events: list[AnyBrokerEvent] = []
    submitted: list[SubmitRequest] = []
    for action in actions:
        if action[0] == "quote":
            _, bid, spread, bid_size, ask_size = action
            assert isinstance(bid, Decimal) and isinstance(spread, int)
            assert isinstance(bid_size, Decimal) and isinstance(ask_size, Decimal)
            events += engine.on_quote(QuoteEvent("AAPL", bid, bid + spread, bid_size, ask_size, AT))
            model.quote(bid, bid + spread, bid_size, ask_size)
        elif action[0] == "trade":
            assert isinstance(action[1], Decimal)
            events += engine.on_trade("AAPL", action[1], AT)
            model.trade(action[1])
        elif action[0] == "submit":
            shape = action[1]
            assert isinstance(shape, tuple)
            side, order_type, tif, quantity, price, stop = shape
            req = SubmitRequest(
                client_order_id=f"o{len(submitted)}",
                account_id="acct",
                symbol="AAPL",
                asset_class=AssetClass.EQUITY,
                side=side,
                order_type=order_type,
                quantity=quantity,
                time_in_force=tif,
                price=price if order_type.needs_price else None,
                stop_price=stop if order_type.needs_stop_price else None,
            )
            submitted.append(req)
            events += engine.submit(req, AT)[1]
            model.submit(req)
        elif action[0] == "cancel":
            assert isinstance(action[1], int)
            client_order_id = f"o{action[1]}"
            expected = model.cancel(client_order_id)
            try:
                events += engine.cancel(client_order_id, AT)
                outcome = "ok"
            except CancelRejected as exc:
                outcome = exc.reason
            assert outcome == expected
        else:
            events += engine.end_of_day(AT)
            model.end_of_day()
        for client_order_id, o in model.orders.items():
            snapshot = engine.snapshot(client_order_id)
            assert snapshot is not None
            assert (snapshot.status.value, snapshot.filled_quantity) == (o.status, o.filled)

    fill_ids = [e.fill_id for e in events if isinstance(e, OrderFilled)]
    assert len(fill_ids) == len(set(fill_ids))
    for req in submitted:
        own = [e for e in events if e.client_order_id == req.client_order_id]
        assert isinstance(own[0], OrderAccepted)
        for e in own:
            if isinstance(e, OrderFilled) and req.price is not None:
                assert e.price <= req.price if req.side is Side.BUY else e.price >= req.price
        state = replay(req, own)
        snapshot = engine.snapshot(req.client_order_id)
        assert snapshot is not None
        assert (state.status, state.filled_quantity) == (snapshot.status, snapshot.filled_quantity)


def replay(req: SubmitRequest, events: list[AnyBrokerEvent]) -> BrokerOrder:
    order = BrokerOrder(
        id="e",
        order_id="o",
        broker_id="sim",
        client_order_id=req.client_order_id,
        account_id=req.account_id,
        symbol=req.symbol,
        side=req.side,
        order_type=req.order_type,
        quantity=req.quantity,
        time_in_force=req.time_in_force,
        execution_strategy=ExecutionStrategy.SMART,
        urgency=Urgency.MEDIUM,
        created_at=AT,
        updated_at=AT,
    )
    for event in events:
        order = apply_event(order, event).order
    return order
