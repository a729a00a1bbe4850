"""ClusterPlot at real size in the default suite: the sparse strategy on 700 pooled real guesses
(more than ``dense_max_rows`` rows of ``[X; anchors]``), and fits on several CPU threads (the
suite runs torch on one thread: here the thread pools, the lanes and the parallel 2-D searches
run for real)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from support import REPO

from clustviz.clusterplot import ClusterPlot
from clustviz.metrics import cluster_overlap_discrepancy, knn_preservation

DEMO = REPO / "data" / "demo"


def _pooled(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` real guesses of the demo set, pooled over preambles (global clusters)."""
    from clustviz.data import discover_datasets, load_dataset

    dataset = load_dataset(discover_datasets(DEMO)[0])
    X = np.ascontiguousarray(dataset.embeddings[:n])
    labels = np.unique(dataset.rows["cluster_id"].to_numpy()[:n], return_inverse=True)[1]
    return X, labels


def _preambles(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from clustviz.data import discover_datasets, load_dataset

    dataset = load_dataset(discover_datasets(DEMO)[0])
    views = [dataset.view(p) for p in dataset.preambles[:count]]
    return [(view.X, view.labels) for view in views]


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_sparse_strategy_on_700_real_guesses(backend: str) -> None:
    """700 pooled guesses (48 clusters, an anchor per guess: 1,400 rows) take the sparse
    strategy, and its relaxation improves on its own init by measures it does not compute
    itself (:mod:`clustviz.metrics`), keeping the init's neighbours."""
    X, labels = _pooled(700)
    model = ClusterPlot(device="cpu", backend=backend)
    Y = model.fit_transform(X, labels)
    result = model.result_
    assert len(X) + len(result.anchors) > model.params.dense_max_rows  # the sparse strategy
    assert result.backend == backend and np.isfinite(Y).all()
    init = ClusterPlot(device="cpu", backend=backend, n_steps=0).fit_transform(X, labels)
    overlap = cluster_overlap_discrepancy(X, Y, labels)["mean"]
    assert overlap < 0.85 * cluster_overlap_discrepancy(X, init, labels)["mean"]
    assert result.discrepancy_after["label_mean"] < result.discrepancy_before["label_mean"]
    assert knn_preservation(X, Y) >= knn_preservation(X, init) - 0.03
    assert knn_preservation(X, Y) > 0.4


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_threads_do_not_change_answers(monkeypatch, backend: str) -> None:
    """On two CPU threads a batch is split among threads (dense fits, one thread each) and a
    large preamble runs its parts in two lanes and its 2-D searches in parallel: the answers
    are the ones of one thread."""
    import clustviz.clusterplot.pipeline as pipeline
    import clustviz.clusterplot.projector as projector

    items = [*_preambles(12), _pooled(700)]
    model = ClusterPlot(device="cpu", backend=backend, init_steps=60, n_steps=40)
    threads_of_dense_fits: set[str] = set()
    lanes_parallel: list[bool] = []

    def fit_dense(*args, **kwargs):  # type: ignore[no-untyped-def]
        threads_of_dense_fits.add(threading.current_thread().name)
        return dense(*args, **kwargs)

    class Lanes(pipeline.Lanes):
        def __init__(self, parallel: bool) -> None:
            lanes_parallel.append(parallel)
            super().__init__(parallel)

    dense = projector.fit_dense
    monkeypatch.setattr(projector, "fit_dense", fit_dense)
    monkeypatch.setattr(pipeline, "Lanes", Lanes)
    before = torch.get_num_threads()
    answers = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            assert torch.get_num_threads() == threads
            answers[threads] = model.fit_transform_many(items, compute_hulls=False)
    finally:
        torch.set_num_threads(before)
    # the parallel paths ran: dense fits on two pool threads, the lanes in parallel
    assert len({name for name in threads_of_dense_fits if name.startswith("clusterplot")}) == 2
    assert lanes_parallel == [False, False, True, True]
    for one, two in zip(answers[1], answers[2], strict=True):
        extent = float(np.ptp(one.embedding, axis=0).max())
        np.testing.assert_allclose(two.embedding, one.embedding, rtol=0, atol=1e-4 * extent)
