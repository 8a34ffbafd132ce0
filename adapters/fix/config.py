"""Configuration of one FIX 4.4 broker session (an initiator: we connect, the broker accepts).

Frozen Structs decoded from the daemon's TOML with snake_case keys; unknown keys are an error.
As for the simulated brokers, `commission` is the wire contract's `CommissionStructure` with its
camelCase keys. The password is never in the configuration: `password_env` names the environment
variable that holds it (sent as Password (554) in the Logon, never logged, never stored).
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from api.capabilities import Capabilities, RateLimits
from api.contracts import CommissionStructure
from api.enums import AssetClass, BrokerFeature, TimeInForce

__all__ = ["CommissionReporting", "FixConfig", "FixTimeouts"]


class CommissionReporting(StrEnum):
    """How the counterparty fills Commission (12) on its fill reports. FIX 4.4 says the value of
    that fill (`per_fill`); some brokers send the order's running total (`cumulative`), and the
    fee of a fill is then the increase over the previous report."""

    PER_FILL = "per_fill"
    CUMULATIVE = "cumulative"


class FixTimeouts(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Bounds, in seconds, on every wait of the session: nothing waits without one."""

    connect_s: float = 5.0  # TCP connect
    logon_s: float = 10.0  # from our Logon to the counterparty's
    logout_s: float = 2.0  # from our Logout to the counterparty's, on stop
    send_s: float = 5.0  # writing one message to the socket
    store_s: float = 5.0  # one PostgreSQL call (also the server-side statement_timeout)
    answer_s: float = 30.0  # submit/cancel/query waiting for the broker's answer
    heartbeat_grace_s: float = 1.0  # silence tolerated past HeartBtInt before a TestRequest
    test_request_s: float = 5.0  # a TestRequest unanswered this long ends the connection
    sync_s: float = 5.0  # open_orders/fills_since waiting for a resend in progress to finish

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            if getattr(self, name) <= 0:
                raise ValueError(f"timeouts.{name} must be positive")


class FixConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One FIX broker. `sender_comp_id`/`target_comp_id` identify the session (its sequence
    numbers are kept in PostgreSQL under that pair); `account` goes in Account (1) of every
    order (None: the order's own `account_id`). `venue` is what a fill reports when the broker
    sends no LastMkt (30); None: the target comp id."""

    broker_id: str
    name: str
    host: str
    port: int
    sender_comp_id: str
    target_comp_id: str
    commission: CommissionStructure
    account: str | None = None
    username: str | None = None  # Username (553) in the Logon, when the broker wants one
    password_env: str | None = None  # environment variable holding Password (554)
    heartbeat_interval: int = 30  # HeartBtInt (108), whole seconds as FIX requires
    reset_on_logon: bool = False  # ResetSeqNumFlag (141=Y): both sides start again at 1
    venue: str | None = None
    asset_classes: tuple[AssetClass, ...] = (AssetClass.EQUITY,)
    features: tuple[BrokerFeature, ...] = (BrokerFeature.MARKET_ORDERS, BrokerFeature.LIMIT_ORDERS)
    time_in_force: tuple[TimeInForce, ...] = tuple(TimeInForce)
    rate_limits: RateLimits = msgspec.field(default_factory=RateLimits)
    commission_reporting: CommissionReporting = CommissionReporting.PER_FILL
    #: Our cancels and status requests younger than this are resent when the broker asks;
    #: older ones are gap-filled (see `adapters.fix.resend`).
    resend_max_age_s: float = 60.0
    #: Messages we sent, and the reports of orders that ended, are kept this long (days), then
    #: pruned at the next logon; reports of orders still open are kept whatever their age.
    retention_days: int = 30
    timeouts: FixTimeouts = msgspec.field(default_factory=FixTimeouts)

    def __post_init__(self) -> None:
        if self.retention_days < 1:
            raise ValueError(f"{self.broker_id}: retention_days must be at least 1")
        for name in ("broker_id", "host", "sender_comp_id", "target_comp_id"):
            value = getattr(self, name)
            if not value or "\x01" in value or "=" in value:
                raise ValueError(f"{name} must be a non-empty FIX string")
        if not 0 < self.port < 65536:
            raise ValueError("port must be within 1..65535")
        if self.heartbeat_interval < 1:
            raise ValueError("heartbeat_interval must be at least 1 second")
        if self.resend_max_age_s < 0:
            raise ValueError("resend_max_age_s must not be negative")
        if not self.asset_classes or not self.features or not self.time_in_force:
            raise ValueError("asset_classes, features and time_in_force must not be empty")

    @property
    def session_id(self) -> str:
        """The session's key, spelled as QuickFIX does: FIX.4.4:SENDER->TARGET."""
        return f"FIX.4.4:{self.sender_comp_id}->{self.target_comp_id}"

    @property
    def fill_venue(self) -> str:
        return self.venue if self.venue is not None else self.target_comp_id

    def capabilities(self) -> Capabilities:
        return Capabilities(
            asset_classes=frozenset(self.asset_classes),
            features=frozenset(self.features),
            time_in_force=frozenset(self.time_in_force),
            rate_limits=self.rate_limits,
        )

    def __repr__(self) -> str:  # no password here anyway; keep reprs short in logs
        return f"<FixConfig {self.broker_id} {self.session_id} {self.host}:{self.port}>"
