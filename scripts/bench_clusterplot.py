"""Benchmark of clustviz.clusterplot (not a test): prints tables, ratios measured in one run.

Original's cost (DESIGN.md §4, ormalkai/ClusterPlot ``fit_transform`` on 2 cores, after JIT
warm-up): n=300: 1.6–5.1 s · n=1000: 8.9–25 s · n=3000: 51–276 s (1.65 GB).
Targets (DESIGN.md §6): ≥ 30× at n=1000, ≥ 100× at n=3000; a clamp-scale batch (3,085 × 40)
in < 60 s and ≥ 20× faster than looping single fits; quality of the demo preambles.

Times are medians of ``--repeat`` runs (other jobs may share the cores: ``uptime`` is printed).
Layout times exclude the hulls (the original's ``fit_transform`` draws none); hull time is
printed apart.

    python scripts/bench_clusterplot.py [--quick] [--threads 2] [--sizes 300 1000 3000]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from clustviz.clusterplot import ClusterPlot
from clustviz.metrics import cluster_overlap_discrepancy, knn_preservation

#: DESIGN.md §4: the original's fit_transform on 2 cores, (low, high) seconds.
ORIGINAL = {300: (1.6, 5.1), 1000: (8.9, 25.0), 3000: (51.0, 276.0)}
CLUSTERS = {300: 8, 1000: 15, 3000: 30}
#: 768-d mixtures, centres at scale 0.4; spread 0.6 → near-singleton BIRCH anchors (A ≈ n),
#: spread 0.305 → about n/3 anchors (the leader pass's threshold is 0.3 in input units).
SPREADS = ((0.6, "near-singleton"), (0.305, "~n/3"))


def mixture(
    n: int, C: int, dim: int, spread: float, seed: int, centre_scale: float = 0.4
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, n)
    centres = rng.normal(size=(C, dim)) / np.sqrt(dim) * centre_scale
    X = centres[labels] + rng.normal(size=(n, dim)) / np.sqrt(dim) * spread
    return X.astype(np.float32), labels


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def bench_sizes(sizes: list[int], inits: list[str], repeat: int, umap_max_n: int) -> None:
    print(f"\n## single fits (768-d mixtures; {load()})")
    print(
        "| n | C | anchors | init | A | layout s (median) | hulls s | vs original low–high "
        "| before→after mean abs(R_H-R_L) | maxrss MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        C = CLUSTERS.get(n, 15)
        for spread, kind in SPREADS:
            X, labels = mixture(n, C, 768, spread, seed=n)
            for init in inits:
                if init == "umap" and n > umap_max_n:
                    continue
                model = ClusterPlot(init=init, device="cpu")
                model.fit_transform_many([(X, labels)], compute_hulls=False)  # warm-up
                elapsed, out = timed(
                    lambda m=model, item=(X, labels): m.fit_transform_many(
                        [item], compute_hulls=False
                    ),
                    repeat if n < 3000 else max(1, repeat - 1),
                )
                (result,) = out  # type: ignore[misc]
                start = time.perf_counter()
                ClusterPlot(init=init, device="cpu").fit_transform(X, labels)
                hulls = time.perf_counter() - start - elapsed
                lo, hi = ORIGINAL.get(n, (float("nan"),) * 2)
                before, after = result.discrepancy_before["mean"], result.discrepancy_after["mean"]
                print(
                    f"| {n} | {C} | {kind} | {init} | {len(result.anchors)} | {elapsed:.2f} | "
                    f"{max(hulls, 0):.2f} | {lo / elapsed:.0f}×–{hi / elapsed:.0f}× | "
                    f"{before:.4f}→{after:.4f} | {maxrss_mb():.0f} |",
                    flush=True,
                )


def bench_batch(items, label: str, loop_sample: int, repeat: int) -> None:
    model = ClusterPlot(device="cpu")
    model.fit_transform_many(items[:64], compute_hulls=False)  # warm-up
    batched, _ = timed(lambda: model.fit_transform_many(items, compute_hulls=False), repeat)
    sample = items[:loop_sample]
    model.fit_transform_many(sample[:1], compute_hulls=False)
    loop_one, _ = timed(
        lambda: [model.fit_transform_many([item], compute_hulls=False) for item in sample], 1
    )
    looped = loop_one / len(sample) * len(items)
    print(
        f"| {label} | {len(items)} | {batched:.2f} | {1000 * batched / len(items):.1f} | "
        f"{looped:.1f} (loop of {len(sample)}, extrapolated) | {looped / batched:.0f}× | "
        f"{maxrss_mb():.0f} |",
        flush=True,
    )


def quality(views) -> None:
    from sklearn.manifold import TSNE
    from umap import UMAP

    items = [(v.X, v.labels) for v in views]
    results = ClusterPlot(device="cpu").fit_transform_many(items, compute_hulls=False)
    init_only = ClusterPlot(device="cpu", n_steps=0).fit_transform_many(items, compute_hulls=False)
    rows: dict[str, list[tuple[float, float]]] = {
        "clusterplot": [],
        "clusterplot init (n_steps=0)": [],
        "tsne": [],
        "umap": [],
    }
    lowered = 0
    for view, result, init in zip(views, results, init_only, strict=True):
        lowered += result.discrepancy_after["mean"] < result.discrepancy_before["mean"]
        layouts = {"clusterplot": result.embedding, "clusterplot init (n_steps=0)": init.embedding}
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
    print(f"\n## quality on {len(views)} demo preambles (k=10; {load()})")
    print("| projector | label-level overlap mean | knn preservation | clusterplot better on |")
    print("|---|---|---|---|")
    for name, a in arr.items():
        better = (arr["clusterplot"][:, 0] < a[:, 0]).mean() if name != "clusterplot" else None
        share = "—" if better is None else f"{better:.0%}"
        print(f"| {name} | {a[:, 0].mean():.4f} | {a[:, 1].mean():.3f} | {share} |")
    cp = arr["clusterplot"][:, 0].mean()
    print(
        f"overlap vs t-SNE: {1 - cp / arr['tsne'][:, 0].mean():+.0%} lower; vs UMAP: "
        f"{1 - cp / arr['umap'][:, 0].mean():+.0%} lower; sub-cluster mean abs(R_H-R_L) "
        f"lowered below the init's on {lowered}/{len(views)}; knn preservation "
        f"{arr['clusterplot'][:, 1].mean() / arr['clusterplot init (n_steps=0)'][:, 1].mean():.3f}"
        "× the init's"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--inits", nargs="*", default=["torch", "umap"])
    parser.add_argument("--umap-max-n", type=int, default=300, help="largest n with umap init")
    parser.add_argument("--no-clamp", action="store_true", help="skip the 3,085 × 40 batch")
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--data", type=Path, default=Path("data/demo"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {load()}")
    sizes = args.sizes if args.sizes is not None else ([300] if args.quick else [300, 1000, 3000])
    bench_sizes(sizes, args.inits, args.repeat, args.umap_max_n)
    print(f"\n## batches (hulls off; {load()})")
    print("| batch | preambles | batched s | ms/preamble | looped s | ratio | maxrss MB |")
    print("|---|---|---|---|---|---|---|")
    views = []
    if args.data.is_dir():
        from clustviz.data import discover_datasets, load_dataset

        dataset = load_dataset(discover_datasets(args.data)[0])
        views = [dataset.view(p) for p in dataset.preambles]
        if args.quick:
            views = views[:20]
        bench_batch([(v.X, v.labels) for v in views], f"demo ({args.data})", 30, args.repeat)
    if not (args.no_clamp or args.quick):
        rng = np.random.default_rng(0)
        items = []
        for i in range(3085):
            X, labels = mixture(40, int(rng.integers(5, 24)), 768, 1.0, seed=i, centre_scale=4.0)
            items.append((X, labels))
        bench_batch(items, "clamp-scale synthetic 3085×40×768", 100, max(1, args.repeat - 1))
    if views and not args.no_quality:
        quality(views)
    print(f"\npeak RSS {maxrss_mb():.0f} MB; {load()}")


if __name__ == "__main__":
    main()
