"""`broker-integration`: run the daemon, or talk to it as an OMS would.

broker-integration run [--config FILE] [--state-dir DIR]
broker-integration order buy AAPL 100 --type LIMIT --price 190
broker-integration cancel ORDER_ID [--broker BROKER_ID]   (default: the order's broker)
broker-integration execution --order ORDER_ID      (or an execution id)
broker-integration why ORDER_ID                    (what was decided, also for REJECTED orders)
broker-integration kill-switch engage|release [--account ID] [--reason TEXT] [--cancel-open-orders]
broker-integration kill-switch list
broker-integration brokers [--status ACTIVE] [--asset-class EQUITY]
broker-integration status BROKER_ID
broker-integration watch [--order ID] [--broker ID] [--status COMPLETED] [--replay]
broker-integration maintenance BROKER_ID on|off [--reason TEXT]
broker-integration tca --orders o.csv --fills f.csv --trades t.csv [--quotes q.csv] --out DIR
broker-integration refresh-views
broker-integration migrate [--database-url URL]
broker-integration credentials generate-key | set BROKER_ID | list | delete BROKER_ID

This module parses the command line and runs the daemon-side commands (run, migrate,
credentials); the OMS-side ones (order ... refresh-views) are `daemon.cli_client`'s. The client
commands find the daemon from any directory (`--nats`, `NATS_URL`, `--state-dir`, else
`./.state/runtime.json`, else the user's state directory: `daemon.runtime`). Every command
exits 1 when the answer is an error or REJECTED, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api.enums import (
    AssetClass,
    BrokerListStatus,
    ExecutionStatus,
    ExecutionStrategy,
    OrderType,
    TCABenchmark,
    TimeInForce,
    Urgency,
)
from daemon import cli_client
from daemon.cli_client import EXIT_FAILED, EXIT_USAGE, shown_nats_url, state_dir

if TYPE_CHECKING:
    from daemon.app import Endpoints
    from daemon.config import Config


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        result: int = args.func(args)
        return result
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="broker-integration", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="daemon state directory (default: ./.state, else the user's state directory)",
    )
    parser.add_argument("--nats", default=None, help="NATS URL (default: $NATS_URL or the local daemon's)")
    parser.add_argument("--timeout", type=float, default=10.0, help="request timeout in seconds")
    parser.add_argument("--json", action="store_true", help="print raw JSON")
    # The same options after the subcommand too (`order ... --json`): SUPPRESS keeps the
    # top-level value unless the option is given there.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--nats", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command")
    add_parser = functools.partial(sub.add_parser, parents=[common])

    run = add_parser("run", help="run the daemon (embedded default without configuration)")
    run.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    run.set_defaults(func=_cmd_run)

    order = add_parser("order", help="send a RouteOrder request")
    order.add_argument("side", type=str.upper, choices=["BUY", "SELL"])
    order.add_argument("symbol")
    order.add_argument("quantity")
    order.add_argument("--type", type=str.upper, default="MARKET", choices=[t.value for t in OrderType])
    order.add_argument("--price")
    order.add_argument("--stop-price")
    order.add_argument("--tif", type=str.upper, default="DAY", choices=[t.value for t in TimeInForce])
    order.add_argument("--account", default="ACC-1")
    order.add_argument("--order-id", default=None, help="default: a new uuid")
    order.add_argument(
        "--strategy", type=str.upper, default="SMART", choices=[s.value for s in ExecutionStrategy]
    )
    order.add_argument("--urgency", type=str.upper, default="MEDIUM", choices=[u.value for u in Urgency])
    order.add_argument(
        "--broker", action="append", default=[], help="preferred broker (repeatable, in order)"
    )
    order.set_defaults(func=cli_client.cmd_order)

    cancel = add_parser("cancel", help="send a CancelOrder request")
    cancel.add_argument("order_id")
    cancel.add_argument("--broker", default=None, help="default: the broker holding the order")
    cancel.add_argument("--reason", default=None)
    cancel.set_defaults(func=cli_client.cmd_cancel)

    execution = add_parser("execution", help="GetExecution by execution id or --order")
    execution.add_argument("execution_id", nargs="?")
    execution.add_argument("--order", default=None)
    execution.set_defaults(func=cli_client.cmd_execution)

    why = add_parser("why", help="why an order went to its broker: the routing decision, explained")
    why.add_argument("order_id")
    why.set_defaults(func=cli_client.cmd_why)

    kill = add_parser("kill-switch", help="stop new orders of an account (or all) and optionally cancel")
    kill.add_argument("action", choices=["engage", "release", "list"])
    kill.add_argument("--account", default=None, help="the account (default: the global switch)")
    kill.add_argument("--reason", default=None)
    kill.add_argument(
        "--cancel-open-orders", action="store_true", help="engage: also cancel the scope's open orders"
    )
    kill.set_defaults(func=cli_client.cmd_kill_switch)

    brokers = add_parser("brokers", help="ListBrokers")
    brokers.add_argument("--status", type=str.upper, choices=[s.value for s in BrokerListStatus])
    brokers.add_argument("--asset-class", type=str.upper, choices=[a.value for a in AssetClass])
    brokers.set_defaults(func=cli_client.cmd_brokers)

    status = add_parser("status", help="GetBrokerStatus")
    status.add_argument("broker_id")
    status.set_defaults(func=cli_client.cmd_status)

    watch = add_parser("watch", help="print execution updates as they arrive")
    watch.add_argument("--order", default=None)
    watch.add_argument("--broker", default=None)
    watch.add_argument("--status", type=str.upper, choices=[s.value for s in ExecutionStatus])
    watch.add_argument("--replay", action="store_true", help="first replay what the stream kept")
    watch.add_argument("--stream", default="BROKER_EXECUTIONS")
    watch.set_defaults(func=cli_client.cmd_watch)

    tca = add_parser("tca", help="offline TCA over files a desk already has (docs/tca.md)")
    tca.add_argument("--orders", type=Path, required=True, help="orders CSV or Parquet")
    tca.add_argument("--fills", type=Path, required=True, help="fills CSV or Parquet")
    tca.add_argument("--trades", type=Path, required=True, help="market trades CSV or Parquet")
    tca.add_argument("--quotes", type=Path, default=None, help="market quotes (for arrival mid, impact)")
    tca.add_argument("--closes", type=Path, default=None, help="official closes per symbol and day")
    tca.add_argument("--out", type=Path, default=Path("tca-out"), help="output directory")
    tca.add_argument(
        "--benchmark", type=str.upper, default="ARRIVAL_PRICE", choices=[b.value for b in TCABenchmark]
    )
    tca.add_argument(
        "--time-unit", default="ns", choices=["s", "ms", "us", "ns"], help="unit of integer times"
    )
    tca.add_argument("--no-report", action="store_true", help="skip the HTML report")
    tca.set_defaults(func=cli_client.cmd_tca)

    maintenance = add_parser("maintenance", help="take a broker out of routing (on) or back (off)")
    maintenance.add_argument("broker_id")
    maintenance.add_argument("state", choices=["on", "off"])
    maintenance.add_argument("--reason", default=None)
    maintenance.set_defaults(func=cli_client.cmd_maintenance)

    refresh = add_parser("refresh-views", help="refresh the daemon's materialized read models now")
    refresh.set_defaults(func=cli_client.cmd_refresh_views)

    migrate = add_parser("migrate", help="apply database migrations and exit")
    migrate.add_argument("--database-url", default=None, help="default: $DATABASE_URL")
    migrate.set_defaults(func=_cmd_migrate)

    creds = add_parser(
        "credentials",
        help="the encrypted credential store (key in $BIS_CREDENTIALS_KEY; values never printed)",
    )
    creds.add_argument("action", choices=["generate-key", "set", "list", "delete"])
    creds.add_argument("broker_id", nargs="?", help="for set and delete")
    creds.add_argument("--database-url", default=None, help="default: $DATABASE_URL")
    creds.set_defaults(func=_cmd_credentials)
    return parser


# --- daemon -------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT. Before anything else it takes the
    state directory's lock: a second daemon on the same directory exits at once (1), naming the
    running pid, having started nothing and written nothing."""
    import os

    from daemon.config import ConfigError, load_config
    from daemon.statelock import StateDirInUse, StateLock

    if args.state_dir is not None:
        os.environ["BIS_STATE_DIR"] = str(args.state_dir)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # First, before any server starts or migration runs: one daemon per state directory.
    try:
        state_lock = StateLock.acquire(config.state_dir)
    except StateDirInUse as exc:
        print(f"broker-integration: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"broker-integration: cannot lock the state directory: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        return _run_daemon_process(config)
    finally:
        state_lock.release()


def _run_daemon_process(config: Config) -> int:
    """The daemon in this process until it stops; its exit code. The caller holds the state lock."""
    import signal

    import trio

    from daemon.app import run_daemon
    from daemon.logs import configure_logging, redact_text

    configure_logging(config.service.log_level)
    _register_secrets(config)

    def banner(endpoints: Endpoints) -> None:
        brokers = ", ".join(config.broker_ids)
        if not sys.stdout.isatty():  # a log collector reads stdout: one JSON record
            print(json.dumps(_ready_record(endpoints, config)), flush=True)
            return
        print(
            f"\nBroker Integration Service is ready\n"
            f"  NATS      {shown_nats_url(endpoints.nats_url)}\n"
            f"  REST      {endpoints.rest_url or 'disabled'}"
            f"{'  (no auth: set rest.tokens to require a bearer token)' if not config.rest.tokens else ''}\n"
            f"  database  {endpoints.database}\n"
            f"  brokers   {brokers}\n\n"
            f"Send an order from another terminal:\n"
            f"  .venv/bin/broker-integration order buy AAPL 100 --type LIMIT --price 190\n"
            f"  .venv/bin/broker-integration watch\n"
            f"  curl -s {endpoints.rest_url or 'http://127.0.0.1:8080'}/brokers\n",
            flush=True,
        )

    try:
        trio.run(lambda: run_daemon(config, on_ready=banner))
        # The daemon has stopped cleanly; a late signal must not turn that into a kill.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        import logging

        logging.getLogger("daemon").critical("daemon failed", exc_info=exc)
        for cause in _leaf_errors(exc):  # a connect error names the URLs: never their passwords
            print(f"broker-integration failed: {redact_text(str(cause))}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _register_secrets(config: Config) -> None:
    """Mask in every log line the secrets this configuration loads: REST tokens, the metrics
    token (`rest.metrics_token`, `$BIS_METRICS_TOKEN`), the database password, the password of
    each NATS server URL, the brokers' keys from the environment."""
    import os

    from daemon.logs import register_secret
    from daemon.observability import METRICS_TOKEN_VARIABLE

    alpaca_secrets = [
        os.environ.get(name) for a in config.alpaca_brokers for name in (a.key_env, a.secret_env)
    ]
    alpaca_secrets += [os.environ.get(f.password_env) for f in config.fix_brokers if f.password_env]
    for secret in (
        *config.rest.tokens,
        config.rest.metrics_token,
        os.environ.get(METRICS_TOKEN_VARIABLE),
        _password(config.database.url),
        *_nats_passwords(config.nats.url),
        *alpaca_secrets,
    ):
        if secret:
            register_secret(secret)


def _ready_record(endpoints: Endpoints, config: Config) -> dict[str, Any]:
    """The ready banner as a JSON record (stdout not a terminal), in the log's shape."""
    from datetime import UTC

    return {
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "level": "INFO",
        "logger": "daemon.cli",
        "message": "Broker Integration Service is ready",
        "nats": shown_nats_url(endpoints.nats_url),
        "rest": endpoints.rest_url,
        "rest_auth": bool(config.rest.tokens),
        "database": endpoints.database,
        "brokers": list(config.broker_ids),
    }


def _leaf_errors(exc: BaseException) -> list[BaseException]:
    """The actual errors inside (nested) exception groups: what an operator needs to read."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaf_errors(inner)]
    return [exc]


def _password(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password if url else None
    except ValueError:
        return None


def _nats_passwords(url: str) -> list[str]:
    """The password of every server URL in `url` (a cluster's URLs, comma-separated:
    `daemon.bus.server_urls`), as written and percent-decoded, for the log's masking."""
    from urllib.parse import unquote

    from daemon.bus import server_urls

    if not url.strip():
        return []
    found: list[str] = []
    for server in server_urls(url):
        password = _password(server)
        if password:
            found += [password, unquote(password)]
    return list(dict.fromkeys(found))


def _database_url(args: argparse.Namespace) -> str | None:
    """--database-url, else $DATABASE_URL, else the running daemon's embedded PostgreSQL
    (through its state directory: `daemon.runtime`); None (said on stderr) when none is known."""
    import os

    from daemon.runtime import RuntimeNotFound, embedded_database_url, find_runtime

    url: str | None = args.database_url or os.environ.get("DATABASE_URL")
    if url:
        return url
    try:
        path, data = find_runtime(state_dir(args))
    except RuntimeNotFound as exc:
        print(f"no database: pass --database-url or set DATABASE_URL ({exc})", file=sys.stderr)
        return None
    url = embedded_database_url(data)
    if url is None:
        print(
            f"no database: the daemon of {path} uses {data.get('database')} (its password is never"
            " written there): pass --database-url or set DATABASE_URL",
            file=sys.stderr,
        )
    return url


def _cmd_migrate(args: argparse.Namespace) -> int:
    from daemon.servers import redact_url
    from sql.migrate import apply_migrations

    url = _database_url(args)
    if url is None:
        return EXIT_USAGE
    applied = apply_migrations(url)
    print(f"{redact_url(url)}: applied {', '.join(applied) if applied else 'nothing (up to date)'}")
    return 0


def _cmd_credentials(args: argparse.Namespace) -> int:
    """`set` reads NAME=value lines (the environment-variable names the broker's configuration
    refers to, e.g. ALPACA_KEY_ID) from standard input, so no secret is ever in argv or the
    shell history."""
    import os

    from daemon import credentials
    from sql.migrate import apply_migrations

    if args.action == "generate-key":
        print(credentials.generate_key())
        return 0
    url = _database_url(args)
    if url is None:
        return EXIT_USAGE
    key = os.environ.get(credentials.KEY_VARIABLE)
    if args.action in ("set", "delete") and not args.broker_id:
        print(f"credentials {args.action} needs a BROKER_ID", file=sys.stderr)
        return EXIT_USAGE
    try:
        apply_migrations(url)
        if args.action == "set":
            if not key:
                print(f"set {credentials.KEY_VARIABLE} (see `credentials generate-key`)", file=sys.stderr)
                return EXIT_USAGE
            values = {}
            for number, line in enumerate(sys.stdin, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                name, sep, value = line.partition("=")
                if not sep or not name.strip():
                    print(f"line {number}: expected NAME=value", file=sys.stderr)
                    return EXIT_USAGE
                values[name.strip()] = value
            credentials.save(url, args.broker_id, values, key)
            print(f"{args.broker_id}: stored {', '.join(sorted(values))}")
        elif args.action == "delete":
            found = credentials.delete(url, args.broker_id)
            print(f"{args.broker_id}: {'deleted' if found else 'nothing stored'}")
        else:
            for broker_id, updated_at, names in credentials.listed(url, key):
                if names is None:
                    shown = "(stored with another key)"
                else:
                    shown = ", ".join(names) if key else "(names need the key)"
                print(f"{broker_id}  {updated_at.isoformat()}  {shown}")
    except credentials.CredentialError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
