"""`tca/` is pure: it takes snapshots and returns numbers. No file, database or network I/O in it,
held two ways: importing every module of `tca` in a fresh interpreter loads no I/O library, and
no module of `tca` names an I/O module or calls `open`."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import tca

#: Libraries that do file, database or network I/O, and our own packages that drive them.
IO_PACKAGES = frozenset(
    {
        "polars", "pyarrow", "psycopg", "psycopg_pool", "nats", "trio", "trio_asyncio", "asyncio",
        "socket", "ssl", "http", "httpx", "shutil", "tempfile", "sqlite3",
        "sql", "daemon", "nursery", "adapters", "market", "tca_online", "tca_offline",
    }
)  # fmt: skip
#: Module names a pure module must not import (pathlib is loaded by numpy itself, so only the
#: source check can hold it).
IO_IMPORTS = IO_PACKAGES | {"pathlib", "os", "io", "glob", "pickle", "urllib", "requests"}

_LIST_LOADED = """
import importlib, json, pkgutil, sys
import tca
for info in pkgutil.iter_modules(tca.__path__):
    importlib.import_module("tca." + info.name)
print(json.dumps(sorted(sys.modules)))
"""


def test_importing_tca_loads_no_io_library() -> None:
    root = Path(tca.__file__).parent.parent
    out = subprocess.run(
        [sys.executable, "-c", _LIST_LOADED], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    loaded = {name.split(".")[0] for name in json.loads(out)}
    assert "tca" in loaded
    assert sorted(loaded & IO_PACKAGES) == []


def _io_uses(source: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in IO_IMPORTS]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in IO_IMPORTS:
                found.append(node.module)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            found.append("open()")
    return found


def test_no_tca_module_names_an_io_module() -> None:
    modules = sorted(Path(tca.__file__).parent.glob("*.py"))
    assert len(modules) >= 5
    offenders = {p.name: uses for p in modules if (uses := _io_uses(p.read_text(encoding="utf-8")))}
    assert offenders == {}


def test_the_source_check_sees_io() -> None:
    """The check above can fail: the offline tool's modules are exactly what it flags."""
    assert _io_uses("from pathlib import Path\nimport polars as pl\nopen('x')\n") == [
        "pathlib",
        "polars",
        "open()",
    ]
    offline = Path(tca.__file__).parent.parent / "tca_offline" / "files.py"
    assert "polars" in _io_uses(offline.read_text(encoding="utf-8"))
