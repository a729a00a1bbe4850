"""Projections as JSON or images: ``POST /projections`` and cacheable GET forms for ``<img>``."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response

from clustviz.errors import InvalidInputError
from clustviz.keys import image_key
from service.alignment import Alignment
from service.conditional import etag, not_modified
from service.deps import AlignerDep, BodiesDep, EngineDep
from service.engine import Engine
from service.microcache import CACHEABLE_HEADER
from service.schemas import (
    DEMO_DATASET,
    DEMO_PREAMBLE_ID,
    ErrorResponse,
    ProjectionRequest,
    ProjectionResponse,
    RegisteredProjector,
)

router = APIRouter(tags=["projections"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "unknown dataset, preamble or align.map"},
    422: {"model": ErrorResponse, "description": "unknown projector, bad params, too few points"},
    500: {"model": ErrorResponse, "description": "the projector failed (detail says how)"},
    503: {"model": ErrorResponse, "description": "too busy; retry after Retry-After seconds"},
}
IMAGE_CONTENT = {
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/svg+xml": {"schema": {"type": "string"}},
}
# A GET plot URL names a dataset by id, not by content: the same URL may change when the file
# is replaced, so clients revalidate (cheaply, with the ETag) rather than trust it for days.
CACHE_CONTROL = "public, max-age=60, stale-while-revalidate=600"

Size = Annotated[float, Query(gt=1, le=30, description="inches")]
Dpi = Annotated[int, Query(ge=30, le=300)]


def _wants_image(accept: str | None) -> Literal["png", "svg"] | None:
    accept = (accept or "").lower()
    if "image/png" in accept:
        return "png"
    if "image/svg+xml" in accept:
        return "svg"
    return None


def _parse_params(params: str | None) -> dict[str, Any]:
    if not params:
        return {}
    try:
        value = json.loads(params)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"params={params[:200]!r} is not valid JSON ({exc.msg})", code="invalid_params"
        ) from exc
    if not isinstance(value, dict):
        raise InvalidInputError(
            f"params={params[:200]!r} must be a JSON object", code="invalid_params"
        )
    return value


@router.post(
    "/projections",
    response_model=ProjectionResponse,
    responses={
        **ERRORS,
        200: {"content": IMAGE_CONTENT},
        409: {"model": ErrorResponse, "description": "align.map is not done (map_not_ready)"},
    },
)
async def create_projection(
    body: ProjectionRequest,
    request: Request,
    engine: EngineDep,
    bodies: BodiesDep,
    aligner: AlignerDep,
    width: Size = 8.0,
    height: Size = 6.0,
    dpi: Dpi = 100,
) -> Any:
    """Project one preamble. JSON by default; ``Accept: image/png`` or ``image/svg+xml`` for the
    plot. Points come in the dataset's row order with ``x, y`` and cluster ids. With ``align``,
    the layout aligned to a finished map of the dataset, in the map's frame."""
    resolved = await engine.resolve(
        dataset_id=body.dataset,
        projector=body.projector,
        preamble=body.preamble,
        preamble_id_=body.preamble_id,
        params=body.params,
        seed=body.seed,
    )
    fmt = _wants_image(request.headers.get("accept"))
    alignment = target = None
    if body.align is not None:  # the map is checked before any fit (404, 409, 422)
        alignment = Alignment.of(body.align.model_dump())
        target = await aligner.target(alignment.map_id, resolved.dataset.id)
    engine.ensure_capacity()
    projection = await engine.project(resolved)
    if alignment is not None and target is not None:
        aligned = await aligner.align(projection, target, alignment)
        if fmt is None:
            return bodies.response(projection, aligned)
        media_type, image, key = await engine.render(
            projection, fmt, width=width, height=height, dpi=dpi, aligned=aligned
        )
        return Response(image, media_type=media_type, headers={"ETag": etag(key)})
    # the response cache may keep this answer for the same request: an image always, JSON
    # once it says "cached": true
    mark = {CACHEABLE_HEADER: f"{resolved.dataset.id} {resolved.dataset.fingerprint}"}
    if fmt is not None:
        media_type, image, key = await engine.render(
            projection, fmt, width=width, height=height, dpi=dpi
        )
        return Response(image, media_type=media_type, headers={"ETag": etag(key)} | mark)
    answer = bodies.response(projection)
    if projection.cached:
        answer.headers.update(mark)
    return answer


