"""Map-aligned layouts: the frame (Procrustes), the relaxation's gradient against autograd, and
the alignment measure on the real fixture (clusters nearer their map places, neighbours kept)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clustviz.alignment import (
    AlignParams,
    Similarity,
    align_layout,
    align_to_map,
    alignment_loss,
    centroid_offsets,
    similarity_transform,
)
from clustviz.data.discovery import discover_datasets
from clustviz.data.loading import load_dataset
from clustviz.errors import InvalidInputError
from clustviz.metrics import knn_preservation
from clustviz.projectors import get_projector

FIXTURE = Path(__file__).parent / "data" / "demo10"


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(discover_datasets(FIXTURE)[0])


@pytest.fixture(scope="module")
def pca_map(dataset) -> np.ndarray:
    """A global map of every fixture row: the first two principal components."""
    X = dataset.embeddings.astype(np.float64)
    centred = X - X.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def test_similarity_transform_recovers_a_rotation_scale_and_shift() -> None:
    rng = np.random.default_rng(0)
    layout = rng.normal(size=(30, 2))
    angle = 0.7
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = 2.5 * layout @ rotation + np.array([4.0, -1.0])
    np.testing.assert_allclose(similarity_transform(layout, target), target, atol=1e-10)
    mirrored = target * np.array([-1.0, 1.0])  # a reflection is a similarity too
    np.testing.assert_allclose(similarity_transform(layout, mirrored), mirrored, atol=1e-10)


def _torch_loss(X, labels, Z, map_rows, params: AlignParams) -> torch.Tensor:
    """The loss written from its definition with torch ops (autograd gives the oracle)."""
    X = torch.as_tensor(X, dtype=torch.float64)
    n = len(X)
    dist = torch.cdist(X, X) ** 2 + torch.diag(torch.full((n,), float("inf"), dtype=X.dtype))
    k = min(params.n_neighbors, n - 1)
    nearest = torch.argsort(dist, dim=1, stable=True)[:, :k]
    graph = torch.zeros(n, n, dtype=X.dtype)
    graph[torch.arange(n).repeat_interleave(k), nearest.reshape(-1)] = 1.0
    graph = torch.maximum(graph, graph.T)
    P = graph / graph.sum()
    rows = torch.as_tensor(map_rows, dtype=torch.float64)
    origin = rows.mean(0)
    unit = torch.sqrt(((rows - origin) ** 2).sum(1).mean()) / params.scale
    kernel = (1.0 / (1.0 + torch.cdist(Z, Z) ** 2)) * (1 - torch.eye(n, dtype=X.dtype))
    Q = kernel / kernel.sum()
    edges = P > 0
    neighbours = (P[edges] * torch.log(P[edges] / Q[edges])).sum()
    clusters = np.unique(labels)
    pulls = []
    for cluster in clusters:
        members = torch.as_tensor(labels == cluster)
        target = (rows[members].mean(0) - origin) / unit
        pulls.append(((Z[members].mean(0) - target) ** 2).sum())
    pull = torch.stack(pulls).mean() / params.scale**2
    return neighbours + params.weight * pull


@pytest.mark.parametrize("weight", [0.0, 0.3, 5.0])
def test_the_relaxation_gradient_is_autograds(weight: float) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(25, 6))
    labels = rng.integers(0, 5, size=25)
    map_rows = rng.normal(size=(25, 2)) * 7 + 3
    layout = rng.normal(size=(25, 2)) * 7 + 3
    params = AlignParams(weight=weight, n_neighbors=4)
    loss, grad = alignment_loss(X, labels, layout, map_rows, params)
    origin = map_rows.mean(0)
    unit = np.sqrt(((map_rows - origin) ** 2).sum(1).mean()) / params.scale
    Z = torch.tensor((layout - origin) / unit, requires_grad=True)
    expected = _torch_loss(X, labels, Z, map_rows, params)
    assert loss == pytest.approx(expected.detach().item(), rel=1e-10)
    expected.backward()
    assert Z.grad is not None
    np.testing.assert_allclose(grad, Z.grad.numpy(), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("projector", ["tsne", "clusterplot"])
def test_aligned_layouts_sit_nearer_the_map_and_keep_their_neighbours(
    dataset, pca_map, projector: str
) -> None:
    """The issue's measure on the fixture: per cluster, the distance of its centroid from its
    centroid among the preamble's rows of the map — aligned vs an independent layout moved by
    the best similarity transform — with 10-NN preservation kept (≥ 0.95 ×); t-SNE through the
    generic relaxation, ClusterPlot through its own with the centroid term."""
    independent, aligned, knn_independent, knn_aligned = [], [], [], []
    for preamble in dataset.preambles:
        view = dataset.view(preamble)
        rows = pca_map[dataset.row_indices(preamble)]
        model = get_projector(projector, random_state=1871)
        layout = model.fit_transform(view.X, view.labels)
        moved = align_layout(projector, view.X, view.labels, layout, rows, None, model.params_used_)
        framed = similarity_transform(layout, rows)
        independent.extend(centroid_offsets(framed, rows, view.labels))
        aligned.extend(centroid_offsets(moved, rows, view.labels))
        knn_independent.append(knn_preservation(view.X, framed, 10))
        knn_aligned.append(knn_preservation(view.X, moved, 10))
    assert np.mean(aligned) <= 0.7 * np.mean(independent)
    assert np.mean(knn_aligned) >= 0.95 * np.mean(knn_independent)


def test_similarity_inverts() -> None:
    rng = np.random.default_rng(1)
    layout, target = rng.normal(size=(20, 2)), rng.normal(size=(20, 2)) * 4.0
    frame = Similarity.fit(layout, target)
    points = rng.normal(size=(5, 2))
    np.testing.assert_allclose(frame.invert(frame.apply(points)), points, atol=1e-12)
    assert Similarity.fit(np.ones((4, 2)), target[:4]).scale == 0.0


def test_align_layout_dispatches_on_the_projector_spec(dataset, pca_map) -> None:
    """One entry point: the generic relaxation for a projector without an aligner of its own,
    ClusterPlot's relaxation (its parameters count) for clusterplot."""
    view = dataset.view(dataset.preambles[3])
    rows = pca_map[dataset.row_indices(dataset.preambles[3])]
    layout = get_projector("clusterplot").fit_transform(view.X, view.labels)
    generic = align_to_map(view.X, view.labels, layout, rows)
    np.testing.assert_array_equal(align_layout("umap", view.X, view.labels, layout, rows), generic)
    own = align_layout("clusterplot", view.X, view.labels, layout, rows)
    assert own.dtype == np.float32 and own.shape == generic.shape
    assert np.abs(own - generic).max() > 0.01 * np.ptp(rows)
    other = align_layout("clusterplot", view.X, view.labels, layout, rows, None, {"knn_weight": 1})
    assert np.abs(own - other).max() > 0.01 * np.ptp(rows)
    np.testing.assert_allclose(
        align_layout("clusterplot", view.X, view.labels, layout, rows, AlignParams(steps=0)),
        similarity_transform(layout, rows),
        rtol=1e-6,
    )
    with pytest.raises(InvalidInputError, match="projector='nope'"):
        align_layout("nope", view.X, view.labels, layout, rows)
    with pytest.raises(InvalidInputError, match="knn_weight"):
        align_layout("clusterplot", view.X, view.labels, layout, rows, None, {"knn_weight": -1})


