#!/usr/bin/env python
"""Service benchmark against a real server on loopback (not a test: it prints figures).

Measures, in one run (``--parts`` picks some):
  startup     time from process start to the first answered request, and to warm workers;
  latency     cached projection latency p50/p99 at 1 and 32 concurrent connections (JSON and
              PNG GETs and JSON POSTs with wrk; POSTs also with a Python client); target at
              32 connections: p50 < 5 ms, p99 < 50 ms;
  health      /health latency (p50/p99/max) while one batch of every demo preamble through the
              four library projectors runs; target p99 < 50 ms;
  throughput  per projector, throughput of one batch over every demo preamble vs a client
              looping single requests (each side with its own seed, so neither is cached).

All traffic goes to a server on 127.0.0.1 that this script starts and stops; every part is
bounded in requests or seconds.

Usage: .venv/bin/python scripts/bench_service.py [--parts a,b] [--preambles N]
       [--projectors a,b] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
DATASET = "smollm2-135m-instruct-layer7-c50-fc37d2fe"
SEED_PREAMBLE = "Students were outraged over the administration's new"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(state_dir: str, port: int) -> tuple[subprocess.Popen[bytes], float]:
    # numba's cache is kept across runs (the server reads CLUSTVIZ_NUMBA_CACHE_DIR; it sets
    # NUMBA_CACHE_DIR in its workers itself), as scripts/load_test and the tests keep it
    env = {**os.environ, "CLUSTVIZ_NUMBA_CACHE_DIR": str(REPO / ".cache" / "numba")}
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port), "--state-dir", state_dir],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            httpx.get(url + "/health", timeout=1)
            return process, time.monotonic() - started
        except httpx.TransportError:
            time.sleep(0.01)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def latency(url: str, concurrency: int, total: int, *, png: bool) -> list[float]:
    body = {"dataset": DATASET, "preamble": SEED_PREAMBLE, "projector": "umap"}
    headers = {"Accept": "image/png"} if png else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    times: list[float] = []
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(total):
            queue.put_nowait(index)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                started = time.perf_counter()
                response = await client.post("/projections", json=body, headers=headers)
                times.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return times


def wrk_latency(
    url: str, concurrency: int, seconds: int, script: str | None = None
) -> tuple[float, float, int, int]:
    """p50 ms, p99 ms, requests, failed (non-2xx/3xx + socket errors) from wrk --latency
    (``script``: a wrk Lua script, e.g. one that POSTs)."""
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(min(2, concurrency)),
            "-c",
            str(concurrency),
            "-d",
            f"{seconds}s",
            "--latency",
            *(["-s", script] if script else []),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        value = next(line.split()[1] for line in out.splitlines() if line.strip().startswith(label))
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    requests = int(next(line.split()[0] for line in out.splitlines() if "requests in" in line))
    failed = 0
    for line in out.splitlines():
        if "Non-2xx" in line:
            failed += int(line.split()[-1])
        if "Socket errors" in line:
            failed += sum(int(part.split()[-1]) for part in line.split(":", 1)[1].split(","))
    return ms("50%"), ms("99%"), requests, failed


LIBRARY_PROJECTORS = ["tsne", "umap", "trimap", "pacmap"]
PARTS = ("startup", "latency", "health", "throughput")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def cached_latency(url: str, requests: int) -> None:
    """Prime one projection and its plot, then measure cached answers (wrk, then httpx)."""
    body = {"dataset": DATASET, "preamble": SEED_PREAMBLE, "projector": "umap"}
    httpx.post(url + "/projections", timeout=120, json=body)
    httpx.post(url + "/projections", timeout=120, headers={"Accept": "image/png"}, json=body)
    if shutil.which("wrk"):
        print("\ncached latency with wrk, 10 s each      p50 ms   p99 ms   requests  failed")
        targets = {
            "JSON": f"{url}/projections/{DATASET}/umap?preamble_id=000ff918bc98",
            "PNG ": f"{url}/plots/{DATASET}/umap.png?preamble_id=000ff918bc98",
        }
        for kind, target in targets.items():
            httpx.get(target, timeout=120)
            for concurrency in (1, 32):
                p50, p99, count, failed = wrk_latency(target, concurrency, 10)
                met = f"   target {verdict(p50 < 5 and p99 < 50)}" if concurrency == 32 else ""
                print(
                    f"  {kind} GET at {concurrency:>2} connections       {p50:7.2f}  "
                    f"{p99:7.2f}   {count:8d}  {failed:6d}{met}"
                )
        post = json.dumps({"dataset": DATASET, "preamble_id": "000ff918bc98", "projector": "umap"})
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
            lua.write(
                'wrk.method = "POST"\nwrk.body = ' + json.dumps(post) + "\n"
                'wrk.headers["Content-Type"] = "application/json"\n'
            )
        for concurrency in (1, 32):
            p50, p99, count, failed = wrk_latency(f"{url}/projections", concurrency, 10, lua.name)
            print(
                f"  JSON POST at {concurrency:>2} connections      {p50:7.2f}  "
                f"{p99:7.2f}   {count:8d}  {failed:6d}"
            )
        os.unlink(lua.name)
    # (an asyncio httpx client in Python, on the same 2 cores: it measures itself too)
    print("\ncached POST /projections latency, httpx client (ms)   p50      p99   requests")
    for png in (False, True):
        for concurrency in (1, 32):
            times = asyncio.run(latency(url, concurrency, requests, png=png))
            kind = "PNG " if png else "JSON"
            print(
                f"  {kind} at {concurrency:>2} connections        "
                f"{percentile(times, 0.5) * 1000:7.2f}  "
                f"{percentile(times, 0.99) * 1000:7.2f}"
                f"   {len(times)}"
            )


def health_during_batch(
    url: str, preambles: list[str], *, seed: int, every: float = 0.05, limit_s: float = 600
) -> None:
    """Probe ``/health`` every ``every`` seconds while one batch of ``preambles`` × the four
    library projectors runs; stop at the batch's end, or cancel it after ``limit_s`` seconds."""
    times: list[float] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        body = {
            "dataset": DATASET,
            "preambles": preambles,
            "projectors": LIBRARY_PROJECTORS,
            "seed": seed,
        }
        started = time.perf_counter()
        created = client.post("/batches", json=body)
        assert created.status_code == 202, created.text
        job = created.json()["id"]
        deadline = time.monotonic() + limit_s
        status = created.json()
        while status["state"] in ("queued", "running") and time.monotonic() < deadline:
            probe = time.perf_counter()
            response = client.get("/health")
            times.append(time.perf_counter() - probe)
            assert response.status_code == 200, response.text
            time.sleep(every)
            if len(times) % 10 == 0:
                status = client.get(f"/batches/{job}").json()
        elapsed = time.perf_counter() - started
        status = client.get(f"/batches/{job}").json()
        if status["state"] in ("queued", "running"):
            client.delete(f"/batches/{job}")  # past the time bound: stop it
    p99 = percentile(times, 0.99) * 1000
    print(
        f"\n/health during one batch of {len(preambles)} preambles x {len(LIBRARY_PROJECTORS)} "
        f"library projectors: {status['done']} done, {status['failed']} failed of "
        f"{status['total']} in {elapsed:.1f} s"
    )
    print(
        f"  {len(times)} probes every {every * 1000:.0f} ms: p50 "
        f"{percentile(times, 0.5) * 1000:.2f} ms, p99 {p99:.2f} ms, max {max(times) * 1000:.2f} ms"
        f"   (target p99 < 50 ms: {verdict(p99 < 50)})"
    )


