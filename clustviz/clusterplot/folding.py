"""Folded rows: the 2-D graph of ``[Y; anchors]`` with each one-member anchor folded into its
member.

``Z = [Y; anchors]`` repeats every point whose anchor has no other member: in 2-D that anchor
*is* the point. Real LM-guess data gives such anchors almost only (A ≈ n), so every stage that
builds a graph on ``Z`` (the high-D target of the sparse path, the hard and soft 2-D graphs)
works on the n points plus the ``A2`` anchors of several members, a point row standing for
``multiplicity`` (1 or 2) rows: the same edges from ``(n + A2)²`` pairs instead of ``(n + A)²``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "FoldedRows",
    "fold_anchor_rows",
    "fold_rows",
    "folded_knn_weights",
    "folded_z",
    "in_point_order",
]


@dataclass(slots=True)
class FoldedRows:
    """Rows of the 2-D sub-cluster graph, one-member anchors folded into their member (see
    the module docstring); a batch of them."""

    anchor_rows: torch.Tensor  # (B, A2) long: anchors that keep a row of their own
    anchor_rows_mask: torch.Tensor  # (B, A2) bool
    multiplicity: torch.Tensor | None  # (B, n + A2) float, 0 at padding; None: no folding


def fold_rows(
    point_anchor: torch.Tensor,
    mask: torch.Tensor,
    anchor_mask: torch.Tensor,
    members: torch.Tensor,
    slots: int | None = None,
) -> FoldedRows:
    """Fold each one-member anchor into its member (see :class:`FoldedRows`); ``slots``: the
    anchor rows' width ``A2`` (at least the most several-member anchors of a preamble; the
    rest is padding), or None for that most."""
    B, A = anchor_mask.shape
    single = (members == 1) & anchor_mask
    multi = (members > 1) & anchor_mask
    n_multi = multi.sum(1, keepdim=True)
    A2 = (int(n_multi.max()) if B else 0) if slots is None else slots
    ids = torch.arange(A, device=mask.device).expand(B, A)
    order = torch.where(multi, ids, ids + A).argsort(1)[:, :A2]  # several-member first
    rows_mask = torch.arange(A2, device=mask.device).expand(B, A2) < n_multi
    point_rows = mask.to(members.dtype) * (1.0 + single.gather(1, point_anchor).to(members.dtype))
    return FoldedRows(
        anchor_rows=torch.where(rows_mask, order, 0),
        anchor_rows_mask=rows_mask,
        multiplicity=torch.cat([point_rows, rows_mask.to(members.dtype)], 1),
    )


def folded_knn_weights(
    counts: torch.Tensor, row_counts: torch.Tensor, k: torch.Tensor | int
) -> torch.Tensor:
    """Edges ``(..., R, K)`` of a hard kNN graph on folded rows: row i's nearest other rows
    stand for ``counts (..., R, K)`` rows each; its own ``row_counts (..., R) - 1`` copies come
    first (distance 0); the first ``k`` rows (an int or a tensor that broadcasts) are the
    unfolded row's neighbours, and the row itself stands for ``row_counts`` rows."""
    before = (row_counts - 1).unsqueeze(-1) + counts.cumsum(-1) - counts
    return (k - before).clamp_min(0).minimum(counts) * row_counts.unsqueeze(-1)


def in_point_order(
    point_anchor: torch.Tensor, mask: torch.Tensor, *matrices: torch.Tensor
) -> list[torch.Tensor]:
    """``(B, A, A)`` matrices over one-member anchors, re-indexed by their points ``(B, n, n)``
    (``A = n``; zero on padding)."""
    B, n = point_anchor.shape
    rows = point_anchor.unsqueeze(-1).expand(B, n, n)
    valid = mask.unsqueeze(2) & mask.unsqueeze(1)
    return [
        (M.gather(1, rows).gather(2, point_anchor.unsqueeze(1).expand(B, n, n)) * valid).to(M.dtype)
        for M in matrices
    ]


def folded_z(
    Y: torch.Tensor,
    mask: torch.Tensor,
    point_anchor: torch.Tensor,
    members: torch.Tensor,
    anchor_rows: torch.Tensor,
) -> torch.Tensor:
    """The folded 2-D rows ``[Y; anchors[anchor_rows]]`` (an anchor: the mean of its valid
    members; padding rows of ``Y`` may hold anything, e.g. a translation)."""
    if not anchor_rows.shape[1]:
        return Y
    B, A = members.shape
    index = point_anchor.unsqueeze(-1).expand(*point_anchor.shape, 2)
    sums = Y.new_zeros(B, A, 2).scatter_add_(1, index, Y * mask.unsqueeze(-1))
    means = sums / members.clamp_min(1.0).unsqueeze(-1)
    return torch.cat([Y, means.gather(1, anchor_rows.unsqueeze(-1).expand(-1, -1, 2))], 1)


def fold_anchor_rows(
    point_anchor: torch.Tensor, A: int, anchors_in_graph: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(anchor_rows (A2,), multiplicity (n + A2,))``: the rows of ``[X; anchors]`` with each
    one-member anchor folded into its member (:func:`fold_rows`, one preamble)."""
    n = len(point_anchor)
    if not anchors_in_graph:
        return point_anchor.new_zeros(0), torch.ones(n, device=point_anchor.device)
    members = torch.bincount(point_anchor, minlength=A).float()
    mask = torch.ones(1, n, dtype=torch.bool, device=point_anchor.device)
    rows = fold_rows(point_anchor[None], mask, (members > 0)[None], members[None])
    assert rows.multiplicity is not None
    return rows.anchor_rows[0], rows.multiplicity[0]
