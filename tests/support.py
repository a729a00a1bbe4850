"""Helpers shared by the tests: real tiny datasets in clamp's layout, ids of test data."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import httpx
import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[1]
DEMO10 = REPO / "tests" / "data" / "demo10"
DEMO_ID = "smollm2-135m-instruct-layer7-c50-fc37d2fe"
SEED_PREAMBLE = "Students were outraged over the administration's new"
STEM = "acme:tiny-model|k=40+layer=7"
CLUSTER_SUFFIX = "+covariance_type=full|n_clusters=5"
#: Set by ``.ci/run``: a part the tests need (Chromium, Playwright, Ray) must be there.
REQUIRE_ALL = os.environ.get("CLUSTVIZ_REQUIRE_ALL") == "1"


def missing_part(reason: str) -> NoReturn:
    """Skip the tests of a part missing on this machine, or fail them under
    ``CLUSTVIZ_REQUIRE_ALL=1`` (CI), where a skip would let the suite go green untested."""
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (CLUSTVIZ_REQUIRE_ALL=1: it is required here)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def make_rows(
    preambles: dict[str, int], *, dim: int = 8, n_clusters: int = 3, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Embedding and clustering frames with real columns: ``{preamble: n_guesses}``."""
    rng = np.random.default_rng(seed)
    emb_rows, cluster_rows = [], []
    token = 100
    for preamble, count in preambles.items():
        for index in range(count):
            guess = f"g{index}"
            cluster = index % n_clusters
            center = np.zeros(dim)
            center[cluster % dim] = 5.0
            vector = center + rng.normal(size=dim)
            logit = 20.0 - index
            emb_rows.append((preamble, token, guess, logit, vector.tolist()))
            cluster_rows.append((preamble, token, guess, logit, 10 + cluster, float(index)))
            token += 1
    embeddings = pl.DataFrame(
        emb_rows,
        schema={
            "preamble": pl.String,
            "token_id": pl.Int64,
            "guess": pl.String,
            "logit": pl.Float64,
            "embedding": pl.List(pl.Float64),
        },
        orient="row",
    ).with_columns(pl.col("embedding").cast(pl.Array(pl.Float64, dim)))
    clusters = pl.DataFrame(
        cluster_rows,
        schema={
            "preamble": pl.String,
            "token_id": pl.Int64,
            "guess": pl.String,
            "logit": pl.Float64,
            "cluster_id": pl.Int64,
            "dist_to_cluster_avg": pl.Float64,
        },
        orient="row",
    )
    return embeddings, clusters


def write_dataset(
    root: Path,
    embeddings: pl.DataFrame,
    clusters: pl.DataFrame,
    *,
    stem: str = STEM,
    suffix: str = CLUSTER_SUFFIX,
) -> tuple[Path, Path]:
    """Write a dataset in clamp's layout under ``root``; return (parquet, tsv) paths."""
    (root / "embeddings").mkdir(parents=True, exist_ok=True)
    (root / "clustering").mkdir(parents=True, exist_ok=True)
    parquet = root / "embeddings" / f"{stem}.parquet"
    tsv = root / "clustering" / f"{stem}{suffix}.tsv"
    embeddings.write_parquet(parquet)
    clusters.write_csv(tsv, separator="\t")
    return parquet, tsv


