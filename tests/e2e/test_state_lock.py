"""A second daemon on a running daemon's state directory: refused at once, naming the running pid,
touching nothing; the first keeps serving. (It used to start a second nats-server on the live
JetStream store, run broker recovery, and only then die on the REST port, leaving
`<state>/nats.port` pointing at its own dead server.)"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.daemon import REPO, DaemonProcess

#: "At once": the second process only starts Python, reads its configuration and tries the lock.
REFUSAL_WITHIN_S = 20.0


def snapshot(state_dir: Path) -> dict[str, bytes]:
    """Every small file at the top of the state directory, by name: what a second daemon would
    have rewritten (runtime.json, nats.port, the lock's pid)."""
    return {p.name: p.read_bytes() for p in sorted(state_dir.iterdir()) if p.is_file()}


def test_a_second_daemon_on_the_same_state_directory_exits_at_once_naming_the_first(
    tmp_path: Path, database_url: str
) -> None:
    # No NATS URL: the first daemon runs the embedded nats-server in its state directory, as
    # `make run` does, so the state that a second start used to clobber is really there.
    first = DaemonProcess(tmp_path / "d", "", database_url, instance="lock-first")
    first.start()
    try:
        assert first.proc is not None
        before = snapshot(first.state_dir)
        assert before["daemon.lock"] == f"{first.proc.pid}\n".encode()
        assert "nats.port" in before

        started = time.monotonic()
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "daemon.cli",
                "run",
                "--config",
                str(first.config),
                "--state-dir",
                str(first.state_dir),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=REFUSAL_WITHIN_S * 3,
        )
        elapsed = time.monotonic() - started

        assert second.returncode == 1, (second.stdout, second.stderr)
        assert f"pid {first.proc.pid}" in second.stderr, second.stderr
        assert str(first.state_dir) in second.stderr
        assert elapsed < REFUSAL_WITHIN_S, elapsed
        assert "started" not in second.stderr + second.stdout  # no server, no migration
        assert snapshot(first.state_dir) == before  # nats.port, runtime.json, the lock: untouched

        assert first.alive
        health = httpx.get(f"{first.rest_url}/health", timeout=10)
        assert health.status_code == 200
    finally:
        code = first.stop()
    assert code == 0, first.log()
    assert (first.state_dir / "daemon.lock").read_text() == ""  # released on a clean stop
