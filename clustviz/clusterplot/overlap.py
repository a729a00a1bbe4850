"""Sub-cluster overlap matrices: R_H from a high-D kNN graph, R_L (soft or hard) in 2-D.

``R[a, b]`` is the share of sub-cluster ``a``'s kNN edges that land in sub-cluster ``b``:
edge counts are summed per (a, b), the diagonal is removed, rows are normalised, then pairs in
the same cluster are zeroed (so a row sums to the share of ``a``'s outgoing edges that leave its
cluster, ≤ 1). Edges of zero length count (an anchor coincides with its only member).

The 2-D side mirrors the high-D graph (``[Y; anchors]`` or Y, the ``anchors_in_graph``
parameter), an anchor's 2-D position being the mean of its members. Its soft version replaces
"j is among i's k nearest" by ``sigmoid((r_i² - d_ij²) / (τ r_i²))`` where ``r_i²``
(detached) lies between i's k-th and (k+1)-th squared distances: it is 1 deep inside the kNN
ball, 0 far outside, ≈ k per row, and scale free (``r_i`` scales with the layout).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from clustviz.clusterplot.batch import pairwise_sq_dists

if TYPE_CHECKING:
    from clustviz.clusterplot.backends import TorchBackend

__all__ = [
    "BLOCK",
    "aggregate_edges",
    "cluster_shares",
    "discrepancy",
    "hard_edges",
    "knn_from_dists",
    "knn_graph",
    "nearest_sorted",
    "normalise_overlap",
    "overlap_pair_mask",
    "radius_from_nearest",
    "radius_from_sorted",
    "smallest_others",
    "soft_edges",
    "soft_radius",
    "sq_dists_from_dots",
    "sq_dists_from_gram",
]

_INF = float("inf")
_EPS = 1e-12
BLOCK = 1024  # rows per block of a blockwise kNN (bounds the (block, N) distance matrix)


def knn_graph(
    Z: torch.Tensor, mask: torch.Tensor, k: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """kNN of every row of ``Z (B, N, d)`` among valid rows, self excluded.

    ``k (B,)`` is clamped per preamble to ``N_b - 1``. Returns ``idx (B, N, k_max)`` and
    ``edge_mask (B, N, k_max)`` (False for padding rows and beyond a preamble's own k).
    """
    return knn_from_dists(pairwise_sq_dists(Z), mask, k)


def sq_dists_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Squared distances ``(B, N, N)`` from the Gram matrix ``Z Zᵀ`` (the ``|a|² + |b|² - 2ab``
    form :func:`~clustviz.clusterplot.batch.pairwise_sq_dists` uses in high-D)."""
    sq = gram.diagonal(dim1=1, dim2=2)
    return (sq.unsqueeze(2) + sq.unsqueeze(1) - 2.0 * gram).clamp_min(0.0)


def knn_from_dists(
    dist: torch.Tensor, mask: torch.Tensor, k: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`knn_graph` from squared distances ``(B, N, N)``."""
    B, N, _ = dist.shape
    k = torch.minimum(k, mask.sum(1) - 1).clamp_min(0)
    k_max = max(int(k.max()), 1)
    invalid = ~(mask.unsqueeze(1) & mask.unsqueeze(2)) | torch.eye(
        N, dtype=torch.bool, device=dist.device
    )
    dist = dist.masked_fill(invalid, _INF)
    idx = dist.topk(k_max, dim=2, largest=False).indices  # (B, N, k_max), sorted ascending
    rank = torch.arange(k_max, device=dist.device).view(1, 1, k_max)
    edge_mask = (rank < k.view(B, 1, 1)) & mask.unsqueeze(-1)
    return idx, edge_mask


def sq_dists_from_dots(
    dots: torch.Tensor, sq_rows: torch.Tensor, sq_cols: torch.Tensor, *, in_place: bool = False
) -> torch.Tensor:
    """Squared distances ``|a|² + |b|² - 2 a·b`` (clamped at 0) from a block of dot products;
    ``in_place``: ``dots`` is a fresh block to overwrite (no ``(block, N)`` temporaries)."""
    dist = dots.mul_(-2.0) if in_place else dots.mul(-2.0)
    return dist.add_(sq_cols).add_(sq_rows.unsqueeze(1)).clamp_min_(0.0)


def smallest_others(
    dist: torch.Tensor, row_ids: torch.Tensor, k: int, backend: TorchBackend
) -> torch.Tensor:
    """Indices ``(rows, k)`` of the ``k`` smallest entries per row, self excluded."""
    dist[torch.arange(len(row_ids), device=dist.device), row_ids] = _INF
    return backend.smallest_in_rows(dist, k)


def aggregate_edges(
    src_group: torch.Tensor,
    dst_group: torch.Tensor,
    weight: torch.Tensor,
    n_groups: int,
) -> torch.Tensor:
    """Sum edge weights per (group of source, group of target): ``(B, G, G)``.

    ``src_group``/``dst_group``/``weight`` share one shape ``(B, ...)``.
    """
    B = weight.shape[0]
    flat = (src_group * n_groups + dst_group).reshape(B, -1)
    out = weight.new_zeros(B, n_groups * n_groups)
    return out.scatter_add(1, flat, weight.reshape(B, -1)).view(B, n_groups, n_groups)


def hard_edges(
    idx: torch.Tensor, edge_mask: torch.Tensor, group: torch.Tensor, n_groups: int
) -> torch.Tensor:
    """Edge counts ``(B, G, G)`` of a kNN graph whose rows belong to ``group (B, N)``."""
    B, N, kk = idx.shape
    dst = group.gather(1, idx.reshape(B, -1)).view(B, N, kk)
    src = group.unsqueeze(-1).expand(B, N, kk)
    return aggregate_edges(src, dst, edge_mask.float(), n_groups)


def soft_edges(
    Y: torch.Tensor,
    mask: torch.Tensor,
    k: torch.Tensor,
    group: torch.Tensor,
    n_groups: int,
    temperature: float,
) -> torch.Tensor:
    """Differentiable edge counts ``(B, G, G)`` of the soft kNN graph of ``Y (B, n, 2)``."""
    B, n, _ = Y.shape
    k = torch.minimum(k, mask.sum(1) - 1).clamp_min(1)
    dist = pairwise_sq_dists(Y)  # (B, n, n)
    invalid = ~(mask.unsqueeze(1) & mask.unsqueeze(2)) | torch.eye(
        n, dtype=torch.bool, device=Y.device
    )
    radius_sq = soft_radius(dist.detach(), invalid, k)
    weight = torch.sigmoid((radius_sq - dist) / (temperature * radius_sq))
    weight = weight.masked_fill(invalid, 0.0)
    src = group.unsqueeze(-1).expand(B, n, n)
    dst = group.unsqueeze(1).expand(B, n, n)
    return aggregate_edges(src, dst, weight, n_groups)


def soft_radius(
    dist: torch.Tensor,
    invalid: torch.Tensor,
    k: torch.Tensor,
    multiplicity: torch.Tensor | None = None,
) -> torch.Tensor:
    """Detached squared radius ``(B, n, 1)`` midway between each row's k-th and (k+1)-th.

    ``dist (B, n, n)``, ``invalid`` (True where a pair does not count), ``k (B,)`` already
    clamped to ``[1, n_b - 1]``. ``topk`` of ``k_max + 1`` rather than a full sort. With
    ``multiplicity (B, n)`` a row stands for that many coincident rows (see
    :func:`~clustviz.clusterplot.folding.fold_rows`): column ``j`` counts ``multiplicity[j]``
    times and a row has ``multiplicity[i] - 1`` extra neighbours at distance 0 (its own copies).
    """
    ordered, columns = nearest_sorted(dist, invalid, min(int(k.max()) + 1, dist.shape[2]))
    return radius_from_nearest(ordered, columns, k, multiplicity)


def nearest_sorted(
    dist: torch.Tensor, invalid: torch.Tensor, m: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``m`` nearest valid columns, ascending: squared distances (``inf`` past the
    valid ones) and indices, ``(B, n, m)`` each."""
    with torch.no_grad():
        return dist.masked_fill(invalid, _INF).topk(m, dim=2, largest=False)


def radius_from_nearest(
    ordered: torch.Tensor,
    columns: torch.Tensor,
    k: torch.Tensor,
    multiplicity: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`soft_radius` from :func:`nearest_sorted`'s answer (``m ≥ k_max + 1`` columns, or
    all of them): one search can serve several ``k``."""
    B, n, m = ordered.shape
    with torch.no_grad():
        counts = None
        if multiplicity is not None:
            counts = multiplicity.gather(1, columns.reshape(B, -1)).view(B, n, m)
        return radius_from_sorted(ordered, k.view(B, 1, 1), counts, multiplicity)


def radius_from_sorted(
    ordered: torch.Tensor,
    k: torch.Tensor | int,
    counts: torch.Tensor | None = None,
    multiplicity: torch.Tensor | None = None,
) -> torch.Tensor:
    """Squared radius ``(..., 1)`` midway between the k-th and (k+1)-th of each row of
    ``ordered (..., m)`` (ascending distances, at least ``k + 1`` of them or ``inf``).

    With ``counts (..., m)`` entry j stands for ``counts[j]`` neighbours, and the row's own
    ``multiplicity - 1`` copies (``multiplicity`` shaped like the rows) come first at distance 0.
    """
    with torch.no_grad():
        if counts is None:
            m = ordered.shape[-1]
            kk = torch.as_tensor(k, device=ordered.device).expand(*ordered.shape[:-1], 1)
            kth = ordered.gather(-1, kk - 1)
            next_ = ordered.gather(-1, kk.clamp_max(m - 1))
        else:
            assert multiplicity is not None
            copies = (multiplicity - 1).clamp_min(0).unsqueeze(-1)  # at distance 0
            inf = ordered.new_full((*ordered.shape[:-1], 1), _INF)
            padded = torch.cat([torch.zeros_like(copies), ordered, inf], -1)
            reached = torch.cat([copies, counts], -1).cumsum(-1)  # neighbours up to each entry
            # the first entry that reaches k (k + 1) neighbours; past the end: infinity
            kth = padded.gather(-1, (reached < k).sum(-1, keepdim=True))
            next_ = padded.gather(-1, (reached < k + 1).sum(-1, keepdim=True))
        # with no (k+1)-th neighbour, put the radius a little beyond the k-th
        radius_sq = torch.where(torch.isfinite(next_), 0.5 * (kth + next_), 1.5 * kth)
        return radius_sq.clamp_min(_EPS).masked_fill(~torch.isfinite(radius_sq), 1.0)


def overlap_pair_mask(cluster: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Pairs ``(B, G, G)`` that count: both valid, in different clusters."""
    different = cluster.unsqueeze(2) != cluster.unsqueeze(1)
    return different & valid.unsqueeze(2) & valid.unsqueeze(1)


def normalise_overlap(
    edges: torch.Tensor, cluster: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """``R (B, A, A)`` from edge counts: diagonal removed, rows normalised, same cluster zeroed."""
    A = edges.shape[1]
    off = edges * (1.0 - torch.eye(A, device=edges.device, dtype=edges.dtype))
    rows = off.sum(2, keepdim=True).clamp_min(_EPS)
    return (off / rows) * overlap_pair_mask(cluster, valid)


def cluster_shares(
    edges: torch.Tensor, anchor_cluster: torch.Tensor, n_clusters: int
) -> torch.Tensor:
    """Label level ``M (B, C, C)``: share of cluster c's edges (self included) landing in c'."""
    B, A, _ = edges.shape
    src = anchor_cluster.unsqueeze(2).expand(B, A, A)
    dst = anchor_cluster.unsqueeze(1).expand(B, A, A)
    per_cluster = aggregate_edges(src, dst, edges, n_clusters)
    return per_cluster / per_cluster.sum(2, keepdim=True).clamp_min(_EPS)


def discrepancy(
    R_H: torch.Tensor, R_L: torch.Tensor, pair_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and max of ``|R_H - R_L|`` over the valid pairs of each preamble: ``(B,), (B,)``.

    A preamble without valid pairs (one cluster) has discrepancy 0.
    """
    diff = (R_H - R_L).abs() * pair_mask
    count = pair_mask.sum((1, 2))
    mean = diff.sum((1, 2)) / count.clamp_min(1)
    return mean, diff.amax((1, 2))
