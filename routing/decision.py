"""The decision record: a `Selection` as the desk reads it (`api.contracts.RoutingDecision`),
stored with the order's idempotency row and returned by GetExecution, because a desk will ask
"why did this go to broker X?".

Stored compactly (`encode`): the same fields, but each ranked broker as an array of the
`RoutingCandidate` fields in their declared order and each ineligible one as
`[brokerId, reason]`, under `"format": 2` — about half the bytes of the wire form for the same
numbers (an object per broker repeats sixteen names). `decode` reads it, and the wire form of
records stored before (or of a GetExecution answer), back into the same `RoutingDecision`:
nothing is rounded or left out.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal

import msgspec

from api.contracts import IneligibleBroker, RoutingCandidate, RoutingDecision, SmartWeights
from api.enums import ExecutionStrategy, Urgency
from routing.config import UrgencyProfile
from routing.fees import fee_decimal
from routing.select import Selection

#: The largest double: how an unbounded figure is written (JSON has no infinity).
_LARGEST = 1.7976931348623157e308
STORED_FORMAT = 2

#: A ranked broker as stored: `RoutingCandidate`'s fields, in their declared order.
StoredCandidate = tuple[
    str,
    int,
    bool,
    float,
    Decimal,
    float,
    float,
    float,
    float,
    float,
    float,
    float,
    float,
    float,
    float,
    float | None,
]


class StoredDecision(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """`RoutingDecision` as `encode` writes it (see the module)."""

    format: int
    decided_at: datetime
    strategy: ExecutionStrategy
    urgency: Urgency
    candidates: tuple[StoredCandidate, ...]
    ineligible: tuple[tuple[str, str], ...]
    measured: bool
    chosen: str | None = None
    notional: Decimal | None = None
    reference_price: Decimal | None = None
    weights: SmartWeights | None = None


_ENCODER = msgspec.json.Encoder(decimal_format="number")
_STORED = msgspec.json.Decoder(StoredDecision)
_WIRE = msgspec.json.Decoder(RoutingDecision, float_hook=Decimal)
_ASTUPLE = msgspec.structs.astuple


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _number(value: float) -> float:
    """JSON has no infinity: an unbounded figure (no liquidity, no headroom) is written as the
    largest float, which still ranks last."""
    if math.isnan(value):  # unknown: as bad as it gets, never the best score
        return _LARGEST
    return value if math.isfinite(value) else math.copysign(_LARGEST, value)


#: SmartWeights by the urgency profile they copy (a handful: one per urgency and config).
_WEIGHTS: dict[UrgencyProfile, SmartWeights] = {}


def _weights(profile: UrgencyProfile) -> SmartWeights:
    weights = _WEIGHTS.get(profile)
    if weights is None:
        if len(_WEIGHTS) >= 64:
            _WEIGHTS.clear()
        weights = _WEIGHTS[profile] = SmartWeights(
            profile.cost, profile.impact, profile.speed, profile.miss, profile.tail, profile.participation
        )
    return weights


def decision_of(
    selection: Selection, decided_at: datetime, reference_price: Decimal | None
) -> RoutingDecision:
    preferred = selection.preferred
    isfinite = math.isfinite
    candidates: list[RoutingCandidate] = []
    append = candidates.append
    for rank, s in enumerate(selection.scores, 1):
        score, commission_bps, spread_bps, impact_bps = s.score, s.commission_bps, s.spread_bps, s.impact_bps
        participation, p50, p95, ttf = s.participation, s.latency_p50_ms, s.latency_p95_ms, s.time_to_fill_ms
        fill_probability, fill_rate, reject_rate = s.fill_probability, s.fill_rate, s.reject_rate
        expected = p50 + ttf  # CandidateScore.expected_time_ms
        if not isfinite(
            score
            + commission_bps
            + spread_bps
            + impact_bps
            + participation
            + p50
            + p95
            + ttf
            + fill_probability
            + fill_rate
            + reject_rate
        ):  # one of them is not finite (or the sum overflowed): each by `_number`
            score, commission_bps, spread_bps, impact_bps = map(
                _number, (score, commission_bps, spread_bps, impact_bps)
            )
            participation, p50, p95, ttf = map(_number, (participation, p50, p95, ttf))
            fill_probability, fill_rate, reject_rate = map(
                _number, (fill_probability, fill_rate, reject_rate)
            )
        append(
            RoutingCandidate(
                s.broker_id,
                rank,
                s.broker_id in preferred,
                score,
                fee_decimal(s.fee_units),
                commission_bps,
                spread_bps,
                impact_bps,
                participation,
                p50,
                p95,
                ttf,
                fill_probability,
                fill_rate,
                reject_rate,
                expected if isfinite(expected) else None,
            )
        )
    weights = selection.weights
    return RoutingDecision(
        decided_at,
        selection.strategy,
        selection.urgency,
        tuple(candidates),
        tuple([IneligibleBroker(b, r) for b, r in selection.ineligible]),
        selection.measured,
        selection.chosen,
        selection.notional if reference_price is not None else None,
        reference_price,
        None if weights is None else _weights(weights),
    )


def encode(decision: RoutingDecision) -> bytes:
    """The decision as stored (see the module)."""
    astuple = _ASTUPLE
    return _ENCODER.encode(
        StoredDecision(
            STORED_FORMAT,
            decision.decided_at,
            decision.strategy,
            decision.urgency,
            tuple([astuple(c) for c in decision.candidates]),  # type: ignore[misc]
            tuple([(b.broker_id, b.reason) for b in decision.ineligible]),
            decision.measured,
            decision.chosen,
            decision.notional,
            decision.reference_price,
            decision.weights,
        )
    )


def decode(data: bytes | str) -> RoutingDecision:
    """A stored decision (`encode`), or one in the wire form (a record stored before the
    compact form, a GetExecution answer), as the `RoutingDecision` it was made from."""
    try:
        stored = _STORED.decode(data)
    except msgspec.ValidationError:
        return _WIRE.decode(data)  # no "format": the wire form
    return RoutingDecision(
        stored.decided_at,
        stored.strategy,
        stored.urgency,
        tuple([RoutingCandidate(*row) for row in stored.candidates]),
        tuple([IneligibleBroker(b, r) for b, r in stored.ineligible]),
        stored.measured,
        stored.chosen,
        stored.notional,
        stored.reference_price,
        stored.weights,
    )


def explain(decision: RoutingDecision) -> str:
    """The decision as text, one line per broker (the CLI's `why`)."""
    head = f"{decision.strategy} at urgency {decision.urgency}"
    if decision.notional is not None:
        head += f", notional {decision.notional} at {decision.reference_price}"
    head += " (measured statistics)" if decision.measured else " (priors: no statistics yet)"
    lines = [head + ":"]
    for c in decision.candidates:
        why = "preferred" if c.preferred else f"score {c.score:.6g}"
        eta = "∞" if c.expected_execution_time_ms is None else f"{c.expected_execution_time_ms:.1f} ms"
        lines.append(
            f"{c.rank}. {c.broker_id} ({why}): commission {c.expected_commission} "
            f"({c.commission_bps:.3f} bps), spread {c.spread_bps:.3f} bps, impact {c.impact_bps:.3f} bps, "
            f"latency p50 {c.latency_p50_ms:.2f} / p95 {c.latency_p95_ms:.2f} ms, expected time {eta}, "
            f"fill probability {c.fill_probability:.3f}, reject rate {c.reject_rate:.3f}"
        )
    lines.extend(f"-. {b.broker_id}: not eligible: {b.reason}" for b in decision.ineligible)
    if not decision.candidates:
        lines.append("no eligible broker: the order was rejected")
    return "\n".join(lines)
