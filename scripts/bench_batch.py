#!/usr/bin/env python
"""Whole-dataset batches at clamp scale: throughput, overhead, server memory, export speed.

Writes the clamp-scale synthetic dataset (``clustviz.data.synthetic``) (3,085 preambles × 40
guesses, 768-d ``Array(Float64)``), serves it with a real server on loopback and prints, in one
run:

  1. per projector, one job over every preamble: wall time, items/s, the sum of the projectors'
     own fit times (what the workers report), and the overhead above the floor ``Σ fit ÷
     processes`` (the pool's workers, or the device lane's one process); and where the rest
     goes, in CPU time per item (robust to other load on the machine): the server process's,
     and the workers' beyond their fits (pickling, the task loop);
  2. one job over every preamble × every projector (all cached by then: what is left is the
     job's own bookkeeping), and its export as parquet, Arrow IPC and NDJSON: seconds, rows/s;
  3. the server process's RSS: idle with the dataset loaded, peak during the jobs, after them,
     peak during the exports and after them (peaks via /proc/PID/clear_refs + VmHWM);
  4. with ``--align``: a quick global map of the dataset, then per projector the same job with
     ``align`` (its layouts cached by then: what is left is the alignment), against the same
     job without it, run again (cached).

Usage: .venv/bin/python scripts/bench_batch.py [--preambles 3085] [--projectors pacmap,clusterplot]
                                               [--align]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import reset_peak, rss_mb

from clustviz.data.synthetic import write_synthetic_dataset
from clustviz.projectors import get_spec

REPO = Path(__file__).resolve().parents[1]
FORMATS = ("parquet", "arrow", "json")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int, data: Path, state: Path, env: dict[str, str]) -> subprocess.Popen:
    """``python -m service`` on ``port`` over ``data`` with its state in ``state``, quiet."""
    command = ["-m", "service", "--port", str(port), "--data-dir", str(data)]
    return subprocess.Popen(
        [sys.executable, *command, "--state-dir", str(state)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_warm(client: httpx.Client) -> None:
    """Until the server at ``client`` answers /health with its pool warm."""
    while True:
        try:
            if client.get("/health", timeout=1).json().get("warm"):
                return
        except httpx.TransportError:  # not listening yet
            pass
        time.sleep(0.2)


def follow(client: httpx.Client, job_id: str) -> dict:
    """Follow the job's event stream to its end; its final status."""
    with client.stream("GET", f"/batches/{job_id}/events", timeout=None) as events:
        for line in events.iter_lines():
            if line.startswith("event:") and line[6:].strip() == "end":
                break
    return client.get(f"/batches/{job_id}").json()


