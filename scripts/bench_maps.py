#!/usr/bin/env python
"""Global maps: time, quality and memory of every method × fit_on, in one run.

1. The demo dataset (``data/``, 4,880 rows): for each method and each ``fit_on`` it supports,
   the fit's wall time (stages: prepare, fit, place), trustworthiness and continuity at k = 10
   on a 2,000-row sample, the per-preamble 10-NN preservation of the map's rows, and the
   process's peak RSS during that map. Each method is warmed up first by a quick map of 4,200
   rows (numba compiles on a process's first fit; a service worker is warm), and that time
   is printed apart. Then the per-preamble 10-NN of UMAP layouts of each preamble alone on the same
   preambles (the baseline a map's rows are compared with), and TorchDR's UMAP against
   umap-learn's on the CPU, both measured in this run.
2. With ``--clamp``: the clamp-scale synthetic dataset (3,085 × 40 × 768, float64 on disk, as
   ``scripts/bench_batch.py`` writes it), loaded, then its default map (``MapRequest()``) with
   a progress bar; wall time and peak RSS (``--clamp-methods`` maps others too).

Peaks are VmHWM, reset before each map (/proc/self/clear_refs). Timings depend on the load of
the machine: compare only figures of one run.

Usage: .venv/bin/python scripts/bench_maps.py [--methods umap,opentsne] [--clamp]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import reset_peak, rss_mb

from clustviz.data import Dataset, discover_datasets, load_dataset
from clustviz.data.synthetic import write_synthetic_dataset
from clustviz.maps import (
    MapProgress,
    MapRequest,
    available_map_methods,
    fit_dataset_map,
    fit_map,
    get_map_spec,
)
from clustviz.maps.quality import QUALITY_PREAMBLES
from clustviz.metrics import knn_preservation
from clustviz.projectors import DEFAULT_SEED, get_projector

REPO = Path(__file__).resolve().parents[1]
FIT_ONS = ("points", "cluster_means", "sample")
#: Rows fitted by fit_on="sample" on the demo set (a quarter of it).
DEMO_SAMPLE = 1200


def reset_self() -> None:
    """Reset this process's peak RSS to its current RSS."""
    reset_peak(os.getpid())


def rss_self() -> tuple[float, float]:
    """(peak since the last reset, current) RSS of this process, MB."""
    return rss_mb(os.getpid())


#: Warm-up maps: few iterations, enough rows for every code path the timed maps take.
WARM_PARAMS = {
    "umap": {"n_epochs": 10},
    "opentsne": {"n_iter": 10, "early_exaggeration_iter": 10, "transform_n_iter": 10},
    "pacmap": {"num_iters": (10, 10, 10)},
    "torchdr_umap": {"max_iter": 10},
}
#: umap-learn switches to approximate neighbours (pynndescent, compiled on first use) above
#: 4,096 rows: the warm-up fits more than that.
WARM_ROWS = 4200


def warm_up(method: str, dataset: Dataset) -> float:
    """One quick map of 4,200 rows (fitted, and 50 placed where the method can), so that the
    timed maps do not pay numba's compilation."""
    started = time.perf_counter()
    rows = np.arange(min(WARM_ROWS, dataset.n_rows))
    fit_on = "sample" if get_map_spec(method).has_transform else "points"
    fit_map(
        dataset.embeddings[rows],
        dataset.rows["cluster_id"].to_numpy()[rows],
        MapRequest(
            method=method,
            fit_on=fit_on,
            sample_size=len(rows) - 50,
            params=WARM_PARAMS.get(method, {}),
        ),
    )
    return time.perf_counter() - started


