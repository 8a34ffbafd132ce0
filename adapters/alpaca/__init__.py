"""Alpaca (paper or live) as a broker adapter: see `broker` for the contract."""

from adapters.alpaca.broker import AlpacaBroker, build_alpaca_broker
from adapters.alpaca.config import LIVE_URL, PAPER_URL, AlpacaConfig, AlpacaCredentials
from adapters.alpaca.ledger import ExecutionLedger
from adapters.alpaca.rest import AlpacaRest, OneShotTradingClient
from adapters.alpaca.translate import ORDER_STATUSES, TRADE_EVENTS, EventKind, StatusRule

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
