"""Layout quality metrics (numpy only, independent of any projector's code).

* ``knn_preservation(X, Y, k)``: mean over points of ``|N_k^X(i) ∩ N_k^Y(i)| / k``, where
  ``N_k`` are the k nearest other points (Euclidean) in high-D and in 2-D.
* ``trustworthiness(X, Y, k)``: scikit-learn's definition (penalises 2-D neighbours by their
  rank in high-D), computed from the same neighbour orderings.
* ``cluster_overlap_discrepancy(X, Y, labels, k)``: label-level overlap. For each cluster c and
  each other cluster c', ``M[c, c']`` is the share of the kNN edges of c's points that land in
  c' (of all ``k·|c|`` edges). Computed in high-D and in 2-D; returns the mean and the max of
  ``|M_X - M_Y|`` over ordered pairs ``c ≠ c'``.
* ``silhouette(Y, labels)``: scikit-learn's silhouette of the 2-D layout by label; NaN when
  there are fewer than 2 clusters or no cluster split is possible.

:func:`layout_metrics` computes all of them from one neighbour ordering per space: a projection
of 40 points costs well under a millisecond (scikit-learn's versions cost several, mostly
argument checks), which matters when a batch scores thousands of preambles. Tests check the
values against scikit-learn's.
"""

from __future__ import annotations

import numpy as np

from clustviz.labels import dense_labels

__all__ = [
    "cluster_overlap_discrepancy",
    "continuity",
    "knn_preservation",
    "layout_metrics",
    "nearest_neighbours",
    "silhouette",
    "trustworthiness",
    "trustworthiness_continuity",
]


def _sq_dists(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    sq = (points * points).sum(1)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * points @ points.T, 0.0)


def _order(points: np.ndarray) -> np.ndarray:
    """Every row's other rows, nearest first ``(n, n - 1)`` (stable on ties: lower index first)."""
    dist = _sq_dists(points)
    np.fill_diagonal(dist, np.inf)
    return np.argsort(dist, axis=1, kind="stable")[:, :-1]


def nearest_neighbours(points: np.ndarray, k: int) -> np.ndarray:
    """Indices ``(n, k)`` of each row's k nearest other rows (Euclidean; ties: lower index)."""
    return _order(points)[:, :k]


def _clamp_k(n: int, k: int) -> int:
    return max(1, min(k, n - 1))


def knn_preservation(X: np.ndarray, Y: np.ndarray, k: int = 10) -> float:
    """Mean share of each point's ``k`` high-D nearest neighbours kept among its 2-D ones."""
    k = _clamp_k(len(X), k)
    return _preservation(nearest_neighbours(X, k), nearest_neighbours(Y, k))


def _preservation(high: np.ndarray, low: np.ndarray) -> float:
    n, k = high.shape
    member = np.zeros((n, n), dtype=bool)
    member[np.arange(n)[:, None], high] = True
    return float(member[np.arange(n)[:, None], low].sum() / (n * k))


