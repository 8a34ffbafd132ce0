"""Configuration of one Interactive Brokers connection (TWS or IB Gateway, via ib_async).

No credential exists at this level: TWS / IB Gateway holds the login, the API socket only
names a `client_id`. So nothing here is secret, and nothing is read from the environment.

`client_id` must be unique among the API clients connected to that TWS: a second connection
with the same id is refused (error 326), which the adapter reports as a configuration error
and retries only after `client_id_retry` seconds (TWS frees the id when it notices the old
socket is gone). IB order ids are per client id, so keep it fixed for a broker: orders of a
previous run are then this client's own (found by open/completed orders and executions).

Pacing: IB allows about 50 messages per second per client and disconnects beyond it.
`rate_limits` (what routing and the daemon's limiter use) defaults to 50 orders per second;
ib_async's own throttle, applied to every message the client sends (orders, lookups,
heartbeats), is set to `max_messages_per_second` (45: a margin below IB's 50).
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from api.capabilities import RateLimits
from api.contracts import CommissionStructure
from api.enums import AssetClass, TimeInForce

#: IB's documented API pacing: 50 messages per second per client.
IB_PACING = 50
DEFAULT_RATE_LIMITS = RateLimits(requests_per_second=IB_PACING)


def _default_rate_limits() -> RateLimits:
    return DEFAULT_RATE_LIMITS


def _fixed_pricing() -> CommissionStructure:
    """About IB's fixed pricing for US stocks (USD 0.005/share, USD 1 minimum) on a ~USD 100
    share, as a fraction of notional: only the fallback when no commissionReport arrives."""
    return CommissionStructure(base_rate=Decimal("0.00005"), min_commission=Decimal(1))


class IbConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One TWS / IB Gateway API connection (all times in seconds)."""

    broker_id: str = "ib"
    name: str = "Interactive Brokers"
    host: str = "127.0.0.1"
    #: 7497 paper TWS, 7496 live TWS, 4002 paper Gateway, 4001 live Gateway.
    port: int = 7497
    client_id: int = 1
    #: The account orders go to. Empty: the only account TWS manages (several: refused).
    account: str = ""
    asset_classes: tuple[AssetClass, ...] = (AssetClass.EQUITY, AssetClass.FOREX, AssetClass.CRYPTO)
    #: FOK is left out by default: IB takes it only on some exchanges and products; add it
    #: here for an account that trades where IB allows it.
    time_in_force: tuple[TimeInForce, ...] = (TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC)
    #: Reported as `OrderFilled.venue` when an execution does not name its exchange.
    venue: str = "IB"
    #: TCP connect + API handshake + start-up synchronisation (open and completed orders).
    connect_timeout: float = 10.0
    #: Every request that waits for an answer (contract details, order lookups, heartbeat).
    request_timeout: float = 10.0
    #: How long `submit` waits for IB's acknowledgement before looking the order up by orderRef.
    submit_timeout: float = 5.0
    cancel_timeout: float = 5.0
    #: reqExecutions (recovery): a timeout is "recovery incomplete", never "no fills".
    executions_timeout: float = 10.0
    #: A fill waits this long for its commissionReport; past it, the fee is computed from
    #: `commission` (and a late report is logged, not booked twice).
    commission_wait: float = 2.0
    #: Recovery starts `recovery_overlap` before the newest fill seen, or (first connect)
    #: `recovery_lookback` before the adapter was built.
    recovery_overlap: float = 5.0
    recovery_lookback: float = 60.0
    #: After error 326 (client id in use), connecting again is not tried before this long.
    client_id_retry: float = 60.0
    max_messages_per_second: int = 45
    rate_limits: RateLimits = msgspec.field(default_factory=_default_rate_limits)
    commission: CommissionStructure = msgspec.field(default_factory=_fixed_pricing)

    def __post_init__(self) -> None:
        if not 0 < self.port <= 65535:
            raise ValueError(f"{self.broker_id}: port {self.port} is not a port number")
        if self.client_id < 0:
            raise ValueError(f"{self.broker_id}: client_id must not be negative")
        timeouts = (
            self.connect_timeout,
            self.request_timeout,
            self.submit_timeout,
            self.cancel_timeout,
            self.executions_timeout,
        )
        if min(timeouts) <= 0:
            raise ValueError(f"{self.broker_id}: timeouts must be positive")
        if min(self.commission_wait, self.recovery_overlap, self.recovery_lookback, self.client_id_retry) < 0:
            raise ValueError(f"{self.broker_id}: waits, overlaps and lookbacks must not be negative")
        if not 1 <= self.max_messages_per_second <= IB_PACING:
            raise ValueError(f"{self.broker_id}: max_messages_per_second must be 1..{IB_PACING}")
        unknown = set(self.asset_classes) - {AssetClass.EQUITY, AssetClass.FOREX, AssetClass.CRYPTO}
        if unknown:
            raise ValueError(f"{self.broker_id}: the IB adapter does not trade {sorted(unknown)}")
        if not self.asset_classes or not self.time_in_force:
            raise ValueError(f"{self.broker_id}: asset_classes and time_in_force must not be empty")
