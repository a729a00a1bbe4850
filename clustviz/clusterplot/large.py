"""The large-n path: one preamble at a time, neighbour lists instead of ``(N, N)`` matrices.

Used for preambles whose ``N = n + A`` rows exceed :data:`DENSE_MAX_ROWS` (the dense batched
path costs ``O(N²)`` per step: at n = 3000 with near-singleton anchors that is 36 M pairs).
Same stages and losses as the dense path, with three approximations that only matter at
large n:

* high-D kNN: ``Z Zᵀ`` of ``Z = [X; anchors]`` from the Gram matrix ``X Xᵀ`` (an anchor is the
  mean of its members), so the ``d``-dimensional product is ``n × n``, not ``N × N``;
* PCA: block power iteration on the smaller of the covariance and the centred Gram matrix
  (no ``O(n³)`` ``eigh``);
* soft 2-D kNN over *candidate* lists: each row's ``M`` nearest rows in 2-D, refreshed every
  ``refresh`` steps (outside them a soft edge weighs ``σ(-10)`` or less), and the normaliser of
  ``KL(P || Q)`` estimated from ``negatives`` random pairs per point and step (a seeded
  generator: results are deterministic).

All tensors here carry no batch dimension: ``Y (n, 2)``, ``Z (N, 2)``, candidates ``(N, M)``.
Inside the optimisation loops coordinates are *planar*, ``(2, N)``: pair differences are then
two contiguous ``(R, M)`` planes, and gathers, reductions and scatters run on plain rows (the
interleaved ``(R, M, 2)`` form measured 4.6× slower for the same pair gradient on the CPU).
The per-step pair work runs in the fit's backend (:mod:`.backends`: numba loops on the CPU,
plain torch anywhere), and on a multi-core CPU the caller passes two :class:`~.lanes.Lanes`:
the relaxation runs its sub-cluster term in one and its point terms (label overlap, kNN) in
the other.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from clustviz.clusterplot.backends import KnnEdges, OverlapPairs, TorchBackend
from clustviz.clusterplot.batch import Adam
from clustviz.clusterplot.init import centred_gram
from clustviz.clusterplot.lanes import Lanes
from clustviz.clusterplot.optimize import fold_rows, folded_knn_weights
from clustviz.clusterplot.overlap import radius_from_sorted
from clustviz.clusterplot.planar import flat_columns, translation_grads, with_anchors

__all__ = [
    "DENSE_MAX_ROWS",
    "LargeTarget",
    "PointGraph",
    "large_candidates",
    "large_gradient_layout",
    "large_hard_discrepancy",
    "large_init",
    "large_pca",
    "large_point_graph",
    "large_target",
]

#: Above this many rows of ``[X; anchors]`` a preamble takes the large-n path.
DENSE_MAX_ROWS = 640
_EPS = 1e-12
_INF = float("inf")
#: 2-D candidates per row, in multiples of k: the soft kNN weight of a pair at twice the kNN
#: radius is σ(-10) ≈ 5e-5, and about 2k rows lie within it; the rest is margin for the
#: layout moving between refreshes.
CANDIDATES = 3.0
_BLOCK = 1024  # rows per block of a blockwise kNN (bounds the (block, N) distance matrix)
#: The 2-D searches by distance blocks are the GPU's way (the CPU takes a k-d tree): torch's.
_TORCH = TorchBackend()


def _sq_dists(dots: torch.Tensor, sq_rows, sq_cols, *, in_place: bool = False) -> torch.Tensor:
    """Squared distances ``|a|² + |b|² - 2 a·b`` (clamped at 0) from a block of dot products;
    ``in_place``: ``dots`` is a fresh block to overwrite (no ``(block, N)`` temporaries)."""
    dist = dots.mul_(-2.0) if in_place else dots.mul(-2.0)
    return dist.add_(sq_cols).add_(sq_rows.unsqueeze(1)).clamp_min_(0.0)


def _topk_rows(
    dist: torch.Tensor, row_ids: torch.Tensor, k: int, backend: TorchBackend
) -> torch.Tensor:
    """Indices ``(rows, k)`` of the ``k`` smallest entries per row, self excluded."""
    dist[torch.arange(len(row_ids), device=dist.device), row_ids] = _INF
    return backend.smallest_in_rows(dist, k)


@dataclass(slots=True)
class PointGraph:
    """The kNN graph of X alone (one preamble): what the init needs, and M_H."""

    edges: KnnEdges  # kNN of X (knn_k per point); P = 1/(2E) on each direction
    M_H: torch.Tensor  # (C, C)
    knn_k: int  # kNN size (clamped)

    @property
    def neighbours(self) -> torch.Tensor:
        """``(n, knn_k)`` long: each point's kNN in X, nearest first."""
        return self.edges.neighbours


