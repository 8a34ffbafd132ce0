"""Deterministic identities of an order's attempts.

The execution id and the client order id of attempt N of OMS order X are functions of (X, N):
two daemons (or one daemon after a crash) that route the same order derive the same ids, so the
broker's own duplicate check on client order ids backs up our idempotency. The client order id
is the execution id's hex with a prefix, so an event from a broker maps back to its execution
without a lookup table.
"""

from __future__ import annotations

import hashlib
import re
import uuid

import msgspec

from api.codec import encode
from api.contracts import OrderRoutingRequest

_EXECUTION_NAMESPACE = uuid.UUID("2b7d6f0e-3c1a-4e8b-9a55-7e0c4d1f9b21")
CLIENT_ORDER_PREFIX = "bis-"


_NAMESPACE_BYTES = _EXECUTION_NAMESPACE.bytes
#: uuid5's version (5) and RFC 4122 variant bits over the first 16 bytes of the SHA-1.
_KEEP = ~((0xC000 << 48) | (0xF000 << 64))
_SET = (0x8000 << 48) | (5 << 76)
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def execution_id(order_id: str, attempt: int) -> str:
    """`str(uuid.uuid5(namespace, f"{order_id}\\x1f{attempt}"))`, computed as `uuid5` does
    but without building the UUID objects (a third of the time; the same string)."""
    digest = hashlib.sha1(
        _NAMESPACE_BYTES + f"{order_id}\x1f{attempt}".encode(), usedforsecurity=False
    ).digest()
    x = f"{int.from_bytes(digest[:16]) & _KEEP | _SET:032x}"
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def client_order_id(execution: str) -> str:
    """Our prefix and the execution id's 32 hex digits (any spelling of a UUID is accepted;
    the canonical one, which `execution_id` returns, is read without parsing it)."""
    if _CANONICAL.fullmatch(execution):
        return CLIENT_ORDER_PREFIX + execution.replace("-", "")
    return CLIENT_ORDER_PREFIX + uuid.UUID(execution).hex


_OURS = re.compile(rf"^{re.escape(CLIENT_ORDER_PREFIX)}([0-9a-f]{{32}})$")


def execution_of_client_order(client_id: str) -> str | None:
    """The execution id behind one of our client order ids (None if it is not exactly ours:
    only the form `client_order_id` produces, so no other spelling maps to a live execution)."""
    match = _OURS.match(client_id)
    return str(uuid.UUID(hex=match.group(1))) if match else None


def request_hash(request: OrderRoutingRequest) -> str:
    """Fingerprint of a routing request: a repeat with the same orderId must carry the same order.
    Equal requests hash equal whatever the spelling of their numbers (100, 100.0, 1E+2)."""
    canonical = msgspec.structs.replace(
        request,
        quantity=request.quantity.normalize(),
        price=request.price.normalize() if request.price is not None else None,
        stop_price=request.stop_price.normalize() if request.stop_price is not None else None,
    )
    return hashlib.sha256(encode(canonical)).hexdigest()
