"""Per-preamble layouts aligned to a global map: clusters where the map puts them, the preamble's
own neighbours kept.

A global map places every row of a dataset; a preamble's rows are a small subset of it. Any
projector's layout ``Y`` of those rows is brought into the map's frame in two steps:

1. :func:`similarity_transform` — the best rotation (or reflection), uniform scale and
   translation of ``Y`` onto the map's coordinates ``M`` of the same rows (Procrustes). This
   alone is what an *independent* layout gets; it fixes the frame, not the clusters.
2. :func:`relax_towards_map` — a short relaxation of the points that pulls each cluster's
   centroid towards its centroid among the map's rows, while a neighbour term keeps the
   preamble's own structure::

       loss(Z) = KL(P ‖ Q(Z)) + weight · mean_c |z̄_c − m̄_c|² / scale²     (weight: 0.3 if none)

   ``P`` is the symmetrised ``n_neighbors``-NN graph of ``X`` (each edge ``1 / Σ edges``),
   ``Q`` the normalised Student-t kernel of the layout (t-SNE's, and ClusterPlot's kNN term).
   It runs in coordinates where the map rows' RMS radius is ``scale``: the t-kernel has a
   natural length of 1, so the same weight behaves the same for a map whose units are 0.1 or
   100. Adam, ``steps`` steps, the gradient written out (tests hold it to autograd).

:func:`align_layout` is the one entry for every projector: a projector whose spec names its own
aligner (``ProjectorSpec.aligner``) runs that one, every other projector :func:`align_to_map`.
ClusterPlot has one (:mod:`clustviz.clusterplot.map_alignment`): its own relaxation with a
centroid term as one more loss term. The plain kNN KL above is not ClusterPlot's objective,
and relaxing a ClusterPlot layout with it lost a tenth of its 10-NN preservation.

Why a term and not an initialisation: a layout started at the map's coordinates walks away from
them (UMAP on 40 points forgets its init; DESIGN §4b), and rigidly translating each cluster onto
its map centroid breaks the neighbours across clusters. The centroid term moves clusters as far
as the neighbour term allows; ``weight`` sets the balance (``weight = 0``: the neighbour term
alone). Everything is numpy float64 on one preamble: the result depends on the data, the
parameters and the input layout only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from clustviz.errors import InvalidInputError
from clustviz.labels import dense_labels
from clustviz.metrics import nearest_neighbours
from clustviz.projectors import ProjectorParams, build_params, get_spec, load_target

__all__ = [
    "GENERIC_WEIGHT",
    "AlignParams",
    "Similarity",
    "align_layout",
    "align_to_map",
    "alignment_loss",
    "centroid_offsets",
    "cluster_centroids",
    "relax_towards_map",
    "similarity_transform",
]

#: The generic relaxation's centroid weight when none is given (measured on the demo set by
#: ``scripts/bench_alignment.py``).
GENERIC_WEIGHT = 0.3
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


class AlignParams(BaseModel):
    """How strongly a per-preamble layout is held to the map (defaults measured on the demo set
    by ``scripts/bench_alignment.py``). ``scale`` and ``n_neighbors`` are the generic
    relaxation's; ClusterPlot's relaxation has its own kNN term and units."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float | None = Field(
        None,
        ge=0,
        le=100,
        description="pull of each cluster to the map; null: the aligner's own default "
        f"({GENERIC_WEIGHT} for the generic relaxation, 0.1 for ClusterPlot's centroid term)",
    )
    scale: float = Field(3.0, gt=0, le=100, description="map rows' RMS radius while relaxing")
    steps: int = Field(200, ge=0, le=5000, description="Adam steps of the relaxation")
    learning_rate: float = Field(0.05, gt=0, le=10)
    n_neighbors: int = Field(10, ge=1, le=200, description="kNN graph of X (clamped to n - 1)")

    @model_validator(mode="after")
    def _finite(self) -> Self:
        for name in ("weight", "scale", "learning_rate"):
            value = getattr(self, name)
            if value is not None and not np.isfinite(value):
                raise ValueError(f"{name} must be finite")
        return self

    def weight_or(self, default: float) -> float:
        """``weight``, or an aligner's ``default`` where none was given."""
        return default if self.weight is None else self.weight


