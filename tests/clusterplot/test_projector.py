from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clustviz.clusterplot import ClusterPlot, ClusterPlotParams, ClusterPlotResult
from clustviz.errors import InvalidInputError
from clustviz.projectors import get_projector

FAST = {"init_steps": 60, "n_steps": 40, "device": "cpu"}
DEMO10 = Path(__file__).parents[1] / "data" / "demo10"


def test_shape_dtype_result(blobs) -> None:
    X, labels = blobs
    model = ClusterPlot(**FAST)
    Y = model.fit_transform(X, labels)
    assert Y.shape == (len(X), 2) and Y.dtype == np.float32 and np.isfinite(Y).all()
    result = model.result_
    assert isinstance(result, ClusterPlotResult)
    assert result.anchors.shape[1] == 2 and len(result.hulls) == 4
    assert result.memberships["point_anchor"].shape == (len(X),)
    assert len(result.loss_trace) == FAST["n_steps"]
    assert set(result.discrepancy_before) >= {"mean", "max"}
    assert result.device == "cpu"


def test_registry() -> None:
    model = get_projector("clusterplot", n_steps=5, init_steps=5)
    assert isinstance(model, ClusterPlot)


def test_labels_required(blobs) -> None:
    with pytest.raises(InvalidInputError) as info:
        ClusterPlot(**FAST).fit_transform(blobs[0])
    assert info.value.code == "labels_required"


def test_deterministic(blobs) -> None:
    X, labels = blobs
    np.testing.assert_array_equal(
        ClusterPlot(**FAST).fit_transform(X, labels), ClusterPlot(**FAST).fit_transform(X, labels)
    )


def test_input_order(blobs) -> None:
    # "points" anchors and no ties: the pipeline is permutation equivariant
    X, labels = blobs
    perm = np.random.default_rng(0).permutation(len(X))
    params = FAST | {"anchors_method": "points"}
    Y = ClusterPlot(**params).fit_transform(X, labels)
    Y_perm = ClusterPlot(**params).fit_transform(X[perm], labels[perm])
    np.testing.assert_allclose(Y_perm, Y[perm], atol=1e-3 * np.ptp(Y))


@pytest.mark.parametrize("n", [3, 4, 6])
def test_small_n(n: int) -> None:
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    labels = np.arange(n) % 2
    model = ClusterPlot(**FAST)
    Y = model.fit_transform(X, labels)
    assert Y.shape == (n, 2) and np.isfinite(Y).all()
    assert model.result_.params_used.k == n - 1


