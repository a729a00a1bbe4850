#!/usr/bin/env python
"""Map-aligned per-preamble layouts, judged honestly (issue: global maps).

On the demo dataset: one global map of every row (:mod:`clustviz.maps`, ``--map-method``, its
defaults and seed 1871; or ``--map-from`` a saved ``(rows, 2)`` .npy), then for every preamble
and projector an *independent* layout moved onto the preamble's rows of the map by the best
similarity transform (Procrustes: rotation, scale, translation), against the *aligned* layout
(:func:`clustviz.alignment.align_layout`: ClusterPlot's own relaxation with the centroid term for
``clusterplot``, the generic relaxation for the others).
Prints, per projector, in one run on the same layouts:

  * the mean over preambles and clusters of the distance of each cluster's centroid from its
    centroid among the preamble's rows of the map, independent vs aligned, and their ratio
    (target: aligned ≥ 30 % nearer, ratio ≤ 0.70);
  * 10-NN preservation against high-D, independent vs aligned, and their ratio (target ≥ 0.95);
  * the alignment's own time per preamble (median).

Usage: .venv/bin/python scripts/bench_alignment.py [--projectors umap,tsne] [--weight W]
       [--save-map map.npy | --map-from map.npy]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

from clustviz.alignment import (
    GENERIC_WEIGHT,
    AlignParams,
    align_layout,
    centroid_offsets,
    similarity_transform,
)
from clustviz.clusterplot.map_alignment import DEFAULT_WEIGHT as CLUSTERPLOT_WEIGHT
from clustviz.data.discovery import discover_datasets
from clustviz.data.loading import load_dataset
from clustviz.maps import DEFAULT_METHOD, MapRequest, fit_dataset_map
from clustviz.metrics import knn_preservation
from clustviz.projectors import get_projector

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--projectors", default="umap,tsne,pacmap,trimap,clusterplot")
    parser.add_argument("--map-method", default=DEFAULT_METHOD)
    parser.add_argument("--map-from", type=Path, help="a saved (rows, 2) .npy of the map")
    parser.add_argument("--save-map", type=Path, help="save the fitted map as a .npy")
    parser.add_argument("--weight", type=float, help="default: each aligner's own")
    parser.add_argument("--scale", type=float, default=AlignParams().scale)
    parser.add_argument("--steps", type=int, default=AlignParams().steps)
    args = parser.parse_args()
    params = AlignParams(weight=args.weight, scale=args.scale, steps=args.steps)

    dataset = load_dataset(discover_datasets(REPO / "data")[0])
    started = time.perf_counter()
    if args.map_from:
        the_map, source = np.load(args.map_from).astype(np.float64), str(args.map_from)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = fit_dataset_map(dataset, MapRequest(method=args.map_method))
        the_map, source = fitted.coords.astype(np.float64), f"clustviz.maps {args.map_method}"
        if args.save_map:
            np.save(args.save_map, the_map)
    print(
        f"dataset {dataset.name}: {dataset.n_rows} rows, {len(dataset.preambles)} preambles; "
        f"map {source} ({time.perf_counter() - started:.1f} s); {params!r}"
    )
    own = [
        knn_preservation(dataset.view(p).X, the_map[dataset.row_indices(p)], 10)
        for p in dataset.preambles
    ]
    print(
        f"weight {params.weight_or(GENERIC_WEIGHT)} (generic relaxation), "
        f"{params.weight_or(CLUSTERPLOT_WEIGHT)} (clusterplot: its own relaxation)"
    )
    print(f"the map's own rows, 10-NN preservation per preamble: {np.mean(own):.3f}\n")
    print(
        "  projector     centroid dist: indep  aligned  ratio   10-NN: indep  aligned  ratio"
        "   align ms   targets"
    )
    for name in args.projectors.split(","):
        independent, aligned, knn_indep, knn_aligned, times = [], [], [], [], []
        for preamble in dataset.preambles:
            view = dataset.view(preamble)
            rows = the_map[dataset.row_indices(preamble)]
            projector = get_projector(name, random_state=1871)
            layout = projector.fit_transform(view.X, view.labels)
            tick = time.perf_counter()
            moved = align_layout(
                name, view.X, view.labels, layout, rows, params, projector.params_used_
            )
            times.append(1000 * (time.perf_counter() - tick))
            framed = similarity_transform(layout, rows)
            independent.extend(centroid_offsets(framed, rows, view.labels))
            aligned.extend(centroid_offsets(moved, rows, view.labels))
            knn_indep.append(knn_preservation(view.X, framed, 10))
            knn_aligned.append(knn_preservation(view.X, moved, 10))
        dist_ratio = np.mean(aligned) / np.mean(independent)
        knn_ratio = np.mean(knn_aligned) / np.mean(knn_indep)
        met = "met" if dist_ratio <= 0.70 and knn_ratio >= 0.95 else "NOT met"
        print(
            f"  {name:<12} {np.mean(independent):20.3f} {np.mean(aligned):8.3f} "
            f"{dist_ratio:6.3f} {np.mean(knn_indep):14.3f} {np.mean(knn_aligned):8.3f} "
            f"{knn_ratio:6.3f} {statistics.median(times):10.1f}   {met}",
            flush=True,
        )


if __name__ == "__main__":
    main()
