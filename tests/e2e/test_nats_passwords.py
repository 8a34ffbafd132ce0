"""A daemon given a NATS cluster as a list of user:password URLs never shows a password: not on
stdout (the ready banner), not on stderr or in its log, not in either runtime.json; the CLI
neither prints one nor takes the masked URL of runtime.json for a real one."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.cli import _register_secrets
from daemon.config import load_config
from daemon.logs import MASK, redact_text
from daemon.servers import free_port, nats_server_binary, wait_for_port
from tests.support.daemon import REPO, DaemonProcess

#: One password per server URL; the second would leak if only the first were masked.
USERS = {"oms-a": "alpha-Pass-7731", "oms-b": "beta-Pass-9046"}


@pytest.fixture
def password_nats(tmp_path: Path) -> Iterator[list[str]]:
    """A nats-server (JetStream) that takes only the users of `USERS`; one URL per user, as a
    cluster's list would name its nodes (here all the same node)."""
    port = free_port()
    users = ", ".join(f'{{user: "{user}", password: "{password}"}}' for user, password in USERS.items())
    config = tmp_path / "nats.conf"
    config.write_text(
        f'listen: "127.0.0.1:{port}"\n'
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        f"authorization {{ users = [ {users} ] }}\n"
    )
    with open(tmp_path / "nats.log", "wb") as log:
        proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port("127.0.0.1", port, 10.0, proc)
        yield [f"nats://{user}:{password}@127.0.0.1:{port}" for user, password in USERS.items()]
    finally:
        proc.terminate()
        proc.wait(10)


def _leaks(text: str) -> list[str]:
    return [password for password in USERS.values() if password in text]


def test_no_nats_password_in_banner_log_or_runtime_json(
    tmp_path: Path, password_nats: list[str], own_database: str
) -> None:
    daemon = DaemonProcess(tmp_path / "daemon", ",".join(password_nats), own_database, instance="pw")
    daemon.start()
    try:
        own = daemon.state_dir / "runtime.json"
        user = tmp_path / "daemon" / "xdg-state" / "broker-integration" / "runtime.json"
        for path in (own, user):
            text = path.read_text()
            assert not _leaks(text), f"{path}: {text}"
        shown = json.loads(own.read_text())["nats_url"].split(",")
        assert shown == [
            url.replace(USERS[name], MASK) for name, url in zip(USERS, password_nats, strict=True)
        ]

        # The CLI through runtime.json: it says where the password goes instead of failing auth.
        found = subprocess.run(
            [sys.executable, "-m", "daemon.cli", "--state-dir", str(daemon.state_dir), "brokers"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        )
        assert found.returncode == 1 and "pass --nats URL or set NATS_URL" in found.stderr, found.stderr
        # With the URL given, it works; with a wrong password, the error names the URL, masked.
        for url, code in ((password_nats[1], 0), (password_nats[0].replace("alpha", "wrong"), 1)):
            done = subprocess.run(
                [sys.executable, "-m", "daemon.cli", "--nats", url, "--timeout", "5", "brokers"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == code, done.stderr
            assert not _leaks(done.stdout + done.stderr) and "wrong-Pass" not in done.stderr, done.stderr
    finally:
        assert daemon.stop() == 0, daemon.log()
    log = daemon.log()  # stdout (the banner, one JSON record off a terminal) and stderr (the log)
    assert "Broker Integration Service is ready" in log
    assert not _leaks(log), log


def test_every_nats_url_password_is_masked_in_the_log(tmp_path: Path) -> None:
    """Each server's password, not only the first URL's, is registered for masking: a library
    echoing the second one alone (no URL around it) is masked too."""
    config = tmp_path / "config.toml"
    urls = [f"nats://{user}:{password}@10.0.0.{i}:4222" for i, (user, password) in enumerate(USERS.items())]
    config.write_text(
        f"[service]\nstate_dir = {json.dumps(str(tmp_path / 's'))}\n[nats]\nurl = {json.dumps(urls)}\n"
    )
    _register_secrets(load_config(config, environ={}))
    for password in USERS.values():
        assert redact_text(f"auth failed for {password}") == f"auth failed for {MASK}"
