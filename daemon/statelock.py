"""One daemon per state directory: an exclusive `flock` on `<state>/daemon.lock`, holding the pid.

The state directory holds what only one daemon may drive at a time: the embedded nats-server's
JetStream store and its port file, the embedded PostgreSQL data, `runtime.json`. The lock is taken
before anything else happens (before a server starts, before a migration runs); a second daemon
on the same directory fails at once, touching nothing, and its message names the running pid.

The kernel releases a `flock` when its holder dies, however it dies (SIGKILL, crash, OOM): there is
no stale lock to clean up. The file itself stays (unlinking a lock file races with a starter that
has already opened it); its content is only informative, the lock is what counts. The descriptor
is close-on-exec, so the servers the daemon starts never inherit (and outlive it holding) the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = "daemon.lock"


class StateDirInUse(RuntimeError):
    """Another process holds the state directory's lock; `pid` is its pid when it wrote one."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        self.state_dir = state_dir
        self.pid = pid
        holder = f"pid {pid}" if pid is not None else "pid not yet written"
        super().__init__(
            f"another broker-integration daemon ({holder}) is running on the state directory "
            f"{state_dir}; stop it first, or give this one its own state directory "
            "(--state-dir, BIS_STATE_DIR)"
        )


class StateLock:
    """The held lock on one state directory. Take it with `StateLock.hold(state_dir)`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def __repr__(self) -> str:
        return f"<StateLock {self.path} held={self._fd is not None} pid={os.getpid()}>"

    @classmethod
    @contextlib.contextmanager
    def hold(cls, state_dir: Path) -> Iterator[StateLock]:
        """Hold `state_dir`'s lock for the duration of the block (creating the directory if needed).

        Raises `StateDirInUse` at once, without waiting, when another process (or another `hold`
        in this one) holds it. On exit the pid is cleared and the lock released.
        """
        lock = cls.acquire(state_dir)
        try:
            yield lock
        finally:
            lock.release()

    @classmethod
    def acquire(cls, state_dir: Path) -> StateLock:
        """Take the lock without blocking and write our pid into the file; `release` gives it back."""
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise StateDirInUse(state_dir, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Clear the pid and release the lock. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # still ours: no other process can be writing it
        os.close(fd)  # closing the descriptor releases the flock


def _read_pid(fd: int) -> int | None:
    """The holder's pid as written in the file; None if it is empty (the holder is just starting)
    or unreadable."""
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
