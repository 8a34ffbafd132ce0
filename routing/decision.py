"""The decision record: a `Selection` as the desk reads it (`api.contracts.RoutingDecision`),
stored with the order's idempotency row and returned by GetExecution, because a desk will ask
"why did this go to broker X?"."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal

import msgspec

from api.contracts import IneligibleBroker, RoutingCandidate, RoutingDecision, SmartWeights
from routing.select import Selection

_ENCODER = msgspec.json.Encoder(decimal_format="number")
_DECODER = msgspec.json.Decoder(RoutingDecision, float_hook=Decimal)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _number(value: float) -> float:
    """JSON has no infinity: an unbounded figure (no liquidity, no headroom) is written as the
    largest float, which still ranks last."""
    if math.isnan(value):  # unknown: as bad as it gets, never the best score
        return 1.7976931348623157e308
    return value if math.isfinite(value) else math.copysign(1.7976931348623157e308, value)


def decision_of(
    selection: Selection, decided_at: datetime, reference_price: Decimal | None
) -> RoutingDecision:
    candidates = tuple(
        RoutingCandidate(
            broker_id=s.broker_id,
            rank=rank,
            preferred=s.broker_id in selection.preferred,
            score=_number(s.score),
            expected_commission=s.commission,
            commission_bps=_number(s.commission_bps),
            spread_bps=_number(s.spread_bps),
            impact_bps=_number(s.impact_bps),
            participation=_number(s.participation),
            latency_p50_ms=_number(s.latency_p50_ms),
            latency_p95_ms=_number(s.latency_p95_ms),
            time_to_fill_ms=_number(s.time_to_fill_ms),
            fill_probability=_number(s.fill_probability),
            fill_rate=_number(s.fill_rate),
            reject_rate=_number(s.reject_rate),
            expected_execution_time_ms=_finite(s.expected_time_ms),
        )
        for rank, s in enumerate(selection.scores, 1)
    )
    weights = selection.weights
    return RoutingDecision(
        decided_at=decided_at,
        strategy=selection.strategy,
        urgency=selection.urgency,
        candidates=candidates,
        ineligible=tuple(IneligibleBroker(broker_id=b, reason=r) for b, r in selection.ineligible),
        measured=selection.measured,
        chosen=selection.chosen,
        notional=selection.notional if reference_price is not None else None,
        reference_price=reference_price,
        weights=None
        if weights is None
        else SmartWeights(
            cost=weights.cost,
            impact=weights.impact,
            speed=weights.speed,
            miss=weights.miss,
            tail=weights.tail,
            participation=weights.participation,
        ),
    )


def encode(decision: RoutingDecision) -> bytes:
    return _ENCODER.encode(decision)


def decode(data: bytes | str) -> RoutingDecision:
    return _DECODER.decode(data)


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
