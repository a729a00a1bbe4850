"""The server's memory during a whole-dataset batch and its exports stays bounded (issue 16).

A real server on a synthetic dataset of clamp's layout (1,000 preambles × 40 guesses × 768-d,
a third of clamp's size): one job over every preamble, then its export in all three formats.
Before, every finished item held a 40 × 768 float32 copy of its embeddings (123 KB: 123 MB for
this job) and the server imported torch with ClusterPlot's params; the bounds here are fractions
of the copies, so the test fails if memory grows with the items again.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import pytest
from support import REPO, Server

from clustviz.client import Client
from clustviz.data.synthetic import write_synthetic_dataset

sys.path.insert(0, str(REPO / "scripts"))
from bench_memory import reset_peak, rss_mb  # the benchmarks' own readings

pytestmark = pytest.mark.slow

PREAMBLES, GUESSES, DIM = 1000, 40, 768
PER_ITEM_COPY_MB = GUESSES * DIM * 4 / 2**20


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
        idle = rss_mb(pid)[1]
        assert reset_peak(pid)
        with Client(server.url) as batches:
            job_id = batches.submit_batch(dataset["id"], projectors=["clusterplot"])
            status = batches.wait(job_id, progress=False)
        assert (status["done"], status["failed"]) == (PREAMBLES, 0)
        during_job, after_job = rss_mb(pid)
        sizes = {}
        for fmt in ("parquet", "arrow", "json"):
            with client.stream("GET", f"/batches/{job_id}/results?format={fmt}") as response:
                assert response.status_code == 200
                sizes[fmt] = sum(len(chunk) for chunk in response.iter_bytes())
        peak, after = rss_mb(pid)
    assert min(sizes.values()) > PREAMBLES * GUESSES * 8  # every point was exported
    copies = PREAMBLES * PER_ITEM_COPY_MB  # what per-item embedding copies alone would hold
    growth = {"peak": peak - idle, "after job": after_job - idle, "after exports": after - idle}
    shown = f"idle {idle:.0f} MB, peak during the job {during_job:.0f} MB; growth {growth} MB"
    # Transient: the embeddings pickled to the device lane while a lane batch is in flight.
    assert growth["peak"] < 1.5 * copies, shown
    # What stays is the allocators' reusable free lists, far below one copy per item.
    assert max(growth["after job"], growth["after exports"]) < 0.75 * copies, shown
