"""Broker selection (the foundation's simple rule; smart routing replaces the ranking later).

Pure: takes a snapshot of the brokers and the order, returns a decision. Eligibility first —
connection status, asset class, order type, time in force — then `preferredBrokers` in the
order given, then the cheapest expected commission at the order's notional, then the lower
measured latency, then the broker id (so the choice is deterministic). Every broker that is
not eligible is listed with its reason, because a desk will ask why.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import msgspec

from api.capabilities import Capabilities
from api.commission import commission
from api.contracts import CommissionStructure, OrderRoutingRequest
from api.enums import AssetClass, ConnectionStatus

_ROUTABLE = frozenset({ConnectionStatus.CONNECTED, ConnectionStatus.DEGRADED})


class BrokerCandidate(msgspec.Struct, frozen=True):
    broker_id: str
    status: ConnectionStatus
    capabilities: Capabilities
    commission: CommissionStructure
    latency_ms: float = 0.0
    running_volume: Decimal = Decimal(0)
    #: Why the broker cannot take an order right now although connected (e.g. circuit open).
    blocked: str | None = None


class Selection(msgspec.Struct, frozen=True):
    """The ranked eligible brokers (best first) and why each other broker was excluded."""

    ranked: tuple[str, ...]
    ineligible: tuple[tuple[str, str], ...]
    expected_fees: tuple[tuple[str, Decimal], ...] = ()

    @property
    def chosen(self) -> str | None:
        return self.ranked[0] if self.ranked else None

    def rejection_reason(self) -> str:
        if not self.ineligible:
            return "no broker is configured"
        reasons = "; ".join(f"{broker}: {why}" for broker, why in self.ineligible)
        return f"no eligible broker ({reasons})"


def ineligibility(
    candidate: BrokerCandidate, order: OrderRoutingRequest, asset_class: AssetClass
) -> str | None:
    if candidate.status not in _ROUTABLE:
        return f"status {candidate.status}"
    if candidate.blocked:
        return candidate.blocked
    return candidate.capabilities.supports(asset_class, order.type, order.time_in_force)


def select_broker(
    candidates: Sequence[BrokerCandidate],
    order: OrderRoutingRequest,
    asset_class: AssetClass,
    reference_price: Decimal | None,
) -> Selection:
    """Rank the eligible brokers for `order`. `reference_price` (limit price or arrival mid)
    values the notional for the commission comparison; without it brokers tie on cost."""
    eligible: list[BrokerCandidate] = []
    ineligible: list[tuple[str, str]] = []
    for candidate in candidates:
        why = ineligibility(candidate, order, asset_class)
        if why is None:
            eligible.append(candidate)
        else:
            ineligible.append((candidate.broker_id, why))
    known = {c.broker_id for c in candidates}
    for broker in dict.fromkeys(order.preferred_brokers):
        if broker not in known:
            ineligible.append((broker, "unknown broker"))
    notional = order.quantity * reference_price if reference_price is not None else Decimal(0)
    fees = {c.broker_id: commission(c.commission, notional, c.running_volume) for c in eligible}
    preference: dict[str, int] = {}
    for rank, broker in enumerate(order.preferred_brokers):
        preference.setdefault(broker, rank)  # a repeat keeps its first position
    unpreferred = len(preference)
    eligible.sort(
        key=lambda c: (preference.get(c.broker_id, unpreferred), fees[c.broker_id], c.latency_ms, c.broker_id)
    )
    return Selection(
        ranked=tuple(c.broker_id for c in eligible),
        ineligible=tuple(ineligible),
        expected_fees=tuple((c.broker_id, fees[c.broker_id]) for c in eligible),
    )
