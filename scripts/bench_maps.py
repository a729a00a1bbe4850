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
3. With ``--service``: the same clamp-scale set served by a real server on loopback (one pool
   worker), one map of it made by ``POST /maps`` (``--service-map``), then, once it is done:
   ``GET /maps/{id}/points?preamble_id=…&format=json`` over HTTP for ``--service-preambles``
   distinct preambles (each one's first hit, then repeats in another order, then
   ``If-None-Match`` revalidations): p50 / p99 wall and the server's CPU per request; and
   ``GET /maps/{id}/plot.png|svg?preamble_id=…`` uncached (each a preamble not drawn before):
   wall and the worker's CPU per plot. Baseline in the same run, in this process, on the
   map's own coordinates: the plot as it was drawn before (every row a plotnine point,
   ``points_map_plot`` below) against :func:`clustviz.render.make_map_plot`, and the floor
   (the preamble's text alone). ``--service-state DIR`` keeps the server's state: a second
   run finds its map done (its rendered plots are removed first, so plots stay uncached).

Peaks are VmHWM, reset before each map (/proc/self/clear_refs). Timings depend on the load of
the machine: compare only figures of one run.

Usage: .venv/bin/python scripts/bench_maps.py [--methods umap,opentsne] [--clamp]
       .venv/bin/python scripts/bench_maps.py --no-demo --service [--service-map '{...}']
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batch import cpu_seconds, free_port, start_server, wait_warm
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


#: Targets of issue 13 for a done map at clamp scale.
POINTS_P50_MS = 5.0
PLOT_UNCACHED_S = 1.5


def percentiles(seconds: list[float]) -> str:
    ms = 1000 * np.asarray(seconds)
    return f"p50 {np.percentile(ms, 50):6.2f} ms  p99 {np.percentile(ms, 99):6.2f} ms"


def points_map_plot(
    coords: np.ndarray, rows: np.ndarray, guesses: list, cluster_ids: np.ndarray, title: str
) -> object:
    """The baseline: the map plot as it was drawn before, every row of the map a plotnine point
    (small, light grey, rasterised) under the preamble's text."""
    import pandas as pd
    import plotnine as p9

    from clustviz.render import make_plot

    plot = make_plot(coords[rows, 0], coords[rows, 1], guesses, cluster_ids, title=title)
    dots = pd.DataFrame({"x": coords[:, 0].astype(float), "y": coords[:, 1].astype(float)})
    layer = p9.geom_point(
        p9.aes(x="x", y="y"),
        data=dots,
        color="#bdbdbd",
        size=0.7,
        stroke=0,
        raster=True,
        inherit_aes=False,
    )
    plot.layers.insert(0, layer.to_layer())  # under the text, as it was
    return plot


def service(map_request: dict, n_preambles: int, state: Path | None) -> None:
    import httpx
    import polars as pl

    from clustviz.render import make_map_plot, make_plot, render_plot

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        state = state or Path(tmp) / "state"
        write_synthetic_dataset(data, 3085)
        store = state / "clustviz.sqlite3"
        if store.exists():  # a kept state: its map is reused, its rendered plots are not
            with sqlite3.connect(store) as db:
                db.execute("DELETE FROM images")
        port = free_port()
        env = {
            **os.environ,
            "CLUSTVIZ_WORKERS": "1",
            "CLUSTVIZ_NUMBA_CACHE_DIR": str(REPO / ".cache" / "numba"),
        }
        server = start_server(port, data, state, env)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=1800) as client:
                wait_warm(client)
                (dataset,) = client.get("/datasets").json()
                started = time.perf_counter()
                status = client.post("/maps", json={"dataset": dataset["id"], **map_request})
                found = status.status_code == 200  # done already (a kept --service-state)
                map_id = status.json()["id"]
                while (status := client.get(f"/maps/{map_id}").json())["state"] in (
                    "queued",
                    "running",
                ):
                    time.sleep(1)
                assert status["state"] == "done", status
                plan = status["spec"]["plan"]
                made = "found done" if found else f"done in {time.perf_counter() - started:.0f} s"
                print(
                    f"\nservice: {dataset['n_rows']} rows; map {map_id} ({plan['method']}, "
                    f"fit_on {plan['fit_on']}) {made}; load {os.getloadavg()[0]:.1f}"
                )
                pages = [
                    client.get(
                        f"/datasets/{dataset['id']}/preambles",
                        params={"limit": 1000, "offset": offset},
                    ).json()["items"]
                    for offset in range(0, 3085, 1000)
                ]
                every = [item["id"] for page in pages for item in page]
                step = max(1, len(every) // n_preambles)
                chosen = every[::step][:n_preambles]
                base = f"/maps/{map_id}/points"

                def get_points(preamble_id: str, headers: dict | None = None) -> float:
                    began = time.perf_counter()
                    answer = client.get(
                        base,
                        params={"preamble_id": preamble_id, "format": "json"},
                        headers=headers,
                    )
                    took = time.perf_counter() - began
                    if headers is None:
                        assert answer.status_code == 200 and answer.json()["n"] == 40, answer.text
                    else:
                        assert answer.status_code == 304, answer.status_code
                    etags[preamble_id] = answer.headers["etag"]
                    return took

                etags: dict[str, str] = {}
                rng = np.random.default_rng(0)
                print(
                    f"points of one preamble (JSON, 40 rows) over HTTP, {len(chosen)} preambles,"
                    " one request at a time on a kept-alive connection:"
                )
                # the map's first request since the server started reads its coordinates from
                # the database (then kept decoded in memory): apart, it is not a preamble's cost
                first = get_points(every[-1])
                print(f"  the map's first request: {1000 * first:.2f} ms")
                for label, order, revalidate in (
                    ("first hits", chosen, False),
                    ("repeats", list(rng.permutation(chosen)) * 2, False),
                    ("If-None-Match → 304", list(rng.permutation(chosen)), True),
                ):
                    server_cpu = cpu_seconds(server.pid)[0]
                    took = [
                        get_points(i, {"If-None-Match": etags[i]} if revalidate else None)
                        for i in order
                    ]
                    cpu_ms = 1000 * (cpu_seconds(server.pid)[0] - server_cpu) / len(order)
                    print(
                        f"  {label:<21} {percentiles(took)}  server CPU {cpu_ms:5.2f} ms/request"
                        + (
                            f"   (target p50 < {POINTS_P50_MS:.0f} ms: "
                            f"{'met' if np.median(took) * 1000 < POINTS_P50_MS else 'NOT met'})"
                            if not revalidate
                            else ""
                        )
                    )

                print("map plot over HTTP, uncached (a preamble not drawn before):")
                plotted = every[1::step][:6]
                for index, preamble_id in enumerate(plotted):
                    fmt = "svg" if index >= 4 else "png"
                    workers_cpu = cpu_seconds(server.pid)[1]
                    began = time.perf_counter()
                    answer = client.get(
                        f"/maps/{map_id}/plot.{fmt}", params={"preamble_id": preamble_id}
                    )
                    took = time.perf_counter() - began
                    assert answer.status_code == 200, answer.text
                    cpu = cpu_seconds(server.pid)[1] - workers_cpu
                    print(
                        f"  {fmt} {preamble_id}: {took:5.2f} s wall, worker CPU {cpu:5.2f} s, "
                        f"{len(answer.content) / 1024:4.0f} KiB   (target < {PLOT_UNCACHED_S} s: "
                        f"{'met' if took < PLOT_UNCACHED_S else 'NOT met'})"
                    )
                    if index == 0:
                        picture = REPO / ".cache" / "bench_map_plot.png"
                        picture.parent.mkdir(exist_ok=True)
                        picture.write_bytes(answer.content)
                        print(f"  (the first plot is saved as {picture.relative_to(REPO)})")
                everything = client.get(base, params={"format": "arrow"}).content
            frame = pl.read_ipc_stream(everything)
        finally:
            server.terminate()
            server.wait(30)
    coords = frame.select("x", "y").to_numpy()
    rows = np.flatnonzero(frame["preamble"] == frame["preamble"][0])
    part = frame[rows]
    args = (coords, rows, part["guess"].to_list(), part["cluster_id"].to_numpy())
    print("the same plot in this process, on the map's coordinates (PNG, 8 × 6 in, 100 dpi):")
    for label, draw in (
        ("before: every row a plotnine point", lambda: points_map_plot(*args, title="t")),
        (
            "now: make_map_plot (one image)",
            lambda: make_map_plot(coords[:, 0], coords[:, 1], *args[1:], title="t"),
        ),
        (
            "floor: the 40 guesses, no context",
            lambda: make_plot(coords[rows, 0], coords[rows, 1], *args[2:], title="t"),
        ),
    ):
        walls, cpus = [], []
        for _ in range(3):
            began, cpu = time.perf_counter(), time.process_time()
            render_plot(draw(), "png")
            walls.append(time.perf_counter() - began)
            cpus.append(time.process_time() - cpu)
        print(
            f"  {label:<36} median of 3: {np.median(walls):5.2f} s wall, "
            f"{np.median(cpus):5.2f} s CPU"
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
    parser.add_argument(
        "--service", action="store_true", help="also points latency and map plots over HTTP"
    )
    parser.add_argument(
        "--service-map",
        default="{}",
        help="the map the server makes, as POST /maps JSON without the dataset (default: {})",
    )
    parser.add_argument("--service-preambles", type=int, default=200)
    parser.add_argument(
        "--service-state",
        type=Path,
        help="the server's state dir (kept: a second run finds its map done)",
    )
    args = parser.parse_args()
    if not args.no_demo:
        demo(args.methods.split(","))
    if args.clamp:
        clamp(args.clamp_methods.split(","))
    if args.service:
        service(json.loads(args.service_map), args.service_preambles, args.service_state)


if __name__ == "__main__":
    main()
