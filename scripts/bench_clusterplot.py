"""Benchmark of clustviz.clusterplot (not a test): prints tables.

Original's cost (DESIGN.md §4, ormalkai/ClusterPlot on 2 cores, after JIT warm-up):
n=300: 1.6–5.1 s · n=1000: 8.9–25 s · n=3000: 51–276 s (1.65 GB).

    python scripts/bench_clusterplot.py [--quick] [--sizes 1000 3000] [--clamp] [--quality]
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings
from pathlib import Path

import numpy as np

from clustviz.clusterplot import ClusterPlot
from clustviz.metrics import cluster_overlap_discrepancy, knn_preservation

ORIGINAL = {300: (1.6, 5.1), 1000: (8.9, 25.0), 3000: (51.0, 276.0)}


def mixture(n: int, C: int, dim: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, n)
    centres = rng.normal(size=(C, dim)) / np.sqrt(dim) * 4.0
    X = centres[labels] + rng.normal(size=(n, dim)) / np.sqrt(dim) * spread
    return X.astype(np.float32), labels


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_sizes(sizes: list[int], inits: list[str]) -> None:
    print("\n| n | C | anchors | init | A | time s | vs original (min–max) | maxrss MB |")
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        C = {300: 8, 1000: 15, 3000: 30}.get(n, 15)
        # spread 0.2: near-singleton BIRCH anchors (A ≈ n); spread 0.05: ~n/3 anchors
        for spread, kind in ((0.6, "near-singleton"), (0.12, "~n/3")):
            X, labels = mixture(n, C, 768, spread, seed=n)
            for init in inits:
                model = ClusterPlot(init=init, device="cpu")
                start = time.perf_counter()
                model.fit_transform(X, labels)
                elapsed = time.perf_counter() - start
                lo, hi = ORIGINAL.get(n, (float("nan"),) * 2)
                print(
                    f"| {n} | {C} | {kind} | {init} | {len(model.result_.anchors)} | "
                    f"{elapsed:.2f} | {lo / elapsed:.0f}–{hi / elapsed:.0f}× | {maxrss_mb():.0f} |"
                )


def bench_batch(items, label: str, loop_sample: int) -> None:
    model = ClusterPlot(device="cpu")
    start = time.perf_counter()
    model.fit_transform_many(items, compute_hulls=False)
    batched = time.perf_counter() - start
    sample = items[:loop_sample]
    start = time.perf_counter()
    for X, labels in sample:
        ClusterPlot(device="cpu").fit_transform(X, labels)
    looped = (time.perf_counter() - start) / len(sample) * len(items)
    print(
        f"| {label} | {len(items)} | {batched:.1f} | {looped:.1f} (loop of {len(sample)}, "
        f"extrapolated) | {looped / batched:.0f}× | {maxrss_mb():.0f} |"
    )


def quality(views) -> None:
    from sklearn.manifold import TSNE
    from umap import UMAP

    results = ClusterPlot(device="cpu").fit_transform_many(
        [(v.X, v.labels) for v in views], compute_hulls=False
    )
    rows: dict[str, list[tuple[float, float]]] = {"clusterplot": [], "tsne": [], "umap": []}
    lowered = 0
    for view, result in zip(views, results, strict=True):
        lowered += result.discrepancy_after["mean"] < result.discrepancy_before["mean"]
        layouts = {"clusterplot": result.embedding}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layouts["tsne"] = TSNE(random_state=1871).fit_transform(view.X)
            layouts["umap"] = UMAP(random_state=1871).fit_transform(view.X)
        for name, Y in layouts.items():
            rows[name].append(
                (
                    cluster_overlap_discrepancy(view.X, Y, view.labels)["mean"],
                    knn_preservation(view.X, Y),
                )
            )
    arr = {name: np.array(v) for name, v in rows.items()}
    print(f"\nquality on {len(views)} preambles (k=10)")
    print("| projector | overlap mean | knn preservation | clusterplot better on |")
    print("|---|---|---|---|")
    for name, a in arr.items():
        better = (arr["clusterplot"][:, 0] < a[:, 0]).mean() if name != "clusterplot" else 1.0
        print(f"| {name} | {a[:, 0].mean():.4f} | {a[:, 1].mean():.3f} | {better:.0%} |")
    cp = arr["clusterplot"][:, 0].mean()
    print(
        f"overlap vs tsne: {1 - cp / arr['tsne'][:, 0].mean():+.0%} lower; vs umap: "
        f"{1 - cp / arr['umap'][:, 0].mean():+.0%} lower; R_H-R_L lowered vs init on "
        f"{lowered}/{len(views)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--inits", nargs="*", default=["torch", "umap"])
    parser.add_argument("--clamp", action="store_true", help="synthetic 3,085 × 40 × 768 batch")
    parser.add_argument("--quality", action="store_true")
    parser.add_argument("--data", type=Path, default=Path("data/demo"))
    args = parser.parse_args()
    sizes = args.sizes if args.sizes is not None else ([300] if args.quick else [300, 1000, 3000])
    bench_sizes(sizes, args.inits)
    print("\n| batch | preambles | batched s | looped s | ratio | maxrss MB |")
    print("|---|---|---|---|---|---|")
    views = []
    if args.data.is_dir():
        from clustviz.data import discover_datasets, load_dataset

        dataset = load_dataset(discover_datasets(args.data)[0])
        views = [dataset.view(p) for p in dataset.preambles]
        if args.quick:
            views = views[:20]
        bench_batch(
            [(v.X, v.labels) for v in views], f"demo ({args.data})", 10 if args.quick else 30
        )
    if args.clamp or not args.quick:
        rng = np.random.default_rng(0)
        items = []
        for i in range(3085):
            X, labels = mixture(40, int(rng.integers(5, 24)), 768, 1.0, seed=i)
            items.append((X, labels))
        bench_batch(items, "clamp-scale synthetic 3085×40×768", 100)
    if views and (args.quality or not args.quick):
        quality(views)


if __name__ == "__main__":
    main()