@dataclass(slots=True)
class LargeTarget:
    """What the large-n relaxation matches (one preamble)."""

    R_H_keys: torch.Tensor  # (P,) sorted keys a · A + b of R_H's non-zero entries
    R_H_values: torch.Tensor  # (P,) their values (cross-cluster pairs only)
    points: PointGraph
    point_anchor: torch.Tensor  # (n,)
    anchor_cluster: torch.Tensor  # (A,)
    labels: torch.Tensor  # (n,)
    k: int  # kNN size of the sub-cluster graph (clamped)
    anchors_in_graph: bool
    anchor_rows: torch.Tensor  # (A2,) anchors with a row of their own in the folded graph
    multiplicity: torch.Tensor  # (n + A2,) rows of [X; anchors] each folded row stands for

    @property
    def M_H(self) -> torch.Tensor:
        return self.points.M_H

    @property
    def knn_k(self) -> int:
        return self.points.knn_k

    @property
    def n_anchors(self) -> int:
        return int(self.anchor_cluster.shape[0])

    def dense_R_H(self) -> torch.Tensor:
        """R_H as an ``(A, A)`` matrix (A² entries: for tests and small A)."""
        A = self.n_anchors
        dense = self.R_H_values.new_zeros(A * A)
        return dense.index_put_((self.R_H_keys,), self.R_H_values).view(A, A)

    @property
    def n_clusters(self) -> int:
        return int(self.M_H.shape[0])


def large_point_graph(
    gram: torch.Tensor, labels: torch.Tensor, knn_k: int, backend: TorchBackend
) -> PointGraph:
    """The kNN graph of X (``knn_k``, clamped) and M_H, from ``gram = X Xᵀ``, by row blocks."""
    n = gram.shape[0]
    C = int(labels.max()) + 1
    knn_k = min(knn_k, n - 1)
    sq = gram.diagonal()
    label_edges = torch.zeros(C * C, dtype=gram.dtype, device=gram.device)
    neighbours = []
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        rows = torch.arange(start, stop, device=gram.device)
        dist = _sq_dists(gram[start:stop], sq[start:stop], sq)
        idx = _topk_rows(dist, rows, knn_k, backend)
        label_flat = (labels[rows].unsqueeze(1) * C + labels[idx]).reshape(-1)
        label_edges.scatter_add_(0, label_flat, torch.ones_like(label_flat, dtype=gram.dtype))
        neighbours.append(idx)
    label_edges = label_edges.view(C, C)
    neighbours_x = torch.cat(neighbours)
    return PointGraph(
        edges=KnnEdges.of(neighbours_x),
        M_H=label_edges / label_edges.sum(1, keepdim=True).clamp_min(_EPS),
        knn_k=knn_k,
    )


