"""What the operator console shows, as JSON-ready dicts built from state the daemon keeps.

Pure functions over their arguments (no I/O, no clock except where passed): the routes in
`daemon.console.routes` call them per request, so a console that nobody opens costs nothing.

- `broker_rows`: per broker, its status, uptime, ack latency p50/p95/p99 (the last acks the
  metrics keep), breaker state, load, rate-limit headroom and maintenance flag.
- `executions`: the last executions this daemon updated, newest first, each with its fills,
  rebuilt from the raw updates the feed keeps.
- `broker_quality`: per broker, the execution reports' cost (notional-weighted mean arrival
  cost in bps, from the peer statistics) and the quality of the recent TCA results, with the
  counts of orders, fills, cancels and rejects since start.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from api.contracts import TCAResponse
from api.enums import ConnectionStatus
from daemon.metrics import DaemonMetrics
from nursery.brokers import BrokerHandle
from tca.peers import Dimension, PeerStats

__all__ = ["broker_quality", "broker_rows", "executions", "percentiles"]

FINAL = frozenset({"COMPLETED", "CANCELED", "REJECTED"})


def percentiles(samples: Iterable[float], qs: Sequence[float] = (0.5, 0.95, 0.99)) -> list[float | None]:
    """Nearest-rank percentiles of `samples` (None each when there are none)."""
    ordered = sorted(samples)
    if not ordered:
        return [None for _ in qs]
    return [ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] for q in qs]


def broker_rows(handles: Sequence[BrokerHandle], metrics: DaemonMetrics) -> list[dict[str, Any]]:
    rows = []
    for handle in handles:
        recent = metrics.recent_acks.get(handle.broker_id, deque())
        p50, p95, p99 = percentiles(recent)
        effective = handle.effective_status
        rows.append(
            {
                "brokerId": handle.broker_id,
                "name": handle.name,
                "status": effective.value,
                "connected": handle.status in (ConnectionStatus.CONNECTED, ConnectionStatus.DEGRADED),
                "maintenance": handle.maintenance,
                "uptimePercent": handle.uptime_percent(),
                "latencyMs": {"p50": p50, "p95": p95, "p99": p99, "samples": len(recent)},
                "breaker": handle.breaker.state.value,
                "loadPercent": handle.current_load(),
                "rateLimitHeadroomPercent": round(handle.limiter.headroom(), 3),
                "inFlight": handle.in_flight,
                "issues": [
                    {"type": i.type.value, "message": i.message, "timestamp": i.timestamp.isoformat()}
                    for i in list(handle.issues)[-3:]
                ],
            }
        )
    return rows


_decode_update = msgspec.json.Decoder(dict[str, Any])


def executions(updates: Iterable[tuple[str, bytes]], limit: int = 25) -> list[dict[str, Any]]:
    """The last `limit` executions among `updates` (oldest first, as the feed keeps them),
    newest first: the latest state of each and every fill its updates carried."""
    latest: dict[str, dict[str, Any]] = {}
    fills: dict[str, list[dict[str, Any]]] = {}
    for _, payload in updates:
        try:
            update = _decode_update.decode(payload)
        except msgspec.DecodeError:
            continue
        execution_id = update.get("executionId")
        if not isinstance(execution_id, str):
            continue
        latest.pop(execution_id, None)  # re-insert: the dict's order is the order of last update
        latest[execution_id] = update
        fill = update.get("latestFill")
        if isinstance(fill, dict):
            fills.setdefault(execution_id, []).append(fill)
    rows = []
    for execution_id in list(reversed(latest))[:limit]:
        update = latest[execution_id]
        rows.append(
            {
                "executionId": execution_id,
                "orderId": update.get("orderId"),
                "brokerId": update.get("brokerId"),
                "status": update.get("status"),
                "final": update.get("status") in FINAL,
                "filledQuantity": update.get("filledQuantity"),
                "averagePrice": update.get("averagePrice"),
                "timestamp": update.get("timestamp"),
                "reason": update.get("reason"),
                "fills": fills.get(execution_id, []),
            }
        )
    return rows


def broker_quality(
    handles: Sequence[BrokerHandle],
    metrics: DaemonMetrics,
    peers: PeerStats,
    tca: Mapping[str, tuple[str, TCAResponse]],
) -> list[dict[str, Any]]:
    """Per broker: cost from the execution reports (peer statistics over every asset class and
    size), quality from the recent TCA results (`tca`: execution id -> (broker, result))."""
    cost: dict[str, tuple[float, float, int]] = {}  # broker -> (weight, weighted sum, count)
    for group in peers.groups:
        if group.dimension is not Dimension.BROKER or group.size_bucket is not None or group.weight <= 0:
            continue
        weight, total, count = cost.get(group.key, (0.0, 0.0, 0))
        cost[group.key] = (weight + group.weight, total + group.weighted_sum, count + group.count)
    scores: dict[str, list[float]] = {}
    slippage: dict[str, list[float]] = {}
    for broker, result in tca.values():
        if result.execution_quality_score is not None:
            scores.setdefault(broker, []).append(result.execution_quality_score)
        if result.slippage_bps is not None:
            slippage.setdefault(broker, []).append(result.slippage_bps)
    rows = []
    for handle in handles:
        broker = handle.broker_id
        weight, total, count = cost.get(broker, (0.0, 0.0, 0))
        rows.append(
            {
                "brokerId": broker,
                "reports": count,
                "executedNotional": round(weight, 2),
                "meanCostBps": round(total / weight, 3) if weight > 0 else None,
                "meanQualityScore": _mean(scores.get(broker)),
                "meanSlippageBps": _mean(slippage.get(broker)),
                "orders": metrics.orders.get(broker),
                "fills": metrics.fills.get(broker),
                "cancels": metrics.cancels.get(broker),
                "rejects": sum(v for k, v in metrics.rejects.counts.items() if k[0] == broker),
            }
        )
    return rows


def _mean(values: list[float] | None) -> float | None:
    return round(sum(values) / len(values), 3) if values else None
