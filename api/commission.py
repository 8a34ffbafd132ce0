"""Commission arithmetic for the spec's CommissionStructure (pure, Decimal throughout).

Convention (documented in README): rates are fractions of notional. Tiers work like tax
brackets over the broker's traded notional in the current period: the part of an order's
notional that falls below the first `volumeThreshold` pays `baseRate`, the part between two
thresholds pays the lower tier's `rate`, and so on. The total is never below `minCommission`.
A broker with no tiers charges `max(minCommission, notional * baseRate)`.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from api.contracts import CommissionStructure

FEE_QUANTUM = Decimal("0.00000001")


def commission(
    structure: CommissionStructure, notional: Decimal, running_volume: Decimal = Decimal(0)
) -> Decimal:
    """Fee for one order (or fill) of `notional`, given `running_volume` already traded in the
    period. Both are absolute amounts; a zero notional costs nothing (not the minimum)."""
    notional = abs(notional)
    if notional == 0:
        return Decimal(0)
    start = max(running_volume, Decimal(0))
    end = start + notional
    # Brackets: [0, t1) at baseRate, [t1, t2) at tier1.rate, ...
    edges = sorted(structure.tiered_rates, key=lambda tier: (tier.volume_threshold, tier.rate))
    bounds: list[tuple[Decimal, Decimal | None, Decimal]] = []
    lower, rate = Decimal(0), structure.base_rate
    for tier in edges:
        bounds.append((lower, tier.volume_threshold, rate))
        lower, rate = tier.volume_threshold, tier.rate
    bounds.append((lower, None, rate))
    fee = Decimal(0)
    for low, high, bracket_rate in bounds:
        top = end if high is None else min(end, high)
        overlap = top - max(start, low)
        if overlap > 0:
            fee += overlap * bracket_rate
    fee = max(fee, structure.min_commission)
    return fee.quantize(FEE_QUANTUM, rounding=ROUND_HALF_UP)
