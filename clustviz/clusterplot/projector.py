"""``ClusterPlot``: the cluster-aware layout as a projector, one preamble or many at once.

Pipeline per batch of preambles (one padded torch program): anchors → kNN graph on
``[X; anchors]`` → ``R_H`` → init (torch or UMAP) → relaxation (gradient or greedy) → hulls
(CPU, shapely, per preamble, optional). Output rows are in input order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from clustviz.clusterplot.anchors import Anchors, compute_anchors
from clustviz.clusterplot.backends import TorchBackend, resolve_backend
from clustviz.clusterplot.batch import PaddedBatch, pad_batch
from clustviz.clusterplot.gram import gram_matrix
from clustviz.clusterplot.hulls import ClusterHull, cluster_hulls
from clustviz.clusterplot.init import affinities_from_knn, pca_init, umap_init
from clustviz.clusterplot.lanes import Lanes, one_thread
from clustviz.clusterplot.large import (
    DENSE_MAX_ROWS,
    large_candidates,
    large_gradient_layout,
    large_hard_discrepancy,
    large_init,
    large_pca,
    large_point_graph,
    large_target,
)
from clustviz.clusterplot.optimize import (
    OverlapTarget,
    greedy_layout,
    hard_discrepancy,
)
from clustviz.clusterplot.overlap import (
    hard_edges,
    knn_from_dists,
    normalise_overlap,
    sq_dists_from_gram,
)
from clustviz.clusterplot.params import ClusterPlotParams
from clustviz.device import resolve_device
from clustviz.errors import ClustvizError, InvalidInputError, ProjectionFailedError
from clustviz.projectors.base import BaseProjector, check_input, check_output

__all__ = ["ClusterPlot", "ClusterPlotResult", "layout_hulls"]

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
        checked = []
        for X, labels in items:
            if labels is None:
                raise InvalidInputError(
                    "projector 'clusterplot' needs cluster labels (labels=None given)",
                    code="labels_required",
                )
            checked.append(
                check_input(X, labels, name=self.name, min_points=self.Params.min_points)
            )
        try:
            return self._run(checked, compute_hulls=compute_hulls)  # type: ignore[arg-type]
        except ClustvizError:  # ours already says what happened (e.g. device_unavailable)
            raise
        except Exception as exc:
            raise ProjectionFailedError(
                f"projector 'clusterplot' failed: {type(exc).__name__}: {exc}",
                code="projection_failed",
            ) from exc

    # --- the pipeline ----------------------------------------------------------------------
    def _run(
        self, items: Sequence[tuple[np.ndarray, np.ndarray]], *, compute_hulls: bool
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
        setting = _Setting(device, resolve_backend(self.params.backend, device), compute_hulls)
        local = [
            (X, np.unique(labels, return_inverse=True)[1].astype(np.int64)) for X, labels in items
        ]
        results: list[ClusterPlotResult | None] = [None] * len(local)
        # n + A > DENSE_MAX_ROWS (A ≤ n) is possible from n > DENSE_MAX_ROWS / 2 points
        alone = [i for i, (X, _) in enumerate(local) if 2 * len(X) > DENSE_MAX_ROWS]
        for i in alone:
            (results[i],) = self._run_chunk([local[i]], setting)
        # equal point counts together, so the anchors' batch needs no padding either
        by_size: dict[int, list[int]] = {}
        for i, (X, _) in enumerate(local):
            if 2 * len(X) <= DENSE_MAX_ROWS:
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
                done = self._run_chunk([local[i] for i in chunk], setting)
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
                gram=gram,
            )
        shapes: dict[tuple[int, ...], list[int]] = {}
        for b, key in enumerate(_shape_keys(batch, anchors)):
            shapes.setdefault(key, []).append(b)
        results: list[ClusterPlotResult | None] = [None] * len(items)
        for (_, A, A2, C), members in shapes.items():
            index = torch.tensor(members, device=device)
            part = _select(batch, anchors, gram, index, A, C)
            done = self._fit_shape(*part, A2, [items[b] for b in members], setting, params)
            for b, result in zip(members, done, strict=True):
                results[b] = result
        return results  # type: ignore[return-value]

    def _fit_shape(
        self,
        batch: PaddedBatch,
        anchors: Anchors,
        gram: torch.Tensor,
        anchor_row_slots: int,
        items: Sequence[tuple[np.ndarray, np.ndarray]],
        setting: _Setting,
        p: ClusterPlotParams,
    ) -> list[ClusterPlotResult]:
        """Relax a batch of preambles of one shape into results; ``p``: the parameters
        resolved for their point count."""
        compute_hulls = setting.compute_hulls
        device = batch.X.device
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[name] = now - clock
            clock = now

        large = (
            batch.size == 1
            and p.mode == "gradient"
            and batch.X.shape[1] + int(anchors.count[0]) > DENSE_MAX_ROWS
        )
        if large:
            Y, trace, before, after = _large_fit(batch, anchors, p, lap, gram[0], setting.backend)
        else:
            Y, trace, before, after = _dense_fit(
                batch, anchors, p, lap, gram, setting.backend, anchor_row_slots
            )
        del gram
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
        del batch, anchors, Y, trace, anchor_2d, sums, members
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
    local = np.unique(labels, return_inverse=True)[1]
    return cluster_hulls(
        embedding,
        local,
        alpha=params.alpha,
        outlier_k=params.remove_outliers_k,
        tolerance=params.douglas_peucker_tolerance,
        smooth_iter=params.smooth_iter,
    )


def _gradient_settings(p: ClusterPlotParams) -> dict[str, Any]:
    """The gradient mode's settings, as both relaxations (dense and large-n) take them."""
    return {
        "steps": p.n_steps,
        "lr": p.step_size,
        "overlap_weight": p.overlap_weight,
        "label_overlap_weight": p.label_overlap_weight,
        "knn_weight": p.knn_weight,
        "temperature": p.temperature,
    }


