"""``ClusterPlot``: the cluster-aware layout as a projector, one preamble or many at once.

Pipeline per batch of preambles (one padded torch program): anchors → kNN graph on
``[X; anchors]`` → ``R_H`` → init (torch or UMAP) → relaxation (gradient or greedy) → hulls
(CPU, shapely, per preamble, optional). Output rows are in input order.
:meth:`ClusterPlot.relax_many` runs the same pipeline from given layouts instead of the init,
with each cluster's centroid pulled towards a target (a map alignment).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from clustviz.clusterplot.anchors import compute_anchors
from clustviz.clusterplot.backends import TorchBackend, resolve_backend
from clustviz.clusterplot.batch import pad_batch
from clustviz.clusterplot.gram import gram_matrix
from clustviz.clusterplot.hulls import ClusterHull, cluster_hulls
from clustviz.clusterplot.params import ClusterPlotParams
from clustviz.clusterplot.pipeline import Pull, Start, fit_dense, fit_sparse
from clustviz.clusterplot.shapes import ShapeBatch, select, shape_keys
from clustviz.clusterplot.threads import one_thread
from clustviz.device import resolve_device
from clustviz.errors import ClustvizError, InvalidInputError, ProjectionFailedError
from clustviz.labels import dense_labels
from clustviz.projectors.base import BaseProjector, check_input, check_output

__all__ = ["ClusterPlot", "ClusterPlotResult", "Pull", "layout_hulls"]
#: Points per padded chunk: bounds memory (X alone is chunk × d floats).
CHUNK_POINTS = 32_768
#: Pairs per padded chunk, ``B · (2 n_max)²``: the relaxation's ``(B, N, N)`` tensors stay a
#: few MB (cache-sized), so the cost is linear in the number of preambles.
CHUNK_PAIRS = 1_000_000


@dataclass(frozen=True, slots=True)
class _Setting:
    """What every chunk of one fit shares."""

    device: torch.device
    backend: TorchBackend  # chosen once per fit (resolve_backend)
    compute_hulls: bool
    #: the centroid pull's weight when the fit relaxes given layouts (relax_many)
    pull_weight: float = 0.0


@dataclass(slots=True)
class ClusterPlotResult:
    """One preamble's layout and what produced it (all coordinates in one 2-D space)."""

    embedding: np.ndarray  # (n, 2) float32, input order
    anchors: np.ndarray  # (A, 2) float32: 2-D anchor positions (means of their members)
    memberships: dict[str, np.ndarray]  # point_anchor (n,), anchor_cluster (A,), labels (n,)
    hulls: list[ClusterHull]
    loss_trace: list[float]
    discrepancy_before: dict[str, float]
    discrepancy_after: dict[str, float]
    device: str
    backend: str  # the backend the fit ran ("torch" or "numba": backend="auto" resolved)
    params_used: ClusterPlotParams
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class ClusterPlot(BaseProjector):
    """Cluster-aware layout; ``labels`` are required. See :mod:`clustviz.clusterplot`."""

    name = "clusterplot"
    Params = ClusterPlotParams
    params: ClusterPlotParams

    def fit_transform(self, X: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Lay out ``X (n, d)`` with cluster ``labels (n,)``; ``(n, 2)`` float32, input order."""
        if labels is None:
            raise InvalidInputError(
                "projector 'clusterplot' needs cluster labels (labels=None given)",
                code="labels_required",
            )
        return super().fit_transform(X, labels)

    def _fit(self, X: np.ndarray, labels: np.ndarray | None, params: Any) -> np.ndarray:
        assert labels is not None
        (result,) = self._run([(X, labels)], compute_hulls=True)
        self.result_ = result
        return result.embedding

    def fit_transform_many(
        self,
        items: Sequence[tuple[np.ndarray, np.ndarray]],
        *,
        compute_hulls: bool = True,
    ) -> list[ClusterPlotResult]:
        """Lay out many preambles ``(X_i, labels_i)``, batched where that cannot change an
        answer: each result is what :meth:`fit_transform` gives for that preamble alone
        (tested: within 1e-4 of the layout's extent, against tiny and large companions).
        """
        checked = [self._checked(X, labels) for X, labels in items]
        return self._guarded(checked, compute_hulls=compute_hulls)

    def relax_many(
        self,
        items: Sequence[tuple[np.ndarray, np.ndarray]],
        pulls: Sequence[Pull],
        *,
        weight: float,
    ) -> list[ClusterPlotResult]:
        """Relax each preamble ``(X_i, labels_i)`` from ``pulls[i].start`` with ClusterPlot's
        own terms plus the centroid pull ``weight · mean_c |z̄_c - t_c| / r`` towards
        ``pulls[i].targets`` (``r``: the RMS radius of the start about its mean, so ``weight``
        is free of the layout's units): the gradient mode's relaxation (``n_steps`` steps of
        ``step_size``), no init, no hulls. Batched as :meth:`fit_transform_many`: each result
        is the preamble's alone."""
        if len(pulls) != len(items):
            raise InvalidInputError(
                f"pulls has {len(pulls)} entries for {len(items)} preambles", code="invalid_input"
            )
        checked = [self._checked(X, labels) for X, labels in items]
        for (X, labels), pull in zip(checked, pulls, strict=True):
            clusters = len(np.unique(labels))
            for name, value, shape in (
                ("start", pull.start, (len(X), 2)),
                ("targets", pull.targets, (clusters, 2)),
            ):
                if np.shape(value) != shape or not np.isfinite(value).all():
                    raise InvalidInputError(
                        f"pull.{name} must be finite with shape {shape}, got {np.shape(value)}",
                        code="invalid_input",
                    )
        if not (np.isfinite(weight) and weight >= 0):
            raise InvalidInputError(
                f"weight={weight!r} must be finite and ≥ 0", code="invalid_params"
            )
        if self.params.mode != "gradient":
            raise InvalidInputError(
                f"relax_many runs the gradient relaxation; mode={self.params.mode!r} given",
                code="invalid_params",
            )
        return self._guarded(checked, compute_hulls=False, pulls=list(pulls), pull_weight=weight)

    def _checked(self, X: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if labels is None:
            raise InvalidInputError(
                "projector 'clusterplot' needs cluster labels (labels=None given)",
                code="labels_required",
            )
        return check_input(X, labels, name=self.name, min_points=self.Params.min_points)  # type: ignore[return-value]

    def _guarded(
        self, checked: Sequence[tuple[np.ndarray, np.ndarray]], **options: Any
    ) -> list[ClusterPlotResult]:
        """:meth:`_run`, a library failure reported as ``projection_failed``."""
        try:
            return self._run(checked, **options)
        except ClustvizError:  # ours already says what happened (e.g. device_unavailable)
            raise
        except Exception as exc:
            raise ProjectionFailedError(
                f"projector 'clusterplot' failed: {type(exc).__name__}: {exc}",
                code="projection_failed",
            ) from exc

    # --- the pipeline ----------------------------------------------------------------------
    def _run(
        self,
        items: Sequence[tuple[np.ndarray, np.ndarray]],
        *,
        compute_hulls: bool,
        pulls: Sequence[Pull] | None = None,
        pull_weight: float = 0.0,
    ) -> list[ClusterPlotResult]:
        """Fit every preamble so that its answer does not depend on its companions.

        A chunk batches only preambles of one *shape* (points, anchors, several-member anchors,
        clusters: :func:`_shape_key`), so no tensor is padded: a padded reduction sums in
        another order, and the optimisation amplifies that round-off (it was up to 31 % of a
        layout's extent). Dense fits run on one CPU thread (a reduction split over threads
        also sums in another order); a preamble that may take the large path runs alone, on
        every thread, whatever it was sent with.
        """
        device = resolve_device(self.params.device)
        # the backend is chosen once per fit and passed down
        backend = resolve_backend(self.params.backend, device)
        setting = _Setting(device, backend, compute_hulls, pull_weight)
        local = [(X, dense_labels(labels)[1]) for X, labels in items]

        def pulls_of(indices: Sequence[int]) -> list[Pull] | None:
            return None if pulls is None else [pulls[i] for i in indices]

        results: list[ClusterPlotResult | None] = [None] * len(local)
        # n + A > dense_max_rows (A ≤ n) is possible from n > dense_max_rows / 2 points
        dense_max_rows = self.params.dense_max_rows
        alone = [i for i, (X, _) in enumerate(local) if 2 * len(X) > dense_max_rows]
        for i in alone:
            (results[i],) = self._run_chunk([local[i]], setting, pulls_of([i]))
        # equal point counts together, so the anchors' batch needs no padding either
        by_size: dict[int, list[int]] = {}
        for i, (X, _) in enumerate(local):
            if 2 * len(X) <= dense_max_rows:
                by_size.setdefault(len(X), []).append(i)
        threads = torch.get_num_threads() if device.type == "cpu" else 1
        chunks = []
        for n, members in sorted(by_size.items(), reverse=True):
            per_chunk = max(1, min(CHUNK_PAIRS // (2 * n) ** 2, CHUNK_POINTS // n))
            # a chunk per thread at least (an answer does not depend on its chunk)
            per_chunk = min(per_chunk, -(-len(members) // threads))
            chunks += [members[s : s + per_chunk] for s in range(0, len(members), per_chunk)]
        # On the CPU, chunks are split among the threads (one thread each), not each op: a
        # (B, N, N) op on two threads waits on OpenMP at every op, halves of the batch on one
        # thread each scale almost fully.
        groups = [chunks[g::threads] for g in range(threads)] if len(chunks) > 1 else [chunks]

        def run_group(group: list[list[int]]) -> None:
            for chunk in group:
                done = self._run_chunk([local[i] for i in chunk], setting, pulls_of(chunk))
                for i, result in zip(chunk, done, strict=True):
                    results[i] = result

        with one_thread(device.type == "cpu"):
            if len(groups) > 1:
                with ThreadPoolExecutor(len(groups), thread_name_prefix="clusterplot") as pool:
                    for future in [pool.submit(run_group, group) for group in groups]:
                        future.result()
            elif groups:
                run_group(groups[0])
        return results  # type: ignore[return-value]

    def _run_chunk(
        self,
        items: Sequence[tuple[np.ndarray, np.ndarray]],
        setting: _Setting,
        pulls: Sequence[Pull] | None = None,
    ) -> list[ClusterPlotResult]:
        """Preambles of one point count: anchors together, then one fit per shape."""
        device = setting.device
        # a chunk's preambles share their point count, so one resolution serves them all, and
        # the fit reads exactly what params_used_ reports
        params, _ = self.params.resolve(int(items[0][0].shape[0]))
        with torch.no_grad():
            batch = pad_batch(items, device)
            # the Gram matrix serves the leader pass, the high-D kNN graphs and the PCA: the
            # n² d product is made once
            gram = gram_matrix(batch.X)
            anchors = compute_anchors(
                batch,
                params.anchors_method,
                threshold=params.birch_threshold,
                threshold_mode=params.birch_threshold_mode,
                per_cluster=params.anchors_per_cluster,
                kmeans_iter=params.kmeans_iter,
                gram=gram,
            )
        shapes: dict[tuple[int, int, int, int], list[int]] = {}
        for b, key in enumerate(shape_keys(batch, anchors)):
            shapes.setdefault(key, []).append(b)
        results: list[ClusterPlotResult | None] = [None] * len(items)
        for key, members in shapes.items():
            part = select(batch, anchors, gram, torch.tensor(members, device=device), key)
            done = self._fit_shape(
                part,
                [items[b] for b in members],
                setting,
                params,
                None if pulls is None else [pulls[b] for b in members],
            )
            for b, result in zip(members, done, strict=True):
                results[b] = result
        return results  # type: ignore[return-value]

    def _fit_shape(
        self,
        part: ShapeBatch,
        items: Sequence[tuple[np.ndarray, np.ndarray]],
        setting: _Setting,
        p: ClusterPlotParams,
        pulls: Sequence[Pull] | None = None,
    ) -> list[ClusterPlotResult]:
        """Fit a batch of preambles of one shape into results; ``p``: the parameters
        resolved for their point count; from ``pulls``' layouts if given."""
        batch, anchors = part.batch, part.anchors
        compute_hulls = setting.compute_hulls
        device = batch.X.device
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[name] = now - clock
            clock = now

        sparse = (
            batch.size == 1
            and p.mode == "gradient"
            and batch.X.shape[1] + int(anchors.count[0]) > p.dense_max_rows
        )
        start = None if pulls is None else Start.of(part, pulls, setting.pull_weight)
        out = (fit_sparse if sparse else fit_dense)(part, p, setting.backend, lap, start)
        del part  # its Gram matrices
        Y, trace, before, after = out.Y, out.trace, out.before, out.after
        with torch.no_grad():
            members = torch.zeros_like(anchors.mask, dtype=Y.dtype).scatter_add_(
                1, anchors.point_anchor, batch.mask.to(Y.dtype)
            )
            sums = torch.zeros(*anchors.mask.shape, 2, dtype=Y.dtype, device=device)
            sums.scatter_add_(1, anchors.point_anchor.unsqueeze(-1).expand(-1, -1, 2), Y)
            anchor_2d = sums / members.clamp_min(1).unsqueeze(-1)
        host: dict[str, Any] = {
            "Y": Y.cpu().numpy(),
            "anchors": anchor_2d.cpu().numpy(),
            "point_anchor": anchors.point_anchor.cpu().numpy(),
            "anchor_cluster": anchors.cluster.cpu().numpy(),
            "count": anchors.count.cpu().numpy(),
            "trace": trace.cpu().numpy(),
            "before": {key: t.cpu().numpy() for key, t in before.items()},
            "after": {key: t.cpu().numpy() for key, t in after.items()},
        }
        # free the transient device tensors before the CPU-side hulls
        del batch, anchors, out, Y, trace, anchor_2d, sums, members
        if device.type == "cuda":
            torch.cuda.empty_cache()
        lap("transfer")
        results = []
        hull_time = 0.0
        for b, (X, labels) in enumerate(items):
            n, A = X.shape[0], int(host["count"][b])
            used, notes = self.params.resolve(n)  # p is this, the notes say what changed
            embedding = check_output(host["Y"][b, :n], n, name=self.name)
            hull_start = time.perf_counter()
            hulls = layout_hulls(embedding, labels, p) if compute_hulls else []
            hull_time += time.perf_counter() - hull_start
            results.append(
                ClusterPlotResult(
                    embedding=embedding,
                    anchors=np.ascontiguousarray(host["anchors"][b, :A], dtype=np.float32),
                    memberships={
                        "point_anchor": host["point_anchor"][b, :n].copy(),
                        "anchor_cluster": host["anchor_cluster"][b, :A].copy(),
                        "labels": labels,
                    },
                    hulls=hulls,
                    loss_trace=[float(v) for v in host["trace"][:, b]],
                    discrepancy_before={
                        key: float(value[b]) for key, value in host["before"].items()
                    },
                    discrepancy_after={
                        key: float(value[b]) for key, value in host["after"].items()
                    },
                    device=str(device),
                    backend=setting.backend.name,
                    params_used=used,
                    notes=notes,
                    timings=dict(timings) | {"hulls": hull_time},
                )
            )
        return results


def layout_hulls(
    embedding: np.ndarray, labels: np.ndarray, params: ClusterPlotParams
) -> list[ClusterHull]:
    """The cluster blobs of a finished layout, with ``params``' hull settings.

    A separate step so a caller can draw them later (a batch stores layouts; blobs are made
    when a layout is first viewed). Hull labels are ``0..C-1`` in sorted order of ``labels``.
    """
    return cluster_hulls(
        embedding,
        dense_labels(labels)[1],
        alpha=params.alpha,
        outlier_k=params.remove_outliers_k,
        tolerance=params.douglas_peucker_tolerance,
        smooth_iter=params.smooth_iter,
    )
