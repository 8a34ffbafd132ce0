"""Structured logging on the standard library's `logging`, with secrets masked.

`configure_logging()` installs one handler on the root logger:

- JSON lines when the stream is not a terminal (under systemd, stderr goes to journald), one
  object per record: `timestamp` (UTC, ISO 8601, `Z`), `level`, `logger`, `message`, every
  `extra=` field (`order_id`, `broker_id`, `execution_id`, ...), and `exception` / `stack` when
  present. When the stream *is* the journal (`$JOURNAL_STREAM` names it), each line starts with a
  `<N>` syslog priority that journald strips and keeps, so `journalctl -p warning` works.
- Readable text on a terminal: `timestamp LEVEL logger: message key=value ...`.

Nothing else reaches the stream as free text: Python warnings (`warnings.warn`, e.g. platformdirs'
`RuntimeDirWarning` when pgserver looks for a runtime directory) become records of the
`py.warnings` logger (`logging.captureWarnings`), and the libraries that narrate their work at
INFO in multi-line messages (pgserver echoes initdb's and pg_ctl's output) are held to WARNING
(`QUIET_LIBRARIES`), so their failures still show.

Every record passes `RedactingFilter` first, which masks (with `***`) secrets in the message,
its arguments, the extras (nested too), tracebacks and stack dumps: values under keys named like
password / secret / token / api_key / authorization / credentials, `Bearer <token>`, the password
of a `scheme://user:password@host` URL, and any value given to `register_secret()`. That is
invariant 5 of the design: credentials never leave the process in clear.

Why the standard library and not structlog: every library this daemon runs on (nats-py,
hypercorn, psycopg, alpaca-py, trio-asyncio) logs through `logging`, so the one place that sees
every record, ours and theirs, is a `logging` handler. structlog would still need that handler
(its `ProcessorFormatter`) to format and redact the libraries' records, and would add a second
logging API beside `logging.getLogger(__name__)`. What we need on top of `logging` (a JSON
formatter, a text formatter and a redacting filter) is this module; msgspec, already a
dependency, does the JSON encoding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import decimal
import enum
import functools
import logging
import os
import re
import sys
import uuid
from collections.abc import Mapping
from typing import IO, Any, Literal

import msgspec

__all__ = [
    "MASK",
    "JsonFormatter",
    "LogFormat",
    "RedactingFilter",
    "TextFormatter",
    "configure_logging",
    "is_sensitive_key",
    "redact_text",
    "redact_value",
    "register_secret",
]

LogFormat = Literal["json", "text"]

MASK = "***"

# -- what counts as a secret ----------------------------------------------------------------------

_SENSITIVE_WORD = (
    r"passw(?:or)?d|pwd|secret|token|api[-_]?key|authori[sz]ation|credentials?"
    r"|private[-_]?key|access[-_]?key"
)
_SENSITIVE_KEY = re.compile(_SENSITIVE_WORD, re.IGNORECASE)
# Every match of _SENSITIVE_WORD contains one of these (lower case).
_KEY_ANCHORS = ("pass", "pwd", "secret", "token", "key", "auth", "credential")

# `password=x`, `"api_key": "x"`, `'secret': 'x'`, `Authorization: Bearer x`, `?token=x&...`
_KEY_VALUE = re.compile(
    r"""(?<![\w.-])(?P<key>(?P<quote>["']?)[\w.-]*?(?:""" + _SENSITIVE_WORD + r""")[\w.-]*(?P=quote))"""
    r"""(?P<sep>[ \t]*[:=][ \t]*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|(?:bearer|basic)[ \t]+[^\s"',;&]+|[^\s"',;&)\]}]+)""",
    re.IGNORECASE,
)

# `Authorization: Bearer abc.def`, anywhere in text.
_BEARER = re.compile(r"\b(?P<scheme>bearer)\s+[A-Za-z0-9._~+/-]+=*", re.IGNORECASE)

# `scheme://user:password@host`: the password runs to the last `@` of the URL that a host
# follows, so a raw `@` or `/` in a password is masked too (at worst, more than the password).
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)"
    r"\S+"
    r"(?=@[^\s@/?#]*(?:[/?#\s\"',;)\]}>]|$))",
    re.IGNORECASE,
)

#: Loggers of libraries whose INFO records are their own debugging narrative, not ours to show.
QUIET_LIBRARIES = ("pgserver",)

