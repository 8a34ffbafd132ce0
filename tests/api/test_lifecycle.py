"""api.lifecycle: every transition of the order state machine, legal and illegal, with exact values.

Each test names the transition it proves; the property tests at the end check the arithmetic of
any sequence of fills that does not overfill.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.enums import (
    BrokerOrderStatus,
    ExecutionStatus,
    ExecutionStrategy,
    OrderType,
    Side,
    TimeInForce,
    Urgency,
)
from api.events import (
    AnyBrokerEvent,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)
from api.lifecycle import PRICE_QUANTUM, IllegalTransition, Transition, apply_event, fill_uuid
from api.orders import BrokerOrder

S = BrokerOrderStatus
T0 = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)
CLIENT_ID = "bis-00000000000000000000000000000001"
BROKER = "sim-a"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new_order(quantity: str = "10", **changes: Any) -> BrokerOrder:
    order = BrokerOrder(
        id="00000000-0000-0000-0000-000000000001",
        order_id="ord-1",
        broker_id=BROKER,
        client_order_id=CLIENT_ID,
        account_id="acc-1",
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(quantity),
        time_in_force=TimeInForce.DAY,
        execution_strategy=ExecutionStrategy.SMART,
        urgency=Urgency.MEDIUM,
        created_at=T0,
        updated_at=T0,
    )
    return msgspec.structs.replace(order, **changes) if changes else order


def accepted(seconds: float = 1, broker_order_id: str = "B-1") -> OrderAccepted:
    return OrderAccepted(client_order_id=CLIENT_ID, at=at(seconds), broker_order_id=broker_order_id)


def rejected(seconds: float = 1, reason: str = "insufficient buying power") -> OrderRejected:
    return OrderRejected(client_order_id=CLIENT_ID, at=at(seconds), reason=reason)


def canceled(seconds: float = 2, reason: str = "") -> OrderCanceled:
    return OrderCanceled(client_order_id=CLIENT_ID, at=at(seconds), reason=reason)


def expired(seconds: float = 2, reason: str = "") -> OrderExpired:
    return OrderExpired(client_order_id=CLIENT_ID, at=at(seconds), reason=reason)


def filled(
    fill_id: str,
    quantity: str,
    price: str,
    seconds: float = 3,
    fee: str = "0",
    broker_order_id: str | None = None,
) -> OrderFilled:
    return OrderFilled(
        client_order_id=CLIENT_ID,
        at=at(seconds),
        fill_id=fill_id,
        quantity=Decimal(quantity),
        price=Decimal(price),
        fee=Decimal(fee),
        venue="SIMX",
        broker_order_id=broker_order_id,
    )


def run(order: BrokerOrder, *events: AnyBrokerEvent) -> BrokerOrder:
    """Apply `events` in turn, as the engine does, and return the final order."""
    for event in events:
        order = apply_event(order, event).order
    return order


def assert_no_change(order: BrokerOrder, event: AnyBrokerEvent) -> None:
    transition = apply_event(order, event)
    assert transition == Transition(order, False)
    assert transition.order is order


# --- BrokerOrderStatus --------------------------------------------------------------------


def test_final_statuses_are_exactly_rejected_filled_canceled_expired() -> None:
    assert {s for s in S if s.is_final} == {S.REJECTED, S.FILLED, S.CANCELED, S.EXPIRED}


@pytest.mark.parametrize(
    ("status", "execution_status"),
    [
        (S.PENDING, ExecutionStatus.PENDING),
        (S.ACCEPTED, ExecutionStatus.EXECUTING),
        (S.PARTIALLY_FILLED, ExecutionStatus.PARTIALLY_FILLED),
        (S.FILLED, ExecutionStatus.COMPLETED),
        (S.CANCELED, ExecutionStatus.CANCELED),
        (S.EXPIRED, ExecutionStatus.CANCELED),
        (S.REJECTED, ExecutionStatus.REJECTED),
    ],
)
def test_every_broker_status_maps_to_its_oms_execution_status(
    status: BrokerOrderStatus, execution_status: ExecutionStatus
) -> None:
    assert status.execution_status is execution_status


# --- from PENDING ---------------------------------------------------------------------------


def test_ack_of_pending_order_accepts_it_and_records_broker_order_id() -> None:
    transition = apply_event(new_order(), accepted(seconds=1, broker_order_id="B-77"))
    assert transition.changed is True
    assert transition.fill is None
    order = transition.order
    assert order.status is S.ACCEPTED
    assert order.broker_order_id == "B-77"
    assert order.sequence == 1
    assert order.updated_at == at(1)
    assert order.filled_quantity == 0
    assert order.average_price is None


def test_reject_of_pending_order_rejects_it_with_the_reason() -> None:
    transition = apply_event(new_order(), rejected(seconds=1, reason="symbol halted"))
    assert transition.changed is True
    assert transition.order.status is S.REJECTED
    assert transition.order.rejection_reason == "symbol halted"
    assert transition.order.sequence == 1
    assert transition.order.updated_at == at(1)


def test_reject_of_accepted_order_rejects_it() -> None:
    order = run(new_order(), accepted(seconds=1), rejected(seconds=2, reason="risk check"))
    assert order.status is S.REJECTED
    assert order.rejection_reason == "risk check"
    assert order.sequence == 2
    assert order.broker_order_id == "B-1"


def test_cancel_of_pending_order_cancels_it_with_the_reason() -> None:
    transition = apply_event(new_order(), canceled(seconds=2, reason="user request"))
    assert transition.changed is True
    assert transition.order.status is S.CANCELED
    assert transition.order.rejection_reason == "user request"
    assert transition.order.sequence == 1
    assert transition.order.updated_at == at(2)


def test_cancel_without_a_reason_leaves_rejection_reason_none() -> None:
    order = run(new_order(), canceled(reason=""))
    assert order.status is S.CANCELED
    assert order.rejection_reason is None


def test_expiry_of_pending_order_expires_it() -> None:
    transition = apply_event(new_order(), expired(seconds=2, reason="IOC not marketable"))
    assert transition.changed is True
    assert transition.order.status is S.EXPIRED
    assert transition.order.rejection_reason == "IOC not marketable"
    assert transition.order.sequence == 1


# --- fills ----------------------------------------------------------------------------------


def test_partial_fill_of_accepted_order_makes_it_partially_filled() -> None:
    order = run(new_order("10"), accepted())
    transition = apply_event(order, filled("f1", "4", "190.25", fee="0.12"))
    assert transition.changed is True
    new = transition.order
    assert new.status is S.PARTIALLY_FILLED
    assert new.filled_quantity == Decimal("4")
    assert new.leaves_quantity == Decimal("6")
    assert new.average_price == Decimal("190.25")
    assert new.fees == Decimal("0.12")
    assert new.sequence == 2
    assert transition.fill is not None
    assert transition.fill == new.fills[0]
    assert transition.fill.broker_fill_id == "f1"
    assert transition.fill.quantity == Decimal("4")
    assert transition.fill.price == Decimal("190.25")
    assert transition.fill.fees == Decimal("0.12")
    assert transition.fill.venue == "SIMX"
    assert transition.fill.timestamp == at(3)


def test_fill_of_the_remaining_quantity_makes_the_order_filled() -> None:
    order = run(new_order("10"), accepted(), filled("f1", "4", "100", seconds=3))
    transition = apply_event(order, filled("f2", "6", "101", seconds=4))
    assert transition.order.status is S.FILLED
    assert transition.order.filled_quantity == Decimal("10")
    assert transition.order.leaves_quantity == 0
    assert transition.order.sequence == 3
    assert [f.broker_fill_id for f in transition.order.fills] == ["f1", "f2"]


def test_one_complete_fill_of_accepted_order_makes_it_filled() -> None:
    order = run(new_order("10"), accepted(), filled("f1", "10", "99.5"))
    assert order.status is S.FILLED
    assert order.average_price == Decimal("99.5")


def test_fill_before_the_ack_implies_acceptance_and_keeps_its_broker_order_id() -> None:
    transition = apply_event(new_order("10"), filled("f1", "3", "50", broker_order_id="B-9"))
    assert transition.changed is True
    assert transition.order.status is S.PARTIALLY_FILLED
    assert transition.order.broker_order_id == "B-9"
    assert transition.order.sequence == 1


def test_complete_fill_before_the_ack_makes_the_order_filled() -> None:
    order = run(new_order("10"), filled("f1", "10", "50"))
    assert order.status is S.FILLED
    assert order.sequence == 1


def test_ack_after_a_fill_keeps_the_status_and_quietly_records_the_broker_order_id() -> None:
    """The ack carries nothing new but the id: it is stored (changed) without a new update
    (the sequence does not move, so the engine persists it without publishing)."""
    order = run(new_order("10"), filled("f1", "3", "50", seconds=1))
    transition = apply_event(order, accepted(seconds=5, broker_order_id="B-late"))
    assert transition.changed is True
    assert transition.fill is None
    assert transition.order.status is S.PARTIALLY_FILLED
    assert transition.order.broker_order_id == "B-late"
    assert transition.order.sequence == order.sequence == 1
    assert transition.order.updated_at == order.updated_at


def test_ack_after_a_fill_that_carried_the_broker_order_id_changes_nothing() -> None:
    order = run(new_order("10"), filled("f1", "3", "50", broker_order_id="B-1"))
    assert_no_change(order, accepted(broker_order_id="B-1"))


def test_fill_keeps_an_already_known_broker_order_id() -> None:
    order = run(
        new_order("10"), accepted(broker_order_id="B-1"), filled("f1", "3", "50", broker_order_id="B-2")
    )
    assert order.broker_order_id == "B-1"


def test_duplicate_fill_id_changes_nothing() -> None:
    order = run(new_order("10"), accepted(), filled("f1", "4", "100"))
    assert_no_change(order, filled("f1", "4", "100"))
    # even when the replay carries different figures, the fill id decides
    assert_no_change(order, filled("f1", "6", "200", seconds=9))


def test_duplicate_fill_id_on_a_filled_order_is_not_an_overfill() -> None:
    order = run(new_order("10"), accepted(), filled("f1", "10", "100"))
    assert_no_change(order, filled("f1", "10", "100"))


def test_overfill_raises_illegal_transition() -> None:
    order = run(new_order("10"), accepted(), filled("f1", "7", "100"))
    event = filled("f2", "4", "100")
    with pytest.raises(IllegalTransition, match="overfill") as excinfo:
        apply_event(order, event)
    assert excinfo.value.order is order
    assert excinfo.value.event is event


def test_fill_on_a_filled_order_raises_illegal_transition() -> None:
    order = run(new_order("10"), filled("f1", "10", "100"))
    with pytest.raises(IllegalTransition, match="overfill"):
        apply_event(order, filled("f2", "0.00000001", "100"))


def test_fill_exactly_to_the_quantity_is_not_an_overfill() -> None:
    order = run(new_order("1.5"), filled("f1", "0.75", "10"))
    assert apply_event(order, filled("f2", "0.75", "10")).order.status is S.FILLED


@pytest.mark.parametrize("quantity", ["0", "-1"])
def test_non_positive_fill_quantity_raises_illegal_transition(quantity: str) -> None:
    with pytest.raises(IllegalTransition, match="non-positive"):
        apply_event(new_order("10"), filled("f1", quantity, "100"))


def test_illegal_transition_message_names_the_order_and_event() -> None:
    with pytest.raises(IllegalTransition) as excinfo:
        apply_event(new_order("10"), filled("f1", "11", "100"))
    message = str(excinfo.value)
    assert "ord-1" in message
    assert "OrderFilled" in message
    assert "11 > 10 remaining" in message


# --- cancels, expiries and rejects of live orders ------------------------------------------


def test_cancel_of_accepted_order_cancels_it() -> None:
    order = run(new_order(), accepted(seconds=1), canceled(seconds=2))
    assert order.status is S.CANCELED
    assert order.sequence == 2
    assert order.updated_at == at(2)


def test_cancel_of_partially_filled_order_cancels_it_and_keeps_the_fills() -> None:
    order = run(new_order("10"), accepted(), filled("f1", "4", "100"), canceled(seconds=5))
    assert order.status is S.CANCELED
    assert order.filled_quantity == Decimal("4")
    assert len(order.fills) == 1
    assert order.sequence == 3


def test_expiry_of_partially_filled_order_expires_it() -> None:
    order = run(new_order("10"), accepted(), filled("f1", "4", "100"), expired(seconds=5))
    assert order.status is S.EXPIRED
    assert order.filled_quantity == Decimal("4")


def test_reject_after_fills_raises_illegal_transition() -> None:
    order = run(new_order("10"), accepted(), filled("f1", "4", "100"))
    with pytest.raises(IllegalTransition, match=r"after fills \(4 filled\)"):
        apply_event(order, rejected(seconds=9))


@pytest.mark.parametrize(
    "finish",
    [
        pytest.param(lambda o: run(o, rejected()), id="rejected"),
        pytest.param(lambda o: run(o, accepted(), filled("f1", "10", "100")), id="filled"),
        pytest.param(lambda o: run(o, accepted(), canceled()), id="canceled"),
        pytest.param(lambda o: run(o, accepted(), expired()), id="expired"),
        pytest.param(lambda o: run(o, accepted(), filled("f1", "4", "100"), canceled()), id="canceled-part"),
    ],
)
def test_reject_of_a_finished_order_changes_nothing(finish: Any) -> None:
    order = finish(new_order("10"))
    assert order.status.is_final
    assert_no_change(order, rejected(seconds=20))


# --- repeated events -----------------------------------------------------------------------


def test_duplicate_ack_changes_nothing() -> None:
    order = run(new_order(), accepted(seconds=1, broker_order_id="B-1"))
    assert_no_change(order, accepted(seconds=2, broker_order_id="B-1"))


def test_second_ack_with_another_broker_order_id_changes_nothing() -> None:
    order = run(new_order(), accepted(seconds=1, broker_order_id="B-1"))
    assert_no_change(order, accepted(seconds=2, broker_order_id="B-2"))


def test_ack_after_a_cancel_that_already_has_the_id_changes_nothing() -> None:
    order = run(new_order(), accepted(broker_order_id="B-1"), canceled())
    assert_no_change(order, accepted(seconds=9, broker_order_id="B-1"))


def test_ack_after_a_cancel_of_a_pending_order_keeps_it_canceled() -> None:
    order = run(new_order(), canceled(seconds=2))
    transition = apply_event(order, accepted(seconds=3, broker_order_id="B-1"))
    assert transition.order.status is S.CANCELED
    assert transition.order.broker_order_id == "B-1"
    assert transition.order.sequence == 1


def test_duplicate_reject_changes_nothing() -> None:
    order = run(new_order(), rejected(seconds=1))
    assert_no_change(order, rejected(seconds=2, reason="again"))


def test_duplicate_cancel_changes_nothing() -> None:
    order = run(new_order(), accepted(), canceled(seconds=2))
    assert_no_change(order, canceled(seconds=3))


@pytest.mark.parametrize(
    "finish",
    [
        pytest.param(lambda o: run(o, rejected()), id="rejected"),
        pytest.param(lambda o: run(o, accepted(), filled("f1", "10", "100")), id="filled"),
        pytest.param(lambda o: run(o, accepted(), canceled()), id="canceled"),
        pytest.param(lambda o: run(o, accepted(), expired()), id="expired"),
    ],
)
@pytest.mark.parametrize("late", [canceled(seconds=30), expired(seconds=30)], ids=["cancel", "expiry"])
def test_cancel_or_expiry_of_a_finished_order_changes_nothing(finish: Any, late: AnyBrokerEvent) -> None:
    order = finish(new_order("10"))
    assert_no_change(order, late)


# --- late fills ------------------------------------------------------------------------------


@pytest.mark.parametrize("finish", [canceled, expired], ids=["canceled", "expired"])
def test_late_partial_fill_after_cancel_or_expiry_is_recorded_and_keeps_the_status(finish: Any) -> None:
    order = run(new_order("10"), accepted(), finish(seconds=2))
    final_status = order.status
    transition = apply_event(order, filled("late", "4", "100", seconds=3, fee="0.5"))
    assert transition.changed is True
    assert transition.fill is not None
    new = transition.order
    assert new.status is final_status
    assert new.filled_quantity == Decimal("4")
    assert new.average_price == Decimal("100")
    assert new.fees == Decimal("0.5")
    assert new.sequence == order.sequence + 1
    assert new.updated_at == at(3)


@pytest.mark.parametrize("finish", [canceled, expired], ids=["canceled", "expired"])
def test_fill_after_cancel_that_completes_the_order_is_recorded_and_makes_it_filled(finish: Any) -> None:
    order = run(new_order("10"), accepted(), filled("f1", "6", "100"), finish(seconds=4))
    transition = apply_event(order, filled("f2", "4", "110", seconds=5))
    assert transition.order.status is S.FILLED
    assert transition.order.filled_quantity == Decimal("10")
    assert transition.order.average_price == Decimal("104")
    assert transition.order.sequence == 4


def test_late_fill_after_a_reject_is_recorded_and_keeps_rejected_unless_complete() -> None:
    order = run(new_order("10"), rejected(seconds=1, reason="late reject"))
    partial = apply_event(order, filled("f1", "4", "100", seconds=2)).order
    assert partial.status is S.REJECTED
    assert partial.filled_quantity == Decimal("4")
    complete = apply_event(partial, filled("f2", "6", "100", seconds=3)).order
    assert complete.status is S.FILLED


def test_late_overfill_after_cancel_still_raises() -> None:
    order = run(new_order("10"), accepted(), filled("f1", "6", "100"), canceled())
    with pytest.raises(IllegalTransition, match="overfill"):
        apply_event(order, filled("f2", "5", "100"))


# --- arithmetic -----------------------------------------------------------------------------


def test_average_price_is_quantity_weighted() -> None:
    order = run(new_order("10"), filled("f1", "3", "10.00"), filled("f2", "1", "10.01"))
    assert order.average_price == Decimal("10.0025")
    assert str(order.average_price) == "10.00250000"


def test_average_price_is_quantized_to_eight_decimal_places() -> None:
    order = run(new_order("10"), filled("f1", "1", "1"), filled("f2", "2", "2"))
    assert str(order.average_price) == "1.66666667"
    assert order.average_price is not None
    assert order.average_price.as_tuple().exponent == PRICE_QUANTUM.as_tuple().exponent == -8


def test_average_price_rounds_half_to_even() -> None:
    # (0.00000002 + 0.00000003) / 2 = 0.000000025 exactly: half-even gives ...02, half-up ...03
    order = run(new_order("10"), filled("f1", "1", "0.00000002"), filled("f2", "1", "0.00000003"))
    assert str(order.average_price) == "2E-8"
    order = run(new_order("10"), filled("f1", "1", "0.00000003"), filled("f2", "1", "0.00000004"))
    assert order.average_price == Decimal("0.00000004")


def test_average_price_of_fractional_quantities() -> None:
    order = run(new_order("1"), filled("f1", "0.25", "64000"), filled("f2", "0.75", "64100.5"))
    assert order.average_price == Decimal("64075.375")
    assert order.status is S.FILLED


def test_fees_accumulate_over_fills() -> None:
    order = run(
        new_order("10"),
        filled("f1", "2", "100", fee="0.10"),
        filled("f2", "3", "100", fee="0.015"),
        filled("f3", "5", "100", fee="0"),
    )
    assert order.fees == Decimal("0.115")


def test_duplicate_fill_does_not_add_its_fee_twice() -> None:
    order = run(new_order("10"), filled("f1", "2", "100", fee="0.10"), filled("f1", "2", "100", fee="0.10"))
    assert order.fees == Decimal("0.10")
    assert order.filled_quantity == Decimal("2")


def test_sequence_increments_once_per_changed_transition_and_not_for_no_ops() -> None:
    order = new_order("10")
    steps: list[tuple[AnyBrokerEvent, int]] = [
        (accepted(seconds=1), 1),
        (accepted(seconds=2), 1),  # duplicate ack
        (filled("f1", "4", "100", seconds=3), 2),
        (filled("f1", "4", "100", seconds=4), 2),  # duplicate fill
        (canceled(seconds=5), 3),
        (canceled(seconds=6), 3),  # duplicate cancel
        (expired(seconds=7), 3),  # expiry of a canceled order
        (rejected(seconds=8), 3),  # reject of a finished order
        (filled("f2", "6", "101", seconds=9), 4),  # late fill completing the order
    ]
    for event, sequence in steps:
        order = apply_event(order, event).order
        assert order.sequence == sequence, event
    assert order.status is S.FILLED


def test_updated_at_never_goes_backwards() -> None:
    order = run(new_order("10"), accepted(seconds=10))
    assert order.updated_at == at(10)
    earlier_fill = apply_event(order, filled("f1", "1", "100", seconds=5)).order
    assert earlier_fill.updated_at == at(10)
    later_fill = apply_event(earlier_fill, filled("f2", "1", "100", seconds=12)).order
    assert later_fill.updated_at == at(12)
    earlier_cancel = apply_event(later_fill, canceled(seconds=11)).order
    assert earlier_cancel.status is S.CANCELED
    assert earlier_cancel.updated_at == at(12)


def test_ack_stamped_before_creation_keeps_updated_at() -> None:
    order = new_order(updated_at=at(5))
    assert apply_event(order, accepted(seconds=1)).order.updated_at == at(5)


def test_fill_id_is_the_deterministic_fill_uuid_of_broker_and_fill() -> None:
    transition = apply_event(new_order("10"), filled("exec-42", "1", "100"))
    assert transition.fill is not None
    assert transition.fill.id == fill_uuid(BROKER, "exec-42")
    replayed = apply_event(new_order("10"), filled("exec-42", "2", "101", seconds=50))
    assert replayed.fill is not None
    assert replayed.fill.id == transition.fill.id


def test_fill_uuid_is_a_stable_uuid5_distinct_per_broker_and_fill() -> None:
    assert fill_uuid("sim-a", "f1") == fill_uuid("sim-a", "f1")
    # pinned: stored fill rows are keyed by this id, so it must not change between releases
    assert fill_uuid("sim-a", "f1") == "d8f9e0d9-4402-5f5e-a664-1bffd072a31e"
    assert uuid.UUID(fill_uuid("sim-a", "f1")).version == 5
    ids = {fill_uuid(b, f) for b in ("sim-a", "sim-b") for f in ("f1", "f2")}
    assert len(ids) == 4
    # the separator keeps ("a", "bc") and ("ab", "c") apart
    assert fill_uuid("a", "bc") != fill_uuid("ab", "c")


def test_apply_event_does_not_mutate_its_input() -> None:
    order = run(new_order("10"), accepted())
    snapshot = msgspec.structs.asdict(order)
    apply_event(order, filled("f1", "4", "100"))
    apply_event(order, canceled())
    assert msgspec.structs.asdict(order) == snapshot


# --- properties -----------------------------------------------------------------------------

prices = st.integers(min_value=1, max_value=10**13).map(lambda n: Decimal(n).scaleb(-8))
quantities = st.integers(min_value=1, max_value=10**6).map(lambda n: Decimal(n).scaleb(-2))
fees = st.integers(min_value=0, max_value=10**6).map(lambda n: Decimal(n).scaleb(-4))


@st.composite
def fills_within_quantity(draw: st.DrawFn) -> tuple[Decimal, list[tuple[Decimal, Decimal, Decimal]]]:
    fills = draw(st.lists(st.tuples(quantities, prices, fees), min_size=1, max_size=12))
    total = sum((q for q, _, _ in fills), Decimal(0))
    spare = draw(st.one_of(st.just(Decimal(0)), quantities))
    return total + spare, fills


@given(fills_within_quantity(), st.booleans())
def test_any_fills_within_quantity_sum_average_and_complete_exactly(
    case: tuple[Decimal, list[tuple[Decimal, Decimal, Decimal]]], acknowledged: bool
) -> None:
    quantity, fills = case
    order = new_order(str(quantity))
    if acknowledged:
        order = apply_event(order, accepted(seconds=0)).order
    start_sequence = order.sequence
    for i, (q, p, fee) in enumerate(fills):
        transition = apply_event(order, filled(f"f{i}", str(q), str(p), seconds=i, fee=str(fee)))
        assert transition.changed
        order = transition.order
    total = sum((q for q, _, _ in fills), Decimal(0))
    assert order.filled_quantity == total
    assert order.fees == sum((f for _, _, f in fills), Decimal(0))
    assert order.sequence == start_sequence + len(fills)
    assert order.average_price is not None
    assert min(p for _, p, _ in fills) <= order.average_price <= max(p for _, p, _ in fills)
    assert order.average_price == (sum((q * p for q, p, _ in fills), Decimal(0)) / total).quantize(
        PRICE_QUANTUM, rounding=ROUND_HALF_EVEN
    )
    assert (order.status is S.FILLED) == (total == quantity)
    if total != quantity:
        assert order.status is S.PARTIALLY_FILLED


@given(fills_within_quantity(), st.integers(min_value=0, max_value=11))
def test_replaying_any_fill_changes_nothing(
    case: tuple[Decimal, list[tuple[Decimal, Decimal, Decimal]]], pick: int
) -> None:
    quantity, fills = case
    events = [filled(f"f{i}", str(q), str(p), seconds=i, fee=str(fee)) for i, (q, p, fee) in enumerate(fills)]
    order = run(new_order(str(quantity)), *events)
    assert_no_change(order, events[pick % len(events)])
