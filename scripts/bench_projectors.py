#!/usr/bin/env python
"""Cold and warm time of one projector on one real preamble (not a test: it prints figures).

Run it once per projector, each in a fresh process — the first fit includes importing the
library and numba's JIT, which is what the service's warm workers keep off the request path:

    for p in tsne umap trimap pacmap clusterplot; do
        NUMBA_CACHE_DIR=$(mktemp -d) OMP_NUM_THREADS=1 \
            .venv/bin/python scripts/bench_projectors.py $p
    done

(an empty NUMBA_CACHE_DIR measures a cold disk cache; point it at .cache/numba for a warm one)
"""

from __future__ import annotations

import sys
import time

import numpy as np

from clustviz import get_projector
from clustviz.data import discover_datasets, load_dataset
from clustviz.projectors import get_spec

SEED_PREAMBLE = "Students were outraged over the administration's new"


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "umap"
    view = load_dataset(discover_datasets("data/demo")[0]).view(SEED_PREAMBLE)
    labels = view.labels if get_spec(name).uses_labels else None
    started = time.perf_counter()
    get_projector(name).fit_transform(view.X, labels)
    first = time.perf_counter() - started
    warm = []
    for seed in range(10):
        started = time.perf_counter()
        get_projector(name, random_state=seed + 1).fit_transform(view.X, labels)
        warm.append(time.perf_counter() - started)
    print(
        f"{name:12s} first fit in a new process {first:6.2f} s; "
        f"warm median of 10: {np.median(warm) * 1000:7.1f} ms"
    )


if __name__ == "__main__":
    main()
