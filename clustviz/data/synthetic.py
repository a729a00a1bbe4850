"""A synthetic dataset in clamp's layout and size, for benchmarks and memory tests.

Random 768-d ``Array(Float64)`` embeddings and random cluster ids: nothing to look at, but the
same shapes, dtypes, file names and row-group layout as a real clamp dataset, written a chunk
of preambles at a time so the generator itself stays small.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

__all__ = ["SYNTHETIC_STEM", "write_synthetic_dataset"]

SYNTHETIC_STEM = "synthetic:clamp-scale|k=40+layer=7"


def write_synthetic_dataset(
    root: Path, n_preambles: int, dim: int = 768, *, k: int = 40, n_clusters: int = 300
) -> Path:
    """Write ``n_preambles`` × ``k`` guesses under ``root`` (``embeddings/`` and
    ``clustering/``, as the data directory expects); return the embeddings parquet's path."""
    (root / "embeddings").mkdir(parents=True, exist_ok=True)
    (root / "clustering").mkdir(parents=True, exist_ok=True)
    parquet = root / "embeddings" / f"{SYNTHETIC_STEM}.parquet"
    tsv = root / "clustering" / f"{SYNTHETIC_STEM}+n_clusters={n_clusters}.tsv"
    rng = np.random.default_rng(0)
    chunk = 250  # preambles per generated part
    writer = None
    try:
        with tsv.open("w") as clustering:
            for start in range(0, n_preambles, chunk):
                count = min(chunk, n_preambles - start)
                rows = count * k
                embedding = rng.normal(size=(rows, dim))
                cluster_id = rng.integers(0, n_clusters, size=rows)
                frame = pl.DataFrame(
                    {
                        "preamble": np.repeat(
                            [f"Synthetic preamble number {i}" for i in range(start, start + count)],
                            k,
                        ),
                        "token_id": np.arange(start * k, start * k + rows, dtype=np.int64),
                        "guess": np.tile([f"g{j}" for j in range(k)], count),
                        "logit": rng.normal(size=rows),
                        "embedding": pl.Series(embedding).cast(pl.Array(pl.Float64, dim)),
                    }
                )
                table = frame.to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(parquet, table.schema)
                writer.write_table(table, row_group_size=10_000)
                frame.select("preamble", "token_id", "guess", "logit").with_columns(
                    pl.Series("cluster_id", cluster_id),
                    pl.Series("dist_to_cluster_avg", np.ones(rows)),
                ).write_csv(clustering, separator="\t", include_header=start == 0)
    finally:
        if writer is not None:
            writer.close()
    return parquet
