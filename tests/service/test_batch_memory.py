"""The server's memory during a whole-dataset batch and its exports stays bounded (issue 16).

A real server on a synthetic dataset of clamp's layout (1,000 preambles × 40 guesses × 768-d,
a third of clamp's size): one job over every preamble, then its export in all three formats.
Before, every finished item held a 40 × 768 float32 copy of its embeddings (123 KB: 123 MB for
this job) and the server imported torch with ClusterPlot's params; the bounds here are fractions
of the copies, so the test fails if memory grows with the items again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import Server

from clustviz.data.synthetic import write_synthetic_dataset

pytestmark = pytest.mark.slow

PREAMBLES, GUESSES, DIM = 1000, 40, 768
PER_ITEM_COPY_MB = GUESSES * DIM * 4 / 2**20


def _rss_mb(pid: int) -> tuple[float, float]:
    """(peak since the last reset, current) resident set of a process, in MB."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(status["VmHWM"].split()[0]) / 1024, int(status["VmRSS"].split()[0]) / 1024


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(data, PREAMBLES, DIM, k=GUESSES)
    server = Server(data, tmp_path_factory.mktemp("state"), CLUSTVIZ_WARM='["clusterplot"]')
    server.start()
    server.wait_warm()
    yield server
    server.stop()


def test_a_whole_dataset_batch_and_its_exports_do_not_grow_the_server(server: Server) -> None:
    assert server.process is not None
    pid = server.process.pid
    with httpx.Client(base_url=server.url, timeout=300) as client:
        (dataset,) = client.get("/datasets").json()
        client.get(f"/datasets/{dataset['id']}").raise_for_status()  # loaded: the idle figure
        idle = _rss_mb(pid)[1]
        _reset_peak(pid)
        job = client.post(
            "/batches",
            json={"dataset": dataset["id"], "preambles": "all", "projectors": ["clusterplot"]},
        ).json()
        with client.stream("GET", f"/batches/{job['id']}/events", timeout=None) as events:
            for line in events.iter_lines():
                if line.startswith("event:") and line[6:].strip() == "end":
                    break
        status = client.get(f"/batches/{job['id']}").json()
        assert (status["done"], status["failed"]) == (PREAMBLES, 0)
        during_job, after_job = _rss_mb(pid)
        sizes = {}
        for fmt in ("parquet", "arrow", "json"):
            with client.stream("GET", f"/batches/{job['id']}/results?format={fmt}") as response:
                assert response.status_code == 200
                sizes[fmt] = sum(len(chunk) for chunk in response.iter_bytes())
        peak, after = _rss_mb(pid)
    assert min(sizes.values()) > PREAMBLES * GUESSES * 8  # every point was exported
    copies = PREAMBLES * PER_ITEM_COPY_MB  # what per-item embedding copies alone would hold
    growth = {"peak": peak - idle, "after job": after_job - idle, "after exports": after - idle}
    shown = f"idle {idle:.0f} MB, peak during the job {during_job:.0f} MB; growth {growth} MB"
    # Transient: the embeddings pickled to the device lane while a lane batch is in flight.
    assert growth["peak"] < 1.5 * copies, shown
    # What stays is the allocators' reusable free lists, far below one copy per item.
    assert max(growth["after job"], growth["after exports"]) < 0.75 * copies, shown
