"""Layout quality metrics (numpy / scikit-learn only, independent of any projector's code).

* ``knn_preservation(X, Y, k)``: mean over points of ``|N_k^X(i) ∩ N_k^Y(i)| / k``, where
  ``N_k`` are the k nearest other points (Euclidean) in high-D and in 2-D.
* ``trustworthiness(X, Y, k)``: scikit-learn's (penalises 2-D neighbours that are far in X).
* ``cluster_overlap_discrepancy(X, Y, labels, k)``: label-level overlap. For each cluster c and
  each other cluster c', ``M[c, c']`` is the share of the kNN edges of c's points that land in
  c' (of all ``k·|c|`` edges). Computed in high-D and in 2-D; returns the mean and the max of
  ``|M_X - M_Y|`` over ordered pairs ``c ≠ c'``.
* ``silhouette(Y, labels)``: scikit-learn's silhouette of the 2-D layout by label; NaN when
  there are fewer than 2 clusters or no cluster split is possible.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "cluster_overlap_discrepancy",
    "knn_preservation",
    "layout_metrics",
    "silhouette",
    "trustworthiness",
]


def _knn(points: np.ndarray, k: int) -> np.ndarray:
    """Indices ``(n, k)`` of the k nearest other rows (stable on ties: lower index first)."""
    points = np.asarray(points, dtype=np.float64)
    sq = (points * points).sum(1)
    dist = sq[:, None] + sq[None, :] - 2 * points @ points.T
    np.fill_diagonal(dist, np.inf)
    return np.argsort(dist, axis=1, kind="stable")[:, :k]


def _clamp_k(n: int, k: int) -> int:
    return max(1, min(k, n - 1))


def knn_preservation(X: np.ndarray, Y: np.ndarray, k: int = 10) -> float:
    """Mean share of each point's ``k`` high-D nearest neighbours kept among its 2-D ones."""
    n = len(X)
    k = _clamp_k(n, k)
    high, low = _knn(X, k), _knn(Y, k)
    kept = [len(np.intersect1d(high[i], low[i], assume_unique=True)) for i in range(n)]
    return float(np.mean(kept) / k)


def trustworthiness(X: np.ndarray, Y: np.ndarray, k: int = 10) -> float:
    """scikit-learn's trustworthiness, ``k`` clamped below ``n / 2`` as it requires."""
    from sklearn.manifold import trustworthiness as sk_trustworthiness

    n = len(X)
    k = max(1, min(k, (n - 1) // 2))
    return float(sk_trustworthiness(X, Y, n_neighbors=k))


def _cluster_shares(points: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """``M (C, C)``: share of cluster c's kNN edges landing in cluster c'."""
    _, local = np.unique(labels, return_inverse=True)
    C = int(local.max()) + 1
    neighbours = _knn(points, k)
    counts = np.zeros((C, C))
    np.add.at(counts, (np.repeat(local, k), local[neighbours].ravel()), 1.0)
    return counts / counts.sum(1, keepdims=True)


def cluster_overlap_discrepancy(
    X: np.ndarray, Y: np.ndarray, labels: np.ndarray, k: int = 10
) -> dict[str, float]:
    """``{"mean", "max"}`` of ``|M_X - M_Y|`` over ordered cluster pairs (0 for one cluster)."""
    k = _clamp_k(len(X), k)
    diff = np.abs(_cluster_shares(X, labels, k) - _cluster_shares(Y, labels, k))
    C = diff.shape[0]
    if C < 2:
        return {"mean": 0.0, "max": 0.0}
    off = diff[~np.eye(C, dtype=bool)]
    return {"mean": float(off.mean()), "max": float(off.max())}


def silhouette(Y: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette of ``Y`` by ``labels``; NaN with fewer than 2 clusters or n ≤ clusters."""
    from sklearn.metrics import silhouette_score

    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(Y):
        return float("nan")
    return float(silhouette_score(Y, labels))


def layout_metrics(
    X: np.ndarray, Y: np.ndarray, labels: np.ndarray, k: int = 10
) -> dict[str, float]:
    """All of the above in one dict (``overlap_mean``/``overlap_max`` for the discrepancy)."""
    overlap = cluster_overlap_discrepancy(X, Y, labels, k)
    return {
        "knn_preservation": knn_preservation(X, Y, k),
        "trustworthiness": trustworthiness(X, Y, k),
        "overlap_mean": overlap["mean"],
        "overlap_max": overlap["max"],
        "silhouette": silhouette(Y, labels),
    }
