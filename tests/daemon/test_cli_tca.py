"""`broker-integration tca`: the offline TCA as a desk runs it, on generated files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tca_offline.synthetic import generate_day
from tests.support.daemon import REPO


def test_tca_command_writes_results_and_report(tmp_path: Path) -> None:
    files = generate_day(tmp_path / "in", orders=50, fills=400, trades=4_000, symbols=5, quotes=2_000)
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable, "-m", "daemon.cli", "tca",
            "--orders", str(files.orders), "--fills", str(files.fills), "--trades", str(files.trades),
            "--quotes", str(files.quotes), "--out", str(out), "--benchmark", "vwap",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "analysed 50 orders" in done.stdout
    html = (out / "tca_report.html").read_text()
    assert html.count('src="data:image/svg+xml;base64,') >= 3  # the plots, embedded
    assert (out / "tca.json").stat().st_size > 0


def test_tca_command_refuses_a_bad_file_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "orders.csv"
    bad.write_text("nonsense\n1\n")
    done = subprocess.run(
        [
            sys.executable, "-m", "daemon.cli", "tca",
            "--orders", str(bad), "--fills", str(bad), "--trades", str(bad),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("tca: ")
    assert "Traceback" not in done.stderr
