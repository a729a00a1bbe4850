"""A batch job's points, exported as a stream: parquet and Arrow IPC in row groups, NDJSON.

The export reads the job's finished items with their stored coordinates a page at a time
(:meth:`service.job_store.JobStore.iter_coords`), gathers each page's dataset rows in one
``take``, and writes the page as one row group / record batch / block of lines before reading
the next. The server holds one page, never the whole table.

A job aligned to a global map exports its aligned layouts, with one more column,
``aligned_to``: the map's id (:data:`ALIGNED_SCHEMA`).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from clustviz.data import Dataset
from clustviz.errors import NotFoundError
from service.job_store import JobCoords, JobStore
from service.memory import release_unused_memory

__all__ = [
    "ALIGNED_SCHEMA",
    "MEDIA_TYPES",
    "RESULT_SCHEMA",
    "ExportRequest",
    "ResultFormat",
    "export_results",
]

ResultFormat = Literal["parquet", "arrow", "json"]
MEDIA_TYPES: dict[str, str] = {
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
    "json": "application/x-ndjson",  # one JSON object per line
}
RESULT_SCHEMA = pa.schema(
    [
        ("preamble", pa.string()),
        ("guess", pa.string()),
        ("token_id", pa.int64()),
        ("cluster_id", pa.int64()),
        ("projector", pa.string()),
        ("x", pa.float32()),
        ("y", pa.float32()),
    ]
)
ALIGNED_SCHEMA = RESULT_SCHEMA.append(pa.field("aligned_to", pa.string()))
_DATASET_COLUMNS = ("preamble", "guess", "token_id", "cluster_id")


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What one export reads: the jobs' store, the job, its dataset, items per row group."""

    jobs: JobStore
    job_id: str
    dataset: Dataset
    aligned_to: str | None = None  # the map the job's layouts are aligned to
    chunk_items: int = 2048  # 40-point preambles: ~80k rows per row group

    @property
    def schema(self) -> pa.Schema:
        return RESULT_SCHEMA if self.aligned_to is None else ALIGNED_SCHEMA


def export_results(request: ExportRequest, fmt: ResultFormat) -> Iterator[bytes]:
    """The encoded export, piece by piece (one row group, record batch or block of lines each).

    A sync iterator: a streaming response runs it in a worker thread, off the event loop."""
    try:
        yield from _encoded(result_batches(request), request.schema, fmt)
    finally:
        release_unused_memory()  # the row groups' buffers, back to the OS


def _encoded(
    batches: Iterator[pa.RecordBatch], schema: pa.Schema, fmt: ResultFormat
) -> Iterator[bytes]:
    if fmt == "json":
        for batch in batches:
            yield pl.from_arrow(batch).write_ndjson().encode()  # type: ignore[union-attr]
        return
    sink = _Sink()
    writer: pq.ParquetWriter | ipc.RecordBatchStreamWriter
    if fmt == "parquet":
        writer = pq.ParquetWriter(sink, schema, compression="zstd")
    else:
        writer = ipc.new_stream(sink, schema)
    with writer:
        for batch in batches:
            writer.write_batch(batch)
            yield sink.drain()
    yield sink.drain()  # the parquet footer, the stream's end marker


def result_batches(request: ExportRequest) -> Iterator[pa.RecordBatch]:
    """The job's points, one record batch per page of finished items, in item order.

    An item whose stored coordinates do not fit its preamble (a corrupt row, or a dataset file
    changed since) is left out, as the store itself would drop it on read."""
    dataset = request.dataset
    base = pa.Table.from_arrays(
        [dataset.rows[name].to_arrow() for name in _DATASET_COLUMNS], names=list(_DATASET_COLUMNS)
    ).cast(pa.schema([RESULT_SCHEMA.field(name) for name in _DATASET_COLUMNS]))
    for page in request.jobs.iter_coords(request.job_id, page_items=request.chunk_items):
        batch = _batch(base, page, request)
        if batch.num_rows:
            yield batch


def _batch(base: pa.Table, page: list[JobCoords], request: ExportRequest) -> pa.RecordBatch:
    dataset = request.dataset
    indices: list[np.ndarray] = []
    coords: list[np.ndarray] = []
    names: dict[str, int] = {}
    codes: list[np.ndarray] = []
    for item in page:
        try:
            rows = dataset.row_indices(item.preamble)
        except NotFoundError:  # the dataset's file changed since: its preambles with it
            continue
        n = len(item.embedding)
        if len(rows) != n:
            continue
        indices.append(rows)
        coords.append(item.embedding)
        codes.append(np.full(n, names.setdefault(item.projector, len(names)), dtype=np.int32))
    if not indices:
        return pa.RecordBatch.from_pylist([], schema=request.schema)
    xy = np.concatenate(coords)
    projector = pc.take(pa.array(list(names), pa.string()), pa.array(np.concatenate(codes)))
    rows = base.take(np.concatenate(indices)).combine_chunks()
    columns = [column.chunk(0) for column in rows.columns]
    columns += [projector, pa.array(xy[:, 0]), pa.array(xy[:, 1])]
    if request.aligned_to is not None:
        columns.append(pa.repeat(pa.scalar(request.aligned_to, pa.string()), len(xy)))
    return pa.RecordBatch.from_arrays(columns, schema=request.schema)


class _Sink(io.RawIOBase):
    """A write-only file that hands out what was written since the last ``drain``."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        part = bytes(data)
        self._parts.append(part)
        self._position += len(part)
        return len(part)

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out
