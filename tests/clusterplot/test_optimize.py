from __future__ import annotations

import numpy as np

from clustviz.clusterplot import ClusterPlot

from_fast = {"init_steps": 100, "n_steps": 100, "device": "cpu"}


def _lm_like(make_blobs, seed: int):
    # overlapping blobs: clusters touch in high-D, so R_H has off-cluster mass to match
    return make_blobs(8, 5, dim=32, spread=1.2, seed=seed)


def test_gradient_lowers_discrepancy(make_blobs) -> None:
    items = [_lm_like(make_blobs, seed) for seed in range(6)]
    results = ClusterPlot(**from_fast).fit_transform_many(items, compute_hulls=False)
    lowered = [r.discrepancy_after["mean"] < r.discrepancy_before["mean"] for r in results]
    assert sum(lowered) >= 5
    before = np.mean([r.discrepancy_before["mean"] for r in results])
    after = np.mean([r.discrepancy_after["mean"] for r in results])
    assert after < before
    assert all(np.isfinite(r.loss_trace).all() for r in results)


def test_greedy_runs_and_moves(make_blobs) -> None:
    X, labels = _lm_like(make_blobs, 0)
    init_only = ClusterPlot(mode="greedy", n_iter=0, **from_fast).fit_transform(X, labels)
    model = ClusterPlot(mode="greedy", n_iter=16, top_greedy=3, **from_fast)
    Y = model.fit_transform(X, labels)
    assert np.isfinite(Y).all()
    assert not np.allclose(Y, init_only)
    assert len(model.result_.loss_trace) == 16
    # rigid moves: points of one sub-cluster move together
    shift = Y - init_only
    pa = model.result_.memberships["point_anchor"]
    for a in np.unique(pa):
        np.testing.assert_allclose(
            shift[pa == a], shift[pa == a][:1].repeat((pa == a).sum(), 0), atol=1e-4
        )
