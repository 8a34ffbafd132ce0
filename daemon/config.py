"""Daemon configuration: a TOML file, then environment overrides, then the embedded defaults.

Precedence (highest first): environment variables, the TOML file, built-in defaults. With no file
and no environment the daemon runs its embedded default: its own nats-server and PostgreSQL in the
state directory, three simulated brokers and a simulated market. `daemon/example.toml` documents
every key.

Environment overrides:
    NATS_URL              join this NATS server (or cluster: URLs separated by commas)
                          instead of starting one
    DATABASE_URL          join this PostgreSQL instead of starting one
    BIS_STATE_DIR         state directory (also $STATE_DIRECTORY under systemd)
    BIS_REST_HOST / BIS_REST_PORT
    BIS_REST_TOKENS       comma-separated bearer tokens (empty: REST auth disabled)
    BIS_INSTANCE_ID       this daemon's id in logs and NATS connection names
    BIS_LOG_LEVEL         DEBUG, INFO, WARNING, ...
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec

from adapters.alpaca.config import AlpacaConfig
from adapters.fix.config import FixConfig
from adapters.ib.config import IbConfig
from adapters.simulated.config import (
    MarketConfig,
    SimulatedBrokerConfig,
    default_brokers,
    default_instruments,
)
from api.contracts import CommissionStructure
from api.enums import Urgency
from market.subjects import PREFIX
from nursery.pretrade.config import RiskConfig, SafeguardsConfig, config_problems


class ConfigError(Exception):
    pass


class ServiceSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    instance_id: str = ""
    state_dir: str = ""
    log_level: str = "INFO"
    queue_group: str = "broker-integration"
    #: Trio tasks answering NATS requests concurrently.
    request_workers: int = 128
    #: Requests queued beyond the workers before new ones get a 503 error reply.
    request_backlog: int = 4096
    #: Graceful stop: in-flight work gets this long after SIGTERM (keep < systemd TimeoutStopSec).
    shutdown_grace_s: float = 10.0
    #: How long one broker attempt may take before its outcome counts as unknown, by urgency.
    attempt_deadline_ms: dict[str, float] = msgspec.field(
        default_factory=lambda: {"LOW": 5000.0, "MEDIUM": 3000.0, "HIGH": 1500.0, "CRITICAL": 750.0}
    )
    #: How long a repeated orderId waits for the first request's answer.
    duplicate_wait_s: float = 10.0
    #: An order found at a broker after an unknown outcome (timeout, disconnect): "adopt" keeps
    #: it there; "failover" cancels it, waits for the broker to confirm, then tries the next.
    unknown_outcome_policy: str = "adopt"
    #: How long routing waits to learn the fate of an unknown attempt before answering PENDING.
    reconcile_budget_s: float = 5.0
    #: How long after we stop waiting an order can still reach a broker (requests in flight):
    #: an unknown attempt counts as "never arrived" only after this long without a trace.
    settle_s: float = 2.0
    #: In-flight orders per broker that count as a 100 % load.
    broker_capacity: int = 100

    def attempt_deadline(self, urgency: Urgency) -> float:
        return self.attempt_deadline_ms.get(urgency.value, 3000.0) / 1000.0


#: JetStream keeps at most this many copies of a stream (one per server of the cluster).
MAX_STREAM_REPLICAS = 5


class NatsSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: The NATS server, or the servers of a cluster separated by commas (in the TOML file also
    #: a list of URLs, joined here): nats-py tries them in turn and fails over between them.
    #: Empty: start the embedded nats-server.
    url: str = ""
    stream: str = "BROKER_EXECUTIONS"
    #: Copies of the execution stream JetStream keeps (R3 in a 3-node cluster: losing one node
    #: loses no update). More than 1 needs a cluster; an existing stream is updated at start.
    stream_replicas: int = 1
    #: JetStream deduplication window: must cover the longest republish horizon after a crash.
    duplicate_window_s: float = 600.0
    stream_max_age_s: float = 7 * 24 * 3600.0
    connect_timeout_s: float = 5.0
    publish_timeout_s: float = 5.0


class DatabaseSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: str = ""  # empty: DATABASE_URL, else the embedded PostgreSQL
    pool_size: int = 8
    #: Connections committing writes in parallel (group commit on each). More lets the next
    #: batch commit while the previous one waits for its fsync, but makes batches smaller
    #: (more commits): on the 2-core bench host, 2 gave no gain (bench/route.py), so 1.
    writer_connections: int = 2
    views_refresh_s: float = 60.0


class RestSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    tokens: tuple[str, ...] = ()
    #: Bearer token `GET /metrics` requires; unset: metrics are public (like `/health`).
    metrics_token: str | None = None


SIMULATED_PREFIX = "marketdata.simulated"
AnyBrokerConfig = SimulatedBrokerConfig | AlpacaConfig | FixConfig | IbConfig


class MarketDataSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: Subjects: <prefix>.quotes.<symbol>, <prefix>.trades.<symbol>, <prefix>.close.<symbol>.
    #: Unset: "marketdata.v1" (the Market Data Service's), or "marketdata.simulated" when the
    #: simulated market is published: synthetic quotes never land on the real subjects of a
    #: shared NATS by default.
    prefix: str | None = None
    #: Publish the simulated market on those subjects (the embedded default's Market Data
    #: Service). Unset: on when only simulated brokers are configured, off as soon as a real
    #: broker is (then a real Market Data Service must publish them).
    publish_simulated: bool | None = None
    #: How long start-up waits for a first quote of every instrument.
    first_quote_wait_s: float = 5.0
    #: A quote older than this gives no arrival price (the feed has stopped for that symbol).
    max_quote_age_s: float = 300.0
    #: Quotes further ahead of our clock than this are refused as bad data.
    max_clock_skew_s: float = 5.0
    #: Per instrument and per tape (quotes, trades): rows kept, and how far back.
    tape_capacity: int = 200_000
    tape_retain_s: float = 12 * 3600.0


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    service: ServiceSection = ServiceSection()
    nats: NatsSection = NatsSection()
    database: DatabaseSection = DatabaseSection()
    rest: RestSection = RestSection()
    market_data: MarketDataSection = MarketDataSection()
    market: MarketConfig = msgspec.field(
        default_factory=lambda: MarketConfig(
            seed=7, tick_interval_ms=250.0, instruments=default_instruments()
        )
    )
    #: Simulated brokers. Unset: the embedded default's three, unless a real broker is
    #: configured (then none: simulated venues never sit next to real ones by accident).
    brokers: tuple[SimulatedBrokerConfig, ...] | None = None
    #: Alpaca accounts (adapters.alpaca.AlpacaConfig), credentials from the environment.
    alpaca_brokers: tuple[AlpacaConfig, ...] = ()
    #: FIX 4.4 sessions (adapters.fix.FixConfig; see adapters/fix/example.toml).
    fix_brokers: tuple[FixConfig, ...] = ()
    #: Interactive Brokers API clients (adapters.ib.IbConfig: TWS / IB Gateway via ib_async).
    ib_brokers: tuple[IbConfig, ...] = ()
    #: Execution safeguards and kill switches, before routing (nursery.pretrade.config).
    safeguards: SafeguardsConfig = SafeguardsConfig()
    #: The Risk Analysis Service, asked before routing when enabled (nursery.pretrade.config).
    risk: RiskConfig = RiskConfig()

    def __post_init__(self) -> None:
        real = bool(self.alpaca_brokers or self.fix_brokers or self.ib_brokers)
        if self.brokers is None:
            msgspec.structs.force_setattr(self, "brokers", () if real else default_brokers())
        section = self.market_data
        if section.publish_simulated is None:
            section = msgspec.structs.replace(section, publish_simulated=not real)
        if section.prefix is None:
            prefix = SIMULATED_PREFIX if section.publish_simulated else PREFIX
            section = msgspec.structs.replace(section, prefix=prefix)
        msgspec.structs.force_setattr(self, "market_data", section)

    @property
    def simulated_brokers(self) -> tuple[SimulatedBrokerConfig, ...]:
        return self.brokers or ()

    @property
    def broker_sections(self) -> tuple[tuple[str, Sequence[AnyBrokerConfig]], ...]:
        """Every configured broker, by the TOML array it comes from."""
        return (
            ("brokers", self.simulated_brokers),
            ("alpaca_brokers", self.alpaca_brokers),
            ("fix_brokers", self.fix_brokers),
            ("ib_brokers", self.ib_brokers),
        )

    @property
    def broker_ids(self) -> list[str]:
        return [b.broker_id for _, brokers in self.broker_sections for b in brokers]

    @property
    def state_dir(self) -> Path:
        return Path(self.service.state_dir or ".state").resolve()

    @property
    def instance_id(self) -> str:
        return self.service.instance_id or f"{socket.gethostname()}-{os.getpid()}"


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read `path` (if given), then apply environment overrides. Raises ConfigError with the
    offending key on any problem, so the operator knows what to fix."""
    env = os.environ if environ is None else environ
    if path is not None:
        try:
            config = msgspec.convert(_joined_nats_urls(msgspec.toml.decode(path.read_bytes())), Config)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
    else:
        config = Config()
    config = _apply_environment(config, env)
    _check(config)
    return config


