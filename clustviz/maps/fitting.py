"""A map from request to result: check the request, plan it for the data's size, fit, place the
rows not fitted, locate the clusters, score the map.

Stages, each timed and reported to an optional progress callback: ``prepare`` (the sample or
the cluster means), ``fit``, ``place`` (``transform`` of the rows not fitted), ``quality``.
The callback may raise to stop a fit (a service cancelling a job): the exception propagates.

Memory: the embeddings are used as given when they are float32 and C-contiguous (a dataset's
are), converted once otherwise. A sample fit copies the sampled rows and, for ``transform``,
the others (one float32 copy of the data in all, freed before scoring); every sum over rows is
taken a block at a time (:mod:`clustviz.maps.subsets`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from clustviz.errors import InvalidInputError
from clustviz.maps.base import StageProgress
from clustviz.maps.quality import map_quality
from clustviz.maps.registry import (
    AUTO_POINTS_MAX,
    DEFAULT_SAMPLE_SIZE,
    DEFAULT_SEED,
    FIT_ONS,
    MapMethodSpec,
    available_map_methods,
    build_map_params,
    get_map_method,
    get_map_spec,
    map_library_versions,
)
from clustviz.maps.result import GlobalMap
from clustviz.maps.subsets import cluster_index, cluster_means, cluster_positions, stratified_sample
from clustviz.projectors.base import ProjectorParams

if TYPE_CHECKING:
    from clustviz.data import Dataset

__all__ = [
    "DEFAULT_METHOD",
    "MapPlan",
    "MapProgress",
    "MapRequest",
    "ProgressFn",
    "check_map_request",
    "fit_dataset_map",
    "fit_map",
    "plan_map",
]

#: The method of a map whose request names none: umap-learn, the fastest of the four on the CPU
#: once compiled and at the trustworthiness of the others (scripts/bench_maps.py); it reports
#: progress per stage only. On a GPU, ``torchdr_umap`` is the method that uses it.
DEFAULT_METHOD = "umap"
#: Rows per block of the finiteness check (a whole-array check would allocate n × d bools).
CHECK_BLOCK_ROWS = 8192


class MapRequest(BaseModel):
    """What a map is: method, what it is fitted on, supervision, parameters, seed.

    The same request on the same data gives the same map (a stored map's key is built from
    the plan this resolves to).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = Field(
        DEFAULT_METHOD, description="A map method (available_map_methods() lists them)."
    )
    fit_on: str = Field(
        "auto",
        description="What the method is fitted on: 'points' (every row), 'cluster_means' (the "
        "cluster means, every row then placed by the method's transform), 'sample' (a "
        "stratified sample, the rest placed by transform) or 'auto' (every row up to "
        f"{AUTO_POINTS_MAX:,}, or for a method without transform; a sample above).",
    )
    supervised: bool = Field(False, description="Fit with the cluster ids as a target (umap).")
    sample_size: int = Field(
        DEFAULT_SAMPLE_SIZE, ge=1, description="Rows fitted by fit_on='sample' (clamped to n)."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="The method's parameters.")
    seed: int = Field(DEFAULT_SEED, ge=0, le=2**32 - 1, description="Seed of the map.")


@dataclass(frozen=True, slots=True)
class MapPlan:
    """A request resolved for a dataset's size: what will be fitted, with which parameters."""

    spec: MapMethodSpec
    fit_on: str  # points | cluster_means | sample (never auto)
    supervised: bool
    sample_size: int | None  # rows fitted by a sample fit, after clamping
    params: ProjectorParams  # resolved for n_fitted
    notes: list[str]
    n_rows: int
    n_fitted: int
    seed: int

    def describe(self) -> dict[str, Any]:
        """The parameters actually used, JSON-able (what a stored map reports and is keyed by)."""
        params = self.params.model_dump(mode="json")
        params.pop("random_state", None)  # it is the seed
        return {
            "method": self.spec.name,
            "fit_on": self.fit_on,
            "supervised": self.supervised,
            "sample_size": self.sample_size,
            "seed": self.seed,
            "params": params,
        }


@dataclass(frozen=True, slots=True)
class MapProgress:
    """One progress report: the stage, how far it is, and how far the whole map is (0..1,
    never decreasing)."""

    stage: str  # prepare | fit | place | quality | done
    stage_fraction: float
    fraction: float


ProgressFn = Callable[[MapProgress], None]


