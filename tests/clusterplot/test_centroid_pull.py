"""The centroid pull of a map alignment (:class:`clustviz.clusterplot.losses.CentroidPull`) on
every path ClusterPlot's relaxation takes: its gradient against autograd, the dense relaxation
with it against the autograd reference on both backends, the sparse relaxation against the
dense one, and a preamble relaxed alone or batched to the same answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FAST
from test_dense_backends import WEIGHTS, _extent
from test_optimize import _lm_like, _target_and_init
from test_projector import _real_items

from clustviz.clusterplot import ClusterPlot
from clustviz.clusterplot.backends import TorchBackend
from clustviz.clusterplot.losses import CentroidPull, centroid_pull, reference_loss
from clustviz.clusterplot.numba_backend import NumbaBackend
from clustviz.clusterplot.projector import Pull
from clustviz.clusterplot.relaxation import RelaxSettings, gradient_layout
from clustviz.errors import InvalidInputError

CPU = torch.device("cpu")


def _pull(labels: torch.Tensor, mask: torch.Tensor, weight: float, seed: int) -> CentroidPull:
    generator = torch.Generator().manual_seed(seed)
    B, C = labels.shape[0], int(labels.max()) + 1
    targets = torch.randn(B, C, 2, generator=generator, dtype=torch.float64) * 3.0
    scale = torch.rand(B, generator=generator, dtype=torch.float64) + 0.5
    return centroid_pull(labels, mask, targets, weight, scale)


def test_centroid_pull_matches_autograd() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (3, 12), generator=generator)
    labels[1, 8:] = 0  # padding rows (and preamble 1 may lack a cluster: a padded slot)
    labels[2] = labels[2] % 3  # fewer clusters than the slots
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1, 8:] = False
    pull = _pull(labels, mask, weight=0.7, seed=1)
    Y = torch.randn(3, 12, 2, generator=generator, dtype=torch.float64, requires_grad=True)
    loss, grad = pull(Y.detach())
    reference = pull.reference(Y)
    (expected,) = torch.autograd.grad(reference.sum(), Y)
    torch.testing.assert_close(loss, reference.detach())
    torch.testing.assert_close(grad, expected)
    assert not grad[1, 8:].any()  # padding rows are not pulled
    assert (loss > 0).all()
    # a mean over the preamble's own clusters (preamble 2 has 3 of the 5 slots): the empty
    # slots have no target, so they add nothing
    assert not pull.targets[2, 3:].any()
    scale = torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)
    halved = centroid_pull(labels, mask, pull.targets, 0.7, scale)
    assert float(halved.factor[2]) == pytest.approx(0.7 / (3 * 2.0))


def test_planar_centroid_pull_matches_autograd() -> None:
    """The sparse relaxation's form (planar (2, n) coordinates, the gradient added in place)."""
    generator = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 4, (1, 15), generator=generator)
    pull = _pull(labels, torch.ones(1, 15, dtype=torch.bool), weight=1.3, seed=4)
    Yt = torch.randn(2, 15, generator=generator, dtype=torch.float64, requires_grad=True)
    grad = torch.full((2, 15), 0.25, dtype=torch.float64)  # what the other terms put there
    loss = pull.add_planar(Yt.detach(), grad)
    reference = pull.reference(Yt.T.unsqueeze(0))
    (expected,) = torch.autograd.grad(reference.sum(), Yt)
    torch.testing.assert_close(loss, reference[0].detach())
    torch.testing.assert_close(grad, expected + 0.25)


