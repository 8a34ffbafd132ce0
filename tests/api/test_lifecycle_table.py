"""api.lifecycle's transition table, walked pair by pair: every (status, event type) is tried on
an order really brought to that status; the legal pairs apply and give the status written here
(independently of the table), the illegal ones raise `IllegalTransition` and leave the order as
it was. The table's set of legal pairs must be exactly the one written here.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from api.enums import BrokerOrderStatus
from api.events import (
    AnyBrokerEvent,
    BrokerEvent,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    ReconstructedFill,
)
from api.lifecycle import EVENT_TYPES, TRANSITIONS, IllegalTransition, apply_event, reconstructed_fill_id
from api.orders import BrokerOrder
from tests.api.test_lifecycle import (
    CLIENT_ID,
    accepted,
    at,
    canceled,
    expired,
    filled,
    new_order,
    rejected,
    run,
)

S = BrokerOrderStatus
ILLEGAL = None

# (status, event type) -> (status after, changed); ILLEGAL: raises. Written from the module
# docstring's rules, not from the table.
EXPECTED: dict[tuple[S, type[BrokerEvent]], tuple[S, bool] | None] = {
    (S.PENDING, OrderAccepted): (S.ACCEPTED, True),
    (S.PENDING, OrderRejected): (S.REJECTED, True),
    (S.PENDING, OrderFilled): (S.PARTIALLY_FILLED, True),
    (S.PENDING, ReconstructedFill): (S.PARTIALLY_FILLED, True),
    (S.PENDING, OrderCanceled): (S.CANCELED, True),
    (S.PENDING, OrderExpired): (S.EXPIRED, True),
    (S.ACCEPTED, OrderAccepted): (S.ACCEPTED, False),
    (S.ACCEPTED, OrderRejected): (S.REJECTED, True),
    (S.ACCEPTED, OrderFilled): (S.PARTIALLY_FILLED, True),
    (S.ACCEPTED, ReconstructedFill): (S.PARTIALLY_FILLED, True),
    (S.ACCEPTED, OrderCanceled): (S.CANCELED, True),
    (S.ACCEPTED, OrderExpired): (S.EXPIRED, True),
    (S.PARTIALLY_FILLED, OrderAccepted): (S.PARTIALLY_FILLED, False),
    (S.PARTIALLY_FILLED, OrderRejected): ILLEGAL,
    (S.PARTIALLY_FILLED, OrderFilled): (S.PARTIALLY_FILLED, True),
    (S.PARTIALLY_FILLED, ReconstructedFill): (S.PARTIALLY_FILLED, True),
    (S.PARTIALLY_FILLED, OrderCanceled): (S.CANCELED, True),
    (S.PARTIALLY_FILLED, OrderExpired): (S.EXPIRED, True),
    (S.FILLED, OrderAccepted): (S.FILLED, False),
    (S.FILLED, OrderRejected): (S.FILLED, False),
    (S.FILLED, OrderFilled): (S.FILLED, False),  # the fill repeated (a new one would overfill)
    (S.FILLED, ReconstructedFill): (S.FILLED, False),  # the fills held reach the broker's quantity
    (S.FILLED, OrderCanceled): (S.FILLED, False),
    (S.FILLED, OrderExpired): (S.FILLED, False),
    (S.CANCELED, OrderAccepted): (S.CANCELED, False),
    (S.CANCELED, OrderRejected): (S.CANCELED, False),
    (S.CANCELED, OrderFilled): (S.CANCELED, True),  # a fill that raced the cancel is booked
    (S.CANCELED, ReconstructedFill): (S.CANCELED, True),
    (S.CANCELED, OrderCanceled): (S.CANCELED, False),
    (S.CANCELED, OrderExpired): (S.CANCELED, False),
    (S.EXPIRED, OrderAccepted): (S.EXPIRED, False),
    (S.EXPIRED, OrderRejected): (S.EXPIRED, False),
    (S.EXPIRED, OrderFilled): (S.EXPIRED, True),
    (S.EXPIRED, ReconstructedFill): (S.EXPIRED, True),
    (S.EXPIRED, OrderCanceled): (S.EXPIRED, False),
    (S.EXPIRED, OrderExpired): (S.EXPIRED, False),
    (S.REJECTED, OrderAccepted): (S.REJECTED, True),  # rejected unacked: the id is recorded quietly
    (S.REJECTED, OrderRejected): (S.REJECTED, False),
    (S.REJECTED, OrderFilled): (S.REJECTED, True),
    (S.REJECTED, ReconstructedFill): (S.REJECTED, True),
    (S.REJECTED, OrderCanceled): (S.REJECTED, False),
    (S.REJECTED, OrderExpired): (S.REJECTED, False),
}


def order_in(status: S) -> BrokerOrder:
    """A 10-share order brought to `status` by real events (CANCELED holds a fill)."""
    order = new_order("10")
    ack, part = accepted(), filled("F-1", "4", "100.00", seconds=1.5)
    reached = {
        S.PENDING: order,
        S.ACCEPTED: run(order, ack),
        S.PARTIALLY_FILLED: run(order, ack, part),
        S.FILLED: run(order, ack, filled("F-1", "10", "100.00", seconds=1.5)),
        S.CANCELED: run(order, ack, part, canceled(seconds=1.8)),
        S.EXPIRED: run(order, ack, expired(seconds=1.8)),
        S.REJECTED: run(order, rejected()),
    }[status]
    assert reached.status is status
    return reached


def event_for(order: BrokerOrder, event_type: type[BrokerEvent]) -> AnyBrokerEvent:
    """An event of `event_type` that is legal by its values: fills of at most what is left
    (the last fill repeated when nothing is)."""
    leaves = order.quantity - order.filled_quantity
    quantity = min(Decimal(3), leaves)
    if event_type is OrderAccepted:
        return accepted(seconds=2, broker_order_id="B-2")
    if event_type is OrderRejected:
        return rejected(seconds=2)
    if event_type is OrderCanceled:
        return canceled(seconds=2)
    if event_type is OrderExpired:
        return expired(seconds=2)
    if event_type is OrderFilled:
        if leaves == 0:
            return filled(order.fills[-1].broker_fill_id, "10", "100.00", seconds=1.5)
        return filled("F-2", str(quantity), "101.00")
    assert event_type is ReconstructedFill
    cumulative = order.filled_quantity + quantity
    return ReconstructedFill(
        client_order_id=CLIENT_ID,
        at=at(3),
        fill_id=reconstructed_fill_id(CLIENT_ID, cumulative),
        quantity=quantity,
        price=Decimal("101.00"),
        fee=Decimal(0),
        venue="SIMX",
        cumulative_quantity=cumulative,
        average_price=Decimal("100.50"),
    )


def test_the_expected_table_covers_every_pair() -> None:
    assert set(EXPECTED) == {(status, kind) for status in S for kind in EVENT_TYPES}


def test_the_legal_pairs_are_exactly_the_tables_rows() -> None:
    assert set(TRANSITIONS) == {pair for pair, outcome in EXPECTED.items() if outcome is not ILLEGAL}


@pytest.mark.parametrize(("status", "event_type"), list(EXPECTED), ids=lambda x: getattr(x, "__name__", x))
def test_every_status_and_event_type(status: S, event_type: type[BrokerEvent]) -> None:
    order = order_in(status)
    event = event_for(order, event_type)
    assert type(event) is event_type
    expected = EXPECTED[(status, event_type)]
    if expected is ILLEGAL:
        with pytest.raises(IllegalTransition) as raised:
            apply_event(order, event)
        assert raised.value.order is order and raised.value.event is event
        return
    after, changed = expected
    transition = apply_event(order, event)
    assert (transition.order.status, transition.changed) == (after, changed)
    if not changed:
        assert transition.order is order
    elif after is not status or transition.fill is not None:
        assert transition.order.sequence == order.sequence + 1  # published
    assert (transition.fill is not None) == (changed and issubclass(event_type, OrderFilled))


def test_an_object_that_is_not_a_broker_event_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not a broker event"):
        apply_event(new_order(), "filled")  # type: ignore[arg-type]
