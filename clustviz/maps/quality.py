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

from clustviz.metrics import knn_preservation, trustworthiness_continuity
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
    indices of each preamble (without them, no ``preamble_knn``).

    BLAS runs on one thread here: these are hundreds of small products, which a thread pool
    slows down by orders of magnitude when the cores are busy.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _quality(X, Y, preambles, k=k, rows=rows, n_preambles=n_preambles, seed=seed)


def _quality(
    X: np.ndarray,
    Y: np.ndarray,
    preambles: Sequence[np.ndarray] | None,
    *,
    k: int,
    rows: int,
    n_preambles: int,
    seed: int,
) -> dict[str, float | int]:
    rows_seed, preambles_seed = np.random.SeedSequence(seed).spawn(2)
    n = len(X)
    sample = np.sort(np.random.default_rng(rows_seed).choice(n, min(rows, n), replace=False))
    trust, cont = trustworthiness_continuity(X[sample], Y[sample], k)
    out: dict[str, float | int] = {
        "k": k,
        "sample_rows": len(sample),
        "trustworthiness": trust,
        "continuity": cont,
    }
    usable = [members for members in preambles or () if len(members) > 2]
    if usable:
        rng = np.random.default_rng(preambles_seed)
        chosen = np.sort(rng.choice(len(usable), min(n_preambles, len(usable)), replace=False))
        scores = [knn_preservation(X[usable[i]], Y[usable[i]], k) for i in chosen]
        out["preamble_knn"] = float(np.mean(scores))
        out["preambles_sampled"] = len(chosen)
    return out