def check_map_request(request: MapRequest) -> ProjectorParams:
    """Everything that can be checked without the data: the method exists, supports the
    ``fit_on`` and the supervision asked for, and its parameters are valid. Returns the
    validated (not yet clamped) parameters; ``InvalidInputError`` naming the field otherwise.
    """
    spec = get_map_spec(request.method)
    if request.fit_on not in FIT_ONS:
        raise InvalidInputError(
            f"fit_on={request.fit_on!r} is not one of {list(FIT_ONS)}", code="unknown_fit_on"
        )
    if request.fit_on not in spec.fit_ons:
        with_transform = [m for m in available_map_methods() if get_map_spec(m).has_transform]
        raise InvalidInputError(
            f"fit_on={request.fit_on!r} places rows with the method's transform, and "
            f"method={spec.name!r} has none; use fit_on='points' or a method with one "
            f"({', '.join(with_transform)})",
            code="unsupported_fit_on",
        )
    if request.supervised:
        if not spec.supervised:
            supervised = [m for m in available_map_methods() if get_map_spec(m).supervised]
            raise InvalidInputError(
                f"supervised=True: method={spec.name!r} cannot fit on the cluster ids "
                f"(methods that can: {', '.join(supervised)})",
                code="unsupported_supervised",
            )
        if request.fit_on == "cluster_means":
            raise InvalidInputError(
                "supervised=True with fit_on='cluster_means': each mean is its own cluster, "
                "there is nothing for the cluster ids to pull together",
                code="unsupported_supervised",
            )
    return build_map_params(spec.name, request.params, seed=request.seed)


def plan_map(request: MapRequest, *, n_rows: int, n_clusters: int) -> MapPlan:
    """Resolve ``request`` for ``n_rows`` rows in ``n_clusters`` clusters: ``auto`` becomes a
    ``fit_on``, a sample larger than the data is clamped, the method's parameters are clamped
    to the rows fitted; each change is noted."""
    params = check_map_request(request)
    spec = get_map_spec(request.method)
    notes: list[str] = []
    fit_on = request.fit_on
    if fit_on == "auto":
        big = n_rows > AUTO_POINTS_MAX and spec.has_transform
        fit_on = "sample" if big else "points"
        notes.append(f"fit_on auto resolved to {fit_on!r} for n_rows={n_rows}")
    sample_size = None
    if fit_on == "sample":
        sample_size = min(request.sample_size, n_rows)
        if sample_size < request.sample_size:
            notes.append(
                f"sample_size clamped from {request.sample_size} to {sample_size}: "
                f"the dataset has n_rows={n_rows}"
            )
    n_fitted = {"points": n_rows, "cluster_means": n_clusters}.get(fit_on, sample_size or 0)
    minimum = type(params).min_points
    if n_fitted < minimum:
        what = {"points": "rows", "cluster_means": "clusters", "sample": "sampled rows"}[fit_on]
        raise InvalidInputError(
            f"method={spec.name!r} with fit_on={fit_on!r} needs at least {minimum} {what}, "
            f"got {n_fitted}",
            code="too_few_points",
        )
    used, clamped = params.resolve(n_fitted)
    return MapPlan(
        spec=spec,
        fit_on=fit_on,
        supervised=request.supervised,
        sample_size=sample_size,
        params=used,
        notes=notes + clamped,
        n_rows=n_rows,
        n_fitted=n_fitted,
        seed=request.seed,
    )


@dataclass(slots=True)
class _Reporter:
    """Turns stage fractions into one never-decreasing overall fraction."""

    sink: ProgressFn | None
    weights: dict[str, float]
    done: float = 0.0  # weight of the stages finished
    last: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def stage(self, name: str) -> StageProgress:
        weight = self.weights.get(name, 0.0)

        def report(stage_fraction: float) -> None:
            stage_fraction = min(max(stage_fraction, 0.0), 1.0)
            self.last = max(self.last, min(1.0, self.done + weight * stage_fraction))
            if self.sink is not None:
                self.sink(MapProgress(name, stage_fraction, self.last))

        return report

    def run(self, name: str, work: Callable[[StageProgress], Any]) -> Any:
        """Run one stage: reported at 0 and at 1, timed."""
        report = self.stage(name)
        report(0.0)
        started = time.perf_counter()
        result = work(report)
        self.timings[name] = round(time.perf_counter() - started, 4)
        report(1.0)
        self.done += self.weights.get(name, 0.0)
        return result


def _weights(fit_on: str) -> dict[str, float]:
    if fit_on == "points":
        return {"prepare": 0.0, "fit": 0.95, "place": 0.0, "quality": 0.05}
    return {"prepare": 0.05, "fit": 0.5, "place": 0.4, "quality": 0.05}


