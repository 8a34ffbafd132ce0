"""The daemon: one `trio.run`, one root nursery, every task inside it.

    trio.run
    └─ trio_asyncio.open_loop()                nats-py is asyncio: bridged once (daemon.bus)
       └─ root nursery
          ├─ simulated market                  (embedded default)
          ├─ execution publisher               outbox -> JetStream, deduplicated
          ├─ execution engine                  routes, follows executions, reconciles
          │  └─ broker supervisor              one child nursery per broker connection
          ├─ NATS service endpoints            nats.micro, queue group
          ├─ REST                              hypercorn.trio.serve(quart-trio app)
          ├─ read-model refresher              materialized views on a schedule
          └─ systemd watchdog                  WATCHDOG=1 while healthy

Shutdown (SIGTERM/SIGINT): stop intake (requests get "service is stopping"), unsubscribe the
endpoints, let in-flight requests finish within the grace period, flush the publisher, drain
NATS, close PostgreSQL; systemd hears STOPPING=1 first.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import hypercorn.config
import hypercorn.trio
import msgspec
import trio
import trio_asyncio
from quart import Blueprint

from adapters.simulated import SimulatedBroker, SimulatedMarket
from adapters.simulated.feed import SimulatedFeed
from api.codec import to_builtins
from api.enums import ConnectionStatus
from api.events import AnyBrokerEvent
from daemon import collector, credentials, runtime, servers
from daemon.accesslog import AccessLog
from daemon.brokers import BrokerSetupError, build_handles
from daemon.bus import NatsBus, server_urls
from daemon.config import Config
from daemon.endpoints import OVERLOADED, admin_endpoints, pretrade_endpoints, service_endpoints
from daemon.logs import register_secret
from daemon.metrics import Sources
from daemon.observability import Observability
from daemon.pretrade import start_pretrade
from daemon.pretrade_rest import pretrade_blueprint
from daemon.publisher import Publisher
from daemon.readiness import Readiness
from daemon.rest import create_app
from daemon.schedule import (
    Prompt,
    backfill_reports,
    close_sessions_daily,
    persist_broker_runtime,
    record_status_changes,
    refresh_views_every,
    restore_broker_state,
)
from daemon.sdnotify import Notifier
from market.book import MarketBook
from market.intake import Intake
from market.messages import CloseMessage
from market.subjects import PREFIX
from nursery.brokers import BrokerHandle, supervise_brokers
from nursery.engine import ExecutionEngine
from nursery.lease import Lease, new_seat
from nursery.orphans import OrphanSweeper
from nursery.pretrade.explain import OrderExplainer
from sql.migrate import apply_migrations
from sql.records import OutboxEvent, StatusChange
from sql.store import Store
from tca_online.reporter import ExecutionReporter

log = logging.getLogger(__name__)

VERSION = "0.1.0"


class StartupError(RuntimeError):
    """The daemon cannot start; the message says what to change."""


class Endpoints:
    """Where the running daemon can be reached (written to <state>/runtime.json for the CLI,
    shown in the ready banner). Holds no secret: each NATS server URL (`nats_url` may list a
    cluster's, comma-separated) and the database URL are kept without their passwords."""

    def __init__(self, nats_url: str, rest_url: str | None, database: str) -> None:
        self.nats_url = ",".join(servers.redact_url(url) for url in server_urls(nats_url))
        self.rest_url = rest_url
        self.database = servers.redact_url(database)

    def __repr__(self) -> str:
        return f"<Endpoints nats={self.nats_url} rest={self.rest_url} database={self.database}>"


@contextlib.asynccontextmanager
async def _infrastructure(config: Config) -> AsyncIterator[tuple[str, str]]:
    """NATS and PostgreSQL URLs: the configured ones, or embedded servers in the state dir."""
    state = config.state_dir
    with contextlib.ExitStack() as stack:
        nats_url = config.nats.url
        if not nats_url:
            server = servers.NatsServer(state / "nats", port=_embedded_port(state / "nats.port"))
            await trio.to_thread.run_sync(server.start)
            stack.callback(server.stop)
            nats_url = server.url
            log.info("embedded nats-server started", extra={"url": nats_url, "store": str(server.store_dir)})
        database_url = config.database.url
        if not database_url:
            database_url = await trio.to_thread.run_sync(
                stack.enter_context, servers.embedded_postgres(state / "pgdata")
            )
            log.info("embedded PostgreSQL started", extra={"data": str(state / "pgdata")})
        yield nats_url, database_url


def _embedded_port(path: Path) -> int:
    """Reuse the embedded nats-server's port across restarts so clients keep working."""
    try:
        port = int(path.read_text())
        with contextlib.suppress(OSError):
            import socket

            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port))
            return port
    except (OSError, ValueError):
        pass
    port = servers.free_port()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(port))
    return port


