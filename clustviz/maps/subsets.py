"""What a map is fitted on besides every row: a stratified sample, or the cluster means; and
where each cluster lands (the mean of its rows' map positions).

Sums over rows are taken a block of rows at a time in float64 (a float32 running sum over 10⁵
rows loses digits), so no float64 copy of the embeddings is ever made.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["cluster_index", "cluster_means", "cluster_positions", "stratified_sample"]

#: Rows per block of a float64 sum: bounds the transient copy (block × d × 8 bytes).
SUM_BLOCK_ROWS = 4096


def cluster_index(cluster_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids (C,), local (n,))``: the distinct global ids, increasing, and each row's index
    among them (the re-indexing the per-preamble views use)."""
    ids, local = np.unique(np.asarray(cluster_ids), return_inverse=True)
    return ids.astype(np.int64), local.astype(np.int64).reshape(-1)


def _sums(values: np.ndarray, local: np.ndarray, n_clusters: int) -> np.ndarray:
    """``(C, d)`` float64 sums of ``values (n, d)`` per cluster, one block of rows at a time."""
    out = np.zeros((n_clusters, values.shape[1]), dtype=np.float64)
    for start in range(0, len(values), SUM_BLOCK_ROWS):
        stop = min(start + SUM_BLOCK_ROWS, len(values))
        block = local[start:stop]
        onehot = sp.csr_array(
            (np.ones(stop - start), (block, np.arange(stop - start))),
            shape=(n_clusters, stop - start),
        )
        out += onehot @ values[start:stop].astype(np.float64)
    return out


def cluster_means(X: np.ndarray, local: np.ndarray, n_clusters: int) -> np.ndarray:
    """``(C, d)`` float32: the mean of each cluster's rows of ``X``."""
    counts = np.bincount(local, minlength=n_clusters).astype(np.float64)
    return (_sums(X, local, n_clusters) / counts[:, None]).astype(np.float32)


def cluster_positions(Y: np.ndarray, local: np.ndarray, n_clusters: int) -> np.ndarray:
    """``(C, 2)`` float32: where each cluster lands, the mean of its rows' map positions."""
    return cluster_means(Y, local, n_clusters)


def stratified_sample(local: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted row indices of a sample of ``size`` rows drawn per cluster.

    Each cluster gets its share of ``size`` in proportion to its row count (largest remainders
    round up, ties to the lower cluster index), and at least one row while ``size`` allows one
    per cluster, so a small cluster is not left out of the fit. Rows within a cluster are drawn
    without replacement by ``np.random.default_rng(seed)``. ``size`` must not exceed the rows.
    """
    n = len(local)
    if not 0 < size <= n:
        raise ValueError(f"sample size={size} must be in 1..{n}")
    counts = np.bincount(local)
    C = len(counts)
    present = counts > 0
    quota = np.zeros(C, dtype=np.int64)
    budget = size
    if size >= int(present.sum()):  # one row per cluster first
        quota[present] = 1
        budget -= int(present.sum())
    room = counts - quota
    if budget:
        share = room / room.sum() * budget
        quota += np.floor(share).astype(np.int64)
        left = size - int(quota.sum())
        remainder = share - np.floor(share)
        remainder[quota >= counts] = -1.0  # a full cluster takes no more
        order = np.argsort(-remainder, kind="stable")
        quota[order[:left]] += 1
    rng = np.random.default_rng(seed)
    order_by_cluster = np.argsort(local, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    chosen = [
        rng.choice(order_by_cluster[starts[c] : starts[c + 1]], size=quota[c], replace=False)
        for c in range(C)
        if quota[c]
    ]
    return np.sort(np.concatenate(chosen))