@dataclass(frozen=True, slots=True)
class Similarity:
    """``y ↦ scale · (y - source_mean) @ rotation + target_mean``: the best similarity transform
    of one layout onto another (:meth:`fit`)."""

    scale: float  # 0 when every source point is at one place (only the translation is defined)
    rotation: np.ndarray  # (2, 2) orthogonal (a rotation or a reflection)
    source_mean: np.ndarray  # (2,)
    target_mean: np.ndarray  # (2,)

    @classmethod
    def fit(cls, layout: np.ndarray, target: np.ndarray) -> Similarity:
        """The orthogonal map, uniform scale and translation that move ``layout (n, 2)`` onto
        ``target (n, 2)`` in least squares (Procrustes)."""
        source = np.asarray(layout, dtype=np.float64)
        goal = np.asarray(target, dtype=np.float64)
        source_mean, goal_mean = source.mean(0), goal.mean(0)
        centred, goal_centred = source - source_mean, goal - goal_mean
        norm = float((centred * centred).sum())
        if norm == 0.0:
            return cls(0.0, np.eye(2), source_mean, goal_mean)
        u, singular, vt = np.linalg.svd(centred.T @ goal_centred)
        return cls(float(singular.sum()) / norm, u @ vt, source_mean, goal_mean)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """``points (m, 2)`` of the source frame in the target's, float64."""
        moved = self.scale * (np.asarray(points, np.float64) - self.source_mean) @ self.rotation
        return moved + self.target_mean

    def invert(self, points: np.ndarray) -> np.ndarray:
        """``points (m, 2)`` of the target frame in the source's (needs ``scale > 0``)."""
        assert self.scale > 0, "a transform onto one point has no inverse"
        back = (np.asarray(points, np.float64) - self.target_mean) @ self.rotation.T
        return back / self.scale + self.source_mean


