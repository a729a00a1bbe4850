"""The projector contract, over the whole registry: shape, dtype, input order, determinism,
small-n clamping and refusal, parameter validation, and a quality floor on known structure."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from clustviz import available_projectors, get_projector
from clustviz.errors import InvalidInputError
from clustviz.metrics import silhouette
from clustviz.projectors import ProjectorName, get_spec, params_model

# the built-in projectors: a plugin registered by another test module (tests/broken_projector.py)
# fails this contract on purpose
NAMES = list(typing.get_args(ProjectorName))


def blobs(n: int = 40, n_blobs: int = 4, dim: int = 32, seed: int = 0):  # type: ignore[no-untyped-def]
    """Well-separated blobs with interleaved rows (blob of row i = i % n_blobs)."""
    rng = np.random.default_rng(seed)
    blob = np.arange(n) % n_blobs
    centers = rng.normal(scale=12.0, size=(n_blobs, dim))
    X = (centers[blob] + rng.normal(size=(n, dim))).astype(np.float32)
    return X, blob


def fit(name: str, X: np.ndarray, labels: np.ndarray, **params):  # type: ignore[no-untyped-def]
    projector = get_projector(name, **params)
    return projector, projector.fit_transform(X, labels if get_spec(name).uses_labels else None)


def test_registry_lists_the_notebook_projectors() -> None:
    assert available_projectors()[:5] == ["tsne", "umap", "trimap", "pacmap", "clusterplot"]
    assert available_projectors()[:5] == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_finite_and_input_order(name: str) -> None:
    X, blob = blobs()
    projector, Y = fit(name, X, blob)
    assert Y.shape == (40, 2) and Y.dtype == np.float32 and np.isfinite(Y).all()
    assert projector.embedding_ is Y
    # Row i of the output belongs to row i's blob: each point is nearest its own blob's centre.
    centres = np.stack([Y[blob == b].mean(axis=0) for b in range(4)])
    nearest = np.argmin(((Y[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest == blob).mean() >= 0.95
    assert silhouette(Y, blob) > 0.5  # quality floor on obvious structure


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_result_other_seed_differs(name: str) -> None:
    X, blob = blobs(seed=1)
    _, first = fit(name, X, blob, random_state=7)
    _, again = fit(name, X, blob, random_state=7)
    np.testing.assert_array_equal(first, again)
    if name in ("tsne", "clusterplot"):
        # Both start from a deterministic PCA init and optimise without sampling: any seed,
        # same layout (clusterplot's seed matters in its greedy mode).
        return
    _, other = fit(name, X, blob, random_state=8)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("name", NAMES)
def test_small_n_is_clamped_and_reported(name: str) -> None:
    minimum = params_model(name).min_points
    X, blob = blobs(n=minimum, n_blobs=2, seed=2)
    projector, Y = fit(name, X, blob)
    assert Y.shape == (minimum, 2) and np.isfinite(Y).all()
    used = projector.params_used_.model_dump()
    for note in projector.notes_:
        field = note.split(" ")[0]
        assert field in used and f"to {used[field]} for n={minimum}" in note


@pytest.mark.parametrize("name", NAMES)
def test_below_minimum_is_refused(name: str) -> None:
    minimum = params_model(name).min_points
    X, blob = blobs(n=minimum - 1, n_blobs=2)
    with pytest.raises(InvalidInputError) as err:
        fit(name, X, blob)
    assert err.value.code == "too_few_points"
    assert f"at least {minimum} points, got n={minimum - 1}" in err.value.message


@pytest.mark.parametrize("name", NAMES)
def test_unknown_or_out_of_bounds_params_name_the_field(name: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        get_projector(name, not_a_param=3)
    assert err.value.code == "invalid_params" and "not_a_param=3" in err.value.message
    with pytest.raises(InvalidInputError) as err:
        get_projector(name, random_state=-1)
    assert "random_state=-1" in err.value.message


def test_unknown_projector() -> None:
    with pytest.raises(InvalidInputError) as err:
        get_projector("nope")
    assert err.value.code == "unknown_projector" and "'nope'" in err.value.message


@pytest.mark.parametrize("name", ["tsne", "umap"])
def test_bad_input_is_rejected(name: str) -> None:
    X, _ = blobs()
    X[3, 1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        get_projector(name).fit_transform(X)
    with pytest.raises(InvalidInputError, match="2-D"):
        get_projector(name).fit_transform(X[0])


def test_notebook_defaults() -> None:
    assert params_model("tsne")().random_state == 1871
    pacmap = params_model("pacmap")()
    assert (pacmap.n_neighbors, pacmap.MN_ratio, pacmap.FP_ratio) == (8, 0.5, 2.0)
    umap = params_model("umap")()
    assert (umap.n_neighbors, umap.min_dist, umap.random_state) == (15, 0.1, 1871)


def test_pacmap_tiny_input_is_clamped_so_it_cannot_hang() -> None:
    # PaCMAP issue #127: 8 neighbours + 16 far pairs on few points loops forever. At n=10 the
    # clamp must leave the rejection sampler enough non-neighbours.
    used, notes = params_model("pacmap")().resolve(10)
    far_pairs = round(used.n_neighbors * used.FP_ratio)
    assert used.n_neighbors + far_pairs + 1 < 10 and notes