async def _resolve_get(
    engine: Engine,
    dataset_id: str,
    projector: str,
    preamble: str | None,
    preamble_id_: str | None,
    seed: int | None,
    params: str | None,
):
    if preamble is None and preamble_id_ is None:
        raise InvalidInputError(
            "give the preamble as ?preamble=<text> or ?preamble_id=<id>", code="invalid_request"
        )
    return await engine.resolve(
        dataset_id=dataset_id,
        projector=projector,
        preamble=preamble,
        preamble_id_=preamble_id_,
        params=_parse_params(params),
        seed=seed,
    )


PreambleText = Annotated[
    str | None, Query(max_length=10_000, description="preamble text (URL-encoded)")
]
PreambleId = Annotated[
    str | None, Query(max_length=64, examples=[DEMO_PREAMBLE_ID], description="preamble id")
]
Seed = Annotated[int | None, Query(ge=0, le=2**32 - 1)]
ParamsJson = Annotated[
    str | None, Query(max_length=4000, description='JSON object, e.g. {"n_neighbors": 10}')
]
DatasetPath = Annotated[str, Path(examples=[DEMO_DATASET])]


@router.get(
    "/plots/{dataset_id}/{projector}.{fmt}",
    responses={**ERRORS, 200: {"content": IMAGE_CONTENT}, 304: {"description": "not modified"}},
    response_class=Response,
)
async def get_plot(
    dataset_id: DatasetPath,
    projector: RegisteredProjector,
    fmt: Literal["png", "svg"],
    request: Request,
    engine: EngineDep,
    preamble: PreambleText = None,
    preamble_id: PreambleId = None,
    seed: Seed = None,
    params: ParamsJson = None,
    width: Size = 8.0,
    height: Size = 6.0,
    dpi: Dpi = 100,
) -> Response:
    """The plot as an image, for ``<img src>``: cacheable, with ``ETag`` and ``304``."""
    resolved = await _resolve_get(
        engine, dataset_id, projector, preamble, preamble_id, seed, params
    )
    key = image_key(resolved.key, fmt, width=width, height=height, dpi=dpi)
    headers = {"ETag": etag(key), "Cache-Control": CACHE_CONTROL}
    if not_modified(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    engine.ensure_capacity()
    projection = await engine.project(resolved)
    media_type, image, _ = await engine.render(projection, fmt, width=width, height=height, dpi=dpi)
    headers[CACHEABLE_HEADER] = f"{resolved.dataset.id} {resolved.dataset.fingerprint}"
    return Response(image, media_type=media_type, headers=headers)


@router.get(
    "/projections/{dataset_id}/{projector}",
    response_model=ProjectionResponse,
    responses={**ERRORS, 304: {"description": "not modified"}},
)
async def get_projection(
    dataset_id: DatasetPath,
    projector: RegisteredProjector,
    request: Request,
    engine: EngineDep,
    bodies: BodiesDep,
    preamble: PreambleText = None,
    preamble_id: PreambleId = None,
    seed: Seed = None,
    params: ParamsJson = None,
) -> Any:
    """The JSON of a projection by GET (cacheable, ``ETag``), e.g. for a front-end."""
    resolved = await _resolve_get(
        engine, dataset_id, projector, preamble, preamble_id, seed, params
    )
    headers = {"ETag": etag(resolved.key + ".json"), "Cache-Control": CACHE_CONTROL}
    if not_modified(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    engine.ensure_capacity()
    projection = await engine.project(resolved)
    answer = bodies.response(projection)
    answer.headers.update(headers)
    if projection.cached:  # a stored body must say "cached": true to every later reader
        answer.headers[CACHEABLE_HEADER] = f"{resolved.dataset.id} {resolved.dataset.fingerprint}"
    return answer
