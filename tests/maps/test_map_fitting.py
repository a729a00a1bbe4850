"""The map contract, over every method × every fit_on it supports: shape, dtype, finiteness,
row order, determinism, cluster positions, what the result reports, progress, a quality floor
on known structure; and a real dataset (the demo fixture) mapped in its row order."""

from __future__ import annotations

import json
import typing

import numpy as np
import pytest
import torch
from support import DEMO10

from clustviz.data import discover_datasets, load_dataset
from clustviz.maps import (
    GlobalMap,
    MapMethodName,
    MapProgress,
    MapRequest,
    build_map_params,
    fit_dataset_map,
    fit_map,
    get_map_method,
    get_map_spec,
)

METHODS = list(typing.get_args(MapMethodName))
CASES = [
    (method, fit_on)
    for method in METHODS
    for fit_on in ("points", "cluster_means", "sample")
    if fit_on in get_map_spec(method).fit_ons
]
#: Fewer iterations than the defaults: the contract, not the polish, is under test here.
FAST = {
    "umap": {"n_epochs": 100},
    "opentsne": {"n_iter": 150, "early_exaggeration_iter": 100, "transform_n_iter": 50},
    "pacmap": {"num_iters": (50, 50, 100)},
    "torchdr_umap": {"max_iter": 200, "device": "cpu"},
}
N_BLOBS = 8


