from __future__ import annotations

import math

import numpy as np
import pytest

from clustviz.metrics import (
    cluster_overlap_discrepancy,
    continuity,
    knn_preservation,
    layout_metrics,
    silhouette,
    trustworthiness,
    trustworthiness_continuity,
)


def _blobs(seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), 10)
    X = rng.normal(size=(3, 5))[labels] * 5 + rng.normal(size=(30, 5))
    return X, labels


def test_an_isometric_layout_is_perfect() -> None:
    # X lies in a plane of R^5; Y is that plane's coordinates rotated and shifted: every
    # distance is kept, so every neighbour is, and no shuffle of them can score as well
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 10)
    P = rng.normal(size=(3, 2))[labels] * 5 + rng.normal(size=(30, 2))
    basis = np.linalg.qr(rng.normal(size=(5, 5)))[0][:, :2]  # (5, 2), orthonormal columns
    X = P @ basis.T
    angle = 0.7
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    Y = P @ rotation.T + [3.0, -2.0]
    assert knn_preservation(X, Y, k=5) == pytest.approx(1.0)
    assert trustworthiness(X, Y, 5) == pytest.approx(1.0)
    assert cluster_overlap_discrepancy(X, Y, labels, k=5) == {"mean": 0.0, "max": 0.0}
    assert layout_metrics(X, Y, labels, k=5)["trustworthiness"] == pytest.approx(1.0)
    shuffled = Y[rng.permutation(30)]  # the same points, each at another point's place
    assert knn_preservation(X, shuffled, k=5) < 0.3  # chance is 5/29
    assert trustworthiness(X, shuffled, 5) < 0.75  # chance is about 0.5
    assert cluster_overlap_discrepancy(X, shuffled, labels, k=5)["mean"] > 0.1


def test_trustworthiness_and_knn_preservation_by_hand() -> None:
    # 1-D, unequal gaps (no ties): X = 0 1 3 7 15; the layout swaps points 0 and 4.
    X = np.array([[0.0], [1.0], [3.0], [7.0], [15.0]])
    Y = np.array([[15.0], [1.0], [3.0], [7.0], [0.0]])
    # k=1. High-D nearest: 0->1, 1->0, 2->1, 3->2, 4->3. 2-D nearest: 0->3, 1->4, 2->1, 3->2,
    # 4->1: points 2 and 3 keep theirs, so 2/5 are preserved.
    assert knn_preservation(X, Y, k=1) == pytest.approx(2 / 5)
    # Ranks in high-D of the 2-D neighbours: 0->3 is 3rd, 1->4 4th, 4->1 3rd; excess over k=1
    # is 2 + 3 + 2 = 7, so T = 1 - 2 / (n k (2n - 3k - 1)) * 7 = 1 - 2 * 7 / 30 = 8/15.
    assert trustworthiness(X, Y, 1) == pytest.approx(8 / 15)
    assert knn_preservation(X, X, k=1) == 1.0 and trustworthiness(X, X, 1) == 1.0


def test_overlap_by_hand() -> None:
    # 1-D: clusters a={0,1}, b={2,3}; high-D 0 1 | 2 3 far apart; low-D interleaved 0 2 1 3
    X = np.array([[0.0], [1.0], [10.0], [11.0]])
    Y = np.array([[0.0], [2.0], [1.0], [3.0]])
    labels = np.array([0, 0, 1, 1])
    # k=1 high-D: all edges within clusters; low-D: 0->2 (b), 1->2 or 3 (b), 2->0 or 1 (a), 3->1 (a)
    result = cluster_overlap_discrepancy(X, Y, labels, k=1)
    assert result == {"mean": 1.0, "max": 1.0}


def test_random_layout_is_worse() -> None:
    X, labels = _blobs()
    good = X[:, :2]
    bad = np.random.default_rng(2).normal(size=(30, 2))
    assert knn_preservation(X, bad) < knn_preservation(X, X)
    assert (
        cluster_overlap_discrepancy(X, bad, labels)["mean"]
        > cluster_overlap_discrepancy(X, X, labels)["mean"]
    )
    assert trustworthiness(X, good, 5) > trustworthiness(X, bad, 5)


def test_silhouette_nan_safe() -> None:
    X, labels = _blobs()
    assert math.isnan(silhouette(X[:, :2], np.zeros(30, dtype=int)))
    assert silhouette(X[:, :2], labels) > 0


def test_layout_metrics_keys() -> None:
    X, labels = _blobs()
    metrics = layout_metrics(X, X[:, :2], labels)
    assert set(metrics) == {
        "knn_preservation",
        "trustworthiness",
        "overlap_mean",
        "overlap_max",
        "silhouette",
    }
    assert all(isinstance(v, float) for v in metrics.values())


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_scikit_learn(seed: int) -> None:
    from sklearn.manifold import trustworthiness as sk_trustworthiness
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(seed)
    n = int(rng.integers(12, 60))
    labels = rng.integers(0, int(rng.integers(2, 8)), n)
    X = rng.normal(size=(n, 20)) + labels[:, None]
    Y = rng.normal(size=(n, 2)).astype(np.float32)
    for k in (1, 5, 10):  # (no ties: their order is each implementation's own)
        assert trustworthiness(X, Y, k) == pytest.approx(
            sk_trustworthiness(X, Y, n_neighbors=min(k, (n - 1) // 2)), abs=1e-9
        )
        # continuity: the same measure seen from the layout (true neighbours torn apart)
        assert continuity(X, Y, k) == pytest.approx(
            sk_trustworthiness(Y, X, n_neighbors=min(k, (n - 1) // 2)), abs=1e-9
        )
        assert continuity(X, X, k) == pytest.approx(1.0)
        assert trustworthiness_continuity(X, Y, k) == (
            trustworthiness(X, Y, k),
            continuity(X, Y, k),
        )
    Y[0] = Y[1]  # a coincident pair
    expected = silhouette_score(Y, labels) if len(np.unique(labels)) > 1 else math.nan
    assert silhouette(Y, labels) == pytest.approx(expected, rel=1e-5, abs=1e-6, nan_ok=True)
    singleton = labels.copy()
    singleton[0] = labels.max() + 1  # a cluster of one point scores 0, as in scikit-learn
    assert silhouette(Y, singleton) == pytest.approx(
        silhouette_score(Y, singleton), rel=1e-5, abs=1e-6
    )
    metrics = layout_metrics(X, Y, labels)
    assert metrics["knn_preservation"] == knn_preservation(X, Y)
    assert metrics["trustworthiness"] == trustworthiness(X, Y)
    assert metrics["overlap_mean"] == cluster_overlap_discrepancy(X, Y, labels)["mean"]
