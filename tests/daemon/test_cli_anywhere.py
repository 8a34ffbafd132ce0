"""The CLI away from the checkout: runtime.json found in the user's state directory (and a dead
daemon's skipped), the embedded PostgreSQL reached through the daemon's state directory, and
`watch` telling when the NATS connection drops and comes back (a real nats-server stopped and
started again on its port)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from daemon.runtime import RuntimeNotFound, embedded_database_url, find_runtime, remove_runtime, write_runtime
from daemon.servers import NatsServer, embedded_postgres
from tests.support.daemon import REPO
from tests.support.polling import poll_until


def test_runtime_json_is_written_to_the_user_state_dir_and_found_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)  # no ./.state here
    state = tmp_path / "daemon-state"
    state.mkdir()
    with pytest.raises(RuntimeNotFound, match="no running daemon found"):
        find_runtime(None)
    written = write_runtime(state, {"pid": os.getpid(), "nats_url": "nats://127.0.0.1:4999"})
    assert written == [state / "runtime.json", tmp_path / "xdg" / "broker-integration" / "runtime.json"]
    path, data = find_runtime(None)
    assert path == tmp_path / "xdg" / "broker-integration" / "runtime.json"
    assert data["nats_url"] == "nats://127.0.0.1:4999" and data["state_dir"] == str(state.resolve())
    remove_runtime(state)
    assert not any(p.exists() for p in written)


def test_a_dead_daemons_runtime_json_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    write_runtime(tmp_path / "s", {"pid": int(gone.stdout), "nats_url": "nats://127.0.0.1:1"})
    with pytest.raises(RuntimeNotFound):
        find_runtime(None)


def test_the_embedded_database_is_reached_through_the_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with embedded_postgres(state / "pgdata"):
        data = {
            "pid": os.getpid(),
            "nats_url": "nats://x",
            "embedded_database": True,
            "state_dir": str(state),
        }
        found = embedded_database_url(data)
        assert found is not None
        with psycopg.connect(found, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert embedded_database_url({**data, "embedded_database": False}) is None


def test_watch_says_when_the_connection_drops_and_comes_back(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    watch = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "watch", "--nats", server.url],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert watch.stderr is not None
        for line in watch.stderr:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def wait_for(text: str, timeout: float = 15.0) -> None:
        poll_until(
            lambda: [line for line in lines if text in line], what=f"{text!r} from watch", timeout=timeout
        )

    try:
        wait_for("watching")
        # "watching" is printed before connecting, and this nats-server shows nobody its
        # connections: time for the watcher to connect (a stop before that is another path).
        time.sleep(0.3)
        server.stop()
        wait_for("connection to NATS lost")
        server.start()
        wait_for("connection to NATS back")
    finally:
        watch.terminate()
        watch.wait(10)
        server.stop()