def large_target(
    X: torch.Tensor,
    labels: torch.Tensor,
    point_anchor: torch.Tensor,
    anchor_cluster: torch.Tensor,
    *,
    k: int,
    knn_k: int,
    anchors_in_graph: bool,
    backend: TorchBackend,
    gram: torch.Tensor | None = None,
    points: PointGraph | None = None,
) -> LargeTarget:
    """High-D kNN graph of ``[X; anchors]`` and R_H (sparse) through the Gram matrix ``X Xᵀ``
    (given, or made here), with the kNN graph of X (:func:`large_point_graph`, given or made
    here)."""
    n, A = X.shape[0], anchor_cluster.shape[0]
    gram = X @ X.T if gram is None else gram  # (n, n): the only d-dimensional product
    points = large_point_graph(gram, labels, knn_k, backend) if points is None else points
    N = n + A if anchors_in_graph else n
    k = min(k, N - 1)
    # rows of Z = [X; anchors] with one-member anchors folded into their member (an anchor of
    # one member *is* that point): n + A2 rows, a point row standing for 1 or 2 rows
    anchor_rows, multiplicity = fold_anchor_rows(point_anchor, A, anchors_in_graph)
    A2, N2 = len(anchor_rows), n + len(anchor_rows)
    # x_i · c_a and c_a · c_b for the anchors with rows only (an anchor is the mean of its
    # members): with near-singleton anchors that is a few columns, not an (n, A) matrix
    # (points of the other anchors go to a spare column A2, dropped after)
    column_of_anchor = torch.full((A,), A2, dtype=torch.long, device=X.device)
    column_of_anchor[anchor_rows] = torch.arange(A2, device=X.device)
    column = column_of_anchor[point_anchor]
    members = torch.bincount(point_anchor, minlength=A).to(X.dtype)[anchor_rows]
    cross_z = torch.zeros(n, A2 + 1, dtype=X.dtype, device=X.device)
    cross_z = cross_z.index_add_(1, column, gram)[:, :A2].div_(members)  # (n, A2): x_i · c_a
    anchor_gram_z = torch.zeros(A2 + 1, A2, dtype=X.dtype, device=X.device)
    anchor_gram_z = anchor_gram_z.index_add_(0, column, cross_z)[:A2].div_(members.unsqueeze(1))
    sq_z = torch.cat([gram.diagonal(), anchor_gram_z.diagonal()])
    group = torch.cat([point_anchor, anchor_rows])
    keys, weights = [], []
    for start in range(0, N2, _BLOCK):
        stop = min(start + _BLOCK, N2)
        rows = torch.arange(start, stop, device=X.device)
        blocks = []
        if start < n:  # point rows start..min(stop, n)
            blocks.append(torch.cat([gram[start:stop], cross_z[start:stop]], 1))
        if stop > n:  # anchor rows
            own = slice(max(start, n) - n, stop - n)
            blocks.append(torch.cat([cross_z[:, own].T, anchor_gram_z[own]], 1))
        dots = torch.cat(blocks) if len(blocks) > 1 else blocks[0]  # a fresh block
        dist = _sq_dists(dots, sq_z[start:stop], sq_z, in_place=True)
        idx = _topk_rows(dist, rows, min(k, N2 - 1), backend)
        weights.append(folded_knn_weights(multiplicity[idx], multiplicity[rows], k).reshape(-1))
        keys.append((group[rows].unsqueeze(1) * A + group[idx]).reshape(-1))
    R_keys, R_values = _sparse_overlap(torch.cat(keys), torch.cat(weights), A, anchor_cluster)
    nonzero = R_values > 0
    return LargeTarget(
        R_H_keys=R_keys[nonzero],
        R_H_values=R_values[nonzero],
        points=points,
        point_anchor=point_anchor,
        anchor_cluster=anchor_cluster,
        labels=labels,
        k=k,
        anchors_in_graph=anchors_in_graph,
        anchor_rows=anchor_rows,
        multiplicity=multiplicity,
    )


