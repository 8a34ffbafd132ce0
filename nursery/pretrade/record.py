"""What the pre-trade checks decided about an order, stored with it and shown by `why`.

The record rides in the order's routing decision (`routed_orders.routing_decision`, written by
the claim's own INSERT: no extra statement on the order path) under the key `"preTrade"`;
`routing.decision.decode` ignores keys it does not know, so GetExecution reads the decision as
before. `merge` adds the record to a stored decision; `extract` reads it back.
"""

from __future__ import annotations

import msgspec

__all__ = ["PreTradeRecord", "RiskVerdict", "SafeguardOutcome", "extract", "merge"]


class SafeguardOutcome(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """`passed`, or the safeguard that refused the order with its limit and the order's value."""

    passed: bool
    safeguard: str | None = None
    reason: str | None = None
    limit: str | None = None
    value: str | None = None


class RiskVerdict(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """The Risk Analysis Service's answer. `verdict`: APPROVED or REFUSED as it answered, or
    UNAVAILABLE (no answer within the deadline, no responder, an unreadable answer); then
    `policy` ("closed" / "open") says whether the order was refused or routed anyway."""

    verdict: str
    latency_ms: float
    reason: str | None = None
    policy: str | None = None
    routed: bool = True


class PreTradeRecord(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    safeguards: SafeguardOutcome | None = None
    risk: RiskVerdict | None = None


_ENCODER = msgspec.json.Encoder()


class _Holder(msgspec.Struct, frozen=True, rename="camel"):
    pre_trade: PreTradeRecord | None = None


def merge(decision: str, record: PreTradeRecord) -> str:
    """`decision` (a JSON object) with the record added under `"preTrade"`."""
    text = decision.rstrip()
    if not text.endswith("}"):
        raise ValueError("a routing decision is a JSON object")
    body = text[:-1].rstrip()
    separator = "," if not body.endswith("{") else ""
    return f'{body}{separator}"preTrade":{_ENCODER.encode(record).decode()}}}'


def extract(decision: bytes | str | None) -> PreTradeRecord | None:
    """The record stored in a decision, if any (None for orders routed without one)."""
    if not decision:
        return None
    try:
        return msgspec.json.decode(decision, type=_Holder).pre_trade
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
