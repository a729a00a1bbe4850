"""Real-size quality check (slow): every demo preamble (122 × 40 LM guesses, 576-d).

The claims of the benchmark, as assertions: clusterplot keeps the label-level kNN overlap of
high-D far better than t-SNE and UMAP (measured by clustviz.metrics, which shares no code with
the layout), better than UMAP on nearly every preamble, while keeping nearest-neighbour
preservation at t-SNE's level, and its optimisation improves on its own init.
Run with: scripts/test -m slow
"""

from __future__ import annotations

import numpy as np
import pytest
from support import REPO

from clustviz import get_projector
from clustviz.data import discover_datasets, load_dataset
from clustviz.metrics import cluster_overlap_discrepancy, knn_preservation

pytestmark = pytest.mark.slow


def test_clusterplot_beats_tsne_and_umap_on_real_preambles() -> None:
    dataset = load_dataset(discover_datasets(REPO / "data" / "demo")[0])
    views = [dataset.view(text) for text in dataset.preambles]
    layouts = get_projector("clusterplot").fit_transform_many(  # type: ignore[attr-defined]
        [(view.X, view.labels) for view in views], compute_hulls=False
    )
    overlap: dict[str, list[float]] = {"clusterplot": [], "tsne": [], "umap": []}
    knn: dict[str, list[float]] = {"clusterplot": [], "tsne": [], "umap": []}
    for view, layout in zip(views, layouts, strict=True):
        embeddings = {
            "clusterplot": layout.embedding,
            "tsne": get_projector("tsne").fit_transform(view.X),
            "umap": get_projector("umap").fit_transform(view.X),
        }
        for name, Y in embeddings.items():
            overlap[name].append(cluster_overlap_discrepancy(view.X, Y, view.labels)["mean"])
            knn[name].append(knn_preservation(view.X, Y))
        after, before = layout.discrepancy_after["mean"], layout.discrepancy_before["mean"]
        assert after <= before + 1e-6
    mean = {name: float(np.mean(values)) for name, values in overlap.items()}
    assert mean["clusterplot"] <= 0.8 * mean["tsne"]  # ≥ 20 % below t-SNE
    assert mean["clusterplot"] <= 0.65 * mean["umap"]  # ≥ 35 % below UMAP
    beats_umap = np.mean(np.array(overlap["clusterplot"]) < np.array(overlap["umap"]))
    assert beats_umap >= 0.9
    assert np.mean(knn["clusterplot"]) >= 0.95 * np.mean(knn["tsne"])
