"""How good a map is, from figures a map of 10⁵ rows can afford.

* ``trustworthiness`` and ``continuity`` at k = 10 among a fixed-seed sample of rows
  (the sample's neighbours within the sample, in high-D and in the map): is a map neighbour a
  true neighbour, and is a true neighbour kept in the map?
* ``preamble_knn``: for a fixed-seed sample of preambles, the share of each guess's 10 nearest
  guesses of its own preamble (high-D) that are among its 10 nearest of that preamble's rows of
  the map; the mean over the preambles sampled. It compares directly with the same figure of
  a per-preamble layout (``clustviz.metrics.knn_preservation``).

The samples are drawn with one fixed seed, independent of the map's, so maps of the same data
(other methods, other seeds) are scored on the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clustviz.metrics import continuity, knn_preservation, trustworthiness
from clustviz.projectors.base import DEFAULT_SEED

__all__ = ["QUALITY_K", "QUALITY_PREAMBLES", "QUALITY_ROWS", "map_quality"]

QUALITY_K = 10
#: Rows of the trustworthiness/continuity sample (the metrics cost O(rows²) memory and time).
QUALITY_ROWS = 2000
#: Preambles of the per-preamble kNN sample.
QUALITY_PREAMBLES = 200


def map_quality(
    X: np.ndarray,
    Y: np.ndarray,
    preambles: Sequence[np.ndarray] | None = None,
    *,
    k: int = QUALITY_K,
    rows: int = QUALITY_ROWS,
    n_preambles: int = QUALITY_PREAMBLES,
    seed: int = DEFAULT_SEED,
) -> dict[str, float | int]:
    """Quality figures of the map ``Y (n, 2)`` of ``X (n, d)``; ``preambles`` are the row
    indices of each preamble (without them, no ``preamble_knn``)."""
    rows_seed, preambles_seed = np.random.SeedSequence(seed).spawn(2)
    n = len(X)
    sample = np.sort(np.random.default_rng(rows_seed).choice(n, min(rows, n), replace=False))
    X_sample, Y_sample = X[sample], Y[sample]
    out: dict[str, float | int] = {
        "k": k,
        "sample_rows": len(sample),
        "trustworthiness": trustworthiness(X_sample, Y_sample, k),
        "continuity": continuity(X_sample, Y_sample, k),
    }
    usable = [rows for rows in preambles or () if len(rows) > 2]
    if usable:
        rng = np.random.default_rng(preambles_seed)
        chosen = np.sort(rng.choice(len(usable), min(n_preambles, len(usable)), replace=False))
        scores = [knn_preservation(X[usable[i]], Y[usable[i]], k) for i in chosen]
        out["preamble_knn"] = float(np.mean(scores))
        out["preambles_sampled"] = len(chosen)
    return out
