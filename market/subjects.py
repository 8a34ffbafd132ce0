"""Market-data subjects: `<prefix>.quotes.<symbol>`, `<prefix>.trades.<symbol>`,
`<prefix>.close.<symbol>`, prefix `marketdata.v1` by default (configurable, so a desk can point
the service at its own Market Data Service)."""

from __future__ import annotations

from api.subjects import escape_token, unescape_token

PREFIX = "marketdata.v1"
KINDS = ("quotes", "trades", "close")


def subject(kind: str, symbol: str, prefix: str = PREFIX) -> str:
    if kind not in KINDS:
        raise ValueError(f"market-data kind must be one of {KINDS}, not {kind!r}")
    return f"{prefix}.{kind}.{escape_token(symbol)}"


def subscriptions(prefix: str = PREFIX) -> tuple[str, ...]:
    """The wildcard subjects the intake subscribes to."""
    return tuple(f"{prefix}.{kind}.*" for kind in KINDS)


def parse(subject_: str, prefix: str = PREFIX) -> tuple[str, str]:
    """(kind, symbol) of a market-data subject; ValueError if it is not one."""
    head, sep, rest = subject_.partition(prefix + ".")
    kind, dot, token = rest.partition(".")
    if head or not sep or not dot or kind not in KINDS or not token or "." in token:
        raise ValueError(f"not a market-data subject: {subject_!r}")
    return kind, unescape_token(token)
