"""One daemon per state directory: the lock across processes, its release on any death, its
message naming the holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.statelock import LOCK_NAME, StateDirInUse, StateLock
from tests.support.daemon import REPO

#: A process that takes the lock, says so, and holds it until its stdin closes.
HOLDER = """
import sys
from pathlib import Path
from daemon.statelock import StateLock
with StateLock.hold(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
print("released", flush=True)
"""


class Holder:
    """Another process holding the lock on `state_dir`."""

    def __init__(self, state_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(state_dir)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the lock is held (or the child died)
        assert line == "held\n", (line, self.proc.poll())

    def __repr__(self) -> str:
        return f"<Holder pid={self.proc.pid} returncode={self.proc.poll()}>"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> None:
        """Let the holder leave its `with` block and exit."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        assert self.proc.stdout.read() == "released\n"
        assert self.proc.wait(10) == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Holder]:
    held = Holder(tmp_path / "state")
    try:
        yield held
    finally:
        if held.proc.poll() is None:
            held.kill()


def test_a_second_process_is_refused_at_once_with_the_holders_pid(tmp_path: Path, holder: Holder) -> None:
    with pytest.raises(StateDirInUse) as refused:
        StateLock.acquire(tmp_path / "state")
    assert refused.value.pid == holder.pid
    assert f"pid {holder.pid}" in str(refused.value)
    assert str(tmp_path / "state") in str(refused.value)
    assert (tmp_path / "state" / LOCK_NAME).read_text() == f"{holder.pid}\n"


def test_the_lock_is_free_once_the_holder_releases_it(tmp_path: Path, holder: Holder) -> None:
    holder.release()
    assert (tmp_path / "state" / LOCK_NAME).read_text() == ""  # a clean exit clears the pid
    with StateLock.hold(tmp_path / "state"):
        assert (tmp_path / "state" / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path, holder: Holder) -> None:
    holder.kill()  # SIGKILL: no cleanup ran; the kernel released the flock
    assert (tmp_path / "state" / LOCK_NAME).read_text() == f"{holder.pid}\n"
    with StateLock.hold(tmp_path / "state"):
        assert (tmp_path / "state" / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_a_second_hold_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with StateLock.hold(tmp_path / "state"), pytest.raises(StateDirInUse) as refused:
        StateLock.acquire(tmp_path / "state")
    assert refused.value.pid == os.getpid()


def test_child_processes_do_not_inherit_the_lock(tmp_path: Path) -> None:
    # The daemon starts nats-server and PostgreSQL; if they inherited the descriptor, an orphaned
    # server would keep the state directory locked after the daemon died.
    lock = StateLock.acquire(tmp_path / "state")
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        lock.release()
        with StateLock.hold(tmp_path / "state"):
            pass
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


def test_the_state_directory_is_created(tmp_path: Path) -> None:
    with StateLock.hold(tmp_path / "a" / "b") as lock:
        assert lock.path == tmp_path / "a" / "b" / LOCK_NAME
        assert "held=True" in repr(lock)
    assert "held=False" in repr(lock)
    lock.release()  # idempotent
