"""Every error code the README documents, triggered for real: a server on loopback
(``python -m service``) with the test plugin's failing projectors (tests/broken_projector.py)
in its own registry and its workers' (the ``plugin_server`` fixture, tests/conftest.py), and
servers that cannot start. The last test holds the README to it: a documented code that no
test asserts fails the suite."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from broken_reasons import FAILING_REASON, REASON
from support import DEMO10, DEMO_ID, REPO, SEED_PREAMBLE, Server, free_port

TESTS = Path(__file__).resolve().parents[1]


def project(server: Server, projector: str, **extra: object) -> httpx.Response:
    body = {"dataset": DEMO_ID, "preamble": SEED_PREAMBLE, "projector": projector, **extra}
    return httpx.post(server.url + "/projections", json=body, timeout=300)


def test_a_library_exception_is_projection_failed_with_its_message(plugin_server: Server) -> None:
    response = project(plugin_server, "failing")
    assert response.status_code == 500, response.text
    assert response.json()["code"] == "projection_failed"
    assert FAILING_REASON in response.json()["detail"]
    assert "RuntimeError" in response.json()["detail"]
    assert "Traceback" not in response.text


def test_non_finite_coordinates_are_refused(plugin_server: Server) -> None:
    response = project(plugin_server, "nan")
    assert response.status_code == 500, response.text
    assert response.json()["code"] == "non_finite_result"
    assert "'nan'" in response.json()["detail"]


def test_a_result_of_the_wrong_shape_is_refused(plugin_server: Server) -> None:
    response = project(plugin_server, "misshapen")
    assert response.status_code == 500, response.text
    assert response.json()["code"] == "bad_result_shape"
    assert "(40, 3), expected (40, 2)" in response.json()["detail"]


def test_an_exception_outside_the_template_is_a_worker_error(plugin_server: Server) -> None:
    response = project(plugin_server, "broken")
    assert response.status_code == 500, response.text
    assert response.json()["code"] == "worker_error" and REASON in response.json()["detail"]


def test_a_failed_item_keeps_its_code_in_the_batch(plugin_server: Server) -> None:
    url = plugin_server.url + "/batches"
    body = {"dataset": DEMO_ID, "preambles": [SEED_PREAMBLE], "projectors": ["nan", "tsne"]}
    created = httpx.post(url, json=body, timeout=60)
    assert created.status_code == 202, created.text
    job = created.json()["id"]
    status = httpx.get(f"{url}/{job}/events", timeout=300).text.rsplit("data: ", 1)[-1]
    assert '"state":"done"' in status and '"failed":1' in status and '"done":1' in status
    (error,) = httpx.get(f"{url}/{job}", timeout=30).json()["errors"]
    assert error["code"] == "non_finite_result" and error["projector"] == "nan"


def test_a_batch_over_the_item_limit_is_refused_up_front(plugin_server: Server) -> None:
    body = {"dataset": DEMO_ID, "preambles": "all", "projectors": ["tsne"]}  # 10 items > 5
    response = httpx.post(plugin_server.url + "/batches", json=body, timeout=60)
    assert response.status_code == 422
    assert response.json()["code"] == "batch_too_large"
    assert "10 items" in response.json()["detail"] and "limit is 5" in response.json()["detail"]
    assert httpx.get(plugin_server.url + "/health", timeout=30).status_code == 200


def test_an_unregistered_projector_is_unknown_to_the_plugin_server(plugin_server: Server) -> None:
    response = project(plugin_server, "nope")
    assert response.status_code == 422 and response.json()["code"] == "unknown_projector"
    assert "'nope'" in response.json()["detail"] and "'failing'" in response.json()["detail"]


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.skipif(_cuda_available(), reason="CUDA is here: device='cuda' is valid")
def test_a_cuda_request_without_cuda_is_device_unavailable(plugin_server: Server) -> None:
    # The device lane's worker reports at start whether it has CUDA; from then on an explicit
    # cuda is refused before it queues, never silently run on the CPU.
    deadline = time.monotonic() + 300
    while httpx.get(plugin_server.url + "/health", timeout=30).json()["cuda"] is None:
        assert time.monotonic() < deadline, plugin_server.log_tail()
        time.sleep(0.2)
    response = project(plugin_server, "clusterplot", params={"device": "cuda"})
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "device_unavailable"
    assert "device='cuda'" in response.json()["detail"]
    assert int(response.headers["retry-after"]) > 0


def _start_failing_server(tmp_path: Path, code: str, *, env: dict[str, str]) -> str:
    """Run ``python -m service`` (``code`` runs first in the process); it must exit on its
    own, non-zero. Returns its output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTVIZ_")}
    full_env.update({"CLUSTVIZ_WORKERS": "1", "CLUSTVIZ_WARM": "[]", **env})
    program = f"{code}\nimport sys, runpy\nsys.argv = ['service', *sys.argv[1:]]\n"
    program += "runpy.run_module('service', run_name='__main__')"
    args = ["--port", str(free_port()), "--data-dir", str(DEMO10), "--state-dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-c", program, *args],
        env=full_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_ray_executor_without_ray_fails_start_up_as_ray_missing(tmp_path: Path) -> None:
    # ``sys.modules["ray"] = None`` is how Python itself makes ``import ray`` fail (as on a
    # machine without the extra); everything else is the real server.
    output = _start_failing_server(
        tmp_path, "import sys; sys.modules['ray'] = None", env={"CLUSTVIZ_EXECUTOR": "ray"}
    )
    assert "start-up failed (ray_missing)" in output
    assert "pip install 'clustviz[ray]'" in output


@pytest.mark.skipif(_cuda_available(), reason="CUDA is here: device='cuda' is valid")
def test_an_explicit_cuda_device_without_cuda_fails_start_up(tmp_path: Path) -> None:
    output = _start_failing_server(tmp_path, "", env={"CLUSTVIZ_DEVICE": "cuda"})
    assert "start-up failed (device_unavailable)" in output and "CUDA is not available" in output


# ---- the README's list, held to the tests ---------------------------------------------------

#: How a test asserts a code: ``…["code"] == "x"``, ``.code == "x"``, a parametrised case
#: ``(body, 404, "x")`` checked with ``["code"] == code``, or a failed start-up's log line.
_ASSERTED = (
    r'\["code"\]\s*==\s*"{code}"',
    r'\.code\s*==\s*"{code}"',
    r'\b[1-5]\d\d,\s*"{code}"\)',
    r'"start-up failed \({code}\)" in',
)


def documented_codes() -> list[str]:
    """The codes in README's table of error codes (its rows: status, codes, meaning)."""
    text = (REPO / "README.md").read_text()
    section = text.split("#### Error codes", 1)[1].split("\n\n", 2)[1]
    codes = []
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) > 3 and re.fullmatch(r"\s*(\d{3}|start-up)\s*", cells[1]) is not None:
            codes += re.findall(r"`([a-z_]+)`", cells[2])
    return codes


def test_every_documented_error_code_is_asserted_by_a_test() -> None:
    codes = documented_codes()
    assert len(set(codes)) >= 20, codes  # the table was found and read
    tests = "\n".join(path.read_text() for path in TESTS.rglob("test_*.py"))
    untested = [
        code
        for code in dict.fromkeys(codes)
        if not any(re.search(pattern.format(code=code), tests) for pattern in _ASSERTED)
    ]
    assert untested == [], f"README documents codes that no test asserts: {untested}"
