"""CI cannot go green on skipped parts: under ``CLUSTVIZ_REQUIRE_ALL=1`` (set by ``.ci/run``) a
browser test without its Chromium fails; elsewhere it is skipped, saying why."""

from __future__ import annotations

import os
import subprocess
import sys

from support import REPO


def run_browser_tests(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "tests/e2e", "-q", "-rs", "-p", "no:cacheprovider"],
        cwd=REPO,
        env={**os.environ, "CLUSTVIZ_CHROMIUM": "/nonexistent/chromium", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_browser_test_without_chromium_fails_when_all_parts_are_required() -> None:
    required = run_browser_tests(CLUSTVIZ_REQUIRE_ALL="1")
    assert required.returncode == 1, required.stdout
    assert "no Chromium at /nonexistent/chromium" in required.stdout
    assert " passed" not in required.stdout and " skipped" not in required.stdout

    optional = run_browser_tests(CLUSTVIZ_REQUIRE_ALL="0")
    assert optional.returncode == 0, optional.stdout
    assert "SKIPPED" in optional.stdout and "no Chromium at" in optional.stdout
