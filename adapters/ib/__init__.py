"""Interactive Brokers (TWS / IB Gateway through ib_async) as a broker adapter: see `broker`."""

from adapters.ib.broker import IbBroker, build_ib_broker
from adapters.ib.codes import LinkState
from adapters.ib.config import IB_PACING, IbConfig
from adapters.ib.ledger import FillLedger
from adapters.ib.translate import IB_STATUSES, fill_id

__all__ = [
    "IB_PACING",
    "IB_STATUSES",
    "FillLedger",
    "IbBroker",
    "IbConfig",
    "LinkState",
    "build_ib_broker",
    "fill_id",
]