def _dense_fit(
    batch: PaddedBatch,
    anchors: Any,
    p: ClusterPlotParams,
    lap: Any,
    gram: torch.Tensor,
    backend: TorchBackend,
    anchor_row_slots: int | None = None,
):
    """The batched path (``(B, N, N)`` tensors): layout, loss trace, discrepancies before/after.

    ``gram``: ``X Xᵀ`` ``(B, n, n)``."""
    with torch.no_grad():
        target = _overlap_target(batch, anchors, p, gram, anchor_row_slots)
        lap("overlap")
        if p.init == "torch":
            Y0 = backend.neighbour_embedding(
                pca_init(batch.X, batch.mask, gram),
                target.P,
                batch.mask,
                steps=p.init_steps,
                lr=p.step_size,
            )
        else:
            Y0 = _umap_init(batch, anchors.centroids, anchors.count, p)
        lap("init")
        before = hard_discrepancy(Y0, target)
        if p.mode == "gradient":
            Y, trace = backend.gradient_layout(Y0, target, **_gradient_settings(p))
        else:
            Y, trace = greedy_layout(
                Y0,
                target,
                n_iter=p.n_iter,
                lr=p.learning_rate,
                batch_size=p.batch_size,
                top_greedy=p.top_greedy,
                magnitude_step=p.magnitude_step,
                seed=p.random_state,
            )
        lap("relax")
        return Y, trace, before, hard_discrepancy(Y, target)