_registered: set[str] = set()
_registered_longest_first: list[str] = []


def register_secret(value: str) -> None:
    """Mask `value` wherever it appears in a log line, whatever the key or format. For the
    secrets the daemon loads (broker API keys, REST tokens, database passwords) so that a
    library echoing one in an error message cannot leak it. Values under 4 characters are
    ignored: masking them would garble ordinary text without protecting anything."""
    global _registered_longest_first
    if len(value) >= 4 and value not in _registered:
        _registered.add(value)
        _registered_longest_first = sorted(_registered, key=len, reverse=True)


@functools.lru_cache(maxsize=1024)  # a daemon logs a small, fixed set of keys
def is_sensitive_key(name: str) -> bool:
    """True for names like password, db_password, secret_key, access_token, api-key,
    Authorization, credentials."""
    return _SENSITIVE_KEY.search(name) is not None


def _mask_key_value(match: re.Match[str]) -> str:
    value = match["value"]
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match['key']}{match['sep']}{quote}{MASK}{quote}"


# Something in a text that one of the patterns above could match starts with one of these (a
# URL's "://", "bearer", a sensitive key's anchor): one C-speed search tells most texts apart.
_ANY_ANCHOR = re.compile("|".join(re.escape(a) for a in ("://", "bearer", *_KEY_ANCHORS)), re.IGNORECASE)


def redact_text(text: str) -> str:
    """`text` with every secret it recognises replaced by `***`. Idempotent."""
    if _ANY_ANCHOR.search(text) is None:  # most texts: no pattern can match, only registered secrets
        for secret in _registered_longest_first:
            if secret in text:
                text = text.replace(secret, MASK)
        return text
    # Cheap substring tests decide which (slower) patterns to run.
    lowered = text.lower()
    if "://" in lowered:
        text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    if any(anchor in lowered for anchor in _KEY_ANCHORS) and ("=" in text or ":" in text):
        text = _KEY_VALUE.sub(_mask_key_value, text)
    if "bearer" in lowered:
        text = _BEARER.sub(lambda m: f"{m['scheme']} {MASK}", text)
    for secret in _registered_longest_first:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


_PLAIN = (int, float, bool, type(None), decimal.Decimal, dt.date, dt.time, dt.timedelta, uuid.UUID)


def redact_value(value: Any, _depth: int = 0) -> Any:
    """A copy of `value` safe to log: mappings keep their shape with sensitive keys masked,
    sequences are redacted item by item, strings through `redact_text`, msgspec Structs and
    dataclasses via their fields, anything else through its `str()`."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, (enum.Enum, *_PLAIN)):
        return value
    if _depth > 8:
        return "<nested too deep>"
    if isinstance(value, Mapping):
        return {
            key: MASK if is_sensitive_key(str(key)) else redact_value(item, _depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(item, _depth + 1) for item in value]
    if isinstance(value, bytes | bytearray):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, msgspec.Struct) or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
        with contextlib.suppress(Exception):
            return redact_value(msgspec.to_builtins(value), _depth + 1)
    try:
        text = str(value)
    except Exception:
        text = f"<unprintable {type(value).__name__}>"
    return redact_text(text)


# -- the filter --------------------------------------------------------------------------------

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and key[:1] != "_"
    }


_traceback_formatter = logging.Formatter()


class RedactingFilter(logging.Filter):
    """Rewrites each record in place so that no handler after it can see a secret: the message
    is formatted and redacted (args dropped), extras redacted, the traceback formatted and
    redacted into `exc_text`. Attach it to handlers (a logger's filter does not see records
    propagated from child loggers); `configure_logging` does."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._redact(record)
        except Exception as exc:
            # Never raise into the code that logged, never let an unredacted record through.
            record.msg = f"log record withheld: redaction failed ({type(exc).__name__})"
            record.args = ()
            for key in _extras(record):
                record.__dict__[key] = MASK
            record.exc_info = record.exc_text = record.stack_info = None
        return True

    def _redact(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            # logging would print the raw arguments to stderr: they may hold the secret.
            message = f"unformattable log message {record.msg!r} ({len(record.args or ())} args hidden)"
        record.msg = redact_text(message)
        record.args = ()
        for key, value in _extras(record).items():
            record.__dict__[key] = MASK if is_sensitive_key(key) else redact_value(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = _traceback_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)


# -- formatters --------------------------------------------------------------------------------

_SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6}