def trustworthiness(X: np.ndarray, Y: np.ndarray, k: int = 10) -> float:
    """scikit-learn's trustworthiness, ``k`` clamped below ``n / 2`` as it requires."""
    k = max(1, min(k, (len(X) - 1) // 2))
    return _trustworthiness(_order(X), nearest_neighbours(Y, k))


def continuity(X: np.ndarray, Y: np.ndarray, k: int = 10) -> float:
    """Trustworthiness of ``X`` as seen from ``Y``: high-D neighbours kept in 2-D."""
    return trustworthiness(Y, X, k)


def trustworthiness_continuity(X: np.ndarray, Y: np.ndarray, k: int = 10) -> tuple[float, float]:
    """Both at once, from one neighbour ordering per space (half the cost of the two calls)."""
    k = max(1, min(k, (len(X) - 1) // 2))
    order_x, order_y = _order(X), _order(Y)
    return _trustworthiness(order_x, order_y[:, :k]), _trustworthiness(order_y, order_x[:, :k])


def _trustworthiness(order_x: np.ndarray, low: np.ndarray) -> float:
    """``1 - 2 / (n k (2n - 3k - 1)) · Σ_i Σ_{j ∈ N_k^Y(i) \\ N_k^X(i)} (rank_X(i, j) - k)``."""
    n, k = low.shape
    rank = np.empty((n, n), dtype=np.int64)  # rank[i, j]: position of j in i's order, from 1
    rank[np.arange(n)[:, None], order_x] = np.arange(1, n)
    excess = rank[np.arange(n)[:, None], low] - k
    penalty = excess[excess > 0].sum()
    return float(1.0 - penalty * (2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0))))


def _cluster_shares(neighbours: np.ndarray, local: np.ndarray, C: int) -> np.ndarray:
    """``M (C, C)``: share of cluster c's kNN edges landing in cluster c'."""
    k = neighbours.shape[1]
    cells = np.repeat(local, k) * C + local[neighbours].ravel()
    counts = np.bincount(cells, minlength=C * C).reshape(C, C).astype(np.float64)
    return counts / counts.sum(1, keepdims=True)


def cluster_overlap_discrepancy(
    X: np.ndarray, Y: np.ndarray, labels: np.ndarray, k: int = 10
) -> dict[str, float]:
    """``{"mean", "max"}`` of ``|M_X - M_Y|`` over ordered cluster pairs (0 for one cluster)."""
    k = _clamp_k(len(X), k)
    return _overlap(nearest_neighbours(X, k), nearest_neighbours(Y, k), labels)


def _overlap(high: np.ndarray, low: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    _, local = dense_labels(labels)
    C = int(local.max()) + 1
    diff = np.abs(_cluster_shares(high, local, C) - _cluster_shares(low, local, C))
    if C < 2:
        return {"mean": 0.0, "max": 0.0}
    off = diff[~np.eye(C, dtype=bool)]
    return {"mean": float(off.mean()), "max": float(off.max())}


def silhouette(Y: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette of ``Y`` by ``labels``; NaN with fewer than 2 clusters or n ≤ clusters.

    As scikit-learn's ``silhouette_score``: ``s_i = (b_i - a_i) / max(a_i, b_i)`` with ``a_i``
    the mean distance to the other members of i's cluster and ``b_i`` the smallest mean distance
    to another cluster; 0 for a point alone in its cluster.
    """
    _, local = dense_labels(labels)
    C, n = int(local.max()) + 1, len(Y)
    if C < 2 or n <= C:
        return float("nan")
    dist = np.sqrt(_sq_dists(Y))
    np.fill_diagonal(dist, 0.0)
    onehot = np.zeros((n, C))
    onehot[np.arange(n), local] = 1.0
    sums = dist @ onehot  # (n, C): distance from each point to each cluster, summed
    sizes = onehot.sum(0)
    own_size = sizes[local]
    a = sums[np.arange(n), local] / np.maximum(own_size - 1, 1)
    means = sums / sizes
    means[np.arange(n), local] = np.inf
    b = means.min(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.nan_to_num((b - a) / np.maximum(a, b))
    return float(np.where(own_size > 1, s, 0.0).mean())


def layout_metrics(
    X: np.ndarray, Y: np.ndarray, labels: np.ndarray, k: int = 10
) -> dict[str, float]:
    """All of the above in one dict (``overlap_mean``/``overlap_max`` for the discrepancy)."""
    n = len(X)
    order_x, order_y = _order(X), _order(Y)
    k_knn, k_trust = _clamp_k(n, k), max(1, min(k, (n - 1) // 2))
    overlap = _overlap(order_x[:, :k_knn], order_y[:, :k_knn], labels)
    return {
        "knn_preservation": _preservation(order_x[:, :k_knn], order_y[:, :k_knn]),
        "trustworthiness": _trustworthiness(order_x, order_y[:, :k_trust]),
        "overlap_mean": overlap["mean"],
        "overlap_max": overlap["max"],
        "silhouette": silhouette(Y, labels),
    }
