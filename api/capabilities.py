"""What a broker can trade: asset classes, order types (features) and times in force."""

from __future__ import annotations

import msgspec

from api.enums import AssetClass, BrokerFeature, OrderType, TimeInForce


class Capabilities(msgspec.Struct, frozen=True):
    asset_classes: frozenset[AssetClass]
    features: frozenset[BrokerFeature]
    time_in_force: frozenset[TimeInForce] = frozenset(TimeInForce)

    def supports(self, asset_class: AssetClass, order_type: OrderType, tif: TimeInForce) -> str | None:
        """None when an order of this shape can be sent here, else the reason it cannot."""
        if asset_class not in self.asset_classes:
            return f"does not trade {asset_class}"
        if order_type.feature not in self.features:
            return f"does not support {order_type} orders"
        if tif not in self.time_in_force:
            return f"does not support time in force {tif}"
        return None