def loop_single(url: str, projector: str, preambles: list[str], seed: int) -> float:
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=300) as client:
        for preamble in preambles:
            body = {"dataset": DATASET, "preamble": preamble, "projector": projector, "seed": seed}
            response = client.post("/projections", json=body)
            assert response.status_code == 200, response.text
            assert response.json()["cached"] is False
    return time.perf_counter() - started


def run_batch(url: str, projector: str, preambles: list[str], seed: int) -> float:
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=300) as client:
        body = {"dataset": DATASET, "preambles": preambles, "projectors": [projector], "seed": seed}
        job = client.post("/batches", json=body).json()["id"]
        # follow the event stream to its end, as clustviz.client does (no polling interval)
        with client.stream("GET", f"/batches/{job}/events") as events:
            for line in events.iter_lines():
                if line.startswith("event:") and line[6:].strip() == "end":
                    break
        status = client.get(f"/batches/{job}").json()
        assert status["state"] == "done" and status["failed"] == 0, status["errors"][:3]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--preambles", type=int, default=0, help="0 = all demo preambles")
    parser.add_argument("--projectors", default="tsne,umap,trimap,pacmap,clusterplot")
    parser.add_argument("--requests", type=int, default=2000, help="requests per latency run")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS)
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not parts <= set(PARTS):
        parser.error(f"--parts: unknown {sorted(parts - set(PARTS))}; choose from {PARTS}")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as state_dir:
        process, ready = start_server(state_dir, port)
        try:
            started = time.monotonic()
            while not httpx.get(url + "/health", timeout=5).json()["warm"]:
                time.sleep(0.2)
            warm = time.monotonic() - started + ready
            if "startup" in parts:
                print(
                    f"server answering {ready:.2f} s after start; workers warm after {warm:.1f} s"
                )
            with httpx.Client(base_url=url) as client:
                page = client.get(f"/datasets/{DATASET}/preambles", params={"limit": 1000}).json()
            preambles = [item["text"] for item in page["items"]]
            if args.preambles:
                preambles = preambles[: args.preambles]
            if "latency" in parts:
                cached_latency(url, args.requests)
            if "health" in parts:
                health_during_batch(url, preambles, seed=3000)
            if "throughput" in parts:
                print(f"\nthroughput over {len(preambles)} preambles: batch vs looping client")
                print("  projector     loop s   batch s   loop items/s   batch items/s   ratio")
                for projector in args.projectors.split(","):
                    looped = loop_single(url, projector, preambles, seed=1000)
                    batched = run_batch(url, projector, preambles, seed=2000)
                    n = len(preambles)
                    print(
                        f"  {projector:<12} {looped:7.2f}  {batched:8.2f}   {n / looped:12.1f}"
                        f"   {n / batched:13.1f}   {looped / batched:5.1f}x"
                    )
        finally:
            process.terminate()
            process.wait(30)


if __name__ == "__main__":
    main()
