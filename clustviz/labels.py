"""Cluster labels: a preamble's global cluster ids (sparse, up to hundreds in a dataset) and the
dense labels ``0..k-1`` that projectors, metrics and plots work with.

Every re-indexing goes through :func:`dense_labels`, so a cluster has one label (and one
colour) wherever its preamble is shown, and a label maps back to its global id one way.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dense_labels"]


def dense_labels(cluster_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(clusters, labels)``: the distinct ids in increasing order, and each point's index in
    them (int64), so that ``clusters[labels]`` equals ``cluster_ids``."""
    clusters, labels = np.unique(np.asarray(cluster_ids).reshape(-1), return_inverse=True)
    return clusters, labels.astype(np.int64, copy=False)