def blobs(n: int = 480, dim: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated blobs, rows interleaved (row i in blob i % 8), global ids 100, 110, ..."""
    rng = np.random.default_rng(seed)
    blob = np.arange(n) % N_BLOBS
    centres = rng.normal(scale=10.0, size=(N_BLOBS, dim))
    X = (centres[blob] + rng.normal(size=(n, dim))).astype(np.float32)
    return X, 100 + 10 * blob


def preambles(n: int, size: int = 40) -> list[np.ndarray]:
    return [np.arange(start, min(start + size, n)) for start in range(0, n, size)]


def run(method: str, fit_on: str, seed: int = 1871, **extra: typing.Any) -> GlobalMap:
    X, cluster_ids = blobs()
    request = MapRequest(
        method=method, fit_on=fit_on, sample_size=160, params=FAST[method], seed=seed, **extra
    )
    return fit_map(X, cluster_ids, request, preambles=preambles(len(X)))


@pytest.fixture(scope="module")
def maps() -> dict[tuple[str, str], GlobalMap]:
    """Each case fitted once for the tests that only read it."""
    return {(method, fit_on): run(method, fit_on) for method, fit_on in CASES}


@pytest.mark.parametrize(("method", "fit_on"), CASES)
def test_shape_dtype_finite_row_order_and_cluster_positions(
    maps: dict[tuple[str, str], GlobalMap], method: str, fit_on: str
) -> None:
    result = maps[method, fit_on]
    _, cluster_ids = blobs()
    assert result.coords.shape == (480, 2) and result.coords.dtype == np.float32
    assert np.isfinite(result.coords).all()
    assert result.cluster_ids.tolist() == [100 + 10 * b for b in range(N_BLOBS)]
    # positions are the means of each cluster's rows of the map
    expected = np.stack([result.coords[cluster_ids == c].mean(0) for c in result.cluster_ids])
    assert result.cluster_positions.dtype == np.float32
    np.testing.assert_allclose(result.cluster_positions, expected, rtol=1e-5, atol=1e-5)
    # row i is row i: rows are interleaved, and each lies nearest its own blob's position
    # (a sample's fitted and placed rows scattered back to the wrong rows would not: 1/8)
    dist = ((result.coords[:, None, :] - result.cluster_positions[None]) ** 2).sum(-1)
    nearest = result.cluster_ids[dist.argmin(1)]
    # UMAP's transform starts a row at the mean of its n_neighbors fitted rows' positions: with
    # 8 equidistant means all of them are neighbours, and rows are drawn to the middle (a
    # property of that recipe on so few clusters, which the quality figures show too)
    weak = fit_on == "cluster_means" and method in ("umap", "torchdr_umap")
    assert (nearest == cluster_ids).mean() >= (0.3 if weak else 0.95)


@pytest.mark.parametrize(("method", "fit_on"), CASES)
def test_what_the_result_reports(
    maps: dict[tuple[str, str], GlobalMap], method: str, fit_on: str
) -> None:
    result = maps[method, fit_on]
    summary = json.loads(json.dumps(result.summary()))  # JSON-able as it is
    assert summary["method"] == method and summary["fit_on"] == fit_on
    assert summary["seed"] == 1871 and summary["supervised"] is False
    assert summary["n_rows"] == 480 and summary["n_clusters"] == N_BLOBS
    assert summary["n_fitted"] == {"points": 480, "cluster_means": N_BLOBS, "sample": 160}[fit_on]
    for key, value in FAST[method].items():
        assert summary["params"][key] == (list(value) if isinstance(value, tuple) else value)
    stages = {"points": {"fit"}, "cluster_means": {"prepare", "fit", "place"}}
    assert stages.get(fit_on, {"prepare", "fit", "place"}) | {"quality", "total"} == set(
        summary["timings"]
    )
    assert set(summary["versions"]) == set(get_map_spec(method).libraries)
    assert summary["quality"]["k"] == 10 and summary["quality"]["preambles_sampled"] == 12


@pytest.mark.parametrize(("method", "fit_on"), CASES)
def test_same_seed_same_map(
    maps: dict[tuple[str, str], GlobalMap], method: str, fit_on: str
) -> None:
    np.testing.assert_array_equal(run(method, fit_on).coords, maps[method, fit_on].coords)


@pytest.mark.parametrize("method", METHODS)
def test_another_seed_another_map(maps: dict[tuple[str, str], GlobalMap], method: str) -> None:
    assert not np.array_equal(run(method, "points", seed=7).coords, maps[method, "points"].coords)


@pytest.mark.parametrize(("method", "fit_on"), CASES)
def test_quality_floor_on_blobs(
    maps: dict[tuple[str, str], GlobalMap], method: str, fit_on: str
) -> None:
    quality = maps[method, fit_on].quality
    if fit_on == "cluster_means":
        # 8 means fitted, every row placed relative to them: the blobs' layout is all that is
        # fitted, the rows within a blob are placed by their few nearest means
        assert quality["trustworthiness"] > 0.6
        return
    assert quality["trustworthiness"] > 0.85 and quality["continuity"] > 0.85
    assert quality["preamble_knn"] > 0.3


def test_supervised_umap_pulls_clusters_apart() -> None:
    """Blobs that overlap in high-D: the labels separate them in a supervised map."""
    rng = np.random.default_rng(3)
    blob = np.arange(480) % N_BLOBS
    X = (rng.normal(scale=0.5, size=(N_BLOBS, 24))[blob] + rng.normal(size=(480, 24))).astype(
        np.float32
    )
    cluster_ids = 100 + blob

    def separation(supervised: bool) -> float:
        request = MapRequest(
            method="umap", fit_on="points", supervised=supervised, params={"target_weight": 0.9}
        )
        result = fit_map(X, cluster_ids, request)
        from clustviz.metrics import silhouette

        return silhouette(result.coords, cluster_ids)

    assert separation(True) > separation(False) + 0.2


@pytest.mark.parametrize("method", ["opentsne", "torchdr_umap"])
def test_progress_reports_every_stage_and_never_goes_back(method: str) -> None:
    reports: list[MapProgress] = []
    X, cluster_ids = blobs()
    request = MapRequest(method=method, fit_on="sample", sample_size=160, params=FAST[method])
    fit_map(X, cluster_ids, request, progress=reports.append)
    fractions = [report.fraction for report in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert reports[-1].stage == "done"
    stages = [r.stage for r in reports]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == [
        "prepare",
        "fit",
        "place",
        "quality",
        "done",
    ]
    # both report their iterations: fitting and placing move between their start and end
    for stage in ("fit", "place"):
        assert [r for r in reports if r.stage == stage and 0.0 < r.stage_fraction < 1.0]


def test_a_dataset_is_mapped_in_its_row_order() -> None:
    dataset = load_dataset(discover_datasets(DEMO10)[0])
    result = fit_dataset_map(dataset, MapRequest(method="umap", params={"n_epochs": 100}))
    assert result.coords.shape == (dataset.n_rows, 2)
    assert result.notes[0] == f"fit_on auto resolved to 'points' for n_rows={dataset.n_rows}"
    assert result.quality["preambles_sampled"] == len(dataset.preambles)
    # the rows of a preamble in the map are that preamble's rows of the dataset: each
    # cluster's position is the mean of its rows, found by the dataset's own cluster ids
    ids = dataset.rows["cluster_id"].to_numpy()
    biggest = np.bincount(ids).argmax()
    row = int(np.flatnonzero(result.cluster_ids == biggest)[0])
    np.testing.assert_allclose(
        result.cluster_positions[row], result.coords[ids == biggest].mean(0), rtol=1e-5
    )


@pytest.mark.parametrize("method", [m for m in METHODS if get_map_spec(m).has_transform])
def test_rows_placed_by_transform_share_the_fitted_frame(method: str) -> None:
    """The fitted rows placed again by transform land where the fit put them, on average: no
    shift between the frame of the fitted rows and that of the placed ones (openTSNE's
    transform re-centres the fitted embedding in place, a shift of a few % of the extent)."""
    X, _ = blobs()
    adapter = get_map_method(method, build_map_params(method, FAST[method], seed=1871))
    fitted = adapter.fit(X[:240])
    placed = adapter.transform(X[:240])
    extent = float(np.ptp(fitted, axis=0).max())
    assert np.linalg.norm((placed - fitted).mean(0)) < 0.005 * extent


def test_torchdr_leaves_the_global_generators_alone() -> None:
    """TorchDR's own seeding would reseed torch, NumPy and Python globally: ours is local."""
    import random

    torch_state, numpy_state, python_state = (
        torch.random.get_rng_state(),
        np.random.get_state()[1].copy(),
        random.getstate(),
    )
    run("torchdr_umap", "sample")
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)
    assert random.getstate() == python_state


