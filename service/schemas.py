"""Request and response models of the HTTP API (they are the OpenAPI schema)."""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from clustviz.alignment import AlignParams
from clustviz.maps import DEFAULT_METHOD, DEFAULT_SAMPLE_SIZE
from clustviz.maps import DEFAULT_SEED as DEFAULT_MAP_SEED
from clustviz.projectors import ProjectorName, available_projectors

DEMO_DATASET = "smollm2-135m-instruct-layer7-c50-fc37d2fe"
DEMO_PREAMBLE = "Students were outraged over the administration's new"
DEMO_PREAMBLE_ID = "000ff918bc98"


def _registered(name: str) -> str:
    # Checked against the registry when the request arrives, so a projector registered by a
    # plugin (CLUSTVIZ_PLUGINS) is served like a built-in one.
    if name not in available_projectors():
        raise PydanticCustomError(
            "unknown_projector",
            f"not one of {available_projectors()}",  # → unknown_projector
        )
    return name


#: A projector name of the registry. The schema lists the built-in ones.
RegisteredProjector = Annotated[
    str,
    AfterValidator(_registered),
    WithJsonSchema({"type": "string", "enum": list(typing.get_args(ProjectorName))}),
]


class ErrorResponse(BaseModel):
    """Every error: a message naming the field and value, and a stable machine code."""

    detail: str
    code: str = Field(examples=["dataset_not_found", "too_few_points", "invalid_params"])


class WorkerStatus(BaseModel):
    index: int
    pid: int | None
    state: str
    tasks_done: int
    restarts: int
    warm_seconds: float


class PoolStatus(BaseModel):
    size: int
    ready: int
    queued: int
    workers: list[WorkerStatus]


class LaneCounts(BaseModel):
    """What the device lane has run: batched fits and the items in them."""

    batches: int
    items: int


class WarmUp(BaseModel):
    """One projector's (or the renderer's) warm-up in the workers that run it."""

    state: Literal["warming", "warm", "failed", "cold"] = Field(
        description="cold: not warmed ahead (its first request pays the compilation); "
        "failed: its warm-up raised (reason says what)"
    )
    reason: str | None = None


class Health(BaseModel):
    status: Literal["ok", "warming", "degraded"] = Field(
        description="degraded: a warm-up failed (see warm_up); warming: workers still starting"
    )
    version: str
    device: str
    cuda: bool | None = Field(
        None, description="whether the device lane's worker has CUDA (null until it has said)"
    )
    versions: dict[str, str]
    warm: bool
    warm_up: dict[str, WarmUp]
    pool: PoolStatus
    lane: PoolStatus | None
    lane_runs: LaneCounts | None = None
    datasets: int
    uptime_s: float


class DatasetSummary(BaseModel):
    id: str
    name: str
    status: Literal["ok", "invalid", "unchecked"]
    error: str | None = None
    n_preambles: int | None = None
    n_rows: int | None = None
    dim: int | None = None
    n_clusters: int | None = None
    embeddings_file: str | None = None
    clustering_file: str | None = None


class PreambleSummary(BaseModel):
    id: str
    text: str
    n_points: int
    n_clusters: int


class PreamblePage(BaseModel):
    dataset: str
    total: int
    offset: int
    limit: int
    items: list[PreambleSummary]


class ProjectorInfo(BaseModel):
    name: str
    title: str
    uses_labels: bool
    min_points: int
    params_schema: dict[str, Any]


class AlignRequest(AlignParams):
    """A map to align to, and how strongly (clustviz.alignment.AlignParams)."""

    map: str = Field(min_length=1, max_length=64, description="id of a finished map (POST /maps)")


class AlignedTo(BaseModel):
    map: str
    params: dict[str, Any] = Field(description="the alignment's parameters")


