"""Batch jobs: create, follow (status and Server-Sent Events), fetch results, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from service.deps import ApiKeyDep
from service.export import MEDIA_TYPES, ResultFormat
from service.jobs import JobManager, end_event_id
from service.schemas import BatchRequest, BatchStatus, ErrorResponse

router = APIRouter(tags=["batches"])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    409: {"model": ErrorResponse, "description": "align.map is not done (map_not_ready)"},
    422: {"model": ErrorResponse},
}


def get_jobs(request: Request) -> JobManager:
    return request.app.state.jobs


JobsDep = Annotated[JobManager, Depends(get_jobs)]


def _with_links(status: dict[str, Any]) -> BatchStatus:
    base = f"/batches/{status['id']}"
    links = {
        "self": base,
        "events": f"{base}/events",
        "results": f"{base}/results?format=parquet",
    }
    return BatchStatus(**status, links=links)


@router.post(
    "/batches",
    status_code=202,
    response_model=BatchStatus,
    responses=ERRORS,
    dependencies=[ApiKeyDep],
)
async def create_batch(body: BatchRequest, jobs: JobsDep, response: Response) -> BatchStatus:
    """Validate up front (unknown preambles are listed; ``align.map`` must be a finished map of
    the dataset), persist, start; ``202`` with links."""
    job_id = await jobs.create(
        dataset=body.dataset,
        preambles=body.preambles,
        projectors=body.projectors,
        params=body.params,
        seed=body.seed,
        align=None if body.align is None else body.align.model_dump(mode="json"),
    )
    response.headers["Location"] = f"/batches/{job_id}"
    return _with_links(await jobs.status(job_id))


@router.get("/batches/{job_id}", response_model=BatchStatus, responses=ERRORS)
async def get_batch(job_id: str, jobs: JobsDep) -> BatchStatus:
    """State, counts done/failed/total, timings and per-item errors."""
    return _with_links(await jobs.status(job_id))


@router.get(
    "/batches/{job_id}/events",
    responses={
        **ERRORS,
        200: {"content": {"text/event-stream": {}}},
        204: {"description": "the client already had the end event (its Last-Event-ID)"},
    },
    response_class=StreamingResponse,
)
async def batch_events(
    job_id: str,
    jobs: JobsDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """Progress as Server-Sent Events (``progress`` on each change, ``end`` when finished),
    each with an ``id:``. A reconnecting client sends its last one as ``Last-Event-ID`` and gets
    what follows it; one that already had ``end`` gets ``204`` (a browser stops reconnecting)."""
    status = await jobs.status(job_id, max_errors=0)  # 404 as JSON, before the stream starts
    after = _event_id(last_event_id)
    if after is not None and after >= end_event_id(status):
        return Response(status_code=204)
    return StreamingResponse(
        jobs.events(job_id, after=after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _event_id(header: str | None) -> int | None:
    """A ``Last-Event-ID`` this server sent (a count), or ``None``: anything else starts over."""
    text = (header or "").strip()
    return int(text) if text.isdigit() else None


@router.get(
    "/batches/{job_id}/results",
    responses={
        **ERRORS,
        200: {
            "content": {
                "application/vnd.apache.parquet": {},
                "application/vnd.apache.arrow.stream": {},
                "application/x-ndjson": {},
            }
        },
    },
    response_class=StreamingResponse,
)
async def batch_results(
    job_id: str,
    jobs: JobsDep,
    format: Annotated[ResultFormat, Query()] = "parquet",
) -> StreamingResponse:
    """One row per point of every finished item: preamble, guess, token_id, cluster_id,
    projector, x, y. Available while the job runs (finished items so far). Streamed: parquet
    and Arrow IPC in row groups, ``json`` as newline-delimited JSON (one object per line)."""
    body = await jobs.results(job_id, format)  # 404 before the stream starts
    return StreamingResponse(body, media_type=MEDIA_TYPES[format])


@router.post(
    "/batches/{job_id}/cancel",
    response_model=BatchStatus,
    responses=ERRORS,
    dependencies=[ApiKeyDep],
)
async def cancel_batch(job_id: str, jobs: JobsDep) -> BatchStatus:
    """Cancel an active job: items not yet run are not run, finished items stay and export.
    A job that has ended is answered as it is."""
    return _with_links(await jobs.cancel(job_id))


@router.delete(
    "/batches/{job_id}", response_model=BatchStatus, responses=ERRORS, dependencies=[ApiKeyDep]
)
async def delete_batch(job_id: str, jobs: JobsDep) -> BatchStatus:
    """Remove the job and its items (stopping it first if it runs): 404 for it afterwards.
    Its computed layouts stay in the result store for other requests."""
    return _with_links(await jobs.delete(job_id))
