"""The stratified sample, the cluster means and the cluster positions, against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from clustviz.maps.subsets import (
    SUM_BLOCK_ROWS,
    cluster_index,
    cluster_means,
    cluster_positions,
    stratified_sample,
)


def skewed_labels(seed: int = 0) -> np.ndarray:
    """Clusters of very different sizes (1 to 400 rows), shuffled."""
    sizes = [400, 200, 90, 7, 2, 1]
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return np.random.default_rng(seed).permutation(labels)


@pytest.mark.parametrize("size", [3, 6, 50, 377, 700])
def test_stratified_sample_is_proportional_and_keeps_every_cluster(size: int) -> None:
    local = skewed_labels()
    rows = stratified_sample(local, size, seed=5)
    assert len(rows) == size and len(np.unique(rows)) == size
    assert (np.diff(rows) > 0).all()  # sorted, distinct
    counts = np.bincount(local)
    got = np.bincount(local[rows], minlength=len(counts))
    if size >= len(counts):
        assert (got >= 1).all()  # no cluster left out of the fit
        # beyond one row each, in proportion to what is left of each cluster (within one row)
        expected = 1 + (counts - 1) / (counts - 1).sum() * (size - len(counts))
        assert np.abs(got - expected).max() < 1.0 + 1e-9
    else:
        assert np.abs(got - counts / counts.sum() * size).max() < 1.0 + 1e-9
    assert (got <= counts).all()


def test_stratified_sample_is_a_function_of_the_seed() -> None:
    local = skewed_labels()
    first = stratified_sample(local, 100, seed=1)
    np.testing.assert_array_equal(first, stratified_sample(local, 100, seed=1))
    assert not np.array_equal(first, stratified_sample(local, 100, seed=2))
    with pytest.raises(ValueError, match="sample size=701"):
        stratified_sample(local, 701, seed=1)


def test_cluster_index_reindexes_global_ids_in_increasing_order() -> None:
    ids, local = cluster_index(np.array([40, 7, 40, 300, 7]))
    assert ids.tolist() == [7, 40, 300] and local.tolist() == [1, 0, 1, 2, 0]


def test_cluster_means_and_positions_match_plain_numpy_across_blocks() -> None:
    rng = np.random.default_rng(0)
    n = 2 * SUM_BLOCK_ROWS + 17  # several blocks, the last one short
    local = rng.integers(0, 5, size=n)
    X = rng.normal(loc=3.0, size=(n, 6)).astype(np.float32)
    means = cluster_means(X, local, 5)
    assert means.dtype == np.float32 and means.shape == (5, 6)
    expected = np.stack([X[local == c].astype(np.float64).mean(0) for c in range(5)])
    np.testing.assert_allclose(means, expected, rtol=1e-6)
    Y = X[:, :2].copy()
    np.testing.assert_allclose(cluster_positions(Y, local, 5), expected[:, :2], rtol=1e-6)
