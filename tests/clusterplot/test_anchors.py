from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import Birch

from clustviz.clusterplot.anchors import compute_anchors
from clustviz.clusterplot.batch import pad_batch

CPU = torch.device("cpu")


def _check_consistent(anchors, batch) -> None:
    for b in range(batch.size):
        n, A = int(batch.n_points[b]), int(anchors.count[b])
        point_anchor = anchors.point_anchor[b, :n]
        assert int(point_anchor.max()) < A
        # every anchor has a member, and a point's anchor is in the point's cluster
        assert torch.bincount(point_anchor, minlength=A).min() >= 1
        assert torch.equal(anchors.cluster[b, point_anchor], batch.labels[b, :n])
        # centroids are the members' means
        for a in range(A):
            members = batch.X[b, :n][point_anchor == a]
            torch.testing.assert_close(anchors.centroids[b, a], members.mean(0))


@pytest.mark.parametrize("method", ["birch", "kmeans", "points"])
def test_memberships_consistent(method: str, make_blobs) -> None:
    items = [make_blobs(8, 3, seed=1), make_blobs(5, 2, seed=2)]
    batch = pad_batch(items, CPU)
    anchors = compute_anchors(batch, method, threshold=1.0, per_cluster=3)
    _check_consistent(anchors, batch)


def test_points_gives_one_anchor_per_point(blobs) -> None:
    batch = pad_batch([blobs], CPU)
    anchors = compute_anchors(batch, "points")
    assert int(anchors.count[0]) == len(blobs[0])


def test_kmeans_count_per_cluster(make_blobs) -> None:
    X, labels = make_blobs(6, 3, seed=3)
    labels = labels.copy()
    labels[labels == 2] = 1  # clusters of 6 and 12 points
    labels[0] = 2  # and a singleton
    anchors = compute_anchors(pad_batch([(X, labels)], CPU), "kmeans", per_cluster=4)
    counts = np.bincount(anchors.cluster[0, : int(anchors.count[0])].numpy())
    assert counts[2] == 1 and counts[0] <= 4 and counts[1] <= 4 and counts.sum() >= 7


def test_birch_matches_sklearn_leader_pass(make_blobs) -> None:
    X, labels = make_blobs(15, 2, dim=5, spread=1.0, seed=4)
    anchors = compute_anchors(pad_batch([(X, labels)], CPU), "birch", threshold=1.5)
    for c in range(2):
        ours = int((anchors.cluster[0, : int(anchors.count[0])] == c).sum())
        ref = Birch(threshold=1.5, branching_factor=10**6, n_clusters=None).fit(X[labels == c])
        # reassignment may empty a sub-cluster, never create one
        assert ours <= len(ref.subcluster_centers_)
        assert ours >= len(ref.subcluster_centers_) - 1


def test_birch_relative_threshold_is_scale_free(make_blobs) -> None:
    X, labels = make_blobs(10, 3, seed=5)
    counts = []
    for scale in (0.01, 1.0, 100.0):
        batch = pad_batch([(X * scale, labels)], CPU)
        anchors = compute_anchors(batch, "birch", threshold=0.5, threshold_mode="relative")
        counts.append(anchors.point_anchor[0].tolist())
    assert counts[0] == counts[1] == counts[2]
    # the absolute threshold is not: tiny data collapses to one anchor per cluster
    tiny = compute_anchors(pad_batch([(X * 0.01, labels)], CPU), "birch", threshold=0.3)
    assert int(tiny.count[0]) == 3


def test_batch_equals_single(make_blobs) -> None:
    items = [make_blobs(8, 3, seed=6), make_blobs(12, 2, seed=7)]
    together = compute_anchors(pad_batch(items, CPU), "birch", threshold=1.5)
    for b, item in enumerate(items):
        alone = compute_anchors(pad_batch([item], CPU), "birch", threshold=1.5)
        n = len(item[0])
        assert torch.equal(together.point_anchor[b, :n], alone.point_anchor[0])


@pytest.mark.parametrize("threshold", [0.6, 0.8, 1.0])
def test_leader_pass_flat_equals_per_cluster(make_blobs, threshold) -> None:
    """The two forms of the leader pass (all points at once, or cluster by cluster) must open
    the same sub-clusters and reassign every point alike, padding included."""
    from clustviz.clusterplot import anchors as module

    items = [make_blobs(6, 7, seed=3), make_blobs(3, 4, seed=4), make_blobs(9, 2, seed=5)]
    batch = pad_batch(items, CPU)
    rank = module._rank_in_cluster(batch)
    m = int(rank[batch.mask].max()) + 1
    thr_sq = module._thresholds_sq(batch, threshold, "absolute")
    gram = batch.X @ batch.X.transpose(1, 2)
    flat = module._leader_flat(batch, thr_sq, gram)
    per_cluster = module._leader_per_cluster(batch, thr_sq, gram, rank, m)
    assert torch.equal(flat, per_cluster)
    opened = sum(len(torch.unique(flat[b, : len(X)])) for b, (X, _) in enumerate(items))
    clusters = sum(len(np.unique(labels)) for _, labels in items)
    assert clusters < opened < sum(len(X) for X, _ in items)  # merged some, not all
