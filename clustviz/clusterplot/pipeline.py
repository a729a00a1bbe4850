"""One fit of preambles of one shape, stage after stage: targets → init → relaxation, with the
hard discrepancies before and after. Two strategies (the same stages and losses):

* :func:`fit_dense`: a batch of small preambles, every pair, ``(B, N, N)`` tensors;
* :func:`fit_sparse`: one large preamble (more than ``dense_max_rows`` rows of
  ``[X; anchors]``: the dense path costs ``O(N²)`` per step, at n = 3000 with near-singleton
  anchors 36 M pairs), on neighbour lists, shaped like the dense output (batch dimension 1).

A fit given a :class:`Start` (a map alignment, :mod:`.map_alignment`) skips the init: the
relaxation starts from the given layouts, with the centroid pull as one more term.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from clustviz.clusterplot.backends import TorchBackend
from clustviz.clusterplot.candidates import layout_candidates
from clustviz.clusterplot.discrepancy import hard_discrepancy, sparse_hard_discrepancy
from clustviz.clusterplot.greedy import GreedySettings, greedy_layout
from clustviz.clusterplot.init import (
    EmbedSettings,
    pca_init,
    power_pca,
    sampled_neighbour_embedding,
    umap_layouts,
)
from clustviz.clusterplot.losses import CentroidPull, centroid_pull
from clustviz.clusterplot.params import ClusterPlotParams
from clustviz.clusterplot.relaxation import (
    RelaxSettings,
    SparseSettings,
    sparse_gradient_layout,
)
from clustviz.clusterplot.shapes import ShapeBatch
from clustviz.clusterplot.targets import overlap_target, point_graph, sparse_target
from clustviz.clusterplot.threads import Lanes, one_thread

__all__ = ["FitOutput", "Start", "embed_settings", "fit_dense", "fit_sparse", "relax_settings"]

#: Called after each stage with its name (the fit's timings).
Lap = Callable[[str], None]


@dataclass(slots=True)
class FitOutput:
    """A fit's answer for a batch of preambles."""

    Y: torch.Tensor  # (B, n, 2)
    trace: torch.Tensor  # (steps, B): the relaxation's loss
    before: dict[str, torch.Tensor]  # (B,) each: hard discrepancies of the init
    after: dict[str, torch.Tensor]  # (B,) each: and of the layout


@dataclass(frozen=True, slots=True)
class Pull:
    """Where one preamble's relaxation starts and where its clusters are pulled
    (:meth:`ClusterPlot.relax_many`)."""

    start: np.ndarray  # (n, 2): the layout to relax from, in input order
    targets: np.ndarray  # (C, 2): each cluster's target centroid, in sorted label order


@dataclass(slots=True)
class Start:
    """Layouts to relax from instead of the init, and the centroid term that holds their
    clusters (a map alignment)."""

    Y0: torch.Tensor  # (B, n, 2)
    pull: CentroidPull

    @classmethod
    def of(cls, part: ShapeBatch, pulls: Sequence[Pull], weight: float) -> Start:
        """The relaxation's start and centroid pull for the preambles of ``part`` (one shape: one
        point count; cluster slots past a preamble's own get no target)."""
        batch = part.batch
        B = batch.labels.shape[0]
        dtype, device = batch.X.dtype, batch.X.device
        starts = np.stack([np.asarray(pull.start, np.float64) for pull in pulls])  # (B, n, 2)
        targets = np.zeros((B, batch.max_clusters, 2))
        for b, pull in enumerate(pulls):
            targets[b, : len(pull.targets)] = pull.targets
        centred = starts - starts.mean(1, keepdims=True)
        radius = np.sqrt((centred * centred).sum(2).mean(1))
        radius = np.where(radius > 0, radius, 1.0)  # every point at one place: units of 1
        return cls(
            Y0=torch.from_numpy(starts).to(device, dtype),
            pull=centroid_pull(
                batch.labels,
                batch.mask,
                torch.from_numpy(targets).to(device, dtype),
                weight,
                torch.from_numpy(radius).to(device, dtype),
            ),
        )


def relax_settings(p: ClusterPlotParams, *, sparse: bool) -> RelaxSettings:
    """The relaxation's settings in ``p`` (the sparse strategy's radius period if ``sparse``;
    its own default: on 1,000 and 3,000 pooled demo guesses, radii every 16 steps gave the same
    or lower label-level overlap than every 4 and the same kNN preservation, in less time)."""
    return RelaxSettings(
        steps=p.n_steps,
        lr=p.step_size,
        overlap_weight=p.overlap_weight,
        label_overlap_weight=p.label_overlap_weight,
        knn_weight=p.knn_weight,
        temperature=p.temperature,
        radius_every=p.sparse_radius_every if sparse else p.radius_every,
    )


def embed_settings(p: ClusterPlotParams) -> EmbedSettings:
    """The torch init's neighbour embedding settings in ``p``."""
    return EmbedSettings(steps=p.init_steps, lr=p.step_size, exaggeration=p.early_exaggeration)


