"""The ledger admits each fill and each terminal event once, and remembers open orders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from adapters.alpaca.ledger import ExecutionLedger
from adapters.alpaca.wire import AlpacaOrder
from api.events import OrderAccepted, OrderCanceled, OrderExpired, OrderFilled

D = Decimal
T0 = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)


def fill(fill_id: str, at: datetime = T0, quantity: str = "1", price: str = "100") -> OrderFilled:
    return OrderFilled(
        client_order_id="c-1",
        at=at,
        fill_id=fill_id,
        quantity=D(quantity),
        price=D(price),
        fee=D(0),
        venue="X",
    )


def order(status: str, client_order_id: str = "c-1", alpaca_id: str = "o-1") -> AlpacaOrder:
    return AlpacaOrder(
        id=alpaca_id,
        client_order_id=client_order_id,
        status=status,
        submitted_at=T0,
        qty=D(10),
        filled_qty=D(0),
    )


def test_a_fill_is_admitted_once_and_moves_the_watermark_forward_only() -> None:
    ledger = ExecutionLedger()
    assert ledger.admit(fill("o-1:1", T0 + timedelta(seconds=5), "2", "50"))
    assert not ledger.admit(fill("o-1:1", T0 + timedelta(seconds=5)))
    assert ledger.admit(fill("o-1:3", T0))  # an older fill recovered late
    assert ledger.newest_fill == T0 + timedelta(seconds=5)
    assert ledger.volume == D(100) + D(100)


def test_one_acceptance_and_one_terminal_event_per_order() -> None:
    ledger = ExecutionLedger()
    accepted = OrderAccepted(client_order_id="c-1", at=T0, broker_order_id="o-1")
    assert ledger.admit(accepted) and not ledger.admit(accepted)
    assert ledger.admit(OrderCanceled(client_order_id="c-1", at=T0))
    assert not ledger.admit(OrderCanceled(client_order_id="c-1", at=T0))
    assert not ledger.admit(OrderExpired(client_order_id="c-1", at=T0))
    assert not ledger.admit(OrderAccepted(client_order_id="c-1", at=T0, broker_order_id="o-1"))


def test_open_orders_are_tracked_until_final() -> None:
    ledger = ExecutionLedger()
    ledger.remember(order("new"))
    ledger.remember(order("new", "c-2", "o-2"))
    assert {o.client_order_id for o in ledger.open_orders()} == {"c-1", "c-2"}
    assert (ledger.client_order_id("o-2"), ledger.alpaca_order_id("c-2")) == ("c-2", "o-2")
    ledger.remember(order("filled", "c-2", "o-2"))
    ledger.admit(OrderCanceled(client_order_id="c-1", at=T0))
    assert ledger.open_orders() == []
    ledger.remember(order("new"))  # a stale snapshot after the cancel does not reopen it
    assert ledger.open_orders() == []


def test_memory_is_bounded() -> None:
    ledger = ExecutionLedger(memory=3)
    for n in range(5):
        assert ledger.admit(fill(f"f{n}"))
        ledger.remember(order("new", f"c{n}", f"o{n}"))
    assert ledger.admit(fill("f0"))  # forgotten: the daemon's store is the last line
    assert not ledger.admit(fill("f4"))
    assert ledger.client_order_id("o0") is None and ledger.client_order_id("o4") == "c4"
