"""Interactive Brokers (TWS / IB Gateway through ib_async) as a broker adapter: see `broker`.

The names below are imported on first use (PEP 562), so importing `adapters.ib.config` (the
daemon's configuration does, for every run) does not load the broker's client library.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "FillLedger": "ledger",
    "IB_PACING": "config",
    "IB_STATUSES": "translate",
    "IbBroker": "broker",
    "IbConfig": "config",
    "LinkState": "codes",
    "build_ib_broker": "broker",
    "fill_id": "translate",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