@pytest.mark.parametrize("params", [{}, {"birch_threshold": 5.0}, {"anchors_in_graph": False}])
def test_dense_relaxation_with_the_pull_on_both_backends(make_blobs, params) -> None:
    items = [_lm_like(make_blobs, 0), make_blobs(5, 3, dim=32, spread=1.2, seed=9)]
    target, Y0, batch = _target_and_init(items, **params)
    pull = _pull(batch.labels, batch.mask, weight=2.0, seed=3)
    pull = CentroidPull(pull.labels, pull.share.float(), pull.targets.float(), pull.factor.float())
    reference = reference_loss(Y0, target, **WEIGHTS, pull=pull)
    assert (reference - reference_loss(Y0, target, **WEIGHTS) > 0.01).all()  # the term counts
    settings = RelaxSettings(steps=4, lr=0.05, radius_every=2, **WEIGHTS)
    Y_torch, trace_torch = TorchBackend().gradient_layout(Y0, target, settings, pull)
    Y_numba, trace_numba = NumbaBackend().gradient_layout(Y0, target, settings, pull)
    torch.testing.assert_close(trace_torch[0], reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(trace_numba[0], reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(trace_numba, trace_torch, rtol=1e-4, atol=1e-5)
    unpulled, _ = TorchBackend().gradient_layout(Y0, target, settings)
    assert (Y_torch - unpulled).abs().max() > 0.01  # the pull moved the layout
    torch.testing.assert_close(Y_numba, Y_torch, rtol=0, atol=1e-4 * _extent(Y_torch))


def test_dense_relaxation_with_the_pull_alone_brings_centroids_to_their_targets(make_blobs):
    # only the pull: each centroid goes to its target, on both backends (a wrong gradient
    # would not get there)
    items = [_lm_like(make_blobs, 2)]
    target, Y0, batch = _target_and_init(items)
    pull = _pull(batch.labels, batch.mask, weight=1.0, seed=5)
    pull = CentroidPull(pull.labels, pull.share.float(), pull.targets.float(), pull.factor.float())
    settings = RelaxSettings(
        steps=300, lr=0.05, radius_every=8, overlap_weight=0.0, label_overlap_weight=0.0,
        knn_weight=0.0, temperature=0.1,
    )  # fmt: skip
    for backend in (TorchBackend(), NumbaBackend()):
        Y, trace = backend.gradient_layout(Y0, target, settings, pull)
        assert float(trace[-1, 0]) < 0.02 * float(trace[0, 0])
        assert float(pull.offsets(Y).norm(dim=2).max()) < 0.05


def test_sparse_relaxation_with_the_pull_follows_the_dense_one(make_blobs, backend) -> None:
    """With the other weights at 0 the sparse strategy's step is the dense one's: the pull's
    gradient reaches the planar coordinates as it reaches the dense ones (in direction: Adam
    on one term does not see its scale, which the planar test above holds)."""
    from clustviz.clusterplot.anchors import compute_anchors
    from clustviz.clusterplot.batch import pad_batch
    from clustviz.clusterplot.relaxation import SparseSettings, sparse_gradient_layout
    from clustviz.clusterplot.targets import overlap_target, sparse_target
    from clustviz.clusterplot.threads import Lanes

    X, labels = make_blobs(30, 6, dim=16, spread=1.0, seed=4)
    batch = pad_batch([(X, labels)], CPU)
    anchors = compute_anchors(batch, "birch", threshold=5.0)
    A = anchors.size
    sparse = sparse_target(
        batch.X[0], batch.labels[0], anchors.point_anchor[0], anchors.cluster[0, :A],
        k=8, knn_k=6, anchors_in_graph=True, backend=backend,
    )  # fmt: skip
    from clustviz.clusterplot import ClusterPlotParams

    dense = overlap_target(batch, anchors, ClusterPlotParams(k=8, knn_k=6))
    Y0 = torch.randn(1, len(X), 2, generator=torch.Generator().manual_seed(0))
    pull = _pull(batch.labels, batch.mask, weight=1.0, seed=7)
    pull = CentroidPull(pull.labels, pull.share.float(), pull.targets.float(), pull.factor.float())
    settings = RelaxSettings(
        steps=20, lr=0.05, radius_every=16, overlap_weight=0.0, label_overlap_weight=0.0,
        knn_weight=0.0, temperature=0.1,
    )  # fmt: skip
    expected, expected_trace = gradient_layout(Y0, dense, settings, pull)
    with Lanes(False) as lanes:
        Y, trace = sparse_gradient_layout(
            Y0[0], sparse, settings, SparseSettings(refresh=50, candidates_per_k=3.0, negatives=8),
            generator=torch.Generator().manual_seed(0), lanes=lanes, backend=backend, pull=pull,
        )  # fmt: skip
    assert (expected[0] - Y0[0]).abs().max() > 0.5
    torch.testing.assert_close(trace, expected_trace[:, 0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(Y, expected[0], rtol=0, atol=1e-4 * _extent(expected))


def _pulls(items, seed: int) -> list[Pull]:
    rng = np.random.default_rng(seed)
    return [
        Pull(
            start=rng.normal(size=(len(X), 2)) * 2.0,
            targets=rng.normal(size=(len(np.unique(labels)), 2)) * 3.0,
        )
        for X, labels in items
    ]


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_relax_many_same_answer_alone_or_batched(make_blobs, backend: str) -> None:
    items = [*_real_items([3, 6, 12, 40, 40]), make_blobs(8, 3, dim=576, seed=1)]
    pulls = _pulls(items, 0)
    large = make_blobs(100, 7, dim=576, seed=9)  # the sparse path
    large_pull = _pulls([large], 1)[0]
    model = ClusterPlot(backend=backend, **FAST)
    alone = [
        model.relax_many([item], [pull], weight=1.0)[0]
        for item, pull in zip(items, pulls, strict=True)
    ]
    members = [*range(len(items))[::-1], -1]
    results = model.relax_many(
        [items[i] if i >= 0 else large for i in members],
        [pulls[i] if i >= 0 else large_pull for i in members],
        weight=1.0,
    )
    for i, result in zip(members, results, strict=True):
        if i < 0:
            continue
        expected = alone[i].embedding
        extent = float(np.ptp(expected, axis=0).max())
        np.testing.assert_allclose(result.embedding, expected, rtol=0, atol=1e-4 * extent)


def test_relax_many_pulls_centroids_and_refuses_bad_pulls(make_blobs) -> None:
    X, labels = make_blobs(10, 4, dim=16, seed=3)
    (pull,) = _pulls([(X, labels)], 2)
    model = ClusterPlot(backend="torch", **FAST)
    loose, held = (
        model.relax_many([(X, labels)], [pull], weight=w)[0].embedding for w in (0.0, 5.0)
    )
    members = np.eye(4)[labels].T / 10.0

    def offset(Y):
        return np.linalg.norm(members @ Y - pull.targets, axis=1).mean()

    assert offset(held) < 0.5 * offset(loose)
    with pytest.raises(InvalidInputError, match="targets"):
        model.relax_many([(X, labels)], [Pull(pull.start, pull.targets[:3])], weight=1.0)
    with pytest.raises(InvalidInputError, match="start"):
        model.relax_many([(X, labels)], [Pull(pull.start[:5], pull.targets)], weight=1.0)
    with pytest.raises(InvalidInputError, match=r"weight=-1\.0"):
        model.relax_many([(X, labels)], [pull], weight=-1.0)
    with pytest.raises(InvalidInputError, match="gradient"):
        ClusterPlot(mode="greedy").relax_many([(X, labels)], [pull], weight=1.0)
