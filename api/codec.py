"""JSON encoding shared by NATS replies, REST bodies and stored payloads.

Decimals are written as JSON numbers with their exact digits (the spec's `double` on the wire,
no binary rounding on our side)."""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder(decimal_format="number")


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def to_builtins(value: Any) -> Any:
    """Plain JSON-ready Python values (for JSONB columns and test assertions)."""
    return msgspec.json.decode(_encoder.encode(value))