def fit_dense(
    part: ShapeBatch,
    p: ClusterPlotParams,
    backend: TorchBackend,
    lap: Lap,
    given: Start | None = None,
) -> FitOutput:
    """The batched strategy (``(B, N, N)`` tensors); from the ``given`` layouts if any
    (gradient mode)."""
    batch, anchors = part.batch, part.anchors
    with torch.no_grad():
        target = overlap_target(batch, anchors, p, part.gram, part.anchor_row_slots)
        lap("overlap")
        if given is not None:
            assert p.mode == "gradient", "the centroid pull is a term of the gradient mode"
            Y0 = given.Y0
        elif p.init == "torch":
            Y0 = backend.neighbour_embedding(
                pca_init(batch.X, batch.mask, part.gram),
                target.P,
                batch.mask,
                embed_settings(p),
            )
        else:
            Y0 = umap_layouts(batch, anchors, n_neighbors=p.umap_n_neighbors, seed=p.random_state)
        lap("init")
        before = hard_discrepancy(Y0, target)
        if p.mode == "gradient":
            settings = relax_settings(p, sparse=False)
            pull = None if given is None else given.pull
            Y, trace = backend.gradient_layout(Y0, target, settings, pull)
        else:
            greedy = GreedySettings(
                n_iter=p.n_iter,
                lr=p.learning_rate,
                batch_size=p.batch_size,
                top_greedy=p.top_greedy,
                magnitude_step=p.magnitude_step,
                seed=p.random_state,
            )
            Y, trace = greedy_layout(Y0, target, greedy)
        lap("relax")
        return FitOutput(Y, trace, before, hard_discrepancy(Y, target))


def fit_sparse(
    part: ShapeBatch,
    p: ClusterPlotParams,
    backend: TorchBackend,
    lap: Lap,
    given: Start | None = None,
) -> FitOutput:
    """One large preamble on neighbour lists (the targets by row blocks, the init and the
    relaxation on sampled and candidate pairs); from the ``given`` layout if any."""
    batch, anchors, gram = part.batch, part.anchors, part.gram[0]
    n, A = batch.X.shape[1], int(anchors.count[0])  # its own anchors, not the slots
    generator = torch.Generator(batch.X.device).manual_seed(p.random_state)
    cpu_lanes = batch.X.device.type == "cpu" and torch.get_num_threads() > 1
    sparse = SparseSettings(
        refresh=p.candidate_refresh,
        candidates_per_k=p.candidates_per_k,
        negatives=p.negatives,
    )
    with torch.no_grad():
        points = point_graph(gram, batch.labels[0], p.knn_k, backend)
        lap("overlap")

        def sub_cluster_graph():
            return sparse_target(
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

        if given is not None:
            target, Y0 = sub_cluster_graph(), given.Y0[0]
        elif p.init == "torch":
            # on one thread, so that the answer does not depend on the thread count: on two,
            # the power iteration rounds otherwise (3e-7), and the init and the relaxation
            # amplify that far past 1e-4 of the layout's extent (tests/clusterplot/test_real_size)
            with one_thread(batch.X.device.type == "cpu"):
                start = power_pca(batch.X[0], gram, generator)
            # the init needs only the kNN graph of X: the sub-cluster graph (R_H) is made
            # meanwhile, in the other lane (the init's small ops leave a core idle)
            with Lanes(parallel=cpu_lanes) as lanes:
                target, Y0 = lanes.both(
                    sub_cluster_graph,
                    lambda: sampled_neighbour_embedding(
                        points,
                        start,
                        embed_settings(p),
                        negatives=sparse.negatives,
                        generator=generator,
                        backend=backend,
                    ),
                )
        else:
            target = sub_cluster_graph()
            Y0 = umap_layouts(batch, anchors, n_neighbors=p.umap_n_neighbors, seed=p.random_state)[
                0
            ]
        lap("init")
        # the relaxation's first lists serve `before` too
        first = layout_candidates(Y0, target, sparse.candidates_per_k)
        before = sparse_hard_discrepancy(Y0, target, first)
        # the relaxation's two independent parts (sub-cluster term; label and kNN terms) run as
        # two lanes, one core each: its ops alone barely use a second core (at n = 3000 the
        # lanes took about 0.6 of the time of the terms one after the other on two threads)
        with Lanes(parallel=cpu_lanes) as lanes:
            Y, trace = sparse_gradient_layout(
                Y0,
                target,
                relax_settings(p, sparse=True),
                sparse,
                generator=generator,
                lanes=lanes,
                backend=backend,
                candidates=first,
                pull=None if given is None else given.pull,
            )
        after = sparse_hard_discrepancy(Y, target)
        lap("relax")
    return FitOutput(
        Y.view(1, n, 2),
        trace.view(-1, 1),
        {key: torch.tensor([value]) for key, value in before.items()},
        {key: torch.tensor([value]) for key, value in after.items()},
    )