def _sparse_overlap(
    keys: torch.Tensor,
    weight: torch.Tensor,
    n_groups: int,
    group_cluster: torch.Tensor,
    support: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """An overlap matrix (R_H, or a hard R_L) from weighted kNN edges between groups, sparse:
    ``(pair_keys, R)``, keys ``a · G + b`` sorted, each edge's key in them (and ``support``'s
    keys, if given). R is the row-normalised edge weight, 0 on a group's own pair (not counted
    in its row either) and within a cluster: the dense ``(G, G)`` definition, at the edges'
    cost rather than G²'s (G = 3000 anchors: 9 M entries)."""
    all_keys = keys if support is None else torch.cat([keys, support])
    pair_keys, inverse = torch.unique(all_keys, return_inverse=True)
    a, b = pair_keys // n_groups, pair_keys % n_groups
    edges = torch.zeros(len(pair_keys), dtype=weight.dtype, device=weight.device)
    edges.scatter_add_(0, inverse[: len(keys)], weight).mul_(a != b)
    rows = torch.zeros(n_groups, dtype=weight.dtype, device=weight.device)
    rows.scatter_add_(0, a, edges)
    return pair_keys, edges / rows[a].clamp_min(_EPS) * (group_cluster[a] != group_cluster[b])


def _cross_pairs(group_cluster: torch.Tensor) -> float:
    """How many ordered pairs of groups lie in different clusters (``group_cluster (G,)``)."""
    sizes = torch.bincount(group_cluster).double()
    return float(len(group_cluster) ** 2 - (sizes**2).sum())


def _lookup(keys: torch.Tensor, values: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """``values`` at ``queries`` in the sorted ``keys``, 0 where a query is not a key."""
    if len(keys) == 0:
        return values.new_zeros(queries.shape)
    at = torch.searchsorted(keys, queries).clamp_max_(len(keys) - 1)
    return torch.where(keys[at] == queries, values[at], values.new_zeros(()))


def fold_anchor_rows(
    point_anchor: torch.Tensor, A: int, anchors_in_graph: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(anchor_rows (A2,), multiplicity (n + A2,))``: the rows of ``[X; anchors]`` with each
    one-member anchor folded into its member (:func:`~.optimize.fold_rows`, one preamble)."""
    n = len(point_anchor)
    if not anchors_in_graph:
        return point_anchor.new_zeros(0), torch.ones(n, device=point_anchor.device)
    members = torch.bincount(point_anchor, minlength=A).float()
    mask = torch.ones(1, n, dtype=torch.bool, device=point_anchor.device)
    rows = fold_rows(point_anchor[None], mask, (members > 0)[None], members[None])
    assert rows.multiplicity is not None
    return rows.anchor_rows[0], rows.multiplicity[0]


def large_pca(
    X: torch.Tensor, gram: torch.Tensor, generator: torch.Generator, iterations: int = 30
):
    """Top-2 PCA scores ``(n, 2)`` of ``X (n, d)`` by block power iteration, signs fixed by
    skewness and PC1 scaled to unit std (as :func:`~.init.pca_init`).

    The iteration runs on the smaller of the covariance ``X̃ᵀX̃ (d, d)`` and the centred Gram
    matrix ``X̃X̃ᵀ`` (from ``gram = X Xᵀ``, ``(n, n)``): they share their non-zero spectrum.
    A product with a 6-column block streams the whole matrix from memory each iteration: at
    n = 3000, d = 768 that is 36 MB for the Gram matrix (30 iterations: 0.21 s on one
    thread) against 2.4 MB, cache-resident, for the covariance (one GEMM to make it)."""
    n, d = X.shape
    centred_x = X - X.mean(0) if d < n else None
    if centred_x is not None:
        matrix = centred_x.T @ centred_x
    else:
        matrix = centred_gram(gram[None], torch.ones(1, n, dtype=torch.bool, device=X.device))[0]
    Q = torch.randn(len(matrix), 6, generator=generator, device=X.device, dtype=X.dtype)
    for _ in range(iterations):
        Q, _ = torch.linalg.qr(matrix @ Q)
    values, vectors = torch.linalg.eigh((Q.T @ matrix @ Q).double())
    top = (Q.double() @ vectors[:, -2:].flip(-1)).float()  # top eigenvectors, largest first
    if centred_x is not None:
        scores = centred_x @ top  # projections on the principal axes
    else:
        scores = top * values[-2:].flip(-1).clamp_min(0).sqrt().float()
    skew = (scores**3).sum(0, keepdim=True)
    scores = scores * torch.where(skew < 0, -1.0, 1.0)
    return scores / (scores[:, :1] ** 2).mean().sqrt().clamp_min(1e-12)


def large_init(
    points: PointGraph,
    start: torch.Tensor,
    *,
    steps: int,
    lr: float,
    generator: torch.Generator,
    backend: TorchBackend,
    negatives: int = 8,
    exaggeration: float = 4.0,
) -> torch.Tensor:
    """The sampled neighbour embedding from ``start (n, 2)`` (:func:`large_pca`), with early
    exaggeration for the first quarter of the steps."""
    Yt = start.T.contiguous()  # planar (2, n)
    optimiser = Adam([Yt], lr=lr)
    for step in range(steps):
        grad = torch.zeros_like(Yt)
        backend.kl_grad(
            Yt,
            points.edges,
            negatives=negatives,
            generator=generator,
            exaggeration=exaggeration if step < steps // 4 else 1.0,
            factor=1.0,
            grad=grad,
            with_loss=False,
        )
        optimiser.step([grad])
    return Yt.T.contiguous()


def _candidates(Z: torch.Tensor, n: int, m_z: int, m_y: int, workers: int | None = None):
    """2-D candidates: ``(N, m_z)`` nearest rows of ``Z`` and ``(n, m_y)`` nearest points,
    each row's ascending (so the first ``k`` columns are its kNN).

    On the CPU a k-d tree (scipy) answers in a third of the time of the blockwise distance
    matrices (25 against 83 ms at N = 3986, m = 48, 2 threads); on a GPU the blocks are the
    fast way. With ``workers`` ≥ 2 the two searches run at once, one thread each: a query
    gains little from a second thread (m = 48 at N = 3030: 15.7 → 14.4 ms)."""
    if Z.device.type != "cpu":
        return _block_candidates(Z, n, m_z, m_y)
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


def large_candidates(
    Y: torch.Tensor, target: LargeTarget, workers: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The relaxation's 2-D candidate lists for the layout ``Y (n, 2)``: ``(n + A2, m_z)``
    nearest folded rows of ``[Y; anchors]`` and ``(n, m_y)`` nearest points, ascending.

    Their first ``k`` (``knn_k``) columns are the hard kNN graphs, so one search serves the
    relaxation's first step and :func:`large_hard_discrepancy` of its starting layout."""
    n = Y.shape[0]
    return _candidates(_folded(Y, target), n, *_candidate_widths(target, n), workers)


def _folded(Y: torch.Tensor, target: LargeTarget) -> torch.Tensor:
    """The folded rows ``[Y; anchors[anchor_rows]]`` ``(n + A2, 2)`` of a layout ``Y (n, 2)``."""
    A, pa = target.n_anchors, target.point_anchor
    members = torch.bincount(pa, minlength=A).to(Y.dtype).clamp_min(1.0)
    Yt = Y.T.contiguous()
    return with_anchors(Yt, flat_columns(pa, A), members, target.anchor_rows).T.contiguous()


def _candidate_widths(target: LargeTarget, n: int) -> tuple[int, int]:
    rows = n + len(target.anchor_rows)
    return (
        min(int(CANDIDATES * target.k), rows - 1),
        min(int(CANDIDATES * target.knn_k), n - 1),
    )


def _block_candidates(Z: torch.Tensor, n: int, m_z: int, m_y: int):
    """:func:`_candidates` from blocks of the distance matrix (any device)."""
    N = Z.shape[0]
    sq = (Z * Z).sum(1)
    out_z, out_y = [], []
    for start in range(0, N, _BLOCK):
        rows = torch.arange(start, min(start + _BLOCK, N), device=Z.device)
        dist = _sq_dists(Z[rows] @ Z.T, sq[rows], sq, in_place=True)
        out_z.append(_topk_rows(dist, rows, m_z, _TORCH))
        point_rows = rows[rows < n]
        if len(point_rows):
            out_y.append(_topk_rows(dist[: len(point_rows), :n], point_rows, m_y, _TORCH))
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


class _SparseOverlap:
    """A soft-kNN overlap term over candidate lists; gradient written out (see the dense
    :class:`~clustviz.clusterplot.optimize.SoftOverlap`, same formulas, sparse in pairs)."""

    def __init__(
        self,
        group,
        n_groups,
        group_cluster,
        target,
        k,
        temperature,
        dense_groups,
        backend: TorchBackend,
        multiplicity=None,
    ):
        self.backend = backend
        self.group, self.G, self.k, self.temperature = group, n_groups, k, temperature
        self.group_cluster, self.dense = group_cluster, dense_groups
        self.target_keys, self.target_values = target  # R_H (or M_H), sparse: sorted keys
        self.multiplicity = multiplicity  # (N,) folded rows (see optimize.FoldedRows) or None
        self.count = _cross_pairs(group_cluster)
        self.radius: torch.Tensor | None = None

    def set_candidates(self, cand: torch.Tensor, width: int) -> None:
        """Pair bookkeeping for new candidates ``(R, M)``: the union of the candidates' group
        pairs and the target's support (elsewhere both sides are 0); ``width``: columns of the
        planar gradient the pairs scatter into."""
        rows = torch.arange(cand.shape[0], device=cand.device).unsqueeze(1).expand_as(cand)
        keys = self.group[rows] * self.G + self.group[cand]
        # a row's pairs sorted by group pair: the numba loops sum equal keys in a register
        keys, order = keys.sort(dim=1)
        keys, cand = keys.reshape(-1), cand.gather(1, order)
        if self.dense:
            inverse, pair_keys = keys, torch.arange(self.G * self.G, device=keys.device)
        else:
            pair_keys, inverse = torch.unique(
                torch.cat([keys, self.target_keys]), return_inverse=True
            )
            inverse = inverse[: len(keys)]
        pair_a, pair_b = pair_keys // self.G, pair_keys % self.G
        dtype = self.target_values.dtype
        cross = (self.group_cluster[pair_a] != self.group_cluster[pair_b]).to(dtype)
        self.counts = (
            None if self.multiplicity is None else self.multiplicity[cand]  # (R, M)
        )
        self.pairs = self.backend.prepare(
            OverlapPairs(
                columns=cand,
                inverse=inverse,
                pair_a=pair_a,
                cross=cross,
                # 0 where a pair does not count, as R is: R - target needs no masking
                target=_lookup(self.target_keys, self.target_values, pair_keys) * cross,
                keep=(pair_a != pair_b).to(dtype) if not self.dense else None,
                weight=None
                if self.counts is None
                else self.multiplicity[: cand.shape[0], None] * self.counts,
                n_groups=self.G,
                count=self.count,
                temperature=self.temperature,
                width=width,
            )
        )
        self.radius = None

    def __call__(self, Zt: torch.Tensor, refresh_radius: bool, factor: float, grad):
        """``factor ·`` the loss of the planar rows ``Zt (2, N)``, its gradient added into the
        planar ``grad`` (:meth:`~.backends.TorchBackend.soft_overlap_grad`)."""
        if refresh_radius or self.radius is None:
            R, M = self.pairs.columns.shape
            ordered, where = self.backend.smallest(Zt, self.pairs, min(self.k + 1, M))
            counts = None if self.counts is None else self.counts.gather(1, where)
            multiplicity = None if self.multiplicity is None else self.multiplicity[:R]
            self.radius = radius_from_sorted(ordered, self.k, counts, multiplicity)
        return self.backend.soft_overlap_grad(Zt, self.pairs, self.radius, factor, grad)


def large_gradient_layout(
    Y0: torch.Tensor,
    target: LargeTarget,
    *,
    steps: int,
    lr: float,
    overlap_weight: float,
    label_overlap_weight: float,
    knn_weight: float,
    temperature: float,
    generator: torch.Generator,
    lanes: Lanes,
    backend: TorchBackend,
    candidates: tuple[torch.Tensor, torch.Tensor] | None = None,
    refresh: int = 50,
    negatives: int = 8,
    radius_every: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient mode over candidate lists; layout ``(n, 2)`` and loss trace ``(steps,)``.
    ``candidates``: :func:`large_candidates` of ``Y0``, if already made.

    Soft-kNN radii are recomputed every ``radius_every`` steps: on 1,000 and 3,000 pooled demo
    guesses every 16 gave the same or lower label-level overlap than every 4 (0.0093 and 0.0051
    against 0.0096 and 0.0057) and the same kNN preservation, in less time."""
    n, A = Y0.shape[0], target.n_anchors
    pa = target.point_anchor
    members = torch.bincount(pa, minlength=A).to(Y0.dtype).clamp_min(1.0)
    anchor_rows = target.anchor_rows  # one-member anchors are folded into their member
    N = n + len(anchor_rows)
    multiplicity = target.multiplicity if target.anchors_in_graph else None
    groups = torch.cat([pa, anchor_rows])
    R_H = target.R_H_keys, target.R_H_values
    sub = _SparseOverlap(
        groups, A, target.anchor_cluster, R_H, target.k, temperature, False, backend, multiplicity
    )
    C = target.n_clusters
    M_H = target.M_H.reshape(-1)
    label = _SparseOverlap(
        target.labels,
        C,
        torch.arange(C, device=Y0.device),
        (torch.arange(C * C, device=Y0.device), M_H),
        target.knn_k,
        temperature,
        True,
        backend,
    )
    m_z, m_y = _candidate_widths(target, n)
    # planar (see the module docstring): coordinates (2, ·), translations T (2, A)
    Y0t = Y0.T.contiguous()
    T = Y0t.new_zeros(2, A)
    delta = torch.zeros_like(Y0t)
    flat_pa, flat_rows = flat_columns(pa, A), flat_columns(anchor_rows, A)
    optimiser = Adam([T, delta], lr=lr)
    trace = Y0.new_zeros(steps)
    for step in range(steps):
        Yt = Y0t + T.index_select(1, pa) + delta
        Zt = with_anchors(Yt, flat_pa, members, anchor_rows)
        if step % refresh == 0:
            if step == 0 and candidates is not None:
                cand_z, cand_y = candidates
            else:  # (the lanes' thread is idle meanwhile: the search takes every core)
                cand_z, cand_y = _candidates(Zt.T.contiguous(), n, m_z, m_y, lanes.threads)
            sub.set_candidates(cand_z, N)
            label.set_candidates(cand_y, n)
        refresh_radius = step % radius_every == 0

        def sub_cluster_part(Zt=Zt, refresh_radius=refresh_radius):
            g_Z = torch.zeros_like(Zt)
            return sub(Zt, refresh_radius, overlap_weight, g_Z), g_Z

        def point_part(Yt=Yt, refresh_radius=refresh_radius):
            g_Y = torch.zeros_like(Yt)
            loss = label(Yt, refresh_radius, label_overlap_weight, g_Y)
            if knn_weight > 0:
                loss = loss + backend.kl_grad(
                    Yt,
                    target.points.edges,
                    negatives=negatives,
                    generator=generator,
                    exaggeration=1.0,
                    factor=knn_weight,
                    grad=g_Y,
                )
            return loss, g_Y

        (loss, g_Z), (point_loss, g_points) = lanes.both(sub_cluster_part, point_part)
        optimiser.step(translation_grads(g_Z, g_points, pa, flat_pa, members, flat_rows))
        trace[step] = loss + point_loss
    return (Y0t + T.index_select(1, pa) + delta).T.contiguous(), trace


def large_hard_discrepancy(
    Y: torch.Tensor,
    target: LargeTarget,
    candidates: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Hard 2-D kNN discrepancies (as :func:`~.optimize.hard_discrepancy`) of ``Y (n, 2)``;
    ``candidates``: :func:`large_candidates` of ``Y`` if already made."""
    n, A, C = Y.shape[0], target.n_anchors, target.n_clusters
    pa = target.point_anchor
    groups = torch.cat([pa, target.anchor_rows])
    if candidates is None:
        Z = _folded(Y, target)
        candidates = _candidates(Z, n, min(target.k, len(groups) - 1), target.knn_k)
    cand_z = candidates[0][:, : min(target.k, len(groups) - 1)]
    cand_y = candidates[1][:, : target.knn_k]
    weight = folded_knn_weights(target.multiplicity[cand_z], target.multiplicity, target.k)
    rows = torch.arange(len(groups), device=Y.device).unsqueeze(1).expand_as(cand_z)
    keys = (groups[rows] * A + groups[cand_z]).reshape(-1)
    pair_keys, R_L = _sparse_overlap(
        keys, weight.reshape(-1), A, target.anchor_cluster, target.R_H_keys
    )
    diff = (_lookup(target.R_H_keys, target.R_H_values, pair_keys) - R_L).abs()
    n_cross = _cross_pairs(target.anchor_cluster)
    labels = target.labels
    rows = torch.arange(n, device=Y.device).unsqueeze(1).expand_as(cand_y)
    label_edges = torch.zeros(C * C, dtype=Y.dtype, device=Y.device)
    label_edges.scatter_add_(
        0,
        (labels[rows] * C + labels[cand_y]).reshape(-1),
        torch.ones(cand_y.numel(), dtype=Y.dtype, device=Y.device),
    )
    label_edges = label_edges.view(C, C)
    M_L = label_edges / label_edges.sum(1, keepdim=True).clamp_min(_EPS)
    cluster_pairs = ~torch.eye(C, dtype=torch.bool, device=Y.device)
    label_diff = (target.M_H - M_L).abs() * cluster_pairs
    return {
        "mean": float(diff.sum()) / max(n_cross, 1.0),
        "max": float(diff.max()) if len(diff) else 0.0,
        "label_mean": float(label_diff.sum() / cluster_pairs.sum().clamp_min(1)),
        "label_max": float(label_diff.max()) if C else 0.0,
    }
