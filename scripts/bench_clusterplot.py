"""Benchmark of clustviz.clusterplot (not a test): what issue 14's "Done when" lists, in one run.

1. one real 40-guess preamble, warm: median of ``--repeat`` fits for ClusterPlot (each
   backend: numba, what ``auto`` takes on the CPU, and torch, the GPU's code) and for UMAP
   (same process, same rows) and their ratio (target: ClusterPlot ≤ 20 ms and < 0.5 × UMAP);
2. batches: the demo set and a clamp-scale synthetic set (3,085 × 40 × 768), batched against
   looping single fits, with each backend;
3. the large path on pooled real guesses (n = 1000 / 3000 rows of the demo set, global
   cluster ids);
4. batching: the largest deviation of any demo preamble fitted inside the batch from the same
   preamble fitted alone, in units of its layout's extent (target < 1e-4);
5. quality on the demo preambles: label-level overlap discrepancy, 10-NN preservation,
   trustworthiness and continuity (k = 10) for ClusterPlot and the four library projectors.

Times exclude the hulls. Other jobs may share the cores: the load average is printed.

    python scripts/bench_clusterplot.py [--repeat 10] [--no-clamp] [--no-quality]
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

from clustviz import get_projector
from clustviz.clusterplot import ClusterPlot
from clustviz.metrics import cluster_overlap_discrepancy, knn_preservation, trustworthiness


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


BACKENDS = ("numba", "torch")


def fit_many(items, **params):
    return ClusterPlot(device="cpu", **params).fit_transform_many(items, compute_hulls=False)


def bench_single(views, repeat: int) -> None:
    view = next(v for v in views if v.n_points == 40)
    umap = get_projector("umap")
    item = [(view.X, view.labels)]
    for _ in range(2):  # warm-up: JIT, first-use costs
        for backend in BACKENDS:
            fit_many(item, backend=backend)
        umap.fit_transform(view.X)
    um, _ = timed(lambda: umap.fit_transform(view.X), repeat)
    print(f"\n## one real preamble (40 guesses), warm, median of {repeat} ({load()})")
    print("| clusterplot backend | clusterplot ms | umap ms | clusterplot / umap |")
    print("|---|---|---|---|")
    for backend in BACKENDS:
        cp, _ = timed(lambda backend=backend: fit_many(item, backend=backend), repeat)
        print(f"| {backend} | {1000 * cp:.1f} | {1000 * um:.1f} | {cp / um:.2f} |", flush=True)


def bench_batch(items, label: str, loop_sample: int, repeat: int, backend: str) -> None:
    fit_many(items[:64], backend=backend)  # warm-up
    batched, _ = timed(lambda: fit_many(items, backend=backend), repeat)
    sample = items[:loop_sample]
    fit_many(sample[:1], backend=backend)
    loop_one, _ = timed(lambda: [fit_many([item], backend=backend) for item in sample], 1)
    looped = loop_one / len(sample) * len(items)
    print(
        f"| {label} | {backend} | {len(items)} | {batched:.2f} | "
        f"{1000 * batched / len(items):.1f} | "
        f"{looped:.1f} (loop of {len(sample)}, extrapolated) | {looped / batched:.0f}× | "
        f"{maxrss_mb():.0f} |",
        flush=True,
    )


def bench_pooled(dataset, sizes: list[int], repeat: int) -> None:
    print(f"\n## large path: pooled real guesses (global cluster ids; {load()})")
    print("| n | clusters | anchors | layout s (median) | before→after label overlap |")
    print("|---|---|---|---|---|")
    rows = dataset.rows
    for n in sizes:
        X = np.ascontiguousarray(dataset.embeddings[:n])
        _, labels = np.unique(rows["cluster_id"].to_numpy()[:n], return_inverse=True)
        fit_many([(X, labels)])  # warm-up
        elapsed, out = timed(lambda X=X, labels=labels: fit_many([(X, labels)]), repeat)
        (result,) = out  # type: ignore[misc]
        before = result.discrepancy_before["label_mean"]
        after = result.discrepancy_after["label_mean"]
        print(
            f"| {n} | {labels.max() + 1} | {len(result.anchors)} | {elapsed:.2f} | "
            f"{before:.4f}→{after:.4f} |",
            flush=True,
        )


def bench_batching(views) -> None:
    items = [(v.X, v.labels) for v in views]
    print(f"\n## alone vs batched ({len(items)} demo preambles in one batch)")
    for backend in BACKENDS:
        batched = fit_many(items, backend=backend)
        worst = 0.0
        for item, together in zip(items, batched, strict=True):
            (alone,) = fit_many([item], backend=backend)
            extent = float(np.ptp(alone.embedding, axis=0).max())
            worst = max(worst, float(np.abs(alone.embedding - together.embedding).max()) / extent)
        print(f"{backend}: largest deviation / extent: {worst:.2e}", flush=True)


def quality(views) -> None:
    items = [(v.X, v.labels) for v in views]
    results = fit_many(items)
    on_torch = fit_many(items, backend="torch")
    init_only = fit_many(items, n_steps=0)
    names = [
        "clusterplot",
        "clusterplot, torch backend",
        "clusterplot init (n_steps=0)",
        "tsne",
        "umap",
        "trimap",
        "pacmap",
    ]
    library = {name: get_projector(name) for name in names[3:]}
    rows: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in names}
    lowered = 0
    for view, result, torch_result, init in zip(views, results, on_torch, init_only, strict=True):
        lowered += result.discrepancy_after["mean"] < result.discrepancy_before["mean"]
        layouts = {
            names[0]: result.embedding,
            names[1]: torch_result.embedding,
            names[2]: init.embedding,
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, projector in library.items():
                layouts[name] = projector.fit_transform(view.X)
        for name, Y in layouts.items():
            rows[name].append(
                (
                    cluster_overlap_discrepancy(view.X, Y, view.labels)["mean"],
                    knn_preservation(view.X, Y),
                    trustworthiness(view.X, Y),
                    trustworthiness(Y, view.X),  # continuity: the same measure, spaces swapped
                )
            )
    arr = {name: np.array(v) for name, v in rows.items()}
    print(f"\n## quality on {len(views)} demo preambles (k = 10; {load()})")
    print(
        "| projector | label-level overlap mean | 10-NN preservation | trustworthiness "
        "| continuity | clusterplot's overlap lower on |"
    )
    print("|---|---|---|---|---|---|")
    for name, a in arr.items():
        better = (arr["clusterplot"][:, 0] < a[:, 0]).mean() if name != "clusterplot" else None
        share = "—" if better is None else f"{better:.0%}"
        means = " | ".join(f"{value:.4f}" for value in a.mean(0))
        print(f"| {name} | {means} | {share} |")
    cp = arr["clusterplot"][:, 0].mean()
    print(
        f"overlap vs t-SNE: {1 - cp / arr['tsne'][:, 0].mean():+.0%} lower; vs UMAP: "
        f"{1 - cp / arr['umap'][:, 0].mean():+.0%} lower; sub-cluster mean abs(R_H-R_L) "
        f"lowered below the init's on {lowered}/{len(views)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--pooled", type=int, nargs="*", default=[1000, 3000])
    parser.add_argument("--no-clamp", action="store_true", help="skip the 3,085 × 40 batch")
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--data", type=Path, default=Path("data/demo"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {load()}")
    from clustviz.data import discover_datasets, load_dataset

    dataset = load_dataset(discover_datasets(args.data)[0])
    views = [dataset.view(p) for p in dataset.preambles]
    bench_single(views, args.repeat)
    print(f"\n## batches (hulls off; {load()})")
    print(
        "| batch | backend | preambles | batched s | ms/preamble | looped s | ratio | maxrss MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for backend in BACKENDS:
        bench_batch([(v.X, v.labels) for v in views], f"demo ({args.data})", 30, 3, backend)
    if not args.no_clamp:
        rng = np.random.default_rng(0)
        items = []
        for i in range(3085):
            X, labels = mixture(40, int(rng.integers(5, 24)), 768, 1.0, seed=i, centre_scale=4.0)
            items.append((X, labels))
        for backend in BACKENDS:
            bench_batch(items, "clamp-scale synthetic 3085×40×768", 100, 2, backend)
    bench_pooled(dataset, args.pooled, 3)
    bench_batching(views)
    if not args.no_quality:
        quality(views)
    print(f"\npeak RSS {maxrss_mb():.0f} MB; {load()}")


if __name__ == "__main__":
    main()
