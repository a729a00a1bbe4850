from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from clustviz.clusterplot.overlap import (
    discrepancy,
    hard_edges,
    knn_graph,
    normalise_overlap,
    overlap_pair_mask,
    soft_edges,
)


def test_R_H_by_hand() -> None:
    # 4 points on a line: 0, 1, 3, 10; sub-clusters a0={0,1}, a1={2}, a2={3};
    # clusters: a0 -> 0, a1 -> 1, a2 -> 1. k=1: 0->1, 1->0, 2->1, 3->2.
    Z = torch.tensor([[[0.0], [1.0], [3.0], [10.0]]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    idx, edge_mask = knn_graph(Z, mask, torch.tensor([1]))
    assert idx[0, :, 0].tolist() == [1, 0, 1, 2]
    group = torch.tensor([[0, 0, 1, 2]])
    edges = hard_edges(idx, edge_mask, group, 3)
    assert edges[0].tolist() == [[2, 0, 0], [1, 0, 0], [0, 1, 0]]
    cluster = torch.tensor([[0, 1, 1]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    R = normalise_overlap(edges, cluster, valid)[0]
    # a0 only has diagonal edges -> zero row; a1 -> a0 (other cluster) = 1;
    # a2 -> a1 is in the same cluster -> zeroed
    assert R.tolist() == [[0, 0, 0], [1, 0, 0], [0, 0, 0]]


def test_zero_distance_edges_count_and_padding_ignored() -> None:
    Z = torch.tensor([[[0.0], [0.0], [5.0], [99.0]]])
    mask = torch.tensor([[True, True, True, False]])
    idx, edge_mask = knn_graph(Z, mask, torch.tensor([5]))  # clamped to 2
    assert edge_mask[0].sum(1).tolist() == [2, 2, 2, 0]
    assert 3 not in idx[0, :3][edge_mask[0, :3]].tolist()
    assert set(idx[0, 0, :2].tolist()) == {1, 2}


def test_rows_sum_at_most_one_and_masked() -> None:
    gen = torch.Generator().manual_seed(0)
    edges = torch.rand(2, 5, 5, generator=gen)
    cluster = torch.tensor([[0, 0, 1, 2, 0], [0, 1, 1, 0, 0]])
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    R = normalise_overlap(edges, cluster, valid)
    assert (R.sum(2) <= 1 + 1e-6).all()
    assert (R[~overlap_pair_mask(cluster, valid)] == 0).all()
    mean, max_ = discrepancy(R, torch.zeros_like(R), overlap_pair_mask(cluster, valid))
    assert (mean <= max_).all() and (max_ <= 1).all()


def _soft_loss(Y: torch.Tensor, group: torch.Tensor, cluster: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(Y.shape[:2], dtype=torch.bool)
    A = cluster.shape[1]
    edges = soft_edges(Y, mask, torch.tensor([3]), group, A, 0.3)
    R_L = normalise_overlap(edges, cluster, torch.ones(1, A, dtype=torch.bool))
    R_H = torch.full_like(R_L, 0.1) * overlap_pair_mask(cluster, torch.ones(1, A, dtype=torch.bool))
    mean, _ = discrepancy(R_H, R_L, overlap_pair_mask(cluster, torch.ones(1, A, dtype=torch.bool)))
    return mean


layouts = arrays("float32", (8, 2), elements=st.floats(-50, 50, width=32)).filter(
    lambda a: len({tuple(r) for r in a.round(2)}) == 8
)
GROUP = torch.tensor([[0, 0, 1, 1, 2, 3, 3, 4]])
CLUSTER = torch.tensor([[0, 1, 1, 2, 2]])


@settings(max_examples=40, deadline=None)
@given(layouts, st.floats(-100, 100), st.floats(-100, 100))
def test_soft_loss_finite_and_translation_invariant(Y, dx, dy) -> None:
    Y = torch.from_numpy(Y).unsqueeze(0).requires_grad_(True)
    loss = _soft_loss(Y, GROUP, CLUSTER)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(Y.grad).all()
    moved = _soft_loss(Y.detach() + torch.tensor([dx, dy]), GROUP, CLUSTER)
    torch.testing.assert_close(moved, loss.detach(), atol=1e-4, rtol=1e-3)


@settings(max_examples=40, deadline=None)
@given(layouts, st.permutations(list(range(8))))
def test_soft_loss_permutation_equivariant(Y, perm) -> None:
    Y = torch.from_numpy(Y).unsqueeze(0)
    perm_t = torch.tensor(perm)
    loss = _soft_loss(Y, GROUP, CLUSTER)
    permuted = _soft_loss(Y[:, perm_t], GROUP[:, perm_t], CLUSTER)
    torch.testing.assert_close(permuted, loss, atol=1e-5, rtol=1e-4)
