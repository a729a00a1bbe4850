"""Global maps: create (content-addressed), follow, list, delete, and fetch points."""

from __future__ import annotations

import asyncio
import io
import json
from functools import partial
from typing import Annotated, Any, Literal

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from clustviz.data.dataset import preamble_id
from clustviz.errors import InvalidInputError
from clustviz.maps import MapRequest
from service.conditional import etag, not_modified
from service.deps import ApiKeyDep, MapsDep
from service.maps import end_event_id, points_table
from service.schemas import ErrorResponse, MapCreate, MapStatus

router = APIRouter(tags=["maps"])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    409: {"model": ErrorResponse, "description": "the map is not done (or its data changed)"},
    422: {"model": ErrorResponse},
}
PointsFormat = Literal["json", "columns", "parquet", "arrow"]
ImageFormat = Literal["png", "svg"]
IMAGE_CONTENT = {
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/svg+xml": {"schema": {"type": "string"}},
}
Size = Annotated[float, Query(gt=1, le=30, description="inches")]
Dpi = Annotated[int, Query(ge=30, le=300)]
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "columns": "application/json",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}
# A map's id names its content (dataset fingerprint, plan, library versions): its points never
# change, but a deleted map's id may be made again, so clients revalidate with the ETag.
CACHE_CONTROL = "public, max-age=60"


def _with_links(status: dict[str, Any]) -> MapStatus:
    base = f"/maps/{status['id']}"
    links = {"self": base, "events": f"{base}/events", "points": f"{base}/points?format=parquet"}
    return MapStatus(**status, links=links)


@router.post(
    "/maps",
    status_code=202,
    response_model=MapStatus,
    responses={**ERRORS, 200: {"model": MapStatus, "description": "the map is already done"}},
    dependencies=[ApiKeyDep],
)
async def create_map(body: MapCreate, maps: MapsDep, response: Response) -> MapStatus:
    """Validate, then queue the map (``202`` with links), unless the same map (same data, plan
    and libraries) exists: then its status, ``200`` when it is done."""
    request = MapRequest(**body.model_dump(exclude={"dataset"}))
    map_id, _ = await maps.create(body.dataset, request)
    status = await maps.status(map_id)
    response.headers["Location"] = f"/maps/{map_id}"
    if status["state"] == "done":
        response.status_code = 200
    return _with_links(status)


@router.get("/maps", response_model=list[MapStatus])
async def list_maps(maps: MapsDep) -> list[MapStatus]:
    """Every map, newest first."""
    return [_with_links(status) for status in await maps.list()]


@router.get("/maps/{map_id}", response_model=MapStatus, responses=ERRORS)
async def get_map(map_id: str, maps: MapsDep) -> MapStatus:
    """State, stage, progress, the request and plan (``spec``), and once done the summary:
    parameters used, notes, timings, quality."""
    return _with_links(await maps.status(map_id))


@router.delete(
    "/maps/{map_id}", response_model=MapStatus, responses=ERRORS, dependencies=[ApiKeyDep]
)
async def delete_map(map_id: str, maps: MapsDep) -> MapStatus:
    """Remove the map and its coordinates."""
    return _with_links(await maps.delete(map_id))


