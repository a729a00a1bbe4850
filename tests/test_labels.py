"""Cluster labels: global ids to dense labels and back, one way for every caller."""

from __future__ import annotations

import numpy as np

from clustviz.labels import dense_labels


def test_dense_labels_follow_increasing_global_ids_and_map_back() -> None:
    ids = np.array([50, 7, 50, 12, 7, 300])
    clusters, labels = dense_labels(ids)
    assert clusters.tolist() == [7, 12, 50, 300]
    assert labels.tolist() == [2, 0, 2, 1, 0, 3] and labels.dtype == np.int64
    np.testing.assert_array_equal(clusters[labels], ids)
