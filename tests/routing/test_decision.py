"""routing.decision: the stored form of a decision record, and reading both forms back."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import msgspec
import pytest

from api.codec import encode as wire_encode
from api.enums import ExecutionStrategy, Urgency
from routing import DEFAULT_CONFIG, MarketStats, RoutingStats, select_broker
from routing.decision import decision_of, decode, encode, explain
from routing.select import Selection
from routing.strategies import CandidateScore
from tests.routing import reference
from tests.routing.builders import EQUITY, D, bps, broker, history, order

DECIDED = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
PRICE = D("190.00")
MARKET = MarketStats(daily_volatility=0.02, adv=1_000_000.0, spread_bps=4.0)


def a_decision(**changes: object) -> Selection:
    stats = RoutingStats()
    history(stats, "fast", latency_ms=2.0)
    history(stats, "cheap", latency_ms=30.0, reject_every=5)
    candidates = [
        broker("fast", commission=bps("8", "1.00")),
        broker("cheap", commission=bps("1")),
        broker("gone", rate_headroom=0.0),
    ]
    request = order(quantity=D(500), **changes)
    return select_broker(candidates, request, EQUITY, PRICE, stats=stats, market=MARKET)


def test_stored_form_is_compact_and_reads_back_to_the_same_decision() -> None:
    decision = decision_of(a_decision(), DECIDED, PRICE)
    stored = encode(decision)
    record = msgspec.json.decode(stored)
    assert record["format"] == 2
    assert [row[0] for row in record["candidates"]] == ["cheap", "fast"]
    assert record["candidates"][0][:3] == ["cheap", 1, False]
    assert record["ineligible"] == [["gone", "rate limit exhausted (no headroom)"]]
    assert record["chosen"] == "cheap" and record["strategy"] == "SMART"
    assert decode(stored) == decision
    assert explain(decode(stored)) == explain(decision)
    assert len(stored) < 0.65 * len(wire_encode(decision))


def test_the_wire_form_reads_back_too() -> None:
    """Records stored before the compact form, and GetExecution answers (the CLI's `why`)."""
    decision = decision_of(a_decision(preferred_brokers=("cheap",)), DECIDED, PRICE)
    assert decode(wire_encode(decision)) == decision
    assert decode(wire_encode(decision).decode()) == decision


def test_a_record_of_neither_form_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode(b'{"format": 2, "strategy": "SMART"}')
    with pytest.raises(msgspec.DecodeError):
        decode(b"not json")


def test_stored_form_is_pinned() -> None:
    """Pinned: records are stored, and read back by later versions."""
    selection = Selection(
        ranked=("a",),
        ineligible=(("b", "status DISCONNECTED"),),
        scores=(
            CandidateScore(
                "a", 1.5, 123_450_000, 0.25, 2.0, 3.0, 0.1, 4.0, 8.0, 50.0, 57.0, 0.9, 0.02, 0.882
            ),
        ),
        strategy=ExecutionStrategy.SMART,
        urgency=Urgency.HIGH,
        preferred=(),
        measured=True,
        notional=D("19000.00"),
        weights=DEFAULT_CONFIG.urgency[Urgency.HIGH],
    )
    assert encode(decision_of(selection, DECIDED, D("190.00"))) == (
        b'{"format":2,"decidedAt":"2026-03-02T14:30:00Z","strategy":"SMART","urgency":"HIGH",'
        b'"candidates":[["a",1,false,1.5,1.23450000,0.25,2.0,3.0,0.1,4.0,8.0,50.0,0.882,0.9,0.02,54.0]],'
        b'"ineligible":[["b","status DISCONNECTED"]],"measured":true,"chosen":"a","notional":19000.00,'
        b'"referencePrice":190.00,"weights":{"cost":0.5,"impact":0.5,"speed":50.0,"miss":60.0,'
        b'"tail":0.5,"participation":0.2}}'
    )


@pytest.mark.parametrize(
    "value",
    [math.inf, -math.inf, math.nan, 1e308, 5e-324, -0.0],
    ids=["inf", "-inf", "nan", "big", "tiny", "-0"],
)
def test_unbounded_figures_are_recorded_as_before(value: float) -> None:
    """JSON has no infinity: the largest double (signed), NaN as the largest; the expected
    time absent when unbounded — exactly as the implementation before the compact form."""
    fields = [1.5, 123_450_000, 0.25, 2.0, 3.0, 0.1, 4.0, 8.0, 50.0, 57.0, 0.9, 0.02, 0.882]
    for position in range(len(fields)):
        if position == 1:
            continue  # fee_units: an int
        changed = list(fields)
        changed[position] = value
        score = CandidateScore("a", *changed)  # type: ignore[arg-type]
        selection = Selection(ranked=("a",), ineligible=(), scores=(score,), measured=True)
        new = decision_of(selection, DECIDED, None)
        old = reference.decision_of(selection, DECIDED, None)
        assert reference.encode(new) == reference.encode(old)
        assert reference.encode(decode(encode(new))) == reference.encode(old)


def test_a_rejection_without_any_eligible_broker_is_recorded() -> None:
    candidates = [broker("down", rate_headroom=0.0)]
    selection = select_broker(candidates, order(), EQUITY, None)
    decision = decision_of(selection, DECIDED, None)
    assert decode(encode(decision)) == decision
    assert msgspec.json.decode(encode(decision))["candidates"] == []
    assert "no eligible broker" in explain(decode(encode(decision)))


def test_weights_are_shared_but_equal_to_the_urgency_profile() -> None:
    for urgency in Urgency:
        decision = decision_of(a_decision(urgency=urgency), DECIDED, PRICE)
        profile = DEFAULT_CONFIG.urgency[urgency]
        assert decision.weights is not None
        assert msgspec.structs.astuple(decision.weights) == msgspec.structs.astuple(profile)


def test_notional_and_reference_price_are_absent_without_a_reference_price() -> None:
    decision = decision_of(a_decision(), DECIDED, None)
    record = msgspec.json.decode(encode(decision))
    assert "notional" not in record and "referencePrice" not in record
    assert decode(encode(decision)) == decision