def similarity_transform(layout: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``layout (n, 2)`` moved onto ``target (n, 2)`` by the best similarity transform
    (orthogonal map, uniform scale, translation; least squares), as float64."""
    return Similarity.fit(layout, target).apply(layout)


def cluster_centroids(points: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(C, 2)``: each cluster's mean of ``points (n, 2)``, in sorted label order."""
    return _membership(labels) @ np.asarray(points, np.float64)


def centroid_offsets(layout: np.ndarray, target: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per cluster (sorted label order), the distance between its centroid in ``layout`` and
    its centroid in ``target``: the alignment measure."""
    members = _membership(labels)
    return np.linalg.norm(members @ np.asarray(layout, np.float64) - members @ target, axis=1)


def align_layout(
    projector: str,
    X: np.ndarray,
    labels: np.ndarray,
    layout: np.ndarray,
    map_rows: np.ndarray,
    params: AlignParams | None = None,
    projector_params: ProjectorParams | dict[str, Any] | None = None,
) -> np.ndarray:
    """``projector``'s ``layout (n, 2)`` of a preamble's rows ``X (n, d)``, aligned to
    ``map_rows (n, 2)`` (the map's coordinates of the same rows, in order): the projector's own
    aligner where its spec names one (given the parameters ``projector_params`` the layout was
    made with: ClusterPlot relaxes with its own terms), else :func:`align_to_map`. Returns
    ``(n, 2)`` float32 in the map's coordinates."""
    spec = get_spec(projector)
    params = params or AlignParams()
    _check(X, labels, layout, map_rows)
    if spec.aligner is None:
        return align_to_map(X, labels, layout, map_rows, params)
    if not isinstance(projector_params, ProjectorParams):
        projector_params = build_params(projector, dict(projector_params or {}))
    aligner = load_target(spec.aligner)
    return np.asarray(aligner(X, labels, layout, map_rows, params, projector_params), np.float32)


def align_to_map(
    X: np.ndarray,
    labels: np.ndarray,
    layout: np.ndarray,
    map_rows: np.ndarray,
    params: AlignParams | None = None,
) -> np.ndarray:
    """``layout (n, 2)`` of a preamble's rows ``X (n, d)`` in the frame of ``map_rows (n, 2)``
    (the map's coordinates of the same rows, in the same order), each cluster of ``labels`` held
    near its place in the map. Returns ``(n, 2)`` float32 in the map's coordinates."""
    params = params or AlignParams()
    n = _check(X, labels, layout, map_rows)
    framed = similarity_transform(layout, map_rows)
    if n < 2 or params.steps == 0:
        return framed.astype(np.float32)
    return relax_towards_map(X, labels, framed, map_rows, params).astype(np.float32)


def relax_towards_map(
    X: np.ndarray,
    labels: np.ndarray,
    start: np.ndarray,
    map_rows: np.ndarray,
    params: AlignParams,
) -> np.ndarray:
    """Adam on the points of ``start (n, 2)`` (already in the map's frame) for
    :func:`alignment_loss`; returns the relaxed layout, float64, in map coordinates."""
    terms = _Terms.build(X, labels, map_rows, params)
    Z = terms.to_scaled(start)
    first = np.zeros_like(Z)
    second = np.zeros_like(Z)
    beta1, beta2 = _ADAM_BETAS
    for step in range(1, params.steps + 1):
        grad = terms.gradient(Z)
        first = beta1 * first + (1 - beta1) * grad
        second = beta2 * second + (1 - beta2) * grad * grad
        unbiased = first / (1 - beta1**step)
        Z = Z - params.learning_rate * unbiased / (np.sqrt(second / (1 - beta2**step)) + _ADAM_EPS)
    return terms.from_scaled(Z)


def alignment_loss(
    X: np.ndarray,
    labels: np.ndarray,
    layout: np.ndarray,
    map_rows: np.ndarray,
    params: AlignParams,
) -> tuple[float, np.ndarray]:
    """The relaxation's loss at ``layout`` (map coordinates) and its gradient with respect to
    the scaled coordinates the relaxation moves: what the autograd test checks."""
    terms = _Terms.build(X, labels, map_rows, params)
    Z = terms.to_scaled(layout)
    return terms.loss(Z), terms.gradient(Z)


class _Terms:
    """The fixed parts of one preamble's relaxation, in scaled coordinates."""

    def __init__(
        self,
        P: np.ndarray,
        members: np.ndarray,
        targets: np.ndarray,
        origin: np.ndarray,
        unit: float,
        params: AlignParams,
    ) -> None:
        self.P = P  # (n, n): symmetric kNN graph of X, sums to 1
        self.members = members  # (C, n): row c averages cluster c's points
        self.targets = targets  # (C, 2): clusters' map centroids, scaled
        self.origin = origin  # (2,): the map rows' mean
        self.unit = unit  # map units per scaled unit
        self.weight = params.weight_or(GENERIC_WEIGHT) / len(targets)  # a mean over clusters
        self.scale = params.scale

    @classmethod
    def build(
        cls, X: np.ndarray, labels: np.ndarray, map_rows: np.ndarray, params: AlignParams
    ) -> _Terms:
        rows = np.asarray(map_rows, dtype=np.float64)
        origin = rows.mean(0)
        radius = float(np.sqrt(((rows - origin) ** 2).sum(1).mean()))
        unit = (radius if radius > 0 else 1.0) / params.scale
        members = _membership(labels)
        targets = (members @ rows - origin) / unit
        P = _knn_graph(np.asarray(X, dtype=np.float64), min(params.n_neighbors, len(rows) - 1))
        return cls(P, members, targets, origin, unit, params)

    def to_scaled(self, layout: np.ndarray) -> np.ndarray:
        return (np.asarray(layout, dtype=np.float64) - self.origin) / self.unit

    def from_scaled(self, Z: np.ndarray) -> np.ndarray:
        return Z * self.unit + self.origin

    def _kernel(self, Z: np.ndarray) -> np.ndarray:
        sq = (Z * Z).sum(1)
        kernel = 1.0 / (1.0 + np.maximum(sq[:, None] + sq[None, :] - 2.0 * Z @ Z.T, 0.0))
        np.fill_diagonal(kernel, 0.0)
        return kernel

    def loss(self, Z: np.ndarray) -> float:
        kernel = self._kernel(Z)
        edges = self.P > 0
        Q = kernel[edges] / kernel.sum()
        neighbours = float((self.P[edges] * np.log(self.P[edges] / Q)).sum())
        offsets = self.members @ Z - self.targets
        return neighbours + self.weight * float((offsets * offsets).sum()) / self.scale**2

    def gradient(self, Z: np.ndarray) -> np.ndarray:
        kernel = self._kernel(Z)
        # d KL / d z_i = 4 Σ_j (p_ij − q_ij) k_ij (z_i − z_j), with k the t-kernel
        pull = (self.P - kernel / kernel.sum()) * kernel
        grad = 4.0 * (pull.sum(1)[:, None] * Z - pull @ Z)
        offsets = self.members @ Z - self.targets
        return grad + (2.0 * self.weight / self.scale**2) * self.members.T @ offsets


def _membership(labels: np.ndarray) -> np.ndarray:
    """``(C, n)``: row ``c`` is ``1 / |c|`` on cluster ``c``'s points (sorted label order)."""
    clusters, local = dense_labels(labels)
    members = np.zeros((len(clusters), len(local)))
    members[local, np.arange(len(local))] = 1.0
    return members / members.sum(1, keepdims=True)


def _knn_graph(X: np.ndarray, k: int) -> np.ndarray:
    """Symmetrised ``k``-NN graph of ``X``, each edge weighing ``1 / (number of edges)``."""
    n = len(X)
    nearest = nearest_neighbours(X, k)
    graph = np.zeros((n, n))
    graph[np.repeat(np.arange(n), k), nearest.ravel()] = 1.0
    graph = np.maximum(graph, graph.T)
    return graph / graph.sum()


def _check(X: np.ndarray, labels: np.ndarray, layout: np.ndarray, map_rows: np.ndarray) -> int:
    n = len(X)
    shapes = {"labels": (len(labels),), "layout": np.shape(layout), "map_rows": np.shape(map_rows)}
    expected = {"labels": (n,), "layout": (n, 2), "map_rows": (n, 2)}
    for name, shape in shapes.items():
        if tuple(shape) != expected[name]:
            raise InvalidInputError(
                f"{name} has shape {tuple(shape)}; expected {expected[name]} for X of {n} rows",
                code="invalid_request",
            )
    for name, values in (("layout", layout), ("map_rows", map_rows)):
        if not np.isfinite(values).all():
            raise InvalidInputError(f"{name} has non-finite values", code="invalid_request")
    return n
