"""Broker scoring and selection: pure functions over snapshots (never imports daemon, nursery,
adapters or sql)."""

from routing.select import BrokerCandidate, Selection, select_broker

__all__ = ["BrokerCandidate", "Selection", "select_broker"]
