"""A batch job's points, exported as a stream: parquet and Arrow IPC in row groups, NDJSON.

The export reads the job's finished items with their stored coordinates a chunk at a time
(keyset pages over ``job_items ⋈ projections`` on a read-only connection of its own, so the
running job's writes never wait for it), gathers each chunk's dataset rows in one ``take``, and
writes the chunk as one row group / record batch / block of lines before reading the next. The
server holds one chunk, never the whole table.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from clustviz.data import Dataset
from clustviz.errors import NotFoundError

__all__ = ["MEDIA_TYPES", "RESULT_SCHEMA", "ExportRequest", "ResultFormat", "export_results"]

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
_DATASET_COLUMNS = ("preamble", "guess", "token_id", "cluster_id")
_PAGE = (
    "SELECT j.idx, j.preamble, j.projector, p.n, p.coords"
    " FROM job_items j JOIN projections p ON p.key = j.key"
    " WHERE j.job_id = ? AND j.state = 'done' AND j.idx > ? ORDER BY j.idx LIMIT ?"
)


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What one export reads: the store's file, the job, its dataset, items per row group."""

    store_path: Path
    job_id: str
    dataset: Dataset
    chunk_items: int = 2048  # 40-point preambles: ~80k rows per row group


def export_results(request: ExportRequest, fmt: ResultFormat) -> Iterator[bytes]:
    """The encoded export, piece by piece (one row group, record batch or block of lines each).

    A sync iterator: a streaming response runs it in a worker thread, off the event loop."""
    batches = result_batches(request)
    if fmt == "json":
        for batch in batches:
            yield pl.from_arrow(batch).write_ndjson().encode()  # type: ignore[union-attr]
        return
    sink = _Sink()
    writer: pq.ParquetWriter | ipc.RecordBatchStreamWriter
    if fmt == "parquet":
        writer = pq.ParquetWriter(sink, RESULT_SCHEMA, compression="zstd")
    else:
        writer = ipc.new_stream(sink, RESULT_SCHEMA)
    with writer:
        for batch in batches:
            writer.write_batch(batch)
            yield sink.drain()
    yield sink.drain()  # the parquet footer, the stream's end marker


def result_batches(request: ExportRequest) -> Iterator[pa.RecordBatch]:
    """The job's points, one record batch per chunk of finished items, in item order.

    An item whose stored coordinates do not fit its preamble (a corrupt row) is left out, as
    the store itself would drop it on read."""
    dataset = request.dataset
    base = pa.Table.from_arrays(
        [dataset.rows[name].to_arrow() for name in _DATASET_COLUMNS], names=list(_DATASET_COLUMNS)
    ).cast(pa.schema([RESULT_SCHEMA.field(name) for name in _DATASET_COLUMNS]))
    uri = f"{request.store_path.resolve().as_uri()}?mode=ro"
    db = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
        after = -1
        while True:
            page = db.execute(_PAGE, (request.job_id, after, request.chunk_items)).fetchall()
            if not page:
                return
            after = int(page[-1][0])
            batch = _batch(base, dataset, page)
            if batch.num_rows:
                yield batch
    finally:
        db.close()


def _batch(base: pa.Table, dataset: Dataset, page: list[tuple]) -> pa.RecordBatch:
    indices: list[np.ndarray] = []
    coords: list[np.ndarray] = []
    names: dict[str, int] = {}
    codes: list[np.ndarray] = []
    for _, preamble, projector, n, blob in page:
        try:
            rows = dataset.row_indices(preamble)
        except NotFoundError:  # the dataset's file changed since: its preambles with it
            continue
        xy = np.frombuffer(blob, dtype="<f4")
        if len(rows) != n or xy.size != 2 * n or not np.isfinite(xy).all():
            continue
        indices.append(rows)
        coords.append(xy)
        codes.append(np.full(n, names.setdefault(projector, len(names)), dtype=np.int32))
    if not indices:
        return pa.RecordBatch.from_pylist([], schema=RESULT_SCHEMA)
    xy = np.concatenate(coords).reshape(-1, 2)
    projector = pc.take(pa.array(list(names), pa.string()), pa.array(np.concatenate(codes)))
    rows = base.take(np.concatenate(indices)).combine_chunks()
    columns = [column.chunk(0) for column in rows.columns]
    return pa.RecordBatch.from_arrays(
        [*columns, projector, pa.array(xy[:, 0]), pa.array(xy[:, 1])], schema=RESULT_SCHEMA
    )


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