def test_alignment_is_deterministic_float32_and_in_input_order(dataset, pca_map) -> None:
    view = dataset.view(dataset.preambles[0])
    rows = pca_map[dataset.row_indices(dataset.preambles[0])]
    layout = np.random.default_rng(2).normal(size=(view.n_points, 2))
    first = align_to_map(view.X, view.labels, layout, rows)
    assert first.dtype == np.float32 and first.shape == (view.n_points, 2)
    np.testing.assert_array_equal(first, align_to_map(view.X, view.labels, layout, rows))
    order = np.random.default_rng(3).permutation(view.n_points)
    shuffled = align_to_map(view.X[order], view.labels[order], layout[order], rows[order])
    np.testing.assert_allclose(shuffled, first[order], atol=1e-4 * np.ptp(rows))


def test_no_steps_is_the_similarity_transform_alone(dataset, pca_map) -> None:
    view = dataset.view(dataset.preambles[1])
    rows = pca_map[dataset.row_indices(dataset.preambles[1])]
    layout = np.random.default_rng(4).normal(size=(view.n_points, 2))
    np.testing.assert_allclose(
        align_to_map(view.X, view.labels, layout, rows, AlignParams(steps=0)),
        similarity_transform(layout, rows),
        rtol=1e-6,
    )


def test_a_stronger_pull_brings_clusters_nearer(dataset, pca_map) -> None:
    view = dataset.view(dataset.preambles[2])
    rows = pca_map[dataset.row_indices(dataset.preambles[2])]
    layout = np.random.default_rng(5).normal(size=(view.n_points, 2))
    offsets = [
        centroid_offsets(
            align_to_map(view.X, view.labels, layout, rows, AlignParams(weight=w)),
            rows,
            view.labels,
        ).mean()
        for w in (0.0, 0.3, 3.0)
    ]
    assert offsets[0] > offsets[1] > offsets[2]


@pytest.mark.parametrize(
    ("field", "change"),
    [("labels", lambda a: a[:-1]), ("layout", lambda a: a[:, :1]), ("map_rows", lambda a: a[1:])],
)
def test_mismatched_inputs_are_refused_naming_the_field(field, change) -> None:
    rng = np.random.default_rng(6)
    inputs = {
        "X": rng.normal(size=(12, 4)),
        "labels": rng.integers(0, 3, size=12),
        "layout": rng.normal(size=(12, 2)),
        "map_rows": rng.normal(size=(12, 2)),
    }
    inputs[field] = change(inputs[field])
    with pytest.raises(InvalidInputError, match=field):
        align_to_map(**inputs)


def test_non_finite_map_rows_are_refused() -> None:
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(8, 2))
    rows[3, 1] = np.nan
    with pytest.raises(InvalidInputError, match="map_rows"):
        align_to_map(rng.normal(size=(8, 3)), np.zeros(8, int), rng.normal(size=(8, 2)), rows)


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="weight"):
        AlignParams(weight=-1)
    with pytest.raises(ValueError, match="extra"):
        AlignParams(wieght=1)  # type: ignore[call-arg]
