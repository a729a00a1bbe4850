"""Fixtures for the browser tests: the real service (``python -m service``) on a free loopback
port, and Debian's Chromium driven headless by Playwright's Python package.

Playwright's own browser download is not used (no CDN here): we launch ``/usr/bin/chromium``
(override with ``CLUSTVIZ_CHROMIUM``). Playwright is imported lazily so that this file loads
without it; ``test_browser.py`` skips itself when either piece is missing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = REPO / "tests" / "data" / "demo10"
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
WARM_TIMEOUT_S = 240  # a cold numba cache: importing and JIT-compiling t-SNE and UMAP
TIMEOUT_MS = 30_000  # any one wait in a test (projections on warm workers take < 1 s)
VIEWPORT = {"width": 1400, "height": 1000}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _health(base: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
            return json.load(response)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()  # uvicorn shuts down gracefully and the lifespan closes the workers
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the group we started: server and its workers
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a warm service on the 10-preamble demo fixture."""
    state = tmp_path_factory.mktemp("clustviz-state")
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLUSTVIZ_")}
    env.update(
        CLUSTVIZ_DATA_DIR=str(DATA_DIR),
        CLUSTVIZ_STATE_DIR=str(state),
        CLUSTVIZ_HOST="127.0.0.1",
        CLUSTVIZ_PORT=str(port),
        CLUSTVIZ_WORKERS="1",
        CLUSTVIZ_WARM='["tsne", "umap"]',  # pydantic-settings reads tuple fields as JSON
    )
    log_path = state / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WARM_TIMEOUT_S
        while True:
            health = _health(base)
            if health is not None and health.get("warm"):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                log_tail = log_path.read_text(errors="replace")[-3000:]
                if process.poll() is not None:
                    why = f"exited with {process.returncode}"
                else:
                    why = f"was not warm after {WARM_TIMEOUT_S} s (last health: {health})"
                pytest.fail(f"the service {why}; its log ends with:\n{log_tail}")
            time.sleep(0.5)
        yield base
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
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
