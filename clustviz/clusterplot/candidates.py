"""2-D candidate lists of the sparse relaxation: each row's nearest rows in the layout.

The sparse relaxation's soft kNN graphs are computed over *candidates*, each row's ``M``
nearest rows in 2-D, refreshed every few dozen steps (outside them a soft edge weighs ``σ(-10)``
or less). Their first ``k`` columns are the hard kNN graph, so one search also serves the hard
discrepancies (:mod:`.discrepancy`). On the CPU a k-d tree (scipy) answers; elsewhere blocks of
the distance matrix.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy.spatial import cKDTree

from clustviz.clusterplot.backends import TorchBackend
from clustviz.clusterplot.overlap import BLOCK, smallest_others, sq_dists_from_dots
from clustviz.clusterplot.planar import flat_columns, with_anchors
from clustviz.clusterplot.targets import SparseTarget

__all__ = [
    "block_nearest_rows",
    "candidate_widths",
    "folded_layout",
    "layout_candidates",
    "nearest_rows",
]

#: The 2-D searches by distance blocks are the GPU's way (the CPU takes a k-d tree): torch's.
_TORCH = TorchBackend()


def nearest_rows(
    Z: torch.Tensor, n: int, m_z: int, m_y: int, workers: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D candidates: ``(N, m_z)`` nearest rows of ``Z`` and ``(n, m_y)`` nearest points,
    each row's ascending (so the first ``k`` columns are its kNN).

    On the CPU a k-d tree (scipy) answers in about a third of the time of the blockwise
    distance matrices; on a GPU the blocks are the fast way. With ``workers`` ≥ 2 the two
    searches run at once, one thread each: a query gains little from a second thread."""
    if Z.device.type != "cpu":
        return block_nearest_rows(Z, n, m_z, m_y)
    points = Z.numpy().astype(np.float64)
    workers = torch.get_num_threads() if workers is None else workers
    if workers < 2:
        return (
            torch.from_numpy(_tree_neighbours(points, m_z, 1)),
            torch.from_numpy(_tree_neighbours(points[:n], m_y, 1)),
        )
    with ThreadPoolExecutor(1) as pool:  # scipy releases the GIL while it searches
        rows_y = pool.submit(_tree_neighbours, points[:n], m_y, 1)
        rows_z = _tree_neighbours(points, m_z, 1)
        return torch.from_numpy(rows_z), torch.from_numpy(rows_y.result())


def layout_candidates(
    Y: torch.Tensor, target: SparseTarget, per_k: float, workers: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The relaxation's 2-D candidate lists for the layout ``Y (n, 2)``: ``(n + A2, m_z)``
    nearest folded rows of ``[Y; anchors]`` and ``(n, m_y)`` nearest points, ascending.

    Their first ``k`` (``knn_k``) columns are the hard kNN graphs, so one search serves the
    relaxation's first step and :func:`~.discrepancy.sparse_hard_discrepancy`
    of its starting layout."""
    n = Y.shape[0]
    return nearest_rows(folded_layout(Y, target), n, *candidate_widths(target, n, per_k), workers)


def folded_layout(Y: torch.Tensor, target: SparseTarget) -> torch.Tensor:
    """The folded rows ``[Y; anchors[anchor_rows]]`` ``(n + A2, 2)`` of a layout ``Y (n, 2)``."""
    A, pa = target.n_anchors, target.point_anchor
    members = torch.bincount(pa, minlength=A).to(Y.dtype).clamp_min(1.0)
    Yt = Y.T.contiguous()
    return with_anchors(Yt, flat_columns(pa, A), members, target.anchor_rows).T.contiguous()


def candidate_widths(target: SparseTarget, n: int, per_k: float) -> tuple[int, int]:
    """Candidates per row ``(m_z, m_y)``, ``per_k`` times k (knn_k): of the folded rows and
    of the points. At 3: the soft kNN weight of a pair at twice the kNN radius is σ(-10) ≈ 5e-5,
    and about 2k rows lie within it; the rest is margin for the layout moving between
    refreshes."""
    rows = n + len(target.anchor_rows)
    return min(int(per_k * target.k), rows - 1), min(int(per_k * target.knn_k), n - 1)


def block_nearest_rows(
    Z: torch.Tensor, n: int, m_z: int, m_y: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`nearest_rows` from blocks of the distance matrix (any device)."""
    N = Z.shape[0]
    sq = (Z * Z).sum(1)
    out_z, out_y = [], []
    for start in range(0, N, BLOCK):
        rows = torch.arange(start, min(start + BLOCK, N), device=Z.device)
        dist = sq_dists_from_dots(Z[rows] @ Z.T, sq[rows], sq, in_place=True)
        out_z.append(smallest_others(dist, rows, m_z, _TORCH))
        point_rows = rows[rows < n]
        if len(point_rows):
            out_y.append(smallest_others(dist[: len(point_rows), :n], point_rows, m_y, _TORCH))
    return torch.cat(out_z), torch.cat(out_y)


def _tree_neighbours(points: np.ndarray, k: int, workers: int) -> np.ndarray:
    """Indices ``(N, k)`` of each row's ``k`` nearest other rows (ascending), by a k-d tree."""
    _, idx = cKDTree(points).query(points, k=k + 1, workers=workers)
    idx = idx.reshape(len(points), k + 1).astype(np.int64, copy=False)
    out = np.ascontiguousarray(idx[:, 1:])  # self is usually first
    # but a coincident row may come before it: there, drop self by id (the last if absent)
    moved = np.flatnonzero(idx[:, 0] != np.arange(len(points)))
    if len(moved):
        is_self = idx[moved] == moved[:, None]
        order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
        out[moved] = np.take_along_axis(idx[moved], order, axis=1)
    return out
