"""What the README names exists: every `broker-integration ...` command line it shows parses
with the CLI's own parser, and every route of its REST table answers on a real daemon (with the
bearer token) as a route, never the 404 or 405 of a path the app does not have."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import httpx
import pytest

from daemon.cli import _parser
from tests.support.daemon import TEST_TOKEN, DaemonProcess

README = Path(__file__).resolve().parents[2] / "README.md"
#: A route the app does not have: the app's own 404 body (a missing order or broker says more).
NO_ROUTE = {"message": "not found"}
#: Values for the REST table's path parameters (the e2e daemon's brokers).
PARAMETERS = {"brokerId": "sim-fast", "executionId": "readme-x", "orderId": "readme-o"}


def readme_commands() -> list[list[str]]:
    """The arguments of each `broker-integration` command line in the README's code blocks
    (comments and `\\` continuations handled; `$(...)` and shell prompts left out)."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].replace("[", "").replace("]", "")  # [--optional]
            match = re.search(r"broker-integration ((?:[^$()|<>]|\$[A-Z_]+)+)", line)
            if match:
                commands.append(shlex.split(match.group(1)))
    return commands


def readme_inline_commands() -> list[str]:
    """The command names of `broker-integration NAME ...` spans in the README's prose."""
    return [span.split()[0] for span in re.findall(r"`broker-integration ([^`]+)`", README.read_text())]


def readme_routes() -> list[tuple[str, str]]:
    """(method, path) of every route in the README's REST table."""
    section = README.read_text().split("## REST\n", 1)[1].split("\n## ", 1)[0]
    routes = []
    for row in re.findall(r"^\| (.+?) \|", section, re.MULTILINE):
        routes += re.findall(r"`(GET|PUT|POST) (/[^`?\s]*)", row)
    return routes


def test_the_readme_shows_the_commands_and_routes_this_test_reads() -> None:
    names = {args[0] for args in readme_commands()}
    assert {"order", "watch", "why", "cancel", "kill-switch", "credentials", "tca", "status"} <= names
    assert {"maintenance", "refresh-views"} <= set(readme_inline_commands())
    paths = {path for _, path in readme_routes()}
    assert {"/health/live", "/health/ready", "/metrics", "/", "/admin/kill-switches"} <= paths


@pytest.mark.parametrize("args", readme_commands(), ids=" ".join)
def test_each_readme_command_line_parses(args: list[str]) -> None:
    parsed = _parser().parse_args(args)  # exits 2 (SystemExit) on an unknown command or option
    assert parsed.command == args[0] and callable(parsed.func)


def test_each_command_named_in_the_readme_prose_exists() -> None:
    subcommands = next(
        action.choices for action in _parser()._actions if isinstance(action, argparse._SubParsersAction)
    )
    unknown = sorted(set(readme_inline_commands()) - set(subcommands))
    assert not unknown, f"the README names commands the CLI does not have: {unknown}"


def test_each_route_of_the_readme_rest_table_exists(daemon: DaemonProcess) -> None:
    headers = {"Authorization": f"Bearer {TEST_TOKEN}"}
    with httpx.Client(base_url=daemon.rest_url, headers=headers, timeout=10) as client:
        for method, template in readme_routes():
            path = re.sub(r"\{(\w+)\}", lambda m: PARAMETERS[m.group(1)], template)
            response = client.request(method, path, json={} if method != "GET" else None)
            where = f"{method} {template} -> {response.status_code} {response.text[:200]}"
            assert response.status_code not in (401, 405, 500), where
            is_json = response.headers.get("content-type", "").startswith("application/json")
            assert not (response.status_code == 404 and is_json and response.json() == NO_ROUTE), where