def _large_fit(
    batch: PaddedBatch,
    anchors: Any,
    p: ClusterPlotParams,
    lap: Any,
    gram: torch.Tensor,
    backend: TorchBackend,
):
    """One large preamble (see :mod:`clustviz.clusterplot.large`), shaped like the dense path's
    output (batch dimension 1)."""
    n, A = batch.X.shape[1], int(anchors.count[0])  # its own anchors, not the slots
    generator = torch.Generator(batch.X.device).manual_seed(p.random_state)
    cpu_lanes = batch.X.device.type == "cpu" and torch.get_num_threads() > 1
    with torch.no_grad():
        points = large_point_graph(gram, batch.labels[0], p.knn_k, backend)
        lap("overlap")

        def sub_cluster_graph():
            return large_target(
                batch.X[0],
                batch.labels[0],
                anchors.point_anchor[0],
                anchors.cluster[0, :A],
                k=p.k,
                knn_k=p.knn_k,
                anchors_in_graph=p.anchors_in_graph,
                backend=backend,
                gram=gram,
                points=points,
            )

        if p.init == "torch":
            start = large_pca(batch.X[0], gram, generator)  # before the lanes: all threads
            # the init needs only the kNN graph of X: the sub-cluster graph (R_H) is made
            # meanwhile, in the other lane (the init's small ops leave a core idle)
            with Lanes(parallel=cpu_lanes) as lanes:
                target, Y0 = lanes.both(
                    sub_cluster_graph,
                    lambda: large_init(
                        points,
                        start,
                        steps=p.init_steps,
                        lr=p.step_size,
                        generator=generator,
                        backend=backend,
                    ),
                )
        else:
            target = sub_cluster_graph()
            Y0 = _umap_init(batch, anchors.centroids, anchors.count, p)[0]
        lap("init")
        first = large_candidates(Y0, target)  # the relaxation's first lists serve `before` too
        before = large_hard_discrepancy(Y0, target, first)
        # the relaxation's two independent parts (sub-cluster term; label and kNN terms) run as
        # two lanes, one core each: its ops alone barely use a second core (n = 3000: the terms
        # take 0.33 s one after the other on two threads, 0.20 s in two lanes)
        with Lanes(parallel=cpu_lanes) as lanes:
            Y, trace = large_gradient_layout(
                Y0,
                target,
                generator=generator,
                lanes=lanes,
                backend=backend,
                candidates=first,
                **_gradient_settings(p),
            )
        after = large_hard_discrepancy(Y, target)
        lap("relax")
    as_batch = {key: torch.tensor([value]) for key, value in before.items()}
    return (
        Y.view(1, n, 2),
        trace.view(-1, 1),
        as_batch,
        {key: torch.tensor([value]) for key, value in after.items()},
    )


def _overlap_target(
    batch: PaddedBatch,
    anchors: Any,
    p: ClusterPlotParams,
    gram: torch.Tensor | None = None,
    anchor_row_slots: int | None = None,
) -> OverlapTarget:
    """R_H from the kNN graph of ``Z = [X; anchors]`` (or X), plus the kNN affinities of X.

    Distances come from ``gram = X Xᵀ`` (made here if not given): an anchor is the mean of its
    members, so ``Z Zᵀ`` follows from it with ``n × n × A`` products, none d-dimensional."""
    B, A = anchors.mask.shape
    n = batch.X.shape[1]
    gram = batch.X @ batch.X.transpose(1, 2) if gram is None else gram
    arange_a = torch.arange(A, device=batch.X.device).expand(B, A)
    if p.anchors_in_graph:
        means = torch.zeros(B, A, n, dtype=gram.dtype, device=gram.device)  # (anchor, point)
        means.scatter_(1, anchors.point_anchor.unsqueeze(1), batch.mask.unsqueeze(1).to(gram.dtype))
        means = means / means.sum(2, keepdim=True).clamp_min(1.0)
        cross = gram @ means.transpose(1, 2)  # (B, n, A): x_i · anchor_a
        gram_z = torch.cat(
            [torch.cat([gram, cross], 2), torch.cat([cross.transpose(1, 2), means @ cross], 2)], 1
        )
        dist_z = sq_dists_from_gram(gram_z)  # (B, n + A, n + A)
        Z_mask = torch.cat([batch.mask, anchors.mask], 1)
        group = torch.cat([anchors.point_anchor, arange_a], 1)
    else:
        dist_z, Z_mask, group = sq_dists_from_gram(gram), batch.mask, anchors.point_anchor
    dist_x = dist_z[:, :n, :n]  # the points come first
    k = torch.full((B,), p.k, device=batch.X.device)
    idx, edge_mask = knn_from_dists(dist_z, Z_mask, k)
    edges = hard_edges(idx, edge_mask, group, A)
    C = batch.max_clusters
    knn_k = torch.full((B,), p.knn_k, device=batch.X.device)
    idx, edge_mask = knn_from_dists(dist_x, batch.mask, knn_k)
    label_edges = hard_edges(idx, edge_mask, batch.labels, C)
    return OverlapTarget(
        R_H=normalise_overlap(edges, anchors.cluster, anchors.mask),
        M_H=label_edges / label_edges.sum(2, keepdim=True).clamp_min(1e-12),
        P=affinities_from_knn(idx, edge_mask),
        point_anchor=anchors.point_anchor,
        anchor_cluster=anchors.cluster,
        anchor_mask=anchors.mask,
        cluster_mask=torch.arange(C, device=batch.X.device).expand(B, C)
        < batch.n_clusters.unsqueeze(1),
        mask=batch.mask,
        labels=batch.labels,
        k=k,
        knn_k=knn_k,
        anchors_in_graph=p.anchors_in_graph,
        anchor_row_slots=anchor_row_slots,
    )


