"""The dense path's two backends: numba's loops (:mod:`clustviz.clusterplot.layout_loops`) and
torch's ops compute the same optimisation: the same loss as autograd's reference, and the
same trajectory over the first steps (float64 sums against float32 ops: close, not equal)."""

from __future__ import annotations

import pytest
import torch
from test_optimize import _lm_like, _target_and_init

from clustviz.clusterplot.backends import TorchBackend
from clustviz.clusterplot.init import EmbedSettings, neighbour_embedding
from clustviz.clusterplot.losses import reference_loss
from clustviz.clusterplot.numba_backend import NumbaBackend
from clustviz.clusterplot.relaxation import RelaxSettings

WEIGHTS = dict(overlap_weight=3.0, label_overlap_weight=1.0, knn_weight=0.1, temperature=0.1)


def _extent(Y: torch.Tensor) -> float:
    return float((Y.amax(1) - Y.amin(1)).max())


@pytest.mark.parametrize(
    "params", [{}, {"birch_threshold": 5.0}, {"anchors_in_graph": False}, {"k": 3, "knn_k": 4}]
)
def test_numba_relaxation_follows_the_torch_one(make_blobs, params) -> None:
    # two preambles of other sizes in one batch: padding rows, folded and unfolded anchors
    items = [_lm_like(make_blobs, 0), make_blobs(5, 3, dim=32, spread=1.2, seed=9)]
    target, Y0, _ = _target_and_init(items, **params)
    reference = reference_loss(Y0, target, **WEIGHTS)
    settings = RelaxSettings(steps=4, lr=0.05, radius_every=2, **WEIGHTS)
    Y_torch, trace_torch = TorchBackend().gradient_layout(Y0, target, settings)
    Y_numba, trace_numba = NumbaBackend().gradient_layout(Y0, target, settings)
    torch.testing.assert_close(trace_numba[0], reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(trace_numba, trace_torch, rtol=1e-4, atol=1e-5)
    moved = (Y_torch - Y0).abs().max()
    assert moved > 0.05  # four Adam steps of 0.05: the comparison below is not of Y0 with itself
    torch.testing.assert_close(Y_numba, Y_torch, rtol=0, atol=1e-4 * _extent(Y_torch))


def test_numba_neighbour_embedding_follows_the_torch_one(make_blobs) -> None:
    items = [_lm_like(make_blobs, 1), make_blobs(6, 2, dim=32, spread=1.2, seed=4)]
    target, _, batch = _target_and_init(items)
    shape = (*batch.X.shape[:2], 2)
    Y0 = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    Y0 = Y0 * batch.mask.unsqueeze(-1)
    settings = EmbedSettings(steps=12, lr=0.05, exaggeration=4.0)
    expected = neighbour_embedding(Y0, target.P, batch.mask, settings)
    got = NumbaBackend().neighbour_embedding(Y0, target.P, batch.mask, settings)
    assert (expected - Y0).abs().max() > 0.1
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4 * _extent(expected))
    assert not got[1, 12:].any()  # padding rows stay at 0


def test_numba_dense_fit_lowers_the_discrepancy_as_the_torch_one(make_blobs) -> None:
    from clustviz.clusterplot import ClusterPlot

    items = [_lm_like(make_blobs, seed) for seed in range(6)]
    after = {}
    for backend in ("torch", "numba"):
        model = ClusterPlot(device="cpu", backend=backend, init_steps=100, n_steps=100)
        results = model.fit_transform_many(items, compute_hulls=False)
        assert all(r.backend == backend for r in results)
        after[backend] = [r.discrepancy_after["mean"] for r in results]
        before = [r.discrepancy_before["mean"] for r in results]
        assert sum(a < b for a, b in zip(after[backend], before, strict=True)) >= 5
    # different round-off, different trajectories; the same quality
    assert abs(sum(after["numba"]) - sum(after["torch"])) < 0.15 * sum(after["torch"])
