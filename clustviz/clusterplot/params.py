"""Parameters of the cluster-aware layout (light: imports no torch).

The first block is the seed notebook's ``ClusterPlot(...)`` call, with the same names and
defaults; the second block is ours (gradient mode, torch init, device); the third holds the
strategies' knobs (dense or sparse relaxation, inits, k-means), so that every value a layout
depends on is a validated parameter, reported in ``params_used_``. Display-only arguments
of the original are accepted so the notebook's call validates, and have no effect on the layout.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import Field

from clustviz.projectors.base import ProjectorParams

__all__ = ["ClusterPlotParams"]

_DISPLAY_ONLY = (
    "Display option of the original; accepted for compatibility, no effect on the layout."
)


class ClusterPlotParams(ProjectorParams):
    """Cluster-aware layout: anchors per cluster, overlap matching, cluster hulls."""

    # --- the notebook's arguments (same names, same defaults) --------------------------------
    learning_rate: float = Field(
        0.5,
        gt=0,
        le=10,
        description="Greedy mode: step size of a sub-cluster translation, as a fraction of the "
        "distance between the two anchors of the chosen pair.",
    )
    n_iter: int = Field(
        32, ge=0, le=10_000, description="Greedy mode: number of relaxation iterations."
    )
    batch_size: int = Field(
        1, ge=1, le=1000, description="Greedy mode: sub-cluster pairs moved per iteration."
    )
    reduce_all_points: bool = Field(
        True,
        description="Embed all points with the anchors (True, the only mode implemented: the "
        "output is always one row per input point).",
    )
    anchors_method: Literal["birch", "kmeans", "points"] = Field(
        "birch",
        description="How sub-clusters (anchors) are found inside each cluster: 'birch' (leader "
        "pass with a distance threshold, as the original), 'kmeans' (anchors_per_cluster per "
        "cluster) or 'points' (every point is its own anchor).",
    )
    k: int = Field(
        16, ge=1, le=200, description="Neighbours per node of the kNN graphs behind R_H and R_L."
    )
    magnitude_step: bool = Field(
        True,
        description="Greedy mode: scale a translation by |R_H - R_L| of the pair (True) or not.",
    )
    top_greedy: int = Field(
        1,
        ge=1,
        le=1000,
        description="Greedy mode: pairs are drawn among the top_greedy largest |R_H - R_L| "
        "(1: always the largest).",
    )
    alpha: float = Field(
        0.1,
        gt=0,
        le=100,
        description="Hulls: alpha-shape parameter; Delaunay triangles with circumradius < "
        "1/alpha are kept, in layout units normalised to an extent of 20.",
    )
    remove_outliers_k: int = Field(
        2,
        ge=0,
        le=100,
        description="Hulls: neighbours used to score outliers inside a cluster (0: keep all).",
    )
    douglas_peucker_tolerance: float = Field(
        0.3,
        ge=0,
        le=10,
        description="Hulls: Douglas-Peucker simplification tolerance, in layout units "
        "normalised to an extent of 20.",
    )
    smooth_iter: int = Field(3, ge=0, le=10, description="Hulls: rounds of Chaikin smoothing.")
    class_to_label: dict[int, str] | None = Field(None, description=_DISPLAY_ONLY)
    show_fig: bool = Field(False, description=_DISPLAY_ONLY)
    save_fig: bool = Field(False, description=_DISPLAY_ONLY)
    save_fig_every: int = Field(32, ge=1, description=_DISPLAY_ONLY)
    show_anchors: bool = Field(False, description=_DISPLAY_ONLY)
    show_points: bool = Field(True, description=_DISPLAY_ONLY)
    show_loss_plot: bool = Field(False, description=_DISPLAY_ONLY)
    show_label_level_plots: bool = Field(False, description=_DISPLAY_ONLY)

    # --- ours ----------------------------------------------------------------------------------
    mode: Literal["gradient", "greedy"] = Field(
        "gradient",
        description="'gradient': Adam on a soft cluster-overlap loss plus a kNN term; "
        "'greedy': the original's rule (move one sub-cluster of the worst pair per iteration).",
    )
    init: Literal["torch", "umap"] = Field(
        "torch",
        description="Initial layout: 'torch' (PCA then a kNN neighbour embedding, batched on "
        "the device) or 'umap' (umap-learn on [X; anchors], min_dist=1, as the original).",
    )
    init_steps: int = Field(
        150, ge=0, le=5000, description="Torch init: Adam steps of the neighbour embedding."
    )
    n_steps: int = Field(
        100, ge=0, le=5000, description="Gradient mode: Adam steps of the overlap optimisation."
    )
    step_size: float = Field(
        0.05, gt=0, le=10, description="Gradient mode and torch init: Adam learning rate."
    )
    knn_k: int = Field(
        10, ge=1, le=200, description="Neighbours of the kNN term that keeps local structure."
    )
    overlap_weight: float = Field(
        3.0, ge=0, le=1000, description="Weight of the sub-cluster overlap loss mean|R_H - R_L|."
    )
    label_overlap_weight: float = Field(
        1.0,
        ge=0,
        le=1000,
        description="Weight of the same loss aggregated to clusters (share of a cluster's "
        "edges landing in each other cluster).",
    )
    knn_weight: float = Field(
        0.1, ge=0, le=1000, description="Weight of the kNN cross-entropy (local structure) term."
    )
    temperature: float = Field(
        0.1,
        gt=0,
        le=10,
        description="Softness of the 2-D soft kNN indicator, relative to each point's squared "
        "kNN radius.",
    )
    birch_threshold: float = Field(
        0.3,
        gt=0,
        le=1000,
        description="BIRCH anchors: sub-cluster radius threshold (absolute distance, or a "
        "fraction of the cluster's RMS radius when birch_threshold_mode='relative').",
    )
    birch_threshold_mode: Literal["absolute", "relative"] = Field(
        "absolute",
        description="'absolute' (the original: 0.3 in input units) or 'relative' (scale-free: "
        "threshold times the cluster's RMS radius).",
    )
    anchors_per_cluster: int = Field(
        3, ge=1, le=1000, description="k-means anchors: anchors per cluster (at most its size)."
    )
    anchors_in_graph: bool = Field(
        True, description="Build the high-D kNN graph on [X; anchors] (True, the original) or X."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Torch device; 'auto' uses CUDA when available."
    )
    backend: Literal["auto", "torch", "numba"] = Field(
        "auto",
        description="Compute backend of the optimisation: 'torch' (plain PyTorch, any device), "
        "'numba' (CPU loops, one preamble at a time; CPU only) or 'auto' (numba on the CPU "
        "where it compiles, torch elsewhere). The two round and sample differently: layouts "
        "of the same quality, not identical ones.",
    )

    # --- the strategies' knobs (defaults: the values the layouts were tuned with) -------------
    dense_max_rows: int = Field(
        640,
        ge=16,
        le=4096,
        description="Gradient mode: a preamble of more rows of [X; anchors] than this is fitted "
        "alone on neighbour lists (the sparse strategy: candidate pairs, sampled KL); up to it, "
        "batched over every pair (the dense strategy, O(rows²) per step).",
    )
    radius_every: int = Field(
        8,
        ge=1,
        le=5000,
        description="Gradient mode, dense strategy: steps between two refreshes of the "
        "(detached) soft-kNN radii.",
    )
    sparse_radius_every: int = Field(
        16,
        ge=1,
        le=5000,
        description="Gradient mode, sparse strategy: steps between two refreshes of the "
        "soft-kNN radii.",
    )
    candidate_refresh: int = Field(
        50,
        ge=1,
        le=5000,
        description="Sparse strategy: steps between two searches of each row's 2-D candidate "
        "neighbours.",
    )
    candidates_per_k: float = Field(
        3.0,
        ge=1.0,
        le=20.0,
        description="Sparse strategy: 2-D candidate neighbours per row, in multiples of k "
        "(knn_k for the point graph).",
    )
    negatives: int = Field(
        8,
        ge=1,
        le=1000,
        description="Sparse strategy: random pairs per point and step that estimate the "
        "normaliser of the kNN term (torch init and relaxation).",
    )
    early_exaggeration: float = Field(
        4.0,
        ge=1.0,
        le=100.0,
        description="Torch init: factor on the kNN affinities over the first quarter of the "
        "neighbour embedding's steps.",
    )
    kmeans_iter: int = Field(20, ge=1, le=1000, description="k-means anchors: Lloyd iterations.")
    umap_n_neighbors: int = Field(
        15,
        ge=2,
        le=200,
        description="UMAP init: n_neighbors (at most the rows of [X; anchors] - 1).",
    )

    min_points: ClassVar[int] = 3

    def resolve(self, n: int) -> tuple[Self, list[str]]:
        """Clamp the neighbour counts to ``n - 1`` and the anchors per cluster to ``n``."""
        notes: list[str] = []
        changes = self._clamp(
            notes,
            n,
            k=min(self.k, n - 1),
            knn_k=min(self.knn_k, n - 1),
            anchors_per_cluster=min(self.anchors_per_cluster, n),
        )
        return self.model_copy(update=changes), notes
