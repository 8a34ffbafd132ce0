"""Configuration of one Alpaca connection, and where its credentials come from.

The config names environment variables, never secrets: `key_env` and `secret_env` hold the
*names* of the variables with the API key id and secret, read once by `AlpacaCredentials` when
the adapter is built. So a config file, a log line or a repr of the config cannot leak a key.
`AlpacaCredentials` itself prints as `<redacted>`.

URLs: `base_url` defaults to the paper endpoint (or the live one with `paper = false`); the
trade-updates stream defaults to the same host's `/stream` (what Alpaca serves), so pointing
`base_url` at an emulator is enough. `paper` is a safety latch: a paper config whose `base_url`
is Alpaca's live endpoint (or the reverse) is refused.

Alpaca trades commission-free: the default `commission` is zero (fees on fills are computed
from it with `api.commission`, as for every broker).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal

import msgspec

from api.capabilities import RateLimits
from api.contracts import CommissionStructure

PAPER_URL = "https://paper-api.alpaca.markets"
LIVE_URL = "https://api.alpaca.markets"

#: Alpaca's documented default: 200 requests per minute per account (429 past it).
DEFAULT_RATE_LIMITS = RateLimits(requests_per_minute=200)


def _default_rate_limits() -> RateLimits:
    return DEFAULT_RATE_LIMITS


def _commission_free() -> CommissionStructure:
    return CommissionStructure(base_rate=Decimal(0))


class AlpacaConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One Alpaca account reached through one API key pair (all times in seconds)."""

    broker_id: str = "alpaca"
    name: str = "Alpaca"
    paper: bool = True
    base_url: str | None = None
    stream_url: str | None = None
    #: Names of the environment variables holding the key id and the secret (not the values).
    key_env: str = "ALPACA_KEY_ID"
    secret_env: str = "ALPACA_SECRET_KEY"
    #: Reported as `OrderFilled.venue`: Alpaca does not say where an order executed.
    venue: str = "ALPACA"
    #: TCP connect and response-read timeouts of every REST request (requests' `timeout`).
    connect_timeout: float = 3.0
    request_timeout: float = 10.0
    #: Opening the stream: connect, authenticate and subscribe, all within this.
    stream_connect_timeout: float = 10.0
    #: A websocket ping every `stream_ping_interval`; no pong within `stream_ping_timeout`
    #: means the connection is dead (`run` raises ConnectionLost).
    stream_ping_interval: float = 15.0
    stream_ping_timeout: float = 10.0
    #: REST requests in flight at once (worker threads; requests' pool holds 10 connections).
    max_concurrent_requests: int = 8
    #: On every (re)connect, fills are recovered from `recovery_overlap` before the newest
    #: fill already seen (or, before any, from `recovery_lookback` before the adapter started).
    recovery_overlap: float = 5.0
    recovery_lookback: float = 60.0
    rate_limits: RateLimits = msgspec.field(default_factory=_default_rate_limits)
    commission: CommissionStructure = msgspec.field(default_factory=_commission_free)

    def __post_init__(self) -> None:
        url = self.rest_url.rstrip("/")
        if self.paper and url == LIVE_URL:
            raise ValueError(f"{self.broker_id}: paper = true but base_url is Alpaca's live endpoint")
        if not self.paper and url == PAPER_URL:
            raise ValueError(f"{self.broker_id}: paper = false but base_url is Alpaca's paper endpoint")
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"{self.broker_id}: base_url must be an http(s) URL")
        if not self.trade_stream_url.startswith(("wss://", "ws://")):
            raise ValueError(f"{self.broker_id}: stream_url must be a ws(s) URL")
        timeouts = (
            self.connect_timeout,
            self.request_timeout,
            self.stream_connect_timeout,
            self.stream_ping_interval,
            self.stream_ping_timeout,
        )
        if min(timeouts) <= 0:
            raise ValueError(f"{self.broker_id}: timeouts and intervals must be positive")
        if self.recovery_overlap < 0 or self.recovery_lookback < 0:
            raise ValueError(f"{self.broker_id}: recovery_overlap and recovery_lookback must not be negative")
        if self.max_concurrent_requests < 1:
            raise ValueError(f"{self.broker_id}: max_concurrent_requests must be at least 1")

    @property
    def rest_url(self) -> str:
        """The REST root, without the `/v2` (alpaca-py adds it)."""
        if self.base_url is not None:
            return self.base_url.rstrip("/")
        return PAPER_URL if self.paper else LIVE_URL

    @property
    def trade_stream_url(self) -> str:
        """The trade-updates websocket: `stream_url`, else `base_url`'s host at `/stream`."""
        if self.stream_url is not None:
            return self.stream_url
        rest = self.rest_url
        scheme, _, rest_of_url = rest.partition("://")
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest_of_url}/stream"


class AlpacaCredentials:
    """An API key id and secret. Never printed: `repr` and `str` show `<redacted>`."""

    __slots__ = ("_key_id", "_secret")

    def __init__(self, key_id: str, secret: str) -> None:
        if not key_id or not secret:
            raise ValueError("Alpaca credentials need both a key id and a secret")
        self._key_id = key_id
        self._secret = secret

    def __repr__(self) -> str:
        return "AlpacaCredentials(<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("AlpacaCredentials cannot be pickled")

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def secret(self) -> str:
        return self._secret

    @classmethod
    def from_environment(
        cls, config: AlpacaConfig, environ: Mapping[str, str] | None = None
    ) -> AlpacaCredentials:
        """Read the variables `config.key_env` and `config.secret_env`. The error for a missing
        one names the variable, never a value."""
        env = os.environ if environ is None else environ
        missing = [name for name in (config.key_env, config.secret_env) if not env.get(name)]
        if missing:
            raise ValueError(f"{config.broker_id}: environment variable(s) {', '.join(missing)} not set")
        return cls(env[config.key_env], env[config.secret_env])
