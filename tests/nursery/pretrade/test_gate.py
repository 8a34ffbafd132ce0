"""The gate: kill switches, account-wide limits (rate, daily notional) with their reservations
given back, freshness of the quote, the counters a metrics collector reads, and the cost per
order."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from api.contracts import OrderRoutingRequest
from api.enums import AssetClass, OrderType, Side
from nursery.pretrade.checks import Refusal
from nursery.pretrade.config import SafeguardsConfig
from nursery.pretrade.gate import PreTradeGate
from nursery.pretrade.killswitch import KillSwitch, KillSwitchBoard, Scope
from nursery.pretrade.ledger import Reservation
from nursery.pretrade.record import PreTradeRecord, RiskVerdict, SafeguardOutcome, extract, merge
from routing.decision import decode as decode_decision

NOW_NS = 1_800_000_000 * 1_000_000_000
T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


class Quotes:
    def __init__(self) -> None:
        self.mids = {"AAPL": Decimal("190.00")}
        self.at = {"AAPL": NOW_NS - 1_000_000_000}

    def mid(self, symbol: str) -> Decimal | None:
        return self.mids.get(symbol)

    def quote_ns(self, symbol: str) -> int | None:
        return self.at.get(symbol)


def order(n: int = 1, **changes: Any) -> OrderRoutingRequest:
    fields: dict[str, Any] = dict(
        order_id=f"o-{n}",
        account_id="ACC-1",
        symbol="AAPL",
        side=Side.BUY,
        type=OrderType.LIMIT,
        quantity=Decimal(100),
        price=Decimal("190.00"),
    )
    fields.update(changes)
    return OrderRoutingRequest(**fields)


def gate(config: SafeguardsConfig | None = None, day: list[date] | None = None) -> PreTradeGate:
    days = day or [date(2026, 3, 2)]
    return PreTradeGate(
        config or SafeguardsConfig(), Quotes(), clock_ns=lambda: NOW_NS, today=lambda: days[0]
    )


def test_the_rate_limit_refuses_past_n_orders_per_second_and_recovers() -> None:
    g = gate(SafeguardsConfig(max_orders_per_second=3))
    for n in range(3):
        assert isinstance(g.check(order(n), AssetClass.EQUITY, 10.0 + n * 0.1), Reservation)
    refusal = g.check(order(9), AssetClass.EQUITY, 10.5)
    assert isinstance(refusal, Refusal) and refusal.safeguard == "max_order_rate"
    assert (refusal.limit, refusal.value) == ("3", "4")
    assert isinstance(g.check(order(10), AssetClass.EQUITY, 11.05), Reservation)  # the first left the window
    other = g.check(order(11, account_id="ACC-2"), AssetClass.EQUITY, 10.5)
    assert isinstance(other, Reservation)  # per account


def test_daily_notional_counts_admitted_orders_and_gives_back_released_ones() -> None:
    g = gate(SafeguardsConfig(max_daily_notional=Decimal(50_000)))
    first = g.check(order(1), AssetClass.EQUITY, 1.0)  # 19,000
    second = g.check(order(2), AssetClass.EQUITY, 2.0)  # 38,000
    assert isinstance(first, Reservation) and isinstance(second, Reservation)
    refusal = g.check(order(3), AssetClass.EQUITY, 3.0)
    assert isinstance(refusal, Refusal) and refusal.safeguard == "max_daily_notional"
    assert (refusal.limit, refusal.value) == ("50000", "57000")
    g.release(second)  # not routed after all (a repeat, no eligible broker)
    assert isinstance(g.check(order(4), AssetClass.EQUITY, 4.0), Reservation)
    assert g.ledger.today("ACC-1", date(2026, 3, 2)) == (Decimal("38000.00"), 2)


def test_a_new_utc_day_starts_the_daily_total_again_and_the_seed_counts() -> None:
    days = [date(2026, 3, 2)]
    g = gate(SafeguardsConfig(max_daily_notional=Decimal(50_000)), days)
    g.ledger.seed(days[0], {"ACC-1": (Decimal(45_000), 7)})  # routed earlier today, before a restart
    refusal = g.check(order(1), AssetClass.EQUITY, 1.0)
    assert isinstance(refusal, Refusal) and refusal.safeguard == "max_daily_notional"
    days[0] = date(2026, 3, 3)
    assert isinstance(g.check(order(2), AssetClass.EQUITY, 2.0), Reservation)


def test_a_stale_quote_is_no_quote() -> None:
    g = gate()
    g._market.at["AAPL"] = NOW_NS - 31 * 1_000_000_000  # type: ignore[attr-defined]
    refusal = g.check(order(type=OrderType.MARKET, price=None), AssetClass.EQUITY, 1.0)
    assert isinstance(refusal, Refusal) and refusal.safeguard == "market_without_quote"


def test_kill_switches_refuse_by_account_and_globally_and_newer_wins() -> None:
    board = KillSwitchBoard()
    g = PreTradeGate(SafeguardsConfig(enabled=False), Quotes(), kill_switches=board, clock_ns=lambda: NOW_NS)
    assert isinstance(g.check(order(), AssetClass.EQUITY, 1.0), Reservation)
    assert board.apply(KillSwitch(Scope.ACCOUNT, True, T0, "ACC-1", "runaway algo"))
    refusal = g.check(order(), AssetClass.EQUITY, 1.0)  # even with the safeguards off
    assert isinstance(refusal, Refusal) and refusal.safeguard == "kill_switch"
    assert "account ACC-1" in refusal.reason and "runaway algo" in refusal.reason
    assert isinstance(g.check(order(account_id="ACC-2"), AssetClass.EQUITY, 1.0), Reservation)
    board.apply(KillSwitch(Scope.GLOBAL, True, T0))
    assert isinstance(g.check(order(account_id="ACC-2"), AssetClass.EQUITY, 1.0), Refusal)
    assert board.gauge() == {"global": 1, "account": 1}
    # A late message older than what is known changes nothing.
    assert not board.apply(KillSwitch(Scope.GLOBAL, False, T0 - timedelta(seconds=1)))
    assert board.apply(KillSwitch(Scope.GLOBAL, False, T0 + timedelta(seconds=1)))
    assert not board.apply(KillSwitch(Scope.GLOBAL, True, T0))  # the release is newer
    assert board.gauge() == {"global": 0, "account": 1}


def test_refusals_are_counted_per_safeguard() -> None:
    g = gate()
    refusal = g.check(order(quantity=Decimal("1.5")), AssetClass.EQUITY, 1.0)
    assert isinstance(refusal, Refusal)
    g.count(refusal)
    assert g.rejections["quantity_increment"] == 1
    assert set(g.rejections) >= {"kill_switch", "price_collar", "max_daily_notional", "risk_service"}


def test_the_record_rides_in_the_decision_and_the_decision_still_decodes() -> None:
    from routing.decision import decision_of
    from routing.decision import encode as encode_decision
    from routing.select import Selection

    decision = encode_decision(decision_of(Selection(ranked=(), ineligible=()), T0, None)).decode()
    record = PreTradeRecord(
        SafeguardOutcome(False, "price_collar", "too far", "10", "900"),
        RiskVerdict("APPROVED", 1.5, "ok"),
    )
    stored = merge(decision, record)
    assert extract(stored) == record
    assert decode_decision(stored) == decode_decision(decision)  # GetExecution reads it as before
    assert extract(decision) is None


def test_a_check_costs_microseconds() -> None:
    g = gate(SafeguardsConfig(max_orders_per_second=0, max_daily_notional=Decimal(0)))
    orders = [order(n) for n in range(20_000)]
    started = time.perf_counter()
    for n, o in enumerate(orders):
        g.check(o, AssetClass.EQUITY, float(n))
    per_order_us = (time.perf_counter() - started) / len(orders) * 1e6
    assert per_order_us < 20, per_order_us  # a few us on the bench host; generous for a busy CI


def test_a_trade_without_a_new_quote_does_not_make_a_stale_quote_fresh() -> None:
    """The real book: the last quote is 40 s old, a trade printed 1 s ago. The MARKET order's
    quote is stale all the same (the freshness is the quote's, `MarketBook.quote_ns`)."""
    from market.book import MarketBook
    from market.messages import QuoteMessage, TradeMessage
    from tca.model import ns_of

    clock = [ns_of(T0)]
    book = MarketBook({"AAPL": AssetClass.EQUITY}, clock_ns=lambda: clock[0])
    g = PreTradeGate(SafeguardsConfig(max_quote_age_s=30), book, clock_ns=lambda: clock[0])
    market_order = order(type=OrderType.MARKET, price=None)
    book.on_quote(QuoteMessage("AAPL", Decimal("189.99"), Decimal("190.01"), T0))
    book.on_trade(TradeMessage("AAPL", Decimal("190.00"), Decimal(100), T0 + timedelta(seconds=39)))
    clock[0] = ns_of(T0 + timedelta(seconds=40))
    assert book.quote_ns("AAPL") == ns_of(T0) and book.latest_ns("AAPL") == ns_of(T0 + timedelta(seconds=39))
    refusal = g.check(market_order, AssetClass.EQUITY, 1.0)
    assert isinstance(refusal, Refusal) and refusal.safeguard == "market_without_quote", refusal
    book.on_quote(QuoteMessage("AAPL", Decimal("189.99"), Decimal("190.01"), T0 + timedelta(seconds=40)))
    assert isinstance(g.check(market_order, AssetClass.EQUITY, 2.0), Reservation)
    assert book.quote_ns("MSFT") is None and MarketBook({"X": AssetClass.EQUITY}).quote_ns("X") is None