class ProjectionRequest(BaseModel):
    """One preamble through one projector. Give the preamble as text or as its id."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"dataset": DEMO_DATASET, "preamble": DEMO_PREAMBLE, "projector": "umap"},
                {
                    "dataset": DEMO_DATASET,
                    "preamble_id": DEMO_PREAMBLE_ID,
                    "projector": "tsne",
                    "params": {"perplexity": 10},
                    "seed": 7,
                },
            ]
        },
    )

    dataset: str = Field(min_length=1, max_length=200, examples=[DEMO_DATASET])
    preamble: str | None = Field(None, max_length=10_000, examples=[DEMO_PREAMBLE])
    preamble_id: str | None = Field(None, max_length=64, examples=[DEMO_PREAMBLE_ID])
    projector: RegisteredProjector = Field(examples=["umap"])
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Projector parameters (see GET /projectors); unknown names are rejected.",
    )
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, strict=True, description="random_state; default 1871"
    )
    align: AlignRequest | None = Field(
        None,
        description="Align the layout to a finished global map of the same dataset: the "
        "coordinates come back in the map's frame, each cluster held near its place in the map "
        "(as JSON, or plotted without cluster blobs for Accept: image/*).",
    )


class Point(BaseModel):
    guess: str
    token_id: int
    logit: float
    cluster_id: int
    label: int = Field(description="cluster re-indexed within this preamble (0..n_clusters-1)")
    x: float
    y: float


class Hull(BaseModel):
    cluster_id: int
    polygons: list[list[tuple[float, float]]]


class Timings(BaseModel):
    compute_ms: float = Field(description="time the projector itself took (when computed)")
    total_ms: float = Field(description="time this request spent in the engine")


class ProjectionResponse(BaseModel):
    dataset: str
    preamble: str
    preamble_id: str
    projector: str
    seed: int
    params: dict[str, Any] = Field(description="parameters actually used (after clamping)")
    notes: list[str] = Field(description="one line per parameter clamped for this n")
    device: str
    cached: bool
    key: str
    n_points: int
    n_clusters: int
    timings: Timings
    metrics: dict[str, float | None]
    points: list[Point]
    hulls: list[Hull] | None = None
    overlap: dict[str, dict[str, float]] | None = Field(
        None, description="clusterplot: mean/max |R_H - R_L| before and after optimisation"
    )
    aligned_to: AlignedTo | None = Field(
        None,
        description="the map the points are aligned to (then no hulls: they were drawn "
        "for the layout before alignment; metrics are the aligned layout's)",
    )


class BatchRequest(BaseModel):
    """Many preambles × several projectors, as one durable job."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"dataset": DEMO_DATASET, "preambles": "all", "projectors": ["umap", "tsne"]},
                {
                    "dataset": DEMO_DATASET,
                    "preambles": [DEMO_PREAMBLE],
                    "projectors": ["pacmap"],
                    "params": {"pacmap": {"n_neighbors": 10}},
                    "seed": 3,
                },
            ]
        },
    )

    dataset: str = Field(min_length=1, max_length=200)
    preambles: list[str] | Literal["all"] = Field(
        description='preamble texts, or "all"', examples=["all"]
    )
    projectors: list[RegisteredProjector] = Field(
        min_length=1, max_length=10, examples=[["umap", "tsne"]]
    )
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per projector: {projector: {param: value}}"
    )
    seed: int | None = Field(None, ge=0, le=2**32 - 1, strict=True)
    align: AlignRequest | None = Field(
        None,
        description="Align every item's layout to a finished global map of the same dataset "
        "(as POST /projections does): the results are in the map's frame, with an aligned_to "
        "column naming the map.",
    )


class BatchItemError(BaseModel):
    preamble: str
    projector: str
    code: str | None
    detail: str | None


class BatchStatus(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "cancelled", "deleted"]
    spec: dict[str, Any]
    total: int
    done: int
    failed: int
    pending: int
    created: float
    started: float | None
    finished: float | None
    elapsed_s: float | None
    errors: list[BatchItemError]
    links: dict[str, str] = Field(default_factory=dict)


class MapCreate(BaseModel):
    """A global map of every guess of a dataset (see clustviz.maps)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"dataset": DEMO_DATASET, "method": "opentsne"},
                {
                    "dataset": DEMO_DATASET,
                    "method": "opentsne",
                    "fit_on": "sample",
                    "sample_size": 200,
                    "params": {"n_iter": 200},
                    "seed": 3,
                },
            ]
        },
    )

    dataset: str = Field(min_length=1, max_length=200)
    method: str = Field(
        DEFAULT_METHOD, max_length=100, description="a map method (umap, opentsne, pacmap, ...)"
    )
    fit_on: str = Field(
        "auto", max_length=100, description="points | cluster_means | sample | auto"
    )
    supervised: bool = Field(False, strict=True)
    sample_size: int = Field(
        DEFAULT_SAMPLE_SIZE, ge=1, description="rows fitted by fit_on='sample' (clamped to n)"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="the method's parameters")
    seed: int = Field(DEFAULT_MAP_SEED, ge=0, le=2**32 - 1, strict=True)


class MapStatus(BaseModel):
    """A map's state, progress, parameters used, timings and quality (``summary``, once done)."""

    id: str
    state: Literal["queued", "running", "done", "failed", "deleted"]
    stage: str | None
    progress: float
    updates: int
    spec: dict[str, Any]
    created: float
    started: float | None
    finished: float | None
    elapsed_s: float | None
    error: dict[str, Any] | None
    summary: dict[str, Any] | None
    links: dict[str, str] = Field(default_factory=dict)