@router.get(
    "/maps/{map_id}/events",
    responses={
        **ERRORS,
        200: {"content": {"text/event-stream": {}}},
        204: {"description": "the client already had the end event (its Last-Event-ID)"},
    },
    response_class=StreamingResponse,
)
async def map_events(
    map_id: str,
    maps: MapsDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """Progress as Server-Sent Events (``progress`` on each stored change, ``end`` when done
    or failed), each with an ``id:``; ``Last-Event-ID`` resumes after it."""
    status = await maps.status(map_id)  # 404 as JSON, before the stream starts
    text = (last_event_id or "").strip()
    after = int(text) if text.isdigit() else None
    if (
        after is not None
        and after >= end_event_id(status)
        and status["state"]
        not in (
            "queued",
            "running",
        )
    ):
        return Response(status_code=204)
    return StreamingResponse(
        maps.events(map_id, after=after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/maps/{map_id}/points",
    responses={
        **ERRORS,
        200: {"content": {media: {} for media in MEDIA_TYPES.values()}},
        304: {"description": "If-None-Match named this answer's ETag"},
    },
    response_class=Response,
)
async def map_points(
    map_id: str,
    maps: MapsDep,
    request: Request,
    preamble: Annotated[str | None, Query(max_length=10_000)] = None,
    preamble_id: Annotated[str | None, Query(max_length=100)] = None,
    format: Annotated[PointsFormat, Query()] = "json",
) -> Response:
    """One row per guess of the map: ``preamble, guess, token_id, cluster_id, x, y``, every row
    of the dataset, or one preamble's (by text or id). ``columns`` is the same rows as one JSON
    array per column, each preamble's text and id once (``preambles``, ``preamble_ids``) and
    ``preamble_index`` per row: a whole map for a browser. A done map's answers carry an
    ``ETag`` (``304`` for ``If-None-Match``); ``409 map_not_ready`` before it is done."""
    found = await maps.points(map_id, preamble, preamble_id)
    selection = "all" if found.preamble is None else f"rows:{found.preamble}"
    headers = {"ETag": etag(f"{map_id}\0{selection}\0{format}"), "Cache-Control": CACHE_CONTROL}
    if not_modified(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    # the table and its encoding off the event loop (a whole map: 10⁵ rows)
    table = partial(points_table, found.stored, found.dataset, found.rows)
    body = await asyncio.to_thread(lambda: _encode(table(), format))
    return Response(body, media_type=MEDIA_TYPES[format], headers=headers)


@router.get(
    "/maps/{map_id}/plot.{fmt}",
    responses={
        **ERRORS,
        200: {"content": IMAGE_CONTENT},
        304: {"description": "If-None-Match named this answer's ETag"},
    },
    response_class=Response,
)
async def map_plot(
    map_id: str,
    fmt: ImageFormat,
    maps: MapsDep,
    request: Request,
    preamble: Annotated[str | None, Query(max_length=10_000)] = None,
    preamble_id: Annotated[str | None, Query(max_length=100)] = None,
    width: Size = 8.0,
    height: Size = 6.0,
    dpi: Dpi = 100,
) -> Response:
    """One preamble on a done map, for ``<img src>``: every row of the map as light-grey
    context, the preamble's guesses as text coloured by cluster (the per-preamble plots'
    palette). Cached, with an ``ETag`` (``304`` for ``If-None-Match``); ``409 map_not_ready``
    before the map is done."""
    if preamble is None and preamble_id is None:
        raise InvalidInputError(
            "give the preamble as ?preamble=<text> or ?preamble_id=<id>", code="invalid_request"
        )
    found = await maps.points(map_id, preamble, preamble_id)
    assert found.preamble is not None and found.rows is not None  # a preamble was given
    key = maps.plot_key(found.stored, found.preamble, fmt, width=width, height=height, dpi=dpi)
    headers = {"ETag": etag(key), "Cache-Control": CACHE_CONTROL}
    if not_modified(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    media_type, body = await maps.plot(
        found.stored,
        found.dataset,
        found.preamble,
        found.rows,
        fmt,
        width=width,
        height=height,
        dpi=dpi,
    )
    return Response(body, media_type=media_type, headers=headers)


def _encode(table: pa.Table, fmt: PointsFormat) -> bytes:
    if fmt == "json":
        return json.dumps({"n": table.num_rows, "points": table.to_pylist()}).encode()
    if fmt == "columns":
        return _columns_json(table)
    sink = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, sink, compression="zstd")
    else:
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    return sink.getvalue()


def _columns_json(table: pa.Table) -> bytes:
    """The points as JSON columns. The row form repeats every key and the preamble's text on
    each row, which for a whole map (10^5 rows) is tens of MB to encode and to parse; here each
    preamble is sent once and each column is one array. ``x`` and ``y`` are written in float32's
    shortest form that reads back to the same float32 (the stored coordinates are float32)."""
    preambles = pc.dictionary_encode(table["preamble"]).combine_chunks()
    texts = preambles.dictionary.to_pylist()

    def floats(name: str) -> str:
        values = pl.Series(table[name].combine_chunks()).cast(pl.Float32).cast(pl.String)
        return "[" + ",".join(values.to_list()) + "]"

    parts = {
        "n": json.dumps(table.num_rows),
        "preambles": json.dumps(texts),
        "preamble_ids": json.dumps([preamble_id(text) for text in texts]),
        "preamble_index": json.dumps(preambles.indices.to_pylist()),
        "guess": json.dumps(table["guess"].to_pylist()),
        "token_id": json.dumps(table["token_id"].to_pylist()),
        "cluster_id": json.dumps(table["cluster_id"].to_pylist()),
        "x": floats("x"),
        "y": floats("y"),
    }
    return ("{" + ",".join(f'"{key}":{value}' for key, value in parts.items()) + "}").encode()
