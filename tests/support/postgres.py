"""A PostgreSQL server a test owns and can crash: pgserver's bundled binaries (initdb, pg_ctl,
postgres inside the pgserver package), so it needs no system PostgreSQL, on a free TCP port with
its data directory where the test says.

`stop(mode="immediate")` is a crash as the daemon sees it (every backend killed, no checkpoint;
the next start replays the WAL); `start()` brings the server back on the same port and data
directory, so clients with the same URL reconnect. Committed transactions survive (fsync is on,
as in production).

Run as root (containers, CI), PostgreSQL refuses to start: the binaries then run as pgserver's
own unprivileged system user (created with `useradd` when missing), as `pgserver.get_server`
does, with the data directory's parents made traversable for it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg

from daemon.servers import free_port, process_alive, wait_for_port
from tests.support.polling import NotReached, poll_until

SUPERUSER = "postgres"
#: The unprivileged system user the server runs as when the tests run as root (pgserver's own).
SYSTEM_USER = "pgserver"


class PostgresError(RuntimeError):
    """The server did not do what was asked; the message holds the tail of its log."""


def _bin_dir() -> Path:
    import pgserver  # the package ships the binaries; imported here as servers.py does

    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _run_as() -> str | None:
    """The system user to run the server as: None unless we are root."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    from pgserver.utils import ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


def _give_to(user: str | None, path: Path) -> None:
    """Let `user` own `path` (recursively) and traverse its parents."""
    if user is None:
        return
    import pwd

    from pgserver.utils import ensure_prefix_permissions

    entry = pwd.getpwnam(user)
    ensure_prefix_permissions(path)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(Path(root) / name, entry.pw_uid, entry.pw_gid)
    os.chown(path, entry.pw_uid, entry.pw_gid)


class RestartablePostgres:
    """One PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port` (a free one by
    default) and nowhere else (no Unix socket). `url(db)` is what clients use; it stays valid
    across `stop` / `start`."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self._bin = _bin_dir()
        self._user = _run_as()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<RestartablePostgres :{self.port} {state} {self.data_dir}>"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    # --- lifecycle -------------------------------------------------------------------------

    def init(self) -> None:
        """initdb the cluster (superuser `postgres`, trust auth: loopback only), unless done."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _give_to(self._user, self.data_dir)
        self._command(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
            timeout=120,
        )

    def start(self, timeout: float = 60.0) -> None:
        """Start on `port` and wait until it accepts connections (after a crash this includes
        the WAL replay)."""
        self.log_path.touch()
        _give_to(self._user, self.log_path)
        options = f"-h 127.0.0.1 -p {self.port} -c unix_socket_directories='' -c max_connections=200"
        self._command(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            timeout=timeout + 10,
        )
        wait_for_port("127.0.0.1", self.port, timeout)

        def connects() -> bool:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True

        try:
            poll_until(
                connects,
                what=f"PostgreSQL on :{self.port} accepting connections",
                timeout=timeout,
                retry_on=(psycopg.OperationalError,),
            )
        except NotReached as exc:
            raise PostgresError(f"{exc}\n{self.log_tail()}") from None

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """`pg_ctl stop -m <mode>`: "immediate" is the crash (no checkpoint, backends killed),
        "fast" the orderly stop. Nothing to do when it is not running."""
        if not self.is_running():
            return
        self._command(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-m",
            mode,
            "-w",
            "-t",
            str(int(timeout)),
            "stop",
            timeout=timeout + 10,
        )

    def is_running(self) -> bool:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return False
        return process_alive(pid)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    # --- helpers ---------------------------------------------------------------------------

    def _command(self, program: str, *args: str, timeout: float) -> None:
        # Output to a file, not a pipe: the postmaster pg_ctl starts would inherit the pipe and
        # keep it open, so waiting for its end would hang (pgserver's _commands says the same).
        with tempfile.TemporaryFile("w+") as output:
            try:
                subprocess.run(
                    [str(self._bin / program), *args],
                    check=True,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    user=self._user,
                    cwd="/",
                )
            except subprocess.CalledProcessError as exc:
                output.seek(0)
                raise PostgresError(
                    f"{program} {' '.join(args)} failed ({exc.returncode}):\n{output.read()}\n"
                    f"{self.log_tail()}"
                ) from None


@contextlib.contextmanager
def running_postgres(data_dir: Path) -> Iterator[RestartablePostgres]:
    """A started `RestartablePostgres`, stopped (fast, else immediate) on exit."""
    server = RestartablePostgres(data_dir)
    server.init()
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop("fast", timeout=20)
        except (PostgresError, subprocess.TimeoutExpired):
            server.stop("immediate", timeout=20)
