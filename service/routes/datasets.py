"""Datasets, their preambles, and the projector catalogue."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated, Any

import polars as pl
from fastapi import APIRouter, Query

from clustviz.projectors import available_projectors, get_spec, params_model
from service.deps import EngineDep
from service.schemas import (
    DatasetSummary,
    ErrorResponse,
    PreamblePage,
    PreambleSummary,
    ProjectorInfo,
)

router = APIRouter(tags=["datasets"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}


@router.get("/datasets", response_model=list[DatasetSummary])
def list_datasets(engine: EngineDep) -> list[DatasetSummary]:
    """Every dataset in the data dir; malformed ones are listed as ``invalid`` with the reason."""
    return [DatasetSummary(**asdict(info)) for info in engine.catalog.list()]


@router.get(
    "/datasets/{dataset_id}",
    response_model=DatasetSummary,
    responses={**NOT_FOUND, 422: {"model": ErrorResponse}},
)
async def get_dataset(dataset_id: str, engine: EngineDep) -> DatasetSummary:
    """One dataset, loaded and validated (422 ``invalid_dataset`` with the reason if malformed)."""
    await engine.dataset(dataset_id)
    return DatasetSummary(**asdict(engine.catalog.info(dataset_id)))


@router.get(
    "/datasets/{dataset_id}/preambles",
    response_model=PreamblePage,
    responses={**NOT_FOUND, 422: {"model": ErrorResponse}},
)
async def list_preambles(
    dataset_id: str,
    engine: EngineDep,
    q: Annotated[
        str | None, Query(max_length=500, description="case-insensitive substring")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> PreamblePage:
    """Preambles in file order: id, text, point count, distinct cluster count."""
    dataset = await engine.dataset(dataset_id)
    summaries = await asyncio.to_thread(engine.preamble_table, dataset)
    if q:
        summaries = summaries.filter(
            pl.col("text").str.to_lowercase().str.contains(q.lower(), literal=True)
        )
    page = summaries.slice(offset, limit)
    return PreamblePage(
        dataset=dataset.id,
        total=summaries.height,
        offset=offset,
        limit=limit,
        items=[PreambleSummary(**row) for row in page.iter_rows(named=True)],
    )


@router.get("/projectors", response_model=list[ProjectorInfo])
def list_projectors() -> list[ProjectorInfo]:
    """The projectors, with the JSON schema of their parameters (defaults included)."""
    out = []
    for name in available_projectors():
        spec = get_spec(name)
        model = params_model(name)
        out.append(
            ProjectorInfo(
                name=name,
                title=spec.title,
                uses_labels=spec.uses_labels,
                min_points=model.min_points,
                params_schema=model.model_json_schema(),
            )
        )
    return out