def _joined_nats_urls(document: object) -> object:
    """The decoded TOML with `nats.url` given as a list of URLs joined into the one
    comma-separated string the daemon passes to nats-py (anything else is left for msgspec to
    judge, so a wrong type is reported with its path as usual)."""
    if isinstance(document, dict):
        nats = document.get("nats")
        if isinstance(nats, dict):
            urls = nats.get("url")
            if isinstance(urls, list) and all(isinstance(u, str) for u in urls):
                return {**document, "nats": {**nats, "url": ",".join(u.strip() for u in urls)}}
    return document


def _apply_environment(config: Config, env: Mapping[str, str]) -> Config:
    service, nats, database, rest = config.service, config.nats, config.database, config.rest
    replace = msgspec.structs.replace
    if env.get("NATS_URL"):
        nats = replace(nats, url=env["NATS_URL"])
    if env.get("DATABASE_URL"):
        database = replace(database, url=env["DATABASE_URL"])
    state_dir = env.get("BIS_STATE_DIR") or env.get("STATE_DIRECTORY")
    if state_dir:
        service = replace(service, state_dir=state_dir.split(":")[0])
    if env.get("BIS_INSTANCE_ID"):
        service = replace(service, instance_id=env["BIS_INSTANCE_ID"])
    if env.get("BIS_LOG_LEVEL"):
        service = replace(service, log_level=env["BIS_LOG_LEVEL"])
    if env.get("BIS_REST_HOST"):
        rest = replace(rest, host=env["BIS_REST_HOST"])
    if env.get("BIS_REST_PORT"):
        try:
            rest = replace(rest, port=int(env["BIS_REST_PORT"]))
        except ValueError:
            raise ConfigError(f"BIS_REST_PORT must be a port number, got {env['BIS_REST_PORT']!r}") from None
    if "BIS_REST_TOKENS" in env:
        tokens = tuple(t.strip() for t in env["BIS_REST_TOKENS"].split(",") if t.strip())
        rest = replace(rest, tokens=tokens)
    return replace(config, service=service, nats=nats, database=database, rest=rest)


