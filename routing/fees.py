"""Commission schedules compiled for the routing hot path: the same figures as `api.commission`.

`api.commission` is the definition (Decimal, tiers as tax brackets over the running volume,
minimum, quantized to `FEE_QUANTUM` half-up). It costs 5-9 µs a call, too much to price every
broker of every order. `FeeSchedule` compiles one `CommissionStructure` once into integers —
volumes in units of 1e-10, rates in units of 1e-12 — and evaluates the same brackets in exact
integer arithmetic, returning the fee as a whole number of 1e-8 (`FEE_QUANTUM`). Exact means
equal to `api.commission` (a property test checks it), not close to it: routing breaks ties on
the fee, and money stays exact. A structure, notional or running volume with more decimal
places than the fixed scales is priced by `api.commission` itself (`FeeSchedule.exact` False).
"""

from __future__ import annotations

from decimal import Decimal

from api.commission import FEE_QUANTUM, commission
from api.contracts import CommissionStructure

VOLUME_DIGITS = 10  # notional, running volume, thresholds, minimum: units of 1e-10
RATE_DIGITS = 12  # rates: units of 1e-12
FEE_DIGITS = 8  # FEE_QUANTUM = 1e-8 (checked below)
#: Product units (1e-22) per FEE_QUANTUM, and half of it (for ROUND_HALF_UP).
DIVISOR: int = 10 ** (VOLUME_DIGITS + RATE_DIGITS - FEE_DIGITS)
HALF = DIVISOR // 2
_MINIMUM_SCALE: int = 10**RATE_DIGITS  # a money amount in 1e-10 units times this is in product units
assert Decimal(1).scaleb(-FEE_DIGITS) == FEE_QUANTUM


def scaled(value: Decimal, digits: int) -> int | None:
    """`value` * 10**digits as an int when that is exact, else None."""
    if not value.is_finite():
        return None
    shifted = value.scaleb(digits)
    whole = int(shifted)
    return whole if whole == shifted else None


#: An inline rate: (rate, minimum, half, divisor), see `inline_rate`.
InlineRate = tuple[int, int, int, int]


def inline_rate(rate: int, minimum: int) -> InlineRate:
    """A non-negative rate (1e-12 units) and minimum (product units, 1e-22) for the routing
    loop: with the powers of ten they have in common cancelled (at most 13, so that half the
    divisor stays whole), the fee of a notional `n` (1e-10 units, non-negative) in whole
    `FEE_QUANTUM`s, `(max(n * rate, minimum) + HALF) // DIVISOR`, is exactly
    `(max(n * r, m) + h) // d` with `(r, m, h, d)` returned here. The same integer; but `d` is
    usually below 2**30, and Python divides by one such digit several times faster."""
    shift = 0
    while shift < 13 and rate % 10 == 0 and minimum % 10 == 0:
        rate //= 10
        minimum //= 10
        shift += 1
    return rate, minimum, 5 * 10 ** (13 - shift), 10 ** (14 - shift)


def fee_decimal(units: int) -> Decimal:
    """A fee in whole `FEE_QUANTUM`s as the Decimal `api.commission` returns."""
    return Decimal(units).scaleb(-FEE_DIGITS)


class FeeSchedule:
    """One broker's `CommissionStructure`, compiled. Immutable after construction."""

    __slots__ = ("_brackets", "exact", "flat_rate", "minimum", "structure")
    _brackets: tuple[tuple[int, int | None, int], ...]
    #: The single non-negative rate of an exact structure without tiers, in 1e-12 (then the
    #: fee is `max(notional * flat_rate, minimum)` and the running volume does not matter).
    flat_rate: int | None
    #: The minimum commission in product units (1e-22).
    minimum: int

    def __init__(self, structure: CommissionStructure) -> None:
        self.structure = structure
        edges = sorted(structure.tiered_rates, key=lambda tier: (tier.volume_threshold, tier.rate))
        raw: list[tuple[Decimal, Decimal | None, Decimal]] = []
        lower, rate = Decimal(0), structure.base_rate
        for tier in edges:
            raw.append((lower, tier.volume_threshold, rate))
            lower, rate = tier.volume_threshold, tier.rate
        raw.append((lower, None, rate))
        brackets: list[tuple[int, int | None, int]] = []
        exact = True
        for low, high, bracket_rate in raw:
            low_units = scaled(low, VOLUME_DIGITS)
            high_units = None if high is None else scaled(high, VOLUME_DIGITS)
            rate_units = scaled(bracket_rate, RATE_DIGITS)
            if low_units is None or rate_units is None or (high is not None and high_units is None):
                exact = False
                break
            brackets.append((low_units, high_units, rate_units))
        minimum = scaled(structure.min_commission, VOLUME_DIGITS)
        self.exact = exact and minimum is not None
        self._brackets = tuple(brackets)
        self.minimum = (minimum or 0) * _MINIMUM_SCALE
        flat = self.exact and len(brackets) == 1 and brackets[0][2] >= 0 and self.minimum >= 0
        self.flat_rate = brackets[0][2] if flat else None

    def __repr__(self) -> str:
        return f"<FeeSchedule brackets={len(self._brackets)} exact={self.exact}>"

    def fee_units(self, notional: int, running_volume: int) -> int:
        """The fee in whole `FEE_QUANTUM`s for a notional and running volume in 1e-10 units
        (`scaled(x, VOLUME_DIGITS)`). Only valid when `exact`."""
        if notional < 0:
            notional = -notional
        if notional == 0:
            return 0
        if self.flat_rate is not None:
            fee = notional * self.flat_rate
        else:
            start = running_volume if running_volume > 0 else 0
            end = start + notional
            fee = 0
            for low, high, rate in self._brackets:
                top = end if high is None or end < high else high
                overlap = top - (start if start > low else low)
                if overlap > 0:
                    fee += overlap * rate
        if fee < self.minimum:
            fee = self.minimum
        if fee >= 0:
            return (fee + HALF) // DIVISOR
        return -((-fee + HALF) // DIVISOR)  # ROUND_HALF_UP rounds away from zero

    def bracket_at(self, running_volume: int) -> tuple[int, int]:
        """(rate, room) of the bracket a running volume (1e-10 units) is in: an order of at
        most `room` (-1: unbounded) is charged `notional * rate` before the minimum."""
        start = running_volume if running_volume > 0 else 0
        for low, high, rate in self._brackets:
            if low <= start and (high is None or start < high):
                return rate, (-1 if high is None else high - start)
        raise AssertionError("brackets cover every volume")  # pragma: no cover

    def fee(self, notional: Decimal, running_volume: Decimal) -> int:
        """The fee in whole `FEE_QUANTUM`s for Decimal inputs, by the compiled brackets when
        they are exact, else by `api.commission`."""
        n = scaled(notional, VOLUME_DIGITS)
        v = scaled(running_volume, VOLUME_DIGITS)
        if self.exact and n is not None and v is not None:
            return self.fee_units(n, v)
        return exact_units(commission(self.structure, notional, running_volume))


def exact_units(fee: Decimal) -> int:
    """A fee quantized to `FEE_QUANTUM` as a whole number of them."""
    return int(fee.scaleb(FEE_DIGITS))