def _umap_init(
    batch: PaddedBatch, centroids: torch.Tensor, count: torch.Tensor, p: ClusterPlotParams
) -> torch.Tensor:
    """UMAP init, one preamble at a time on the CPU, padded back to ``(B, n, 2)``."""
    Y0 = torch.zeros(batch.size, batch.X.shape[1], 2)
    for b in range(batch.size):
        n, A = int(batch.n_points[b]), int(count[b])
        Y0[b, :n] = torch.from_numpy(
            umap_init(
                batch.X[b, :n].cpu().numpy(),
                centroids[b, :A].cpu().numpy(),
                n_neighbors=15,
                seed=p.random_state,
            )
        )
    return Y0.to(batch.X.device)


def slots(size: int, exact_below: int = 16) -> int:
    """The padded width of a preamble's per-anchor or per-cluster tensors: the next multiple
    of 8, or its own size up to ``exact_below``. A function of the preamble alone, so its fit
    has the same shape alone or batched."""
    return size if size <= exact_below else -(-size // 8) * 8


def _shape_keys(batch: PaddedBatch, anchors: Anchors) -> list[tuple[int, ...]]:
    """Per preamble, the shape of its fit's tensors: points, anchor slots, slots of the
    anchors of several members (the folded rows, :class:`~.optimize.FoldedRows`) and cluster
    slots (:func:`slots`)."""
    members = torch.zeros_like(anchors.mask, dtype=torch.long).scatter_add_(
        1, anchors.point_anchor, batch.mask.long()
    )
    several = ((members > 1) & anchors.mask).sum(1)
    sizes = torch.stack([batch.n_points, anchors.count, several, batch.n_clusters], 1)
    # anchors and the folded rows set the sub-cluster graph's neighbour count while they are
    # few (it is min(k, rows - 1)): exact there; no count depends on the clusters
    return [
        (n, slots(A), slots(A2), slots(C, exact_below=0)) for n, A, A2, C in sizes.cpu().tolist()
    ]


def _select(
    batch: PaddedBatch, anchors: Anchors, gram: torch.Tensor, index: torch.Tensor, A: int, C: int
) -> tuple[PaddedBatch, Anchors, torch.Tensor]:
    """The preambles ``index`` of a batch, its anchors and Gram matrices, with ``A`` anchor
    and ``C`` cluster slots (their shape's, :func:`_shape_keys`)."""
    part = PaddedBatch(
        X=batch.X[index],
        labels=batch.labels[index],
        mask=batch.mask[index],
        n_points=batch.n_points[index],
        n_clusters=batch.n_clusters[index],
        max_clusters=C,
    )
    width = anchors.size

    def fit(t: torch.Tensor, fill: float | bool = 0) -> torch.Tensor:
        t = t[index, :A]
        if width >= A:
            return t
        pad = t.new_full((len(index), A - width, *t.shape[2:]), fill)
        return torch.cat([t, pad], 1)

    return (
        part,
        Anchors(
            centroids=fit(anchors.centroids),
            mask=fit(anchors.mask, False),
            cluster=fit(anchors.cluster),
            point_anchor=anchors.point_anchor[index],
            count=anchors.count[index],
        ),
        gram[index],
    )
