"""The operator console in a real headless Chromium (Debian's `chromium`, driven by playwright
with `executable_path`: no browser download).

Opens the console of a running daemon, sees its brokers, routes an order over NATS and sees it
appear live (server-sent events, no reload), toggles maintenance (refused without the token,
done with it), and saves a screenshot under the test's tmp dir.

Without a browser the test is skipped with the reason; under CI=true a missing browser fails
(`make test` installs `chromium` where it can).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import oms
from tests.support.daemon import TEST_TOKEN, DaemonProcess

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_MS = 15_000


def _browser_or_skip() -> str:
    found = os.environ.get("BIS_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    problem = None
    if not found:
        problem = "no Chromium on this machine (apt-get install chromium, or set BIS_CHROMIUM)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed (pip install -e '.[test]')"
    if problem is None:
        assert found is not None
        return found
    message = f"BROWSER TEST NOT RUN: {problem}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " — a missing browser is a failure under CI=true")
    pytest.skip(message)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    executable = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    # playwright's sync API makes an asyncio loop of its own in this thread. Once an earlier
    # test in this process has imported trio-asyncio, `asyncio.new_event_loop()` makes
    # trio-asyncio's sync loop instead, which playwright cannot run: ask for asyncio's own
    # loops meanwhile (trio-asyncio honours a policy set in a thread outside Trio).
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        yield from _page(executable, sync_playwright)
    finally:
        asyncio.set_event_loop_policy(None)


def _page(executable: str, sync_playwright: Any) -> Iterator[Any]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"], timeout=30_000
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            tab = context.new_page()
            tab.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            tab.on("pageerror", lambda error: errors.append(str(error)))
            yield tab
            assert not errors, errors
        finally:
            browser.close()


def _maintenance(daemon: DaemonProcess, broker: str, on: bool) -> None:
    httpx.put(
        f"{daemon.rest_url}/brokers/{broker}/maintenance",
        json={"enabled": on},
        headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        timeout=10,
    ).raise_for_status()


def test_console_shows_brokers_live_updates_and_toggles_maintenance(
    page: Any, daemon: DaemonProcess, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page.goto(f"{daemon.rest_url}/")
    for broker in ("sim-cheap", "sim-fast", "sim-reject"):
        expect(page.locator(f'#brokers tr[data-broker="{broker}"] .status')).to_have_text("CONNECTED")
    expect(page.locator("#readiness")).to_have_text("ready")
    expect(page.locator("#stream")).to_have_text("stream: live")

    order_id = f"console-{uuid.uuid4().hex[:12]}"
    # As an OMS would, from elsewhere (playwright's sync API keeps an event loop in this thread).
    with ThreadPoolExecutor(1) as oms_thread:
        reply = oms_thread.submit(oms.route, daemon.nats_url, oms.order(order_id)).result(timeout=30)
    assert reply.body["status"] == "ACCEPTED", reply.body
    live = page.locator(f'#live li[data-order-id="{order_id}"]')
    expect(live.first).to_be_visible()  # pushed by the stream: the page was not reloaded
    expect(page.locator(f'#executions tr[data-order-id="{order_id}"]')).to_be_visible()
    expect(page.locator("#charts figure")).to_have_count(6)
    routed_to = reply.body["selectedBroker"]
    fills_bar = page.locator(f'[data-chart="fills"] rect[data-broker="{routed_to}"]')
    expect(fills_bar).to_be_visible()
    expect(fills_bar).not_to_have_attribute("data-value", "0")  # redrawn after the update

    broker = "sim-fast"
    toggle = page.locator(f'button.maintenance[data-broker="{broker}"]')
    status = page.locator(f'#brokers tr[data-broker="{broker}"] .status')
    try:
        toggle.click()  # no token yet: the REST API refuses, the page says why
        expect(page.locator("#message")).to_contain_text("bearer token")
        expect(status).to_have_text("CONNECTED")

        page.fill("#token", TEST_TOKEN)
        page.click("#auth button")
        page.locator(f'button.maintenance[data-broker="{broker}"]').click()
        expect(status).to_have_text("MAINTENANCE")
        listed = httpx.get(
            f"{daemon.rest_url}/brokers/{broker}/status", headers={"Authorization": f"Bearer {TEST_TOKEN}"}
        )
        assert listed.json()["status"] == "MAINTENANCE"
        page.screenshot(path=str(tmp_path / "console.png"), full_page=True)

        page.locator(f'button.maintenance[data-broker="{broker}"]').click()
        expect(status).to_have_text("CONNECTED")
    finally:
        _maintenance(daemon, broker, False)  # never leave the session's daemon in maintenance
    assert (tmp_path / "console.png").stat().st_size > 10_000
