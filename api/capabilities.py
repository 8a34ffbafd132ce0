"""What a broker can trade: asset classes, order types (features) and times in force."""

from __future__ import annotations

import msgspec

from api.enums import AssetClass, BrokerFeature, OrderType, TimeInForce


class RateLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A broker's request limits per window (the spec's RateLimits); 0 means no limit."""

    requests_per_second: int = 0
    requests_per_minute: int = 0
    requests_per_hour: int = 0

    def __post_init__(self) -> None:
        if min(self.requests_per_second, self.requests_per_minute, self.requests_per_hour) < 0:
            raise ValueError("rate limits must not be negative")

    def windows(self) -> tuple[tuple[float, int], ...]:
        """(window seconds, limit) for each window that has a limit."""
        pairs = (
            (1.0, self.requests_per_second),
            (60.0, self.requests_per_minute),
            (3600.0, self.requests_per_hour),
        )
        return tuple((window, limit) for window, limit in pairs if limit > 0)


class Capabilities(msgspec.Struct, frozen=True):
    asset_classes: frozenset[AssetClass]
    features: frozenset[BrokerFeature]
    time_in_force: frozenset[TimeInForce] = frozenset(TimeInForce)
    rate_limits: RateLimits = RateLimits()

    def supports(self, asset_class: AssetClass, order_type: OrderType, tif: TimeInForce) -> str | None:
        """None when an order of this shape can be sent here, else the reason it cannot."""
        if asset_class not in self.asset_classes:
            return f"does not trade {asset_class}"
        if order_type.feature not in self.features:
            return f"does not support {order_type} orders"
        if tif not in self.time_in_force:
            return f"does not support time in force {tif}"
        return None