def commission_problem(structure: CommissionStructure) -> str | None:
    """Why a commission structure is unusable, or None: negative figures would make a broker
    look cheaper than free, and two tiers at one threshold make the rate ambiguous."""
    if structure.base_rate < 0:
        return "baseRate must not be negative"
    if structure.min_commission < 0:
        return "minCommission must not be negative"
    thresholds = [tier.volume_threshold for tier in structure.tiered_rates]
    for tier in structure.tiered_rates:
        if tier.rate < 0:
            return f"tier at {tier.volume_threshold}: rate must not be negative"
        if tier.volume_threshold < 0:
            return "volumeThreshold must not be negative"
    if len(set(thresholds)) != len(thresholds):
        return "two tiers share a volumeThreshold"
    return None


def _check(config: Config) -> None:
    ids = config.broker_ids
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ConfigError(f"brokers: duplicate broker_id {sorted(duplicates)}")
    if not ids:
        raise ConfigError("brokers: at least one broker must be configured")
    if not 0 <= config.rest.port <= 65535:
        raise ConfigError(f"rest.port: {config.rest.port} is not a port number")
    if config.service.unknown_outcome_policy not in ("adopt", "failover"):
        raise ConfigError(
            f"service.unknown_outcome_policy must be 'adopt' or 'failover', "
            f"not {config.service.unknown_outcome_policy!r}"
        )
    md = config.market_data
    if md.first_quote_wait_s < 0 or md.max_quote_age_s <= 0 or md.max_clock_skew_s < 0:
        raise ConfigError("market_data: first_quote_wait_s, max_clock_skew_s >= 0; max_quote_age_s > 0")
    if md.tape_capacity < 1 or md.tape_retain_s <= 0:
        raise ConfigError("market_data: tape_capacity and tape_retain_s must be positive")
    _check_nats(config.nats)
    if config.database.writer_connections < 1:
        raise ConfigError("database.writer_connections must be at least 1")
    if config.service.request_workers < 1:
        raise ConfigError("service.request_workers must be at least 1")
    for section, brokers in config.broker_sections:
        for i, broker in enumerate(brokers):
            problem = commission_problem(broker.commission)
            if problem:
                raise ConfigError(f"{section}[{i}] ({broker.broker_id}).commission: {problem}")
    problems = config_problems(config.safeguards, config.risk)
    if problems:
        raise ConfigError("; ".join(problems))
    unknown = set(config.service.attempt_deadline_ms) - {u.value for u in Urgency}
    if unknown:
        raise ConfigError(f"service.attempt_deadline_ms: unknown urgency {sorted(unknown)}")


def _check_nats(nats: NatsSection) -> None:
    if nats.url and any(not part.strip() for part in nats.url.split(",")):
        raise ConfigError(f"nats.url: an empty server URL in {nats.url!r}")
    if not 1 <= nats.stream_replicas <= MAX_STREAM_REPLICAS:
        raise ConfigError(
            f"nats.stream_replicas must be between 1 and {MAX_STREAM_REPLICAS}, not {nats.stream_replicas}"
        )
    if nats.stream_replicas > 1 and not nats.url:
        raise ConfigError(
            f"nats.stream_replicas = {nats.stream_replicas} needs a NATS cluster (nats.url or NATS_URL): "
            "the embedded nats-server is a single node"
        )
