"""The OMS-side commands of `broker-integration` (`daemon.cli`): each sends one request to the
daemon over NATS, as an OMS would, and prints the answer (`--json`: the reply as is); `watch`
follows the execution updates. They find the daemon from any directory (`--nats`, `NATS_URL`,
`--state-dir`, else `./.state/runtime.json`, else the user's state directory: `daemon.runtime`).

Exit status (also `daemon.cli`'s): 0, `EXIT_FAILED` when the answer is an error or REJECTED,
`EXIT_USAGE` on a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from api import subjects
from api.enums import TCABenchmark

EXIT_USAGE = 2
EXIT_FAILED = 1


def shown_nats_url(url: str) -> str:
    """`url` (one server or a comma-separated list) fit to print: each server without its password."""
    from daemon.servers import redact_url

    return ",".join(redact_url(part.strip()) for part in url.split(",") if part.strip())


def _call(
    args: argparse.Namespace,
    subject: str,
    payload: Any,
    show: Callable[[Any], str] | None = None,
    *,
    rejected_fails: bool = True,
) -> int:
    """Send one request and print the answer; 1 for an error, and for an answer whose status
    is REJECTED (unless `rejected_fails` is False: `why` explains a rejection, it is not one)."""
    reply = _request(args, subject, payload)
    if isinstance(reply, _Failed):
        return EXIT_FAILED
    print(
        show(reply)
        if show is not None and not args.json
        else json.dumps(reply, indent=None if args.json else 2)
    )
    if rejected_fails and isinstance(reply, dict) and reply.get("status") == "REJECTED":
        reason = reply.get("rejectionReason")
        print(f"REJECTED{f': {reason}' if reason else ''}", file=sys.stderr)
        return EXIT_FAILED
    return 0


class _Failed:
    """A request that got an error (already said on stderr)."""


def _request(args: argparse.Namespace, subject: str, payload: Any) -> Any:
    """The decoded reply, or `_Failed()` after printing the error and its field errors."""
    from daemon.client import ClientError, request
    from daemon.logs import redact_text

    try:
        url = _client_nats_url(args)
        return asyncio.run(request(url, subject, payload, args.timeout))
    except ClientError as exc:
        print(f"error{f' {exc.code}' if exc.code else ''}: {redact_text(str(exc))}", file=sys.stderr)
        if isinstance(exc.body, dict):
            for error in exc.body.get("errors", []):
                print(f"  {error.get('field')}: {error.get('message')}", file=sys.stderr)
        return _Failed()


def _client_nats_url(args: argparse.Namespace) -> str:
    """The NATS URL to reach the daemon (`daemon.client.resolve_nats_url`). The daemon's
    runtime.json never holds a password: when its URL needs one, say where to give it."""
    from daemon.client import ClientError, resolve_nats_url
    from daemon.logs import MASK

    url = resolve_nats_url(args.nats, state_dir(args))
    if f":{MASK}@" in url and not args.nats and not _environ("NATS_URL"):
        raise ClientError(
            f"the daemon's NATS server needs a password ({url}), never written to runtime.json: "
            "pass --nats URL or set NATS_URL with it"
        )
    return url


def _environ(name: str) -> str | None:
    import os

    return os.environ.get(name) or None


def state_dir(args: argparse.Namespace) -> Path | None:
    """--state-dir, else $BIS_STATE_DIR, else None (look in ./.state, then the user's)."""
    import os

    explicit = args.state_dir or os.environ.get("BIS_STATE_DIR")
    return Path(explicit) if explicit else None


def cmd_order(args: argparse.Namespace) -> int:
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


def cmd_cancel(args: argparse.Namespace) -> int:
    broker = args.broker
    if broker is None:  # the broker holding the order's latest execution
        details = _request(args, subjects.GET_EXECUTION, {"orderId": args.order_id})
        if isinstance(details, _Failed):
            print("  (cannot find the order's broker: pass --broker)", file=sys.stderr)
            return EXIT_FAILED
        broker = details.get("brokerId") if isinstance(details, dict) else None
        if not broker:
            print(f"order {args.order_id}: no broker holds it: pass --broker", file=sys.stderr)
            return EXIT_FAILED
    payload = {"orderId": args.order_id, "brokerId": broker}
    if args.reason:
        payload["reason"] = args.reason
    return _call(args, subjects.CANCEL_ORDER, payload)


def cmd_execution(args: argparse.Namespace) -> int:
    if bool(args.execution_id) == bool(args.order):
        print("give an execution id or --order ORDER_ID (one of them)", file=sys.stderr)
        return EXIT_USAGE
    payload = {"executionId": args.execution_id} if args.execution_id else {"orderId": args.order}
    return _call(args, subjects.GET_EXECUTION, payload)


def cmd_why(args: argparse.Namespace) -> int:
    from nursery.pretrade.explain import EXPLAIN_ORDER

    return _call(args, EXPLAIN_ORDER, {"orderId": args.order_id}, _explain_order, rejected_fails=False)


def _explain_order(explanation: Any) -> str:
    """ExplainOrder as lines: the answer, the pre-trade checks, the routing decision (every
    broker's score or reason), the attempts."""
    import msgspec

    from routing.decision import decode, explain

    order_id = explanation.get("orderId")
    response = explanation.get("response") or {}
    execution = explanation.get("execution") or {}
    status = response.get("status", "still being routed")
    head = f"order {order_id}: {status}"
    if execution:
        head += (
            f"; execution {execution.get('status')} at {execution.get('brokerId')}"
            f" (attempt {execution.get('attempt', 1)})"
        )
    lines = [head]
    if response.get("rejectionReason"):
        lines.append(f"rejected: {response['rejectionReason']}")
    pre_trade = explanation.get("preTrade") or {}
    safeguards = pre_trade.get("safeguards")
    if safeguards is not None:
        if safeguards.get("passed"):
            lines.append("safeguards: passed")
        else:
            detail = ", ".join(
                f"{k} {safeguards[k]}" for k in ("limit", "value") if safeguards.get(k) is not None
            )
            lines.append(
                f"safeguards: refused by {safeguards.get('safeguard')}"
                f"{f' ({detail})' if detail else ''}: {safeguards.get('reason')}"
            )
    risk = pre_trade.get("risk")
    if risk is not None:
        policy = f", policy fail-{risk['policy']}" if risk.get("policy") else ""
        routed = "" if risk.get("routed", True) else ", not routed"
        reason = f": {risk['reason']}" if risk.get("reason") else ""
        lines.append(
            f"risk service: {risk.get('verdict')} in {risk.get('latencyMs')} ms{policy}{routed}{reason}"
        )
    decision = explanation.get("routingDecision")
    if decision is None:
        lines.append("no routing decision recorded for this order")
    elif decision.get("candidates") or decision.get("ineligible"):
        lines.append(explain(decode(msgspec.json.encode(decision))))
    else:
        lines.append("no broker was considered: refused before routing")
    for attempt in execution.get("attempts", []):
        reason = f": {attempt['reason']}" if attempt.get("reason") else ""
        lines.append(f"attempt {attempt['attempt']} at {attempt['brokerId']}: {attempt['status']}{reason}")
    return "\n".join(lines)


def cmd_kill_switch(args: argparse.Namespace) -> int:
    from nursery.pretrade.admin import LIST_KILL_SWITCHES, SET_KILL_SWITCH

    if args.action == "list":
        return _call(args, LIST_KILL_SWITCHES, {}, _show_kill_switches)
    if args.cancel_open_orders and args.action != "engage":
        print("--cancel-open-orders goes with engage", file=sys.stderr)
        return EXIT_USAGE
    import getpass

    payload: dict[str, Any] = {
        "scope": "ACCOUNT" if args.account else "GLOBAL",
        "engaged": args.action == "engage",
        "changedBy": f"cli:{getpass.getuser()}"[:100],
    }
    if args.account:
        payload["accountId"] = args.account
    if args.reason:
        payload["reason"] = args.reason
    if args.cancel_open_orders:
        payload["cancelOpenOrders"] = True
    reply = _request(args, SET_KILL_SWITCH, payload)
    if isinstance(reply, _Failed):
        return EXIT_FAILED
    print(json.dumps(reply) if args.json else _show_kill_switch_result(reply))
    failed = bool(reply.get("cancelFailed")) or not reply.get("persisted", False)
    return EXIT_FAILED if failed else 0


def _switch_line(switch: Any) -> str:
    where = "global" if switch.get("scope") == "GLOBAL" else f"account {switch.get('accountId')}"
    state = "ENGAGED" if switch.get("engaged") else "released"
    who = f" by {switch['changedBy']}" if switch.get("changedBy") else ""
    reason = f": {switch['reason']}" if switch.get("reason") else ""
    return f"{where}: {state} at {switch.get('changedAt')}{who}{reason}"


def _show_kill_switch_result(reply: Any) -> str:
    lines = [_switch_line(reply.get("switch", {}))]
    if not reply.get("persisted"):
        lines.append(
            "NOT STORED (database unavailable): holds on this daemon, stored when the database is back"
        )
    if reply.get("cancelRequested"):
        lines.append(f"cancel requested for {len(reply['cancelRequested'])} open orders")
    for failure in reply.get("cancelFailed", []):
        lines.append(
            f"cancel failed: {failure.get('orderId')} at {failure.get('brokerId')}: {failure.get('reason')}"
        )
    return "\n".join(lines)


def _show_kill_switches(reply: Any) -> str:
    engaged = reply.get("engaged", [])
    lines = [_switch_line(s) for s in engaged] or ["no kill switch engaged"]
    lines += [f"not stored yet: {_switch_line(s)}" for s in reply.get("unpersisted", [])]
    return "\n".join(lines)


def cmd_brokers(args: argparse.Namespace) -> int:
    payload = {}
    if args.status:
        payload["status"] = args.status
    if args.asset_class:
        payload["assetClass"] = args.asset_class
    return _call(args, subjects.LIST_BROKERS, payload)


def cmd_status(args: argparse.Namespace) -> int:
    return _call(args, subjects.GET_BROKER_STATUS, {"brokerId": args.broker_id})


def cmd_tca(args: argparse.Namespace) -> int:
    from tca_offline.files import OfflineInputError
    from tca_offline.offline import run_offline

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


def cmd_refresh_views(args: argparse.Namespace) -> int:
    return _call(args, subjects.REFRESH_READ_MODELS, {})


def cmd_maintenance(args: argparse.Namespace) -> int:
    payload: dict[str, Any] = {"brokerId": args.broker_id, "enabled": args.state == "on"}
    if args.reason:
        payload["reason"] = args.reason
    return _call(args, subjects.SET_MAINTENANCE, payload)


def cmd_watch(args: argparse.Namespace) -> int:
    from daemon.client import ClientError, updates_subject, watch_updates
    from daemon.logs import redact_text

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

    def connection(event: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S.%f")[:-3]
        if event == "disconnected":
            text = f"{stamp}  connection to NATS lost: reconnecting (updates meanwhile: --replay)"
        else:
            text = f"{stamp}  connection to NATS back: watching again"
        if args.json:
            text = json.dumps({"event": event, "at": datetime.now().astimezone().isoformat()})
        print(text, file=sys.stderr, flush=True)

    try:
        url = _client_nats_url(args)
        print(f"watching {subject} on {shown_nats_url(url)} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        asyncio.run(
            watch_updates(
                url,
                subject,
                replay=args.replay,
                stream=args.stream,
                on_message=show,
                on_connection=connection,
            )
        )
    except ClientError as exc:
        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        pass
    return 0