def _as_embeddings(X: np.ndarray) -> np.ndarray:
    """``X`` as float32 C-contiguous (no copy when it already is), checked a block at a time."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise InvalidInputError(f"X must be 2-D (n, d), got shape {X.shape}", code="invalid_input")
    X = np.ascontiguousarray(X, dtype=np.float32)
    for start in range(0, len(X), CHECK_BLOCK_ROWS):
        if not np.isfinite(X[start : start + CHECK_BLOCK_ROWS]).all():
            raise InvalidInputError("X contains NaN or inf", code="invalid_input")
    return X


def _fit_and_place(
    plan: MapPlan,
    X: np.ndarray,
    local: np.ndarray,
    targets: np.ndarray | None,
    reporter: _Reporter,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(n, 2)`` float32: fit what the plan says, place every other row by transform; and the
    parameters the method resolved itself."""
    method = get_map_method(plan.spec.name, plan.params)
    n = len(X)
    if plan.fit_on == "points":
        coords = reporter.run("fit", lambda report: method.fit(X, targets, report))
        return coords, method.resolved_
    if plan.fit_on == "cluster_means":
        means = reporter.run("prepare", lambda _: cluster_means(X, local, int(local.max()) + 1))
        reporter.run("fit", lambda report: method.fit(means, None, report))
        coords = reporter.run("place", lambda report: method.transform(X, report))
        return coords, method.resolved_
    size = plan.sample_size
    assert size is not None
    coords = np.empty((n, 2), dtype=np.float32)
    fitted = reporter.run("prepare", lambda _: stratified_sample(local, size, plan.seed))
    X_fit = X[fitted]
    y_fit = None if targets is None else targets[fitted]
    coords[fitted] = reporter.run("fit", lambda report: method.fit(X_fit, y_fit, report))
    rest = np.ones(n, dtype=bool)
    rest[fitted] = False
    if rest.any():
        X_rest = X[rest]
        coords[rest] = reporter.run("place", lambda report: method.transform(X_rest, report))
    return coords, method.resolved_


def fit_map(
    X: np.ndarray,
    cluster_ids: np.ndarray,
    request: MapRequest,
    *,
    preambles: Sequence[np.ndarray] | None = None,
    progress: ProgressFn | None = None,
) -> GlobalMap:
    """Fit a map of every row of ``X (n, d)`` (``cluster_ids (n,)`` its clusters).

    ``preambles`` (row indices of each preamble) enables the per-preamble kNN figure of the
    map's quality. Raises ``InvalidInputError`` for a request or data it cannot honour,
    ``ProjectionFailedError`` when the library fails or returns non-finite coordinates.
    """
    started = time.perf_counter()
    X = _as_embeddings(X)
    n = len(X)
    cluster_ids = np.asarray(cluster_ids)
    if cluster_ids.shape != (n,):
        raise InvalidInputError(
            f"cluster_ids must have shape ({n},), got {cluster_ids.shape}", code="invalid_input"
        )
    ids, local = cluster_index(cluster_ids)
    plan = plan_map(request, n_rows=n, n_clusters=len(ids))
    reporter = _Reporter(progress, _weights(plan.fit_on))
    targets = cluster_ids.astype(np.int64) if plan.supervised else None
    # the fitted model (index, affinities, copies of rows) is freed when this returns
    coords, resolved = _fit_and_place(plan, X, local, targets, reporter)
    params_used = plan.describe()
    notes = list(plan.notes)
    for name, value in resolved.items():
        if params_used["params"][name] != value:
            notes.append(f"{name} {params_used['params'][name]} resolved to {value!r}")
            params_used["params"][name] = value
    positions = cluster_positions(coords, local, len(ids))
    quality = reporter.run("quality", lambda _: map_quality(X, coords, preambles))
    reporter.timings["total"] = round(time.perf_counter() - started, 4)
    if progress is not None:
        progress(MapProgress("done", 1.0, 1.0))
    return GlobalMap(
        coords=coords,
        cluster_ids=ids,
        cluster_positions=positions,
        params_used=params_used,
        notes=notes,
        n_fitted=plan.n_fitted,
        timings=reporter.timings,
        quality=quality,
        versions=dict(map_library_versions(plan.spec.name)),
    )


def fit_dataset_map(
    dataset: Dataset, request: MapRequest, *, progress: ProgressFn | None = None
) -> GlobalMap:
    """:func:`fit_map` of every row of a loaded dataset, in its row order; its float32
    embeddings are used in place (no copy)."""
    return fit_map(
        dataset.embeddings,
        dataset.rows["cluster_id"].to_numpy(),
        request,
        preambles=[dataset.row_indices(text) for text in dataset.preambles],
        progress=progress,
    )