def _syslog_priority(levelno: int) -> int:
    for threshold, priority in _SYSLOG_PRIORITY.items():
        if levelno >= threshold:
            return priority
    return 7  # debug


def _timestamp(record: logging.LogRecord) -> str:
    moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _encode_fallback(value: Any) -> Any:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


_json = msgspec.json.Encoder(enc_hook=_encode_fallback)


class _Formatter(logging.Formatter):
    def __init__(self, *, syslog_prefix: bool = False) -> None:
        super().__init__()
        self.syslog_prefix = syslog_prefix

    def format(self, record: logging.LogRecord) -> str:
        line = self.render(record)
        if self.syslog_prefix:
            line = f"<{_syslog_priority(record.levelno)}>{line}"
        return line

    def render(self, record: logging.LogRecord) -> str:
        raise NotImplementedError

    def _exception_text(self, record: logging.LogRecord) -> str | None:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        return record.exc_text or None


class JsonFormatter(_Formatter):
    """One JSON object per line. An extra named like a core field is kept as `extra.<name>`."""

    CORE = ("timestamp", "level", "logger", "message", "exception", "stack")

    def render(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            payload[f"extra.{key}" if key in self.CORE else key] = value
        exception = self._exception_text(record)
        if exception:
            payload["exception"] = exception
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        try:
            return _json.encode(payload).decode()
        except (TypeError, ValueError, OverflowError):
            # e.g. a dict with non-string keys: fall back to strings rather than lose the record
            return _json.encode({str(k): _encode_fallback(v) for k, v in payload.items()}).decode()


class TextFormatter(_Formatter):
    """`2024-05-01T12:00:00.000000Z INFO     daemon.cli: routed order_id=o-1 broker_id=sim-a`."""

    def render(self, record: logging.LogRecord) -> str:
        parts = [f"{_timestamp(record)} {record.levelname:<8} {record.name}: {record.getMessage()}"]
        parts.extend(f"{key}={_text_value(value)}" for key, value in _extras(record).items())
        line = " ".join(parts)
        exception = self._exception_text(record)
        if exception:
            line = f"{line}\n{exception}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


def _text_value(value: Any) -> str:
    if isinstance(value, str):
        return value if value and not any(c.isspace() or c in "\"'=" for c in value) else repr(value)
    if isinstance(value, dict | list | tuple):
        try:
            return _json.encode(value).decode()
        except (TypeError, ValueError, OverflowError):
            pass
    return str(_encode_fallback(value))


# -- wiring ------------------------------------------------------------------------------------


class _DaemonHandler(logging.StreamHandler[IO[str]]):
    """The handler `configure_logging` installs; a later call replaces it instead of adding."""


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    names = logging.getLevelNamesMapping()
    try:
        return names[level.strip().upper()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(names)}") from None


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _is_journal(stream: IO[str]) -> bool:
    """True when `stream` is the journald stream systemd connected us to ($JOURNAL_STREAM is
    `device:inode` of that socket), as sd-daemon(3) recommends checking."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{info.st_dev}:{info.st_ino}"


def configure_logging(
    level: str | int = "INFO",
    fmt: LogFormat | None = None,
    *,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send every log record (ours and our libraries') to `stream` (stderr by default) through
    the redacting filter, as JSON lines (`fmt="json"`) or text (`"text"`); `None` chooses text
    on a terminal and JSON otherwise. Calling it again replaces the previous configuration;
    handlers installed by others (pytest's, for instance) are left alone. Returns the handler.
    Raises ValueError for an unknown level name.
    """
    level_number = _level_number(level)
    stream = sys.stderr if stream is None else stream
    if fmt is None:
        fmt = "text" if _is_tty(stream) else "json"
    if fmt not in ("json", "text"):
        raise ValueError(f"unknown log format {fmt!r}: use 'json' or 'text'")
    syslog_prefix = _is_journal(stream)
    formatter_class = JsonFormatter if fmt == "json" else TextFormatter
    formatter = formatter_class(syslog_prefix=syslog_prefix)

    handler = _DaemonHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _DaemonHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level_number)
    logging.captureWarnings(True)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level_number, logging.WARNING))
    return handler