async def run_daemon(
    config: Config,
    *,
    notifier: Notifier | None = None,
    on_ready: Callable[[Endpoints], None] | None = None,
    shutdown: trio.Event | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or `shutdown` is set). `on_ready` is called once NATS endpoints
    and REST are listening."""
    notifier = notifier or Notifier.from_environment()
    shutdown = shutdown or trio.Event()
    config.state_dir.mkdir(parents=True, exist_ok=True)
    async with trio_asyncio.open_loop(), _infrastructure(config) as (nats_url, database_url):
        applied = await trio.to_thread.run_sync(apply_migrations, database_url)
        if applied:
            log.info("migrations applied", extra={"versions": applied})
        async with Store.open(
            database_url, pool_size=config.database.pool_size, writer_lanes=config.database.writer_connections
        ) as store:
            market = SimulatedMarket(config.market)
            real = [a.broker_id for a in config.alpaca_brokers] + [f.broker_id for f in config.fix_brokers]
            try:
                environ, stored_secrets = await trio.to_thread.run_sync(
                    credentials.environment,
                    database_url,
                    real,
                    os.environ.get(credentials.KEY_VARIABLE),
                    dict(os.environ),
                )
                for secret in stored_secrets:
                    register_secret(secret)
                built = build_handles(config, market, database_url, environ)
            except (BrokerSetupError, credentials.CredentialError) as exc:
                raise StartupError(str(exc)) from None
            handles = [handle for handle, _ in built]
            await store.upsert_brokers([handle.record(params) for handle, params in built])
            await restore_broker_state(store, handles, datetime.now(UTC))
            name = f"broker-integration-{config.instance_id}"
            async with NatsBus.connect(
                nats_url, name=name, connect_timeout=config.nats.connect_timeout_s
            ) as bus:
                await bus.ensure_stream(
                    config.nats.stream,
                    ["trading.broker.v1.executions.>"],
                    duplicate_window=config.nats.duplicate_window_s,
                    max_age=config.nats.stream_max_age_s,
                    replicas=config.nats.stream_replicas,
                )
                try:
                    await _serve(
                        config,
                        notifier,
                        shutdown,
                        on_ready,
                        bus,
                        store,
                        market,
                        handles,
                        nats_url,
                        database_url,
                    )
                finally:
                    for handle in handles:  # adapters holding resources (FIX: its database session)
                        await _close_adapter(handle)
    log.info("stopped")


async def _serve(
    config: Config,
    notifier: Notifier,
    shutdown: trio.Event,
    on_ready: Callable[[Endpoints], None] | None,
    bus: NatsBus,
    store: Store,
    market: SimulatedMarket,
    handles: list[BrokerHandle],
    nats_url: str,
    database_url: str,
) -> None:
    publish_send, publish_receive = trio.open_memory_channel[OutboxEvent](65536)
    # The engine's updates pass the observability feed (counted, shown live) on to the publisher.
    observed_send, observed_receive = trio.open_memory_channel[OutboxEvent](65536)
    observe = Observability(metrics_token=config.rest.metrics_token)
    events_send, events_receive = trio.open_memory_channel[AnyBrokerEvent](65536)
    publisher = Publisher(bus, store, timeout=config.nats.publish_timeout_s)
    md = config.market_data
    book = MarketBook(
        {i.symbol: i.asset_class for i in config.market.instruments},
        capacity=md.tape_capacity,
        retain_s=md.tape_retain_s,
        max_quote_age_s=md.max_quote_age_s,
    )

    async def save_close(close: CloseMessage) -> None:
        await store.save_close(close.symbol, close.date, close.price, datetime.now(UTC))

    prefix = md.prefix or PREFIX  # resolved by the config; `or` for the type checker
    intake = Intake(book, prefix=prefix, on_close=save_close, max_skew_s=md.max_clock_skew_s)
    feed = SimulatedFeed(market, prefix=prefix)
    stats = observe.stats  # the routing statistics, counting each broker attempt into the metrics
    reporter = ExecutionReporter(store, book, stats=stats)
    lease = Lease(store, new_seat(config.instance_id, config.state_dir))
    engine = ExecutionEngine(
        store,
        handles,
        book,
        publish_send,
        attempt_deadline=config.service.attempt_deadline,  # type: ignore[arg-type]
        duplicate_wait=config.service.duplicate_wait_s,
        unknown_policy=config.service.unknown_outcome_policy,
        reconcile_budget=config.service.reconcile_budget_s,
        stats=stats,
        reporter=reporter,
        owner=lease.id,
    )
    reports_left = Prompt()  # a dead daemon's orders taken over: its reports too (backfilled)
    sweeper = OrphanSweeper(store, lease, engine.adopt, engine.routing_here, taken_over=reports_left.set)
    engine.take_orphan = sweeper.take_one
    observe.bind(
        Sources(handles, bus, store, publisher, book, intake, sweeper), engine, lambda: reporter.peers.stats
    )
    readiness = _readiness(store, bus, handles, shutdown, observe)
    rest_stop = trio.Event()
    changes_send, changes_receive = trio.open_memory_channel[StatusChange](4096)
    for handle in handles:
        handle.changes = changes_send
    async with trio.open_nursery() as root:
        root.start_soon(_watch_signals, shutdown)
        await root.start(observe.liveness.run)
        await root.start(lease.run)  # ended when the root is cancelled, at the very end
        recorder_done = trio.Event()
        root.start_soon(record_status_changes, store, changes_receive, recorder_done)
        root.start_soon(persist_broker_runtime, store, handles, 10.0)
        await root.start(intake.run, bus)
        if config.market_data.publish_simulated:
            await root.start(feed.run, bus)
        if config.simulated_brokers or config.market_data.publish_simulated:
            root.start_soon(market.run)  # only what feeds simulated venues or simulated data
        await _wait_for_quotes(book, config.market_data.first_quote_wait_s)
        root.start_soon(  # not awaited: start-up does not wait for a month of reports
            reporter.peers.refresh_every, store.load_peer_groups, lambda: datetime.now(UTC), 300.0
        )
        root.start_soon(functools.partial(backfill_reports, reporter.backfill, prompt=reports_left))
        await root.start(observe.feed.run, publish_receive, observed_send)
        await root.start(publisher.run, observed_receive)
        root.start_soon(observe.sample_outbox, store)
        async with trio.open_nursery() as work:  # everything that produces updates
            await work.start(engine.run, events_receive)
            await work.start(
                functools.partial(
                    supervise_brokers, handles, events_send, recover=observe.counted_recover(engine.recover)
                )
            )
            await work.start(sweeper.run)  # orders a crash or a dead peer left unanswered
            # Kill switches and safeguards before the first order (nursery.pretrade).
            pretrade = await start_pretrade(config, book, engine, bus, database_url)
            await work.start(pretrade.run, bus)
            explainer = OrderExplainer(store, engine.get_execution)
            serve_nats = functools.partial(
                bus.serve,
                [
                    *service_endpoints(engine, route_observer=observe.metrics),
                    *admin_endpoints(engine, store.refresh_views),
                    *pretrade_endpoints(pretrade.admin, explainer),
                ],
                service_name="broker-integration",
                version=VERSION,
                description="Broker Integration Service: order routing, executions, broker status",
                queue_group=config.service.queue_group,
                workers=config.service.request_workers,
                backlog=config.service.request_backlog,
                overloaded=OVERLOADED,
            )
            await work.start(serve_nats)
            observe.serving = True
            rest_url = None
            if config.rest.enabled:
                pretrade_routes = pretrade_blueprint(pretrade.admin, explainer, frozenset(config.rest.tokens))
                rest_url = await work.start(
                    functools.partial(_serve_rest, blueprints=(pretrade_routes,)),
                    config,
                    engine,
                    readiness,
                    observe,
                    rest_stop,
                )
            root.start_soon(refresh_views_every, store, config.database.views_refresh_s)
            if config.market.session_close_utc:
                closers = [h.adapter.end_of_day for h in handles if isinstance(h.adapter, SimulatedBroker)]
                if config.market_data.publish_simulated:
                    closers.append(lambda: feed.publish_closes(datetime.now(UTC).date()))
                root.start_soon(close_sessions_daily, closers, config.market.session_close_utc)
            endpoints = Endpoints(nats_url, rest_url, servers.redact_url(database_url))
            _write_runtime(config.state_dir, endpoints, embedded_database=not config.database.url)
            notifier.ready(
                f"serving {len(handles)} brokers; NATS {endpoints.nats_url}; REST {rest_url or 'off'}"
            )
            # The watchdog follows liveness (the loop turns), not dependencies: a daemon waiting
            # out a NATS or PostgreSQL outage recovers by itself and must not be restarted.
            root.start_soon(notifier.run_watchdog, observe.liveness.is_live)
            collector.settle()  # after start-up: what is alive now lives as long as the daemon
            if on_ready is not None:
                on_ready(endpoints)
            log.info(
                "ready", extra={"nats": nats_url, "rest": rest_url, "brokers": [h.broker_id for h in handles]}
            )
            await shutdown.wait()

            notifier.stopping()
            log.info("stopping: no new orders; finishing in-flight work")
            engine.stop_intake()
            with trio.move_on_after(config.service.shutdown_grace_s) as grace:
                await bus.stop_serving()
                observe.serving = False
                await bus.wait_answered()
                await engine.wait_idle()
                await engine.wait_settled()
            if grace.cancelled_caught:
                log.warning("grace period over with requests still in flight")
            rest_stop.set()
            work.cancel_scope.cancel()
        for handle in handles:  # the time the daemon is down is time the brokers are not served
            handle.mark_stopped()
        changes_send.close()
        publish_send.close()  # the publisher flushes what is left, then returns
        with trio.move_on_after(config.nats.publish_timeout_s):
            await publisher.finished.wait()
            await recorder_done.wait()
        root.cancel_scope.cancel()
    _remove_runtime(config.state_dir)


async def _close_adapter(handle: BrokerHandle) -> None:
    aclose = getattr(handle.adapter, "aclose", None)
    if aclose is None:
        return
    with trio.CancelScope(shield=True), trio.move_on_after(5.0) as scope:
        try:
            await aclose()
        except Exception as exc:
            log.warning(
                "broker adapter did not close cleanly",
                extra={"broker_id": handle.broker_id, "error": repr(exc)},
            )
    if scope.cancelled_caught:
        log.warning("broker adapter did not close within 5 s", extra={"broker_id": handle.broker_id})


async def _wait_for_quotes(book: MarketBook, wait: float) -> None:
    """Give the market-data intake a moment to receive a first quote per instrument, so the first
    orders have arrival prices. Not fatal: without a quote an order has no arrival price (and
    TCA says the arrival benchmark is unavailable)."""
    with trio.move_on_after(wait):
        while not book.has_quotes(book.symbols):  # noqa: ASYNC110 (the book is pure: no event)
            await trio.sleep(0.01)
        return
    missing = [s for s in book.symbols if book.mid(s) is None]
    log.warning(
        "no market data yet for some instruments; check the Market Data Service",
        extra={"symbols": missing, "waited_s": wait},
    )


#: Broker states an order can be sent in (DEGRADED: its breaker is half-open, or it throttles).
_ROUTABLE = frozenset({ConnectionStatus.CONNECTED, ConnectionStatus.DEGRADED})


def _readiness(
    store: Store, bus: NatsBus, handles: Sequence[BrokerHandle], shutdown: trio.Event, observe: Observability
) -> Readiness:
    readiness = Readiness()
    readiness.add("database", lambda: None if store.available else "unavailable (reconnecting)")
    readiness.add("nats", lambda: None if bus.is_connected else "disconnected (reconnecting)")

    def subscriptions() -> str | None:
        if not observe.serving:
            return "request endpoints not subscribed"
        return None if bus.is_connected else "request endpoints waiting for NATS"

    readiness.add("subscriptions", subscriptions)

    def brokers() -> str | None:
        if any(h.effective_status in _ROUTABLE for h in handles):
            return None
        return "no broker connected" if handles else "no broker configured"

    readiness.add("brokers", brokers)
    readiness.add("intake", lambda: "stopping" if shutdown.is_set() else None)
    return readiness


async def _serve_rest(
    config: Config,
    engine: ExecutionEngine,
    readiness: Readiness,
    observe: Observability,
    stop: trio.Event,
    *,
    blueprints: Sequence[Blueprint] = (),
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    def ready() -> tuple[bool, bytes]:
        report = readiness.report()
        return report.ready, msgspec.json.encode(report)

    if config.rest.metrics_token:
        register_secret(config.rest.metrics_token)
    app = create_app(
        engine,
        tokens=frozenset(config.rest.tokens),
        readiness=ready,
        liveness=observe.live,
        route_observer=observe.metrics,
        blueprints=[*observe.blueprints(), *blueprints],
    )
    # One JSON access-log record per request (hypercorn's own access log stays off).
    app.asgi_app = AccessLog(app.asgi_app)  # type: ignore[method-assign]
    hc = hypercorn.config.Config()
    hc.bind = [f"{config.rest.host}:{config.rest.port}"]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = 2.0
    async with trio.open_nursery() as nursery:
        try:
            binds = await nursery.start(
                lambda task_status: hypercorn.trio.serve(
                    app, hc, shutdown_trigger=stop.wait, task_status=task_status
                )
            )
        except* OSError as group:
            error: BaseException = group
            while isinstance(error, BaseExceptionGroup):
                error = error.exceptions[0]
            raise StartupError(
                f"REST cannot listen on {config.rest.host}:{config.rest.port}: {error}; "
                "set rest.port (or BIS_REST_PORT), or rest.enabled = false"
            ) from None
        url = binds[0] if binds else f"http://{config.rest.host}:{config.rest.port}"
        task_status.started(url)


async def _watch_signals(shutdown: trio.Event) -> None:
    """The first SIGTERM/SIGINT starts the graceful stop; later ones are logged and ignored, so
    a second Ctrl-C (or a supervisor's repeat) cannot kill the daemon in the middle of its flush.
    Keeps receiving until the root nursery is cancelled at the very end."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if shutdown.is_set():
                log.warning("already stopping; signal ignored", extra={"signal": name})
            else:
                log.info("signal received", extra={"signal": name})
                shutdown.set()


def _write_runtime(state_dir: Path, endpoints: Endpoints, *, embedded_database: bool = False) -> None:
    """runtime.json in the state directory and the user's (`daemon.runtime`: the CLI finds
    the daemon from any directory)."""
    data = {
        "pid": os.getpid(),
        "nats_url": endpoints.nats_url,
        "rest_url": endpoints.rest_url,
        "database": endpoints.database,
        "embedded_database": embedded_database,
        "started_at": datetime.now(UTC).isoformat(),
    }
    runtime.write_runtime(state_dir, to_builtins(data))


def _remove_runtime(state_dir: Path) -> None:
    runtime.remove_runtime(state_dir)