def write_malformed(tmp_path: Path, case: str) -> None:
    """Write a dataset with one malformation (a key of MALFORMED) in clamp's layout."""
    embeddings, clusters = make_rows({"p": 6, "q": 6})
    if case == "missing column":
        embeddings = embeddings.drop("logit")
    elif case == "wrong dtype":
        embeddings = embeddings.with_columns(pl.col("token_id").cast(pl.String))
    elif case == "ragged list":
        ragged = embeddings["embedding"].cast(pl.List(pl.Float64)).to_list()
        ragged[3] = ragged[3][:5]
        embeddings = embeddings.with_columns(pl.Series("embedding", ragged))
    elif case in ("nan", "inf"):
        values = embeddings["embedding"].to_list()
        values[4][2] = float(case)
        embeddings = embeddings.with_columns(
            pl.Series("embedding", values, dtype=pl.Array(pl.Float64, 8))
        )
    elif case == "duplicate key":
        embeddings = pl.concat([embeddings, embeddings.head(1)])
    elif case == "row without cluster":
        clusters = clusters.head(clusters.height - 1)
    elif case == "cluster without row":
        embeddings = embeddings.head(embeddings.height - 1)
    elif case == "non-integer cluster_id":
        clusters = clusters.with_columns(
            pl.when(pl.int_range(pl.len()) == 2)
            .then(pl.lit("seven"))
            .otherwise(pl.col("cluster_id").cast(pl.String))
            .alias("cluster_id")
        )
    parquet, tsv = write_dataset(tmp_path, embeddings, clusters)
    if case == "empty tsv":
        tsv.write_bytes(b"")
    elif case == "truncated parquet":
        parquet.write_bytes(parquet.read_bytes()[: parquet.stat().st_size // 2])
    elif case == "broken tsv line":
        text = tsv.read_text().splitlines()
        text[3] = text[3].split("\t")[0] + "\tonly-two-fields"
        tsv.write_text("\n".join(text) + "\n")
    elif case == "tsv without cluster_id":
        tsv.write_text(clusters.drop("cluster_id").write_csv(separator="\t"))
    elif case == "no clustering file":
        tsv.unlink()


MALFORMED = {
    "missing column": "missing column(s) ['logit']",
    "wrong dtype": "'token_id' has type",
    "ragged list": "ragged: row 3 has 5 values, expected 8",
    "nan": "NaN or inf at row 4",
    "inf": "NaN or inf at row 4",
    "duplicate key": "share a (preamble, guess) key, e.g. ('p', 'g0')",
    "row without cluster": "1 embedding row(s) have no clustering row, e.g. ('q', 'g5')",
    "cluster without row": "1 clustering row(s) have no embedding row, e.g. ('q', 'g5')",
    "non-integer cluster_id": "non-integer value 'seven' at row 2",
    "empty tsv": "the file is empty",
    "truncated parquet": "not a readable parquet file",
    "broken tsv line": "line 4 has no value for ['guess', 'cluster_id']",
    "tsv without cluster_id": "missing column(s) ['cluster_id']",
    "no clustering file": "no clustering file",
}


def tiny_id(client: TestClient) -> str:
    """The id of the tiny dataset (the one holding the 3-point preamble 'Tiny')."""
    for item in client.get("/datasets").json():
        if item["status"] == "ok" and item["n_preambles"] == 2:
            return str(item["id"])
    raise AssertionError("tiny dataset not found")


def app_client(
    data_dir: Path, state_dir: Path, pool: Any, lane: Any = None, **overrides: Any
) -> TestClient:
    """A TestClient (the lifespan runs) on a real app over real files, using the given warm
    pools (shared across apps: warming numba costs tens of seconds). CPU device by default."""
    from service.app import create_app
    from service.settings import Settings

    settings = Settings(data_dir=data_dir, state_dir=state_dir, **{"device": "cpu", **overrides})
    return TestClient(create_app(settings, pool=pool, lane_pool=lane))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``python -m service`` in its own process group, as scripts/serve runs it."""

    def __init__(self, data_dir: Path, state_dir: Path, **env: str) -> None:
        self.extra_env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir, self.state_dir = data_dir, state_dir
        self.log_path = state_dir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start; return seconds until the first answered request."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("CLUSTVIZ_")}
        env.update(
            {
                "CLUSTVIZ_WORKERS": "1",
                "CLUSTVIZ_WARM": '["umap"]',
                "CLUSTVIZ_DEVICE": "cpu",
                "CLUSTVIZ_NUMBA_CACHE_DIR": str(REPO / ".cache" / "numba"),
                **self.extra_env,
            }
        )
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "service",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    "--state-dir",
                    str(self.state_dir),
                ],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its worker processes share its group
            )
        while time.monotonic() - started < 60:
            try:
                httpx.get(self.url + "/health", timeout=1)
                return time.monotonic() - started
            except httpx.TransportError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.02)
        raise AssertionError(f"server did not answer; log:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def wait_warm(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=5).json()["warm"]:
                    return
            except httpx.TransportError:
                pass
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.5)
        raise AssertionError(f"workers did not warm up; log:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the server and its workers, as a crash or ``docker kill`` would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """Graceful stop (SIGTERM: the lifespan closes the workers), then force."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
