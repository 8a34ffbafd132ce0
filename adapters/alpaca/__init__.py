"""Alpaca (paper or live) as a broker adapter: see `broker` for the contract.

The names below are imported on first use (PEP 562), so importing `adapters.alpaca.config` (the
daemon's configuration does, for every run) does not load the broker's client library.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "AlpacaBroker": "broker",
    "AlpacaConfig": "config",
    "AlpacaCredentials": "config",
    "AlpacaRest": "rest",
    "EventKind": "translate",
    "ExecutionLedger": "ledger",
    "LIVE_URL": "config",
    "ORDER_STATUSES": "translate",
    "OneShotTradingClient": "rest",
    "PAPER_URL": "config",
    "StatusRule": "translate",
    "TRADE_EVENTS": "translate",
    "build_alpaca_broker": "broker",
}

__all__ = [
    "LIVE_URL",
    "ORDER_STATUSES",
    "PAPER_URL",
    "TRADE_EVENTS",
    "AlpacaBroker",
    "AlpacaConfig",
    "AlpacaCredentials",
    "AlpacaRest",
    "EventKind",
    "ExecutionLedger",
    "OneShotTradingClient",
    "StatusRule",
    "build_alpaca_broker",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
