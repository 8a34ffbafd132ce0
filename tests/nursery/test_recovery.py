"""`nursery.recovery.reconcile_with_broker`: what a broker lookup after a reconnect applies.

The events are run through the order state machine (`api.lifecycle.apply_event`) as the engine's
applier does, so each test states the outcome for the order, not only the events produced."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from adapters.base import BrokerOrderSnapshot
from api.enums import BrokerOrderStatus as S
from api.events import (
    AnyBrokerEvent,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    ReconstructedFill,
)
from api.lifecycle import apply_event, reconstructed_fill_id
from api.orders import BrokerOrder
from nursery.recovery import ENDED_AT_BROKER, UNKNOWN_AT_BROKER, reconcile_with_broker
from tests.api.test_lifecycle import BROKER, CLIENT_ID, T0, new_order

AT = T0 + timedelta(minutes=5)


def run(order: BrokerOrder, *events: AnyBrokerEvent) -> BrokerOrder:
    for event in events:
        order = apply_event(order, event).order
    return order


def accepted_order(quantity: str = "10") -> BrokerOrder:
    return run(new_order(quantity), OrderAccepted(CLIENT_ID, T0, "B-1"))


def fill(fill_id: str, quantity: str, price: str, cumulative: str | None = None) -> OrderFilled:
    return OrderFilled(
        CLIENT_ID,
        T0 + timedelta(seconds=1),
        fill_id=fill_id,
        quantity=Decimal(quantity),
        price=Decimal(price),
        fee=Decimal("0.01"),
        venue="XTST",
        cumulative_quantity=None if cumulative is None else Decimal(cumulative),
    )


def snapshot(status: S, filled: str = "0", average: str | None = None) -> BrokerOrderSnapshot:
    return BrokerOrderSnapshot(
        client_order_id=CLIENT_ID,
        broker_order_id="B-1",
        status=status,
        filled_quantity=Decimal(filled),
        average_price=None if average is None else Decimal(average),
    )


# --- fills the broker reports and we do not hold -------------------------------------------


def test_a_broker_reporting_the_order_filled_after_its_reports_were_lost_fills_it() -> None:
    order = accepted_order()
    found = reconcile_with_broker(order, snapshot(S.FILLED, "10", "101.5"), AT)
    assert found.reconstructed and not found.ended and not found.unknown_at_broker
    (event,) = found.events
    assert isinstance(event, ReconstructedFill)
    assert event.fill_id == reconstructed_fill_id(CLIENT_ID, Decimal(10))
    assert (event.quantity, event.price, event.fee) == (Decimal(10), Decimal("101.5"), Decimal(0))
    assert event.venue == BROKER and event.at == AT and event.broker_order_id == "B-1"
    assert (event.cumulative_quantity, event.average_price) == (Decimal(10), Decimal("101.5"))
    done = run(order, *found.events)
    assert done.status is S.FILLED and done.filled_quantity == 10
    assert done.average_price == Decimal("101.5")
    assert done.fills[-1].reconstructed


def test_only_the_missing_part_is_reconstructed_priced_to_the_brokers_average() -> None:
    order = run(accepted_order(), fill("E1", "4", "100", "4"))
    found = reconcile_with_broker(order, snapshot(S.FILLED, "10", "103"), AT)
    (event,) = found.events
    assert isinstance(event, ReconstructedFill)
    assert event.quantity == 6 and event.price == Decimal(105)  # (10 x 103 - 400) / 6
    done = run(order, event)
    assert done.status is S.FILLED and done.average_price == Decimal(103)
    assert [f.reconstructed for f in done.fills] == [False, True]


def test_a_partial_fill_at_the_broker_leaves_the_order_partially_filled() -> None:
    found = reconcile_with_broker(accepted_order(), snapshot(S.PARTIALLY_FILLED, "3", "99"), AT)
    assert found.reconstructed and not found.ended
    assert run(accepted_order(), *found.events).status is S.PARTIALLY_FILLED


def test_a_fill_queued_before_the_reconstruction_is_not_counted_twice() -> None:
    """`recover` queues `fills_since` first; the reconstruction was computed without them."""
    order = accepted_order()
    found = reconcile_with_broker(order, snapshot(S.FILLED, "10", "100"), AT)
    done = run(order, fill("E1", "10", "100", "10"), *found.events)
    assert done.filled_quantity == 10 and len(done.fills) == 1 and not done.fills[0].reconstructed


def test_the_real_report_arriving_after_the_reconstruction_is_not_an_overfill() -> None:
    order = accepted_order()
    found = reconcile_with_broker(order, snapshot(S.FILLED, "10", "100"), AT)
    reconstructed = run(order, *found.events)
    late = apply_event(reconstructed, fill("E1", "10", "100", "10"))
    assert not late.changed and late.order.filled_quantity == 10


def test_asking_twice_books_the_reconstruction_once() -> None:
    order = accepted_order()
    first = reconcile_with_broker(order, snapshot(S.FILLED, "10", "100"), AT)
    again = reconcile_with_broker(order, snapshot(S.FILLED, "10", "100"), AT + timedelta(seconds=9))
    done = run(order, *first.events, *again.events)
    assert done.filled_quantity == 10 and len(done.fills) == 1


def test_nothing_is_reconstructed_when_the_fills_held_reach_the_brokers_quantity() -> None:
    order = run(accepted_order(), fill("E1", "10", "100", "10"))
    assert reconcile_with_broker(order, snapshot(S.FILLED, "10", "100"), AT).events == ()
    partial = run(accepted_order(), fill("E1", "4", "100", "4"))
    assert reconcile_with_broker(partial, snapshot(S.PARTIALLY_FILLED, "4", "100"), AT).events == ()


def test_a_broker_behind_the_fills_held_changes_nothing() -> None:
    order = run(accepted_order(), fill("E1", "4", "100", "4"))
    assert reconcile_with_broker(order, snapshot(S.PARTIALLY_FILLED, "2", "100"), AT).events == ()


def test_a_missing_fill_without_an_average_price_is_reported_unpriced_not_booked() -> None:
    for average in (None, "0"):
        found = reconcile_with_broker(accepted_order(), snapshot(S.FILLED, "10", average), AT)
        assert found.events == () and found.unpriced == 10 and not found.reconstructed


# --- orders the broker ended meanwhile -----------------------------------------------------


def test_an_order_the_broker_cancelled_after_a_partial_fill_gets_the_fill_then_the_cancel() -> None:
    order = accepted_order()
    found = reconcile_with_broker(order, snapshot(S.CANCELED, "4", "100"), AT)
    assert [type(e) for e in found.events] == [ReconstructedFill, OrderCanceled]
    assert found.ended and found.reconstructed
    done = run(order, *found.events)
    assert done.status is S.CANCELED and done.filled_quantity == 4
    assert done.rejection_reason == ENDED_AT_BROKER


def test_cancelled_expired_and_rejected_at_the_broker_end_the_order_so() -> None:
    for status, kind in ((S.CANCELED, OrderCanceled), (S.EXPIRED, OrderExpired), (S.REJECTED, OrderRejected)):
        found = reconcile_with_broker(accepted_order(), snapshot(status), AT)
        (event,) = found.events
        assert isinstance(event, kind) and found.ended
        assert run(accepted_order(), event).status is status


def test_a_rejection_reported_for_an_order_with_fills_ends_it_cancelled_keeping_the_fills() -> None:
    order = run(accepted_order(), fill("E1", "4", "100", "4"))
    found = reconcile_with_broker(order, snapshot(S.REJECTED, "4", "100"), AT)
    (event,) = found.events
    assert isinstance(event, OrderCanceled)
    done = run(order, event)
    assert done.status is S.CANCELED and done.filled_quantity == 4


def test_an_order_still_open_at_the_broker_gets_nothing() -> None:
    for status in (S.ACCEPTED, S.PARTIALLY_FILLED):
        assert reconcile_with_broker(accepted_order(), snapshot(status), AT).events == ()


# --- orders the broker does not know -------------------------------------------------------


def test_an_order_unknown_at_the_broker_ends_cancelled_with_the_reason() -> None:
    order = accepted_order()
    found = reconcile_with_broker(order, None, AT)
    assert found.unknown_at_broker and not found.ended and not found.reconstructed
    done = run(order, *found.events)
    assert done.status is S.CANCELED and done.rejection_reason == UNKNOWN_AT_BROKER
    assert done.rejection_reason == "unknown at the broker after reconnect"


def test_a_fill_after_the_unknown_order_cancel_is_still_booked() -> None:
    order = accepted_order()
    cancelled = run(order, *reconcile_with_broker(order, None, AT).events)
    late = run(cancelled, fill("E1", "10", "100", "10"))
    assert late.status is S.FILLED and late.filled_quantity == 10


def test_a_partially_filled_order_unknown_at_the_broker_keeps_its_fills() -> None:
    order = run(accepted_order(), fill("E1", "4", "100", "4"))
    done = run(order, *reconcile_with_broker(order, None, AT).events)
    assert done.status is S.CANCELED and done.filled_quantity == 4


def test_unknown_means_never_arrived_for_a_pending_order_and_nothing_for_a_final_one() -> None:
    assert reconcile_with_broker(new_order(), None, AT).events == ()
    cancelled = run(accepted_order(), OrderCanceled(CLIENT_ID, T0, "by the OMS"))
    assert reconcile_with_broker(cancelled, None, AT).events == ()


def test_the_reconciliation_repr_names_its_events() -> None:
    found = reconcile_with_broker(accepted_order(), snapshot(S.CANCELED, "4", "100"), AT)
    assert repr(found) == "<Reconciliation ReconstructedFill, OrderCanceled>"
    assert "unpriced=10" in repr(reconcile_with_broker(accepted_order(), snapshot(S.FILLED, "10"), AT))
