"""The engine's market view read straight from a `SimulatedMarket`, without NATS.

For tests and benchmarks of the engine alone; the daemon uses `market.book.MarketBook` fed by the
intake. It satisfies `nursery.router.MarketView` structurally (no import of it: adapters never
import nursery or routing).
"""

from __future__ import annotations

from decimal import Decimal

from adapters.simulated.market import SimulatedMarket
from api.enums import AssetClass

__all__ = ["DirectView"]


class DirectView:
    """The engine's market view read straight from a `SimulatedMarket`, without NATS: for tests
    and benchmarks of the engine alone (the daemon uses `MarketBook` fed by the intake). No
    market statistics: routing sees no spread or impact cost."""

    def __init__(self, market: SimulatedMarket) -> None:
        self.market = market

    def __repr__(self) -> str:
        return f"<DirectView {self.market!r}>"

    def asset_class(self, symbol: str) -> AssetClass | None:
        return self.market.asset_class(symbol)

    def mid(self, symbol: str) -> Decimal | None:
        try:
            quote = self.market.quote(symbol)
        except KeyError:
            return None
        return (quote.bid + quote.ask) / 2

    def stats(self, symbol: str) -> None:
        """Always None: this view has no market statistics (the engine's `MarketView` allows it)."""
        return None
