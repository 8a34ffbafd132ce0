"""`broker-integration`: run the daemon, or talk to it as an OMS would.

broker-integration run [--config FILE] [--state-dir DIR]
broker-integration order buy AAPL 100 --type LIMIT --price 190
broker-integration cancel ORDER_ID --broker BROKER_ID
broker-integration execution --order ORDER_ID      (or an execution id)
broker-integration why ORDER_ID                    (the routing decision, explained)
broker-integration brokers [--status ACTIVE] [--asset-class EQUITY]
broker-integration status BROKER_ID
broker-integration watch [--order ID] [--broker ID] [--status COMPLETED] [--replay]
broker-integration maintenance BROKER_ID on|off [--reason TEXT]
broker-integration tca --orders o.csv --fills f.csv --trades t.csv [--quotes q.csv] --out DIR
broker-integration refresh-views
broker-integration migrate [--database-url URL]
broker-integration credentials generate-key | set BROKER_ID | list | delete BROKER_ID
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api import subjects
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

if TYPE_CHECKING:
    from daemon.config import Config

EXIT_USAGE = 2
EXIT_FAILED = 1


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
        "--state-dir", type=Path, default=None, help="daemon state directory (default: ./.state)"
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
    order.set_defaults(func=_cmd_order)

    cancel = add_parser("cancel", help="send a CancelOrder request")
    cancel.add_argument("order_id")
    cancel.add_argument("--broker", required=True)
    cancel.add_argument("--reason", default=None)
    cancel.set_defaults(func=_cmd_cancel)

    execution = add_parser("execution", help="GetExecution by execution id or --order")
    execution.add_argument("execution_id", nargs="?")
    execution.add_argument("--order", default=None)
    execution.set_defaults(func=_cmd_execution)

    why = add_parser("why", help="why an order went to its broker: the routing decision, explained")
    why.add_argument("order_id")
    why.set_defaults(func=_cmd_why)

    brokers = add_parser("brokers", help="ListBrokers")
    brokers.add_argument("--status", type=str.upper, choices=[s.value for s in BrokerListStatus])
    brokers.add_argument("--asset-class", type=str.upper, choices=[a.value for a in AssetClass])
    brokers.set_defaults(func=_cmd_brokers)

    status = add_parser("status", help="GetBrokerStatus")
    status.add_argument("broker_id")
    status.set_defaults(func=_cmd_status)

    watch = add_parser("watch", help="print execution updates as they arrive")
    watch.add_argument("--order", default=None)
    watch.add_argument("--broker", default=None)
    watch.add_argument("--status", type=str.upper, choices=[s.value for s in ExecutionStatus])
    watch.add_argument("--replay", action="store_true", help="first replay what the stream kept")
    watch.add_argument("--stream", default="BROKER_EXECUTIONS")
    watch.set_defaults(func=_cmd_watch)

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
    tca.set_defaults(func=_cmd_tca)

    maintenance = add_parser("maintenance", help="take a broker out of routing (on) or back (off)")
    maintenance.add_argument("broker_id")
    maintenance.add_argument("state", choices=["on", "off"])
    maintenance.add_argument("--reason", default=None)
    maintenance.set_defaults(func=_cmd_maintenance)

    refresh = add_parser("refresh-views", help="refresh the daemon's materialized read models now")
    refresh.set_defaults(func=lambda args: _call(args, subjects.REFRESH_READ_MODELS, {}))

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
    import os
    import signal

    import trio

    from daemon.app import Endpoints, run_daemon
    from daemon.logs import configure_logging, register_secret

    configure_logging(config.service.log_level)
    alpaca_secrets = [
        os.environ.get(name) for a in config.alpaca_brokers for name in (a.key_env, a.secret_env)
    ]
    alpaca_secrets += [os.environ.get(f.password_env) for f in config.fix_brokers if f.password_env]
    for secret in (
        *config.rest.tokens,
        _password(config.database.url),
        _password(config.nats.url),
        *alpaca_secrets,
    ):
        if secret:
            register_secret(secret)

    def banner(endpoints: Endpoints) -> None:
        if not sys.stdout.isatty():
            return
        brokers = ", ".join(config.broker_ids)
        print(
            f"\nBroker Integration Service is ready\n"
            f"  NATS      {endpoints.nats_url}\n"
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
        for cause in _leaf_errors(exc):
            print(f"broker-integration failed: {cause}", file=sys.stderr)
        return EXIT_FAILED
    return 0


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


def _database_url(args: argparse.Namespace) -> str | None:
    """--database-url, else $DATABASE_URL; None (said on stderr) when neither is given."""
    import os

    url: str | None = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        print("no database: pass --database-url or set DATABASE_URL", file=sys.stderr)
    return url or None


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


# --- OMS-side client ----------------------------------------------------------------------


def _call(
    args: argparse.Namespace, subject: str, payload: Any, show: Callable[[Any], str] | None = None
) -> int:
    from daemon.client import ClientError, request, resolve_nats_url

    try:
        url = resolve_nats_url(args.nats, _state_dir(args))
        reply = asyncio.run(request(url, subject, payload, args.timeout))
    except ClientError as exc:
        print(f"error{f' {exc.code}' if exc.code else ''}: {exc}", file=sys.stderr)
        if isinstance(exc.body, dict):
            for error in exc.body.get("errors", []):
                print(f"  {error.get('field')}: {error.get('message')}", file=sys.stderr)
        return EXIT_FAILED
    print(
        show(reply)
        if show is not None and not args.json
        else json.dumps(reply, indent=None if args.json else 2)
    )
    return 0


def _state_dir(args: argparse.Namespace) -> Path:
    import os

    return Path(args.state_dir or os.environ.get("BIS_STATE_DIR") or ".state")


def _cmd_order(args: argparse.Namespace) -> int:
    payload: dict[str, Any] = {
        "orderId": args.order_id or str(uuid.uuid4()),
        "accountId": args.account,
        "symbol": args.symbol,
        "side": args.side,
        "type": args.type,
        "quantity": _number(args.quantity),
        "timeInForce": args.tif,
        "executionStrategy": args.strategy,
        "urgency": args.urgency,
    }
    if args.price is not None:
        payload["price"] = _number(args.price)
    if args.stop_price is not None:
        payload["stopPrice"] = _number(args.stop_price)
    if args.broker:
        payload["preferredBrokers"] = args.broker
    return _call(args, subjects.ROUTE_ORDER, payload)


def _number(text: str) -> Any:
    """Pass numbers through as JSON numbers with their exact digits (no float rounding)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text  # the service names the field in its error reply
    return value if isinstance(value, int | float) else text