def test_torchdr_map_does_not_depend_on_torch_threads(
    maps: dict[tuple[str, str], GlobalMap],
) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        coords = run("torchdr_umap", "sample").coords
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(coords, maps["torchdr_umap", "sample"].coords)


def test_the_device_a_torchdr_map_ran_on_is_reported(
    maps: dict[tuple[str, str], GlobalMap],
) -> None:
    result = maps["torchdr_umap", "points"]
    assert result.params_used["params"]["device"] == "cpu"  # FAST asks for the CPU
    assert not [note for note in result.notes if "device" in note]
    auto = fit_map(
        *blobs(),
        MapRequest(method="torchdr_umap", fit_on="points", params={"max_iter": 20}),
    )
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert auto.params_used["params"]["device"] == expected
    assert f"device auto resolved to {expected!r}" in auto.notes


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("fit_on", ["points", "sample"])
def test_torchdr_map_on_cuda(maps: dict[tuple[str, str], GlobalMap], fit_on: str) -> None:
    """The CUDA path of the one GPU map method: it runs on the device, keeps the contract
    (shape, dtype, row order, finite values) and is as good as the CPU's map of the same blobs.
    CUDA scatter-adds are atomic, so it is compared by quality, not bit for bit."""
    cpu = maps["torchdr_umap", fit_on]
    X, cluster_ids = blobs()
    request = MapRequest(
        method="torchdr_umap",
        fit_on=fit_on,
        sample_size=160,
        params=FAST["torchdr_umap"] | {"device": "cuda"},
    )
    cuda = fit_map(X, cluster_ids, request, preambles=preambles(len(X)))
    assert cuda.params_used["params"]["device"].startswith("cuda")
    assert cuda.coords.shape == (480, 2) and cuda.coords.dtype == np.float32
    assert np.isfinite(cuda.coords).all()
    dist = ((cuda.coords[:, None, :] - cuda.cluster_positions[None]) ** 2).sum(-1)
    assert (cuda.cluster_ids[dist.argmin(1)] == cluster_ids).mean() >= 0.95
    for measure in ("trustworthiness", "continuity"):
        assert cuda.quality[measure] >= cpu.quality[measure] - 0.05