def demo(methods: list[str]) -> None:
    source = next(s for s in discover_datasets(REPO / "data") if s.error is None)
    dataset = load_dataset(source)
    print(
        f"demo dataset {dataset.id}: {dataset.n_rows} rows × {dataset.dim}, "
        f"{len(dataset.preambles)} preambles, {dataset.n_clusters_total()} clusters"
    )
    print(
        f"{'method':<13} {'fit_on':<14} {'n_fit':>5} {'warm s':>6} {'total s':>7} "
        f"{'fit s':>6} {'place s':>7} {'trust':>6} {'contin':>6} {'pre-kNN':>7} {'peak MB':>7}"
    )
    totals: dict[tuple[str, str], float] = {}
    for method in methods:
        warm = warm_up(method, dataset)
        for fit_on in FIT_ONS:
            if fit_on not in get_map_spec(method).fit_ons:
                continue
            reset_self()
            result = fit_dataset_map(
                dataset, MapRequest(method=method, fit_on=fit_on, sample_size=DEMO_SAMPLE)
            )
            timings, quality = result.timings, result.quality
            totals[method, fit_on] = timings["total"]
            print(
                f"{method:<13} {fit_on:<14} {result.n_fitted:>5} {warm:>6.1f} "
                f"{timings['total']:>7.2f} {timings['fit']:>6.2f} "
                f"{timings.get('place', 0.0):>7.2f} {quality['trustworthiness']:>6.3f} "
                f"{quality['continuity']:>6.3f} {quality['preamble_knn']:>7.3f} "
                f"{rss_self()[0]:>7.0f}",
                flush=True,
            )
            for note in result.notes:
                if "clamped" in note:
                    print(f"{'':<29}note: {note}")
            warm = 0.0
    baseline(dataset)
    if ("torchdr_umap", "points") in totals and ("umap", "points") in totals:
        ratio = totals["torchdr_umap", "points"] / totals["umap", "points"]
        print(
            f"TorchDR UMAP vs umap-learn, every row on the CPU: "
            f"{totals['torchdr_umap', 'points']:.2f} s vs {totals['umap', 'points']:.2f} s "
            f"(ratio {ratio:.2f})"
        )


def baseline(dataset: Dataset) -> None:
    """Per-preamble 10-NN of UMAP layouts of each preamble alone, on the preambles the maps'
    figure samples (same seed, same draw as clustviz.maps.quality)."""
    rows = [dataset.row_indices(text) for text in dataset.preambles]
    usable = [r for r in rows if len(r) > 2]
    _, preambles_seed = np.random.SeedSequence(DEFAULT_SEED).spawn(2)
    rng = np.random.default_rng(preambles_seed)
    chosen = np.sort(rng.choice(len(usable), min(QUALITY_PREAMBLES, len(usable)), replace=False))
    scores = []
    for i in chosen:
        X = dataset.embeddings[usable[i]]
        scores.append(knn_preservation(X, get_projector("umap").fit_transform(X), 10))
    print(
        f"baseline: UMAP of each preamble alone, pre-kNN {np.mean(scores):.3f} "
        f"over {len(chosen)} preambles"
    )


def clamp(methods: list[str]) -> None:
    from tqdm import tqdm

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        write_synthetic_dataset(root, 3085)
        print(f"clamp-scale synthetic dataset written in {time.perf_counter() - started:.0f} s")
        reset_self()
        started = time.perf_counter()
        dataset = load_dataset(discover_datasets(root)[0])
        print(
            f"loaded {dataset.n_rows} × {dataset.dim} in {time.perf_counter() - started:.1f} s, "
            f"peak {rss_self()[0]:.0f} MB, now {rss_self()[1]:.0f} MB"
        )
        for method in methods:
            request = MapRequest() if method == "default" else MapRequest(method=method)
            reset_self()
            with tqdm(total=1000, desc=f"{request.method} map", unit="‰") as bar:

                def advance(report: MapProgress, bar: tqdm = bar) -> None:
                    bar.set_postfix_str(report.stage)
                    bar.update(int(report.fraction * 1000) - bar.n)

                result = fit_dataset_map(dataset, request, progress=advance)
            print(
                f"clamp {method}: {result.params_used['method']} fit_on "
                f"{result.params_used['fit_on']} (n_fit {result.n_fitted}), "
                f"total {result.timings['total']:.1f} s {result.timings}, "
                f"peak RSS {rss_self()[0]:.0f} MB, trust {result.quality['trustworthiness']:.3f}, "
                f"pre-kNN {result.quality['preamble_knn']:.3f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--methods", default=",".join(available_map_methods()))
    parser.add_argument("--clamp", action="store_true", help="also the clamp-scale default map")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo dataset part")
    parser.add_argument(
        "--clamp-methods",
        default="default",
        help="maps of the clamp set ('default' = MapRequest())",
    )
    args = parser.parse_args()
    if not args.no_demo:
        demo(args.methods.split(","))
    if args.clamp:
        clamp(args.clamp_methods.split(","))


if __name__ == "__main__":
    main()
