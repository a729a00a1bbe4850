#!/usr/bin/env python
"""Memory of the service on a clamp-scale dataset (DESIGN §2/§6: < 1.5 GB RSS).

Writes a synthetic dataset of clamp's size — 3,085 preambles × 40 guesses, 768-d
``Array(Float64, 768)`` embeddings (~760 MB as f64) — in clamp's layout, serves it with a real
server, loads it (GET /datasets/{id}), runs projections on a few preambles, and prints the
server process's peak and current RSS (VmHWM/VmRSS) next to the raw f64 size (the baseline
a naive loader would hold twice over).

Usage: .venv/bin/python scripts/bench_memory.py [--preambles 3085] [--dim 768]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from clustviz.data.synthetic import write_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux clear_refs, value 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mb(pid: int) -> tuple[float, float]:
    """(peak, current) resident set of a process in MB: VmHWM and VmRSS."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preambles", type=int, default=3085)
    parser.add_argument("--dim", type=int, default=768)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        started = time.perf_counter()
        write_synthetic_dataset(data, args.preambles, args.dim)
        size = sum(f.stat().st_size for f in data.rglob("*") if f.is_file()) / 2**20
        raw = args.preambles * 40 * args.dim * 8 / 2**20
        print(
            f"dataset: {args.preambles} × 40 × {args.dim} (f64 raw {raw:.0f} MB, "
            f"files {size:.0f} MB), written in {time.perf_counter() - started:.1f} s"
        )
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {
            **os.environ,
            "CLUSTVIZ_WARM": '["tsne"]',
            "CLUSTVIZ_WORKERS": "1",
            "CLUSTVIZ_NUMBA_CACHE_DIR": str(REPO / ".cache" / "numba"),
        }
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service",
                "--port",
                str(port),
                "--data-dir",
                str(data),
                "--state-dir",
                str(Path(tmp) / "state"),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    httpx.get(url + "/health", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            print(f"server RSS before loading: {rss_mb(server.pid)[1]:.0f} MB")
            (dataset,) = httpx.get(url + "/datasets").json()
            started = time.perf_counter()
            info = httpx.get(f"{url}/datasets/{dataset['id']}", timeout=600).json()
            print(
                f"loaded and validated {info['n_rows']} rows × {info['dim']} in "
                f"{time.perf_counter() - started:.1f} s"
            )
            page = httpx.get(f"{url}/datasets/{dataset['id']}/preambles?limit=5").json()
            for item in page["items"]:
                response = httpx.post(
                    url + "/projections",
                    timeout=300,
                    json={"dataset": dataset["id"], "preamble_id": item["id"], "projector": "tsne"},
                )
                assert response.status_code == 200, response.text
            peak, current = rss_mb(server.pid)
            verdict = "meets" if peak < 1536 else "MISSES"
            print(
                f"server RSS: peak {peak:.0f} MB, now {current:.0f} MB "
                f"({verdict} the 1,536 MB target; raw f64 embeddings alone: {raw:.0f} MB)"
            )
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
