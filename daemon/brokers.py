"""Building the daemon's broker connections from configuration: simulated venues on the
simulated market, Alpaca accounts, FIX sessions, Interactive Brokers API clients. Each becomes a
`BrokerHandle` plus the connection parameters recorded in `broker_connections` (never a
credential). The client libraries of real brokers are imported only when one is configured:
alpaca-py with pandas cost ~45 MB at idle."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from adapters.fix.adapter import build_fix_broker
from adapters.simulated import SimulatedBroker, SimulatedMarket
from api.enums import ConnectionStatus, IssueType
from daemon.config import Config
from nursery.brokers import BrokerHandle


class BrokerSetupError(ValueError):
    """A configured broker cannot be built; the message says which and what to fix."""


def build_handles(
    config: Config,
    market: SimulatedMarket,
    database_url: str,
    environ: Mapping[str, str] | None = None,
) -> list[tuple[BrokerHandle, dict[str, str]]]:
    """FIX sessions keep their sequence numbers in `database_url` (the daemon's database)."""
    env = dict(os.environ if environ is None else environ)
    common = {"settle": config.service.settle_s, "capacity": config.service.broker_capacity}
    built: list[tuple[BrokerHandle, dict[str, str]]] = []
    for b in config.simulated_brokers:
        handle = BrokerHandle(
            SimulatedBroker(b, market),
            b.name,
            venue_access=b.venue_access or float(b.liquidity_share),
            max_participation=b.max_participation,
            **common,  # type: ignore[arg-type]
        )
        built.append((handle, {"kind": "simulated"}))
    if config.alpaca_brokers:  # alpaca-py (and pandas) load only when an account is configured
        from adapters.alpaca.broker import build_alpaca_broker
    for a in config.alpaca_brokers:
        try:
            adapter = build_alpaca_broker(a, env)
        except ValueError as exc:
            raise BrokerSetupError(
                f"alpaca broker {a.broker_id!r}: {exc} (set the variables named by key_env/secret_env)"
            ) from None
        params = {"kind": "alpaca", "base_url": a.rest_url, "paper": str(a.paper).lower()}
        built.append((BrokerHandle(adapter, a.name, **common), params))  # type: ignore[arg-type]
    for f in config.fix_brokers:
        if f.password_env and not env.get(f.password_env):
            raise BrokerSetupError(
                f"fix broker {f.broker_id!r}: environment variable {f.password_env} (password_env) is not set"
            )
        fix = build_fix_broker(f, database_url)
        params = {
            "kind": "fix",
            "host": f.host,
            "port": str(f.port),
            "sender_comp_id": f.sender_comp_id,
            "target_comp_id": f.target_comp_id,
        }
        built.append((BrokerHandle(fix, f.name, **common), params))  # type: ignore[arg-type]
    if config.ib_brokers:  # ib_async loads only when an IB client is configured
        from adapters.ib.broker import build_ib_broker
    for i in config.ib_brokers:
        ib = build_ib_broker(i)
        ib_handle = BrokerHandle(ib, i.name, **common)  # type: ignore[arg-type]
        ib.status_listener = _ib_status(ib_handle)
        params = {"kind": "ib", "host": i.host, "port": str(i.port), "client_id": str(i.client_id)}
        if i.account:
            params["account"] = i.account
        built.append((ib_handle, params))
    return built


def _ib_status(handle: BrokerHandle) -> Callable[[ConnectionStatus, str], None]:
    """What TWS's codes say about a connected IB client, applied to its handle: 1100
    DISCONNECTED, a broken data farm DEGRADED (both with an issue), restored CONNECTED."""

    def apply(status: ConnectionStatus, message: str) -> None:
        if status is ConnectionStatus.DISCONNECTED:
            handle.mark_disconnected(IssueType.CONNECTIVITY, message)
        elif status is ConnectionStatus.DEGRADED:
            handle.status = ConnectionStatus.DEGRADED
            handle.report_issue(IssueType.CONNECTIVITY, message)
        elif handle.status is not ConnectionStatus.CONNECTED:
            handle.mark_connected()

    return apply
