#!/usr/bin/env python
"""The page's map view at clamp scale (not a test: it prints figures).

A synthetic dataset with clamp's row count (3,085 preambles x 40 guesses; the embeddings are
16-d, since only the map's points travel to the page), one cheap map of it (openTSNE on the
cluster means, every guess placed by ``transform``) on a real server on loopback, then:

  server    GET /maps/{id}/points as row JSON and as ``format=columns``: bytes and seconds;
  browser   the same two answers fetched and parsed in headless Chromium (``fetch`` +
            ``json()``), the page opened on the map until its canvas is drawn, one redraw
            (a wheel zoom), and one hover (a pointer move hit-tested against every point).

Each figure is a median over ``--repeats``; compare the ratios printed in one run.

Usage: .venv/bin/python scripts/bench_page_map.py [--preambles 3085] [--repeats 5]
       [--screenshot path.png]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from clustviz.data.synthetic import write_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CLUSTVIZ_CHROMIUM", "/usr/bin/chromium")
MAP = {
    "method": "opentsne",
    "fit_on": "cluster_means",
    "params": {"early_exaggeration_iter": 50, "n_iter": 100, "transform_n_iter": 25},
}
FETCH = """async (url) => {
  const started = performance.now();
  const response = await fetch(url, { cache: "no-store" });
  const body = await response.json();
  return [performance.now() - started, body.n];
}"""
REDRAW = """async () => {
  const canvas = document.querySelector("canvas.map-canvas");
  const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
  await frame();
  const started = performance.now();
  const box = canvas.getBoundingClientRect();
  canvas.dispatchEvent(new WheelEvent("wheel", { deltaY: -50, clientX: box.left + box.width / 2,
    clientY: box.top + box.height / 2, bubbles: true, cancelable: true }));
  await frame();  // the drawing runs in this frame's callback
  return performance.now() - started;
}"""
HOVER = """() => {
  const canvas = document.querySelector("canvas.map-canvas");
  const box = canvas.getBoundingClientRect();
  const started = performance.now();
  const moves = 200;
  for (let k = 0; k < moves; k++) {
    canvas.dispatchEvent(new PointerEvent("pointermove", { bubbles: true,
      clientX: box.left + (k * 37) % box.width, clientY: box.top + (k * 53) % box.height }));
  }
  return (performance.now() - started) / moves;
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(data_dir: Path, state_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLUSTVIZ_")}
    env.update(
        CLUSTVIZ_WARM="[]",
        CLUSTVIZ_DEVICE="cpu",
        CLUSTVIZ_NUMBA_CACHE_DIR=str(REPO / ".cache" / "numba"),
    )
    command = [sys.executable, "-m", "service", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--state-dir", str(state_dir)]
    log = (state_dir / "server.log").open("ab")
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/health", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the server did not answer; see {state_dir / 'server.log'}")


def make_map(url: str) -> tuple[str, str]:
    (dataset,) = [d["id"] for d in httpx.get(url + "/datasets").json()]
    started = time.perf_counter()
    created = httpx.post(url + "/maps", json={"dataset": dataset, **MAP}, timeout=60)
    created.raise_for_status()
    map_id = created.json()["id"]
    while (status := httpx.get(f"{url}/maps/{map_id}").json())["state"] in ("queued", "running"):
        time.sleep(0.5)
    if status["state"] != "done":
        raise SystemExit(f"the map did not finish: {status['error']}")
    print(f"map {map_id} of {dataset}: {time.perf_counter() - started:.0f} s")
    return dataset, map_id


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples):8.1f} ms"


def server_side(url: str, map_id: str, repeats: int) -> None:
    for fmt in ("json", "columns"):
        times, size = [], 0
        for _ in range(repeats):
            started = time.perf_counter()
            answer = httpx.get(f"{url}/maps/{map_id}/points", params={"format": fmt}, timeout=120)
            answer.json()
            times.append(1000 * (time.perf_counter() - started))
            size = len(answer.content)
        print(f"server  points {fmt:8} {size / 1e6:6.1f} MB  get+parse (Python) {median_ms(times)}")


def browser_side(url: str, dataset: str, map_id: str, repeats: int, shot: Path | None) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(base_url=url, viewport={"width": 1400, "height": 1000})
        page.goto("/static/index.html")
        for fmt in ("json", "columns"):
            points = f"/maps/{map_id}/points?format={fmt}"
            times = [page.evaluate(FETCH, points)[0] for _ in range(repeats)]
            print(f"browser points {fmt:8} fetch+parse {median_ms(times)}")
        columns = httpx.get(f"{url}/maps/{map_id}/points", params={"format": "columns"}).json()
        preamble = columns["preamble_ids"][0]
        opened, redraws, hovers = [], [], []
        for _ in range(repeats):
            started = time.perf_counter()
            page.goto(f"/?dataset={dataset}&projectors=&map={map_id}&preamble={preamble}")
            page.locator("#map-summary").filter(has_text="points loaded").wait_for(timeout=120_000)
            page.wait_for_function("document.querySelector('canvas.map-canvas')?.width > 0")
            opened.append(1000 * (time.perf_counter() - started))
            redraws.append(page.evaluate(REDRAW))
            hovers.append(page.evaluate(HOVER))
        n = columns["n"]
        print(f"browser page with a map of {n:,} points: open to drawn {median_ms(opened)}")
        print(f"browser redraw (wheel zoom, {n:,} points)       {median_ms(redraws)}")
        print(f"browser hover (one pointer move, hit-test)    {median_ms(hovers)}")
        if shot is not None:
            page.goto(f"/?dataset={dataset}&projectors=&map={map_id}&preamble={preamble}")
            page.locator("#map-summary").filter(has_text="points loaded").wait_for()
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preambles", type=int, default=3085)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        write_synthetic_dataset(root / "data", args.preambles, dim=16)
        seconds = time.perf_counter() - started
        print(f"synthetic dataset: {args.preambles} x 40 rows ({seconds:.0f} s)")
        (root / "state").mkdir()
        process, url = start_server(root / "data", root / "state")
        try:
            dataset, map_id = make_map(url)
            server_side(url, map_id, args.repeats)
            browser_side(url, dataset, map_id, args.repeats, args.screenshot)
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
