"""NATS subjects of the service: request-reply endpoints and execution updates.

Execution updates go to `trading.broker.v1.executions.<brokerId>.<status>.<orderId>`. Ids come
from outside (the OMS picks order ids), so each token is escaped reversibly: `%` and every
character that would break a subject token (`.`, `*`, `>`, whitespace, control characters) is
written as `%XX` (its UTF-8 bytes in upper-case hex). `unescape_token(escape_token(s)) == s` for
every string, and an escaped token never contains `.`, `*`, `>` or whitespace. Subscribers filter
with ordinary wildcards, e.g. `trading.broker.v1.executions.*.COMPLETED.>`.
"""

from __future__ import annotations

import re

PREFIX = "trading.broker.v1"
EXECUTIONS = f"{PREFIX}.executions"

ROUTE_ORDER = f"{PREFIX}.RouteOrder"
GET_EXECUTION = f"{PREFIX}.GetExecution"
CANCEL_ORDER = f"{PREFIX}.CancelOrder"
GET_BROKER_STATUS = f"{PREFIX}.GetBrokerStatus"
LIST_BROKERS = f"{PREFIX}.ListBrokers"
GET_TCA = f"{PREFIX}.GetTransactionCostAnalysis"
#: Operator requests (not part of the OMS contract).
REFRESH_READ_MODELS = f"{PREFIX}.admin.RefreshReadModels"
SET_MAINTENANCE = f"{PREFIX}.admin.SetMaintenance"

_UNSAFE = re.compile(r"[%.*>\s\x00-\x1f\x7f]")
_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def escape_token(value: str) -> str:
    """Escape one subject token. Raises ValueError for an empty string (no empty tokens)."""
    if not value:
        raise ValueError("a subject token cannot be empty")
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), value)


def unescape_token(token: str) -> str:
    """Inverse of `escape_token`: %XX sequences are UTF-8 bytes, everything else is literal."""
    data = bytearray()
    i = 0
    while i < len(token):
        if _ESCAPE.match(token, i):
            data.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            data.extend(token[i].encode())
            i += 1
    return data.decode()


def execution_subject(broker_id: str, status: str, order_id: str) -> str:
    return f"{EXECUTIONS}.{escape_token(broker_id)}.{status}.{escape_token(order_id)}"


def parse_execution_subject(subject: str) -> tuple[str, str, str]:
    """(broker_id, status, order_id) of an execution-update subject."""
    head, sep, rest = subject.partition(EXECUTIONS + ".")
    parts = rest.split(".")
    if head or not sep or len(parts) != 3 or not all(parts):
        raise ValueError(f"not an execution subject: {subject!r}")
    return unescape_token(parts[0]), parts[1], unescape_token(parts[2])
