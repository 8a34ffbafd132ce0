"""The encrypted credential store: broker secrets kept in PostgreSQL, encrypted with a key that
is not (`BIS_CREDENTIALS_KEY`, in the daemon's environment file).

What is stored per broker is a set of named values — the names being the environment variables
its configuration refers to (`key_env`, `secret_env`, `password_env`) — so a secret is looked
up the same way wherever it lives: in the environment first, then in the store. Encryption is
Fernet (AES-128-CBC with HMAC-SHA256, `cryptography`): a token read with the wrong key, or
altered, is refused, never half-decrypted. Values are never logged, printed or returned by the
CLI; only broker ids and variable names are.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import psycopg
from cryptography.fernet import Fernet, InvalidToken

KEY_VARIABLE = "BIS_CREDENTIALS_KEY"
CONNECT_TIMEOUT = 10


class CredentialError(Exception):
    """The store cannot give what was asked; the message says what to do (never a secret)."""


def generate_key() -> str:
    return Fernet.generate_key().decode()


def _fernet(key: str) -> Fernet:
    try:
        return Fernet(key.encode())
    except (ValueError, TypeError):
        raise CredentialError(
            f"{KEY_VARIABLE} is not a valid key (32 url-safe base64-encoded bytes); "
            "make one with `broker-integration credentials generate-key`"
        ) from None


def encrypt(values: Mapping[str, str], key: str) -> str:
    return _fernet(key).encrypt(json.dumps(dict(values), sort_keys=True).encode()).decode()


def decrypt(token: str, key: str, broker_id: str = "") -> dict[str, str]:
    try:
        data = json.loads(_fernet(key).decrypt(token.encode()))
    except InvalidToken:
        raise CredentialError(
            f"credentials of {broker_id or 'this broker'} cannot be read with this {KEY_VARIABLE} "
            "(another key, or altered): set them again with `broker-integration credentials set`"
        ) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise CredentialError(f"credentials of {broker_id or 'this broker'} are not a set of named values")
    return {str(k): v for k, v in data.items()}


def _connect(database_url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(database_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)


def save(database_url: str, broker_id: str, values: Mapping[str, str], key: str) -> None:
    """Store (or replace) `broker_id`'s named values, encrypted."""
    if not values:
        raise CredentialError("no values given (lines NAME=value on standard input)")
    token = encrypt(values, key)
    with _connect(database_url) as conn:
        conn.execute(
            "INSERT INTO broker_credentials (broker_id, token, updated_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (broker_id) DO UPDATE SET token = EXCLUDED.token, updated_at = EXCLUDED.updated_at",
            (broker_id, token, datetime.now(UTC)),
        )


def delete(database_url: str, broker_id: str) -> bool:
    with _connect(database_url) as conn:
        cur = conn.execute("DELETE FROM broker_credentials WHERE broker_id = %s", (broker_id,))
        return cur.rowcount > 0


def listed(database_url: str, key: str | None = None) -> list[tuple[str, datetime, list[str] | None]]:
    """(broker id, updated at, variable names) of every stored set; the names only with the
    key (an empty list without it, None for a set the key cannot read)."""
    with _connect(database_url) as conn:
        rows = conn.execute(
            "SELECT broker_id, token, updated_at FROM broker_credentials ORDER BY broker_id"
        ).fetchall()
    out: list[tuple[str, datetime, list[str] | None]] = []
    for broker_id, token, updated_at in rows:
        names: list[str] | None = []
        if key:
            try:
                names = sorted(decrypt(str(token), key, str(broker_id)))
            except CredentialError:
                names = None
        assert isinstance(updated_at, datetime)
        out.append((str(broker_id), updated_at, names))
    return out


def environment(
    database_url: str, broker_ids: Iterable[str], key: str | None, environ: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """`environ` completed with the stored values of `broker_ids` (a variable already set in
    the environment wins), and the secrets that came from the store (to redact from logs).
    Without a key the store is not read."""
    env = dict(environ)
    if not key:
        return env, []
    wanted = list(broker_ids)
    if not wanted:
        return env, []
    with _connect(database_url) as conn:
        rows = conn.execute(
            "SELECT broker_id, token FROM broker_credentials WHERE broker_id = ANY(%s)", (wanted,)
        ).fetchall()
    secrets: list[str] = []
    for broker_id, token in rows:
        for name, value in decrypt(str(token), key, str(broker_id)).items():
            if name not in env or not env[name]:
                env[name] = value
                secrets.append(value)
    return env, secrets
