"""Small synthetic data with known cluster structure."""

from __future__ import annotations

import numpy as np
import pytest


def make_blobs(
    n_per: int = 10, n_clusters: int = 4, dim: int = 16, spread: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around random centres; labels 0..C-1, points shuffled."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim)) * 2.0
    labels = np.repeat(np.arange(n_clusters), n_per)
    X = centres[labels] + rng.normal(size=(labels.size, dim)) * spread
    order = rng.permutation(labels.size)
    return X[order].astype(np.float32), labels[order]


@pytest.fixture
def blobs() -> tuple[np.ndarray, np.ndarray]:
    return make_blobs()


@pytest.fixture(name="make_blobs")
def make_blobs_fixture():  # type: ignore[no-untyped-def]
    """The generator itself, for tests that need several data sets."""
    return make_blobs


FAST = {"init_steps": 60, "n_steps": 40}


@pytest.fixture(params=["torch", "numba"])
def backend(request):  # type: ignore[no-untyped-def]
    """Each compute backend of the large-n path (:mod:`clustviz.clusterplot.backends`): the
    torch one is the GPU's code, run here on the CPU. numba is a dependency: a backend that
    fails to compile is an error here, not a skip (auto would fall back to torch silently)."""
    import torch

    from clustviz.clusterplot.backends import resolve_backend

    return resolve_backend(request.param, torch.device("cpu"))