def _cmd_cancel(args: argparse.Namespace) -> int:
    payload = {"orderId": args.order_id, "brokerId": args.broker}
    if args.reason:
        payload["reason"] = args.reason
    return _call(args, subjects.CANCEL_ORDER, payload)


def _cmd_execution(args: argparse.Namespace) -> int:
    if bool(args.execution_id) == bool(args.order):
        print("give an execution id or --order ORDER_ID (one of them)", file=sys.stderr)
        return EXIT_USAGE
    payload = {"executionId": args.execution_id} if args.execution_id else {"orderId": args.order}
    return _call(args, subjects.GET_EXECUTION, payload)


def _cmd_why(args: argparse.Namespace) -> int:
    return _call(args, subjects.GET_EXECUTION, {"orderId": args.order_id}, _explain_decision)


def _explain_decision(details: Any) -> str:
    import msgspec

    from routing.decision import decode, explain

    head = (
        f"order {details.get('orderId')}: {details.get('status')} at {details.get('brokerId')}"
        f" (attempt {details.get('attempt', 1)})"
    )
    decision = details.get("routingDecision")
    if decision is None:
        return head + "\nno routing decision recorded for this order"
    lines = [head, explain(decode(msgspec.json.encode(decision)))]
    for attempt in details.get("attempts", []):
        reason = f": {attempt['reason']}" if attempt.get("reason") else ""
        lines.append(f"attempt {attempt['attempt']} at {attempt['brokerId']}: {attempt['status']}{reason}")
    return "\n".join(lines)


def _cmd_brokers(args: argparse.Namespace) -> int:
    payload = {}
    if args.status:
        payload["status"] = args.status
    if args.asset_class:
        payload["assetClass"] = args.asset_class
    return _call(args, subjects.LIST_BROKERS, payload)


def _cmd_status(args: argparse.Namespace) -> int:
    return _call(args, subjects.GET_BROKER_STATUS, {"brokerId": args.broker_id})


def _cmd_tca(args: argparse.Namespace) -> int:
    from tca.files import OfflineInputError
    from tca.offline import run_offline

    try:
        result = run_offline(
            args.orders,
            args.fills,
            args.trades,
            args.quotes,
            args.out,
            closes_csv=args.closes,
            benchmark=TCABenchmark(args.benchmark),
            time_unit=args.time_unit,
            report=not args.no_report,
        )
    except (OfflineInputError, FileNotFoundError) as exc:
        print(f"tca: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"analysed {result.orders} orders ({result.fills} fills, {result.trades} market trades) "
        f"in {sum(result.timings.values()):.2f}s\n  {result.csv_path}\n  {result.json_path}"
        + (f"\n  {result.html_path}" if result.html_path else "")
    )
    return 0


def _cmd_maintenance(args: argparse.Namespace) -> int:
    payload: dict[str, Any] = {"brokerId": args.broker_id, "enabled": args.state == "on"}
    if args.reason:
        payload["reason"] = args.reason
    return _call(args, subjects.SET_MAINTENANCE, payload)


def _cmd_watch(args: argparse.Namespace) -> int:
    from daemon.client import ClientError, resolve_nats_url, updates_subject, watch_updates

    subject = updates_subject(args.broker, args.status, args.order)

    def show(subject_: str, update: Any) -> None:
        if args.json:
            print(json.dumps(update), flush=True)
            return
        stamp = update.get("timestamp", "")
        try:
            stamp = datetime.fromisoformat(stamp.replace("Z", "+00:00")).strftime("%H:%M:%S.%f")[:-3]
        except ValueError:
            pass
        line = (
            f"{stamp}  {update.get('brokerId', '?'):<12} {update.get('orderId', '?'):<38}"
            f" {update.get('status', '?'):<16} filled {update.get('filledQuantity')}"
        )
        if update.get("averagePrice") is not None:
            line += f" @ {update['averagePrice']}"
        fill = update.get("latestFill")
        if fill:
            line += f"  (fill {fill['quantity']} @ {fill['price']} on {fill['venue']})"
        if update.get("reason"):
            line += f"  reason: {update['reason']}"
        print(line, flush=True)

    try:
        url = resolve_nats_url(args.nats, _state_dir(args))
        print(f"watching {subject} on {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        asyncio.run(watch_updates(url, subject, replay=args.replay, stream=args.stream, on_message=show))
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