@pytest.mark.parametrize("n", [6, 9, 40])
def test_params_used_is_what_the_fit_read(make_blobs, n: int) -> None:
    """Refitting with ``params_used_`` gives the same layout: the fit reads the clamped values
    it reports (k was clamped to n - 1 in the report but to n + A - 1 in the fit)."""
    X, labels = make_blobs(n // 3, 3, dim=16, spread=1.0, seed=n)
    model = ClusterPlot(k=15, knn_k=12, anchors_per_cluster=50, **FAST)
    Y = model.fit_transform(X, labels)
    used = model.params_used_
    assert used.k == min(15, len(X) - 1) and used.knn_k == min(12, len(X) - 1)
    assert any(note.startswith("k clamped") for note in model.notes_) == (len(X) <= 15)
    again = ClusterPlot(**used.model_dump()).fit_transform(X, labels)
    np.testing.assert_array_equal(again, Y)


#: Knobs of each strategy, a value other than the default, and the data that reads them: the
#: dense fit (40 points), the sparse one (700 points: more than dense_max_rows rows), the
#: k-means anchors and the UMAP init.
KNOBS = {
    "dense": {"radius_every": 3, "early_exaggeration": 2.0, "dense_max_rows": 16},
    "sparse": {
        "sparse_radius_every": 4,
        "candidate_refresh": 7,
        "candidates_per_k": 2.0,
        "negatives": 3,
        "early_exaggeration": 2.0,
        "dense_max_rows": 4096,
    },
    "kmeans": {"kmeans_iter": 1},
    "umap": {"umap_n_neighbors": 4},
}
BASE = {
    "dense": {},
    "sparse": {},
    "kmeans": {"anchors_method": "kmeans", "anchors_per_cluster": 4},
    "umap": {"init": "umap"},
}


@pytest.mark.parametrize("case", list(KNOBS))
def test_every_knob_is_read_and_reported(make_blobs, case: str) -> None:
    """Each knob that changes a layout is a parameter: the fit reads it (another value, another
    layout; a knob of the other strategy changes nothing), params_used_ reports it, and a refit
    with params_used_ gives the same layout."""
    X, labels = make_blobs(100, 7, dim=32, spread=3.0, seed=3)  # 700 points, overlapping
    if case != "sparse":
        X, labels = X[:40], np.unique(labels[:40], return_inverse=True)[1]
    if case == "kmeans":  # two clusters of about 20: Lloyd takes a few iterations
        labels = labels % 2
    model = ClusterPlot(**FAST, **BASE[case])
    Y = model.fit_transform(X, labels)
    used = model.params_used_
    np.testing.assert_array_equal(ClusterPlot(**used.model_dump()).fit_transform(X, labels), Y)
    for name, value in KNOBS[case].items():
        changed = ClusterPlot(**FAST, **BASE[case], **{name: value})
        Y_changed = changed.fit_transform(X, labels)
        assert getattr(changed.params_used_, name) == value
        assert not np.array_equal(Y_changed, Y), name
    # the other strategy's knobs are not read
    others = KNOBS["sparse" if case == "dense" else "dense"]
    unread = {k: v for k, v in others.items() if k not in KNOBS[case] and k != "dense_max_rows"}
    if case in ("dense", "sparse"):
        same = ClusterPlot(**FAST, **BASE[case], **unread).fit_transform(X, labels)
        np.testing.assert_array_equal(same, Y)


def test_single_cluster_and_arbitrary_labels(blobs) -> None:
    X, _ = blobs
    Y = ClusterPlot(**FAST).fit_transform(X, np.full(len(X), 7))
    assert np.isfinite(Y).all()
    Y = ClusterPlot(**FAST).fit_transform(X, np.where(np.arange(len(X)) % 2, 100, -5))
    assert np.isfinite(Y).all()


def _real_items(sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Real guesses of tests/data/demo10: the first ``n`` guesses of successive preambles."""
    from clustviz.data import discover_datasets, load_dataset

    dataset = load_dataset(discover_datasets(DEMO10)[0])
    views = [dataset.view(p) for p in dataset.preambles]
    return [
        (view.X[:n], np.unique(view.labels[:n], return_inverse=True)[1])
        for view, n in zip(views * len(sizes), sizes, strict=False)
    ]


@pytest.mark.parametrize(
    ("mode", "backend"), [("gradient", "numba"), ("gradient", "torch"), ("greedy", "auto")]
)
def test_same_answer_alone_or_batched(make_blobs, mode: str, backend: str) -> None:
    """Any preamble, from the minimum size up, fitted alone and inside batches with tiny and
    large companions, gets the same layout (within 1e-4 of its extent); with either backend
    (the large companion's pair terms run in it)."""
    items = _real_items([3, 4, 6, 9, 12, 20, 40, 40, 40]) + [
        make_blobs(n, c, dim=576, seed=s)
        for s, (n, c) in enumerate([(8, 3), (5, 5), (2, 3), (10, 4)])
    ]
    large = make_blobs(100, 7, dim=576, seed=9)  # 700 rows: the large path in gradient mode
    model = ClusterPlot(mode=mode, backend=backend, **FAST)
    alone = [model.fit_transform_many([item], compute_hulls=False)[0] for item in items]
    everyone = list(range(len(items)))
    for members in [everyone, [*everyone[::-1], -1], [0, -1, len(items) - 1]]:
        batch = [items[i] if i >= 0 else large for i in members]
        results = model.fit_transform_many(batch, compute_hulls=False)
        for i, result in zip(members, results, strict=True):
            if i < 0:
                continue
            expected = alone[i].embedding
            extent = float(np.ptp(expected, axis=0).max())
            np.testing.assert_allclose(result.embedding, expected, rtol=0, atol=1e-4 * extent)
            assert result.hulls == []


def test_params_model() -> None:
    params = ClusterPlotParams(show_fig=True, class_to_label={0: "a"})
    assert params.k == 16 and params.mode == "gradient"
    used, notes = params.resolve(5)
    assert used.k == 4 and notes
    with pytest.raises(ValueError):
        ClusterPlotParams(unknown=1)
    schema = ClusterPlotParams.model_json_schema()
    assert "no effect on the layout" in schema["properties"]["show_fig"]["description"]


def test_umap_init(blobs) -> None:
    X, labels = blobs
    model = ClusterPlot(init="umap", **FAST)
    Y = model.fit_transform(X, labels)
    assert Y.shape == (len(X), 2) and np.isfinite(Y).all()


@pytest.mark.skipif(not DEMO10.is_dir(), reason="tests/data/demo10 not built")
def test_demo_fixture() -> None:
    from clustviz.data import discover_datasets, load_dataset
    from clustviz.metrics import knn_preservation

    dataset = load_dataset(discover_datasets(DEMO10)[0])
    views = [dataset.view(p) for p in dataset.preambles[:4]]
    results = ClusterPlot(device="cpu").fit_transform_many([(v.X, v.labels) for v in views])
    for view, result in zip(views, results, strict=True):
        assert result.embedding.shape == (view.n_points, 2)
        assert result.discrepancy_after["mean"] <= result.discrepancy_before["mean"]
        assert knn_preservation(view.X, result.embedding) > 0.4
        assert len(result.hulls) == view.n_clusters


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests a machine without CUDA")
def test_our_own_errors_pass_through_unwrapped(blobs) -> None:
    """A device or backend that cannot run is ``UnavailableError`` with its own code, not a
    ``projection_failed`` wrapping it."""
    from clustviz.errors import UnavailableError

    X, labels = blobs
    with pytest.raises(UnavailableError) as error:
        ClusterPlot(**(FAST | {"device": "cuda"})).fit_transform_many([(X, labels)])
    assert error.value.code == "device_unavailable"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(blobs) -> None:
    X, labels = blobs
    cpu = ClusterPlot(**FAST).fit_transform(X, labels)
    model = ClusterPlot(**(FAST | {"device": "cuda"}))
    cuda = model.fit_transform(X, labels)
    assert model.result_.device.startswith("cuda")
    np.testing.assert_allclose(cuda, cpu, atol=1e-2 * np.ptp(cpu))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_large_path_matches_cpu_quality(make_blobs) -> None:
    """The large-n path on CUDA (distance blocks for the 2-D search, the torch backend on the
    device). Its random pairs come from the device's generator, so layouts differ from the
    CPU's; what they achieve must not."""
    from clustviz.metrics import knn_preservation

    X, labels = make_blobs(90, 8, dim=32, spread=2.5, seed=2)  # 720 points: the large path
    results = {}
    for device in ("cpu", "cuda"):
        model = ClusterPlot(**(FAST | {"device": device}))
        Y = model.fit_transform(X, labels)
        results[device] = (Y, model.result_)
    Y, result = results["cuda"]
    assert result.device.startswith("cuda") and np.isfinite(Y).all()
    # (on CPU: label-level 0.0119 -> 0.0084, kNN preservation 0.24)
    assert result.discrepancy_after["label_mean"] < result.discrepancy_before["label_mean"]
    cpu_knn = knn_preservation(X, results["cpu"][0])
    assert knn_preservation(X, Y) >= cpu_knn - 0.05
