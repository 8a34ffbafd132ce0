"""The encrypted credential store: round trips, refusals, the environment overlay, and the CLI
(values read from standard input, never printed)."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from daemon import credentials
from tests.support.daemon import REPO


def test_values_round_trip_and_a_wrong_or_bad_key_is_refused() -> None:
    key = credentials.generate_key()
    token = credentials.encrypt({"ALPACA_KEY_ID": "AK123", "ALPACA_SECRET_KEY": "s3cr3t"}, key)
    assert "s3cr3t" not in token
    assert credentials.decrypt(token, key) == {"ALPACA_KEY_ID": "AK123", "ALPACA_SECRET_KEY": "s3cr3t"}
    with pytest.raises(credentials.CredentialError, match="cannot be read"):
        credentials.decrypt(token, credentials.generate_key(), "alpaca")
    with pytest.raises(credentials.CredentialError, match="cannot be read"):
        credentials.decrypt(token[:-4] + "AAAA", key, "alpaca")  # altered
    with pytest.raises(credentials.CredentialError, match="not a valid key"):
        credentials.encrypt({"A": "b"}, "not-a-key")


def test_the_store_completes_the_environment_which_wins(migrated_database_url: str) -> None:
    key = credentials.generate_key()
    credentials.save(migrated_database_url, "cred-a", {"KEY_A": "stored-a", "SECRET_A": "stored-s"}, key)
    credentials.save(migrated_database_url, "cred-b", {"KEY_B": "stored-b"}, key)
    env, secrets = credentials.environment(
        migrated_database_url, ["cred-a"], key, {"KEY_A": "from-env", "PATH": "/bin"}
    )
    assert env["KEY_A"] == "from-env" and env["SECRET_A"] == "stored-s" and "KEY_B" not in env
    assert secrets == ["stored-s"]
    assert credentials.environment(migrated_database_url, ["cred-a"], None, {}) == ({}, [])  # no key
    with pytest.raises(credentials.CredentialError):
        credentials.environment(migrated_database_url, ["cred-a"], credentials.generate_key(), {})
    assert credentials.delete(migrated_database_url, "cred-a") and not credentials.delete(
        migrated_database_url, "cred-a"
    )


def test_the_cli_stores_from_stdin_and_never_prints_a_value(migrated_database_url: str) -> None:
    key = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "credentials", "generate-key"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    env = {**os.environ, "DATABASE_URL": migrated_database_url, "BIS_CREDENTIALS_KEY": key}

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "daemon.cli", "credentials", *args],
            cwd=REPO, env=env, input=stdin, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    stored = cli(
        "set", "cred-cli", stdin="# Alpaca paper\nALPACA_KEY_ID=PKTEST1\nALPACA_SECRET_KEY=very=secret\n"
    )
    assert stored.returncode == 0, stored.stderr
    assert "ALPACA_KEY_ID, ALPACA_SECRET_KEY" in stored.stdout and "PKTEST1" not in stored.stdout
    listing = cli("list")
    assert "cred-cli" in listing.stdout and "very=secret" not in listing.stdout
    with psycopg.connect(migrated_database_url) as conn:
        (token,) = conn.execute(
            "SELECT token FROM broker_credentials WHERE broker_id = 'cred-cli'"
        ).fetchone()  # type: ignore[misc]
    assert "very=secret" not in token
    assert credentials.decrypt(token, key)["ALPACA_SECRET_KEY"] == "very=secret"  # after the first =
    assert cli("set", "cred-cli", stdin="no equals sign\n").returncode != 0
    assert cli("delete", "cred-cli").returncode == 0
