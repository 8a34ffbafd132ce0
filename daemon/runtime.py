"""`runtime.json`: where a running daemon can be reached, for the CLI on the same machine.

The daemon writes it to its state directory and, so that the CLI finds it from any directory,
to the user's state directory too (`$XDG_STATE_HOME/broker-integration/runtime.json`, default
`~/.local/state/...`); both are removed when it stops (the user's copy only while it is still
this daemon's). It holds no secret: the database URL is shown without its password; the
embedded PostgreSQL needs none (its socket is reached through the state directory:
`embedded_database_url`).

The CLI looks, in order: `--state-dir` / `BIS_STATE_DIR`, `./.state`, the user's state directory.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from daemon.servers import process_alive

__all__ = [
    "APP_NAME",
    "RuntimeNotFound",
    "embedded_database_url",
    "find_runtime",
    "remove_runtime",
    "user_state_dir",
    "write_runtime",
]

APP_NAME = "broker-integration"
FILE = "runtime.json"


class RuntimeNotFound(Exception):
    """No daemon's runtime.json where the CLI looked; the message lists where."""


def user_state_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / APP_NAME


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def write_runtime(state_dir: Path, data: dict[str, Any]) -> list[Path]:
    """Write `data` (plus `state_dir`) to both places; the paths written. The user's copy is
    best effort: a read-only home must not stop the daemon."""
    data = {**data, "state_dir": str(state_dir.resolve())}
    own = state_dir / FILE
    _write(own, data)
    written = [own]
    user = user_state_dir() / FILE
    if user.resolve() != own.resolve():
        with contextlib.suppress(OSError):
            _write(user, data)
            written.append(user)
    return written


def remove_runtime(state_dir: Path) -> None:
    """Remove this daemon's files (the user's copy only if another daemon has not replaced it)."""
    own = state_dir / FILE
    with contextlib.suppress(OSError):
        own.unlink()
    user = user_state_dir() / FILE
    try:
        data = json.loads(user.read_text())
    except (OSError, ValueError):
        return
    if data.get("pid") == os.getpid() and data.get("state_dir") == str(state_dir.resolve()):
        with contextlib.suppress(OSError):
            user.unlink()


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # cannot tell: let the connection attempt decide
    return process_alive(pid)


def find_runtime(state_dir: Path | None) -> tuple[Path, dict[str, Any]]:
    """The runtime file the CLI should use and its content. An explicit `state_dir` is the only
    place looked at; otherwise `./.state`, then the user's state directory. A file whose daemon
    is gone (its pid no longer exists) is skipped."""
    places = [state_dir / FILE] if state_dir is not None else [Path(".state") / FILE, user_state_dir() / FILE]
    for path in places:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            raise RuntimeNotFound(f"{path} is unreadable ({exc}): pass --nats or set NATS_URL") from None
        if not isinstance(data, dict) or "nats_url" not in data:
            raise RuntimeNotFound(f"{path} is unreadable (no nats_url): pass --nats or set NATS_URL")
        if _alive(data.get("pid")):
            return path, data
    looked = ", ".join(str(p) for p in places)
    raise RuntimeNotFound(
        f"no running daemon found (looked for {looked}): start one with `make run`, "
        "or pass --nats / set NATS_URL"
    )


def embedded_database_url(data: dict[str, Any]) -> str | None:
    """The URL of the daemon's embedded PostgreSQL, read from its state directory (the socket
    pgserver wrote in postmaster.pid), or None when it joined another database."""
    if not data.get("embedded_database") or not data.get("state_dir"):
        return None
    from pgserver.postgres_server import PostmasterInfo  # type: ignore[attr-defined]

    info = PostmasterInfo.read_from_pgdata(Path(data["state_dir"]) / "pgdata")
    if info is None:
        return None
    return str(info.get_uri())
