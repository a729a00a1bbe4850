"""Fixtures for the browser tests: the session's real service (``live_server``: ``python -m
service`` on a free loopback port), and Debian's Chromium driven headless by Playwright.

Playwright's own browser download is not used (no CDN here): we launch ``/usr/bin/chromium``
(override with ``CLUSTVIZ_CHROMIUM``). Playwright is imported lazily so that this file loads
without it. A missing piece skips the browser tests here, and fails them in CI
(``CLUSTVIZ_REQUIRE_ALL=1``, see ``support.missing_part``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import missing_part

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
CHROMIUM = Path(os.environ.get("CLUSTVIZ_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000  # any one wait in a test (projections on warm workers take < 1 s)
VIEWPORT = {"width": 1400, "height": 1000}


@pytest.fixture(scope="session")
def server(live_server: Any) -> str:
    """Base URL of the session's warm service on the 10-preamble demo fixture."""
    return str(live_server.url)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        missing_part(
            f"no Chromium at {CHROMIUM}: apt-get install chromium (or set CLUSTVIZ_CHROMIUM)"
        )
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_page(browser: Any, server: str) -> Iterator[Any]:
    """Opens pages, each in its own fresh context (own cache and history), closed after the test."""
    contexts = []

    def open_page() -> Any:
        context = browser.new_context(base_url=server, viewport=VIEWPORT)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Any) -> Any:
    return new_page()


@pytest.fixture
def console_errors(page: Any) -> list[str]:
    """Console errors and uncaught exceptions of ``page``, from before its first navigation."""
    errors: list[str] = []

    def on_console(message: Any) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    return errors


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