def fit_seconds(store: Path, job_id: str) -> dict[str, tuple[int, float]]:
    """Per projector: (items done, sum of the fit seconds the workers reported)."""
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT j.projector, COUNT(*), SUM(json_extract(p.meta, '$.seconds'))"
            " FROM job_items j JOIN projections p ON p.key = j.key"
            " WHERE j.job_id = ? AND j.state = 'done' GROUP BY j.projector",
            (job_id,),
        ).fetchall()
    return {name: (int(count), float(total or 0.0)) for name, count, total in rows}


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) used so far by the server process and by its live children
    (the pool's workers, the device lane): the per-item split, robust to other load."""

    def of(stat: str) -> float:
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    own, children = of(Path(f"/proc/{pid}/stat").read_text()), 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                children += of(stat)
    return own, children


def read_export(fmt: str, body: bytes) -> pl.DataFrame:
    if fmt == "parquet":
        return pl.read_parquet(io.BytesIO(body))
    if fmt == "arrow":
        return pl.read_ipc_stream(io.BytesIO(body))
    if body.lstrip()[:1] == b"[":  # a JSON array (the export before it was newline-delimited)
        return pl.read_json(io.BytesIO(body))
    return pl.read_ndjson(io.BytesIO(body))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--preambles", type=int, default=3085)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--projectors", default="tsne,umap,trimap,pacmap,clusterplot")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--align", action="store_true", help="also time aligned jobs (part 4)")
    args = parser.parse_args()
    projectors = [name for name in args.projectors.split(",") if name]

    with tempfile.TemporaryDirectory() as tmp:
        data, state = Path(tmp) / "data", Path(tmp) / "state"
        write_synthetic_dataset(data, args.preambles, args.dim)
        port = free_port()
        env = {
            **os.environ,
            "CLUSTVIZ_WARM": json.dumps(projectors),
            "CLUSTVIZ_WORKERS": str(args.workers),
            "CLUSTVIZ_NUMBA_CACHE_DIR": str(REPO / ".cache" / "numba"),
        }
        server = start_server(port, data, state, env)
        pid = server.pid
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
                wait_warm(client)
                (dataset,) = client.get("/datasets").json()
                dataset_id = dataset["id"]
                info = client.get(f"/datasets/{dataset_id}").json()
                idle = rss_mb(pid)[1]
                print(
                    f"dataset: {info['n_preambles']} preambles, {info['n_rows']} rows × "
                    f"{info['dim']}; {args.workers} workers; load "
                    f"{os.getloadavg()[0]:.1f}; server RSS idle with it loaded: {idle:.0f} MB"
                )
                peak_known = reset_peak(pid)

                print(
                    "\nper projector, one job over every preamble\n"
                    "  projector     items   wall s   items/s   Σfit s  procs  Σfit/procs s"
                    "   overhead   per item outside the fit   CPU ms/item: server  workers−fit"
                )
                job_wall = 0.0
                for name in projectors:
                    started = time.perf_counter()
                    server_cpu, workers_cpu = cpu_seconds(pid)
                    job = client.post(
                        "/batches",
                        json={"dataset": dataset_id, "preambles": "all", "projectors": [name]},
                    ).json()
                    status = follow(client, job["id"])
                    wall = time.perf_counter() - started
                    server_after, workers_after = cpu_seconds(pid)
                    job_wall += wall
                    count, fit = fit_seconds(state / "clustviz.sqlite3", job["id"])[name]
                    processes = args.workers if get_spec(name).runner == "pool" else 1
                    floor = fit / processes
                    outside_ms = 1000 * (wall * processes - fit) / count
                    print(
                        f"  {name:<12} {count:6d}  {wall:7.1f}  {count / wall:8.1f}  "
                        f"{fit:7.1f}  {processes:5d}  {floor:12.1f}   "
                        f"{100 * (wall - floor) / floor:7.1f} %   {outside_ms:6.2f} ms"
                        f"{1000 * (server_after - server_cpu) / count:24.2f}"
                        f"{1000 * (workers_after - workers_cpu - fit) / count:13.2f}"
                        f"   (failed {status['failed']})"
                    )
                started = time.perf_counter()
                job = client.post(
                    "/batches",
                    json={"dataset": dataset_id, "preambles": "all", "projectors": projectors},
                ).json()
                status = follow(client, job["id"])
                print(
                    f"  all, cached: {status['total']} items in "
                    f"{time.perf_counter() - started:.1f} s (failed {status['failed']})"
                )
                peak, after = rss_mb(pid)
                print(
                    f"\nserver RSS during the jobs: peak {peak:.0f} MB"
                    f"{'' if peak_known else ' (peak since start)'}; after them {after:.0f} MB"
                )

                reset_peak(pid)
                print("\nexport of the all-projector job      rows    seconds     rows/s     MB")
                for fmt in FORMATS:
                    started = time.perf_counter()
                    response = client.get(f"/batches/{job['id']}/results", params={"format": fmt})
                    seconds = time.perf_counter() - started
                    assert response.status_code == 200, response.text[:500]
                    frame = read_export(fmt, response.content)
                    print(
                        f"  {fmt:<8} {response.headers['content-type']:<34} "
                        f"{frame.height:8d}  {seconds:7.2f}  {frame.height / seconds:10.0f}"
                        f"  {len(response.content) / 2**20:6.1f}"
                    )
                    del frame, response
                peak, after = rss_mb(pid)
                print(
                    f"server RSS during the exports: peak {peak:.0f} MB; after them {after:.0f} MB"
                    f" (idle was {idle:.0f} MB; target: peak ≤ 1,536 MB)"
                )
                if args.align:
                    bench_aligned(client, pid, dataset_id, projectors)
        finally:
            server.terminate()
            server.wait(30)


#: A quick map: its quality does not matter here, only that the jobs have one to align to.
QUICK_MAP = {
    "method": "opentsne",
    "fit_on": "sample",
    "sample_size": 2000,
    "params": {"n_iter": 100, "early_exaggeration_iter": 50},
}


def bench_aligned(client: httpx.Client, pid: int, dataset_id: str, projectors: list[str]) -> None:
    """Part 4: per projector, a cached job again without and then with ``align``."""
    started = time.perf_counter()
    map_id = client.post("/maps", json={"dataset": dataset_id, **QUICK_MAP}).json()["id"]
    while (status := client.get(f"/maps/{map_id}").json())["state"] in ("queued", "running"):
        time.sleep(0.5)
    assert status["state"] == "done", status
    print(f"\nmap {map_id} ({QUICK_MAP['method']}) in {time.perf_counter() - started:.1f} s")
    print(
        "per projector, one job over every preamble, its layouts cached\n"
        "  projector     items   plain s   aligned s   aligned ms/item   server CPU ms/item"
        " (plain, aligned)"
    )
    for name in projectors:
        body = {"dataset": dataset_id, "preambles": "all", "projectors": [name]}
        timings = []
        for align in (None, {"map": map_id}):
            server_cpu, _ = cpu_seconds(pid)
            started = time.perf_counter()
            job = client.post("/batches", json={**body, "align": align}).json()
            status = follow(client, job["id"])
            timings.append((time.perf_counter() - started, cpu_seconds(pid)[0] - server_cpu))
            assert status["failed"] == 0, status["errors"][:3]
        (plain, plain_cpu), (aligned, aligned_cpu) = timings
        count = status["total"]
        print(
            f"  {name:<12} {count:6d}  {plain:8.1f}  {aligned:10.1f}  "
            f"{1000 * (aligned - plain) / count:16.2f}  "
            f"{1000 * plain_cpu / count:12.2f} {1000 * aligned_cpu / count:8.2f}"
        )


if __name__ == "__main__":
    main()
