"""Load and validate one dataset: embeddings parquet + clustering TSV, joined 1:1.

Every way a file can be malformed ends in :class:`InvalidInputError` with
``code="invalid_dataset"`` and a message naming the file, the column and the offending value,
so a catalog can list the dataset as invalid while the others keep serving.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from clustviz.data.dataset import Dataset, preamble_id
from clustviz.data.discovery import DatasetSource
from clustviz.errors import InvalidInputError

__all__ = ["file_fingerprint", "load_dataset"]

KEY = ["preamble", "guess"]
EMBEDDING_COLUMNS = ["preamble", "token_id", "guess", "logit", "embedding"]
CLUSTERING_REQUIRED = ["preamble", "guess", "cluster_id"]
# Embeddings are converted to float32 one record batch at a time, one row group after the
# other (pyarrow's iter_batches over the whole file reads row groups ahead and its allocator
# keeps what it freed), so loading a clamp-scale file (123k × 768 f64 = 760 MB) peaks near the
# float32 result (380 MB) plus one decompressed row group, not at twice the f64 size.
BATCH_ROWS = 8192


def _invalid(message: str) -> InvalidInputError:
    return InvalidInputError(message, code="invalid_dataset")


def file_fingerprint(*paths: Path) -> str:
    """Content hash of the files (blake2b, streamed): changes whenever a file does."""
    digest = hashlib.blake2b(digest_size=16)
    for path in paths:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def load_dataset(source: DatasetSource) -> Dataset:
    """Load, validate and index one dataset.

    Raises ``InvalidInputError(code='invalid_dataset')`` naming the file, column and value.
    """
    if source.error is not None:
        raise _invalid(source.error)
    assert source.embeddings_path is not None and source.clustering_path is not None
    meta, embeddings = _read_embeddings(source.embeddings_path)
    clusters = _read_clustering(source.clustering_path)
    rows = _join(meta, clusters, source)
    index: dict[str, np.ndarray] = {}
    grouped = rows.with_row_index("row").group_by("preamble", maintain_order=True).agg("row")
    for text, row_list in zip(grouped["preamble"], grouped["row"], strict=True):
        index[text] = row_list.to_numpy().astype(np.int64)
    return Dataset(
        id=source.id,
        name=source.name,
        fingerprint=file_fingerprint(source.embeddings_path, source.clustering_path),
        rows=rows,
        embeddings=embeddings,
        _index=index,
        _ids={preamble_id(text): text for text in index},
    )


def _read_embeddings(path: Path) -> tuple[pl.DataFrame, np.ndarray]:
    name = path.name
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise _invalid(f"{name}: not a readable parquet file ({exc})") from exc
    schema = parquet.schema_arrow
    missing = [column for column in EMBEDDING_COLUMNS if column not in schema.names]
    if missing:
        raise _invalid(f"{name}: missing column(s) {missing}; expected {EMBEDDING_COLUMNS}")
    _check_type(name, "preamble", schema.field("preamble").type, _is_text)
    _check_type(name, "guess", schema.field("guess").type, _is_text)
    _check_type(name, "token_id", schema.field("token_id").type, pa.types.is_integer)
    _check_type(name, "logit", schema.field("logit").type, _is_number)
    embedding_type = schema.field("embedding").type
    if not (
        (pa.types.is_fixed_size_list(embedding_type) or _is_variable_list(embedding_type))
        and pa.types.is_floating(embedding_type.value_type)
    ):
        raise _invalid(
            f"{name}: column 'embedding' has type {embedding_type}; "
            "expected Array(Float64|Float32, d) or List(Float64|Float32)"
        )
    n_rows = parquet.metadata.num_rows
    if n_rows == 0:
        raise _invalid(f"{name}: the file has no rows")
    try:
        meta = pl.read_parquet(path, columns=["preamble", "token_id", "guess", "logit"])
        embeddings = _read_embedding_matrix(parquet, n_rows, name)
    except (pa.ArrowException, pl.exceptions.PolarsError, OSError) as exc:
        raise _invalid(f"{name}: could not read the file ({exc})") from exc
    for column in ("preamble", "guess"):
        nulls = meta[column].null_count()
        if nulls:
            raise _invalid(f"{name}: column {column!r} has {nulls} null value(s)")
    return meta.with_columns(pl.col("token_id").cast(pl.Int64), pl.col("logit").cast(pl.Float64)), (
        embeddings
    )


def _read_embedding_matrix(parquet: pq.ParquetFile, n_rows: int, name: str) -> np.ndarray:
    out: np.ndarray | None = None
    start = 0
    for batch in _embedding_batches(parquet):
        column = batch.column(0)
        if column.null_count:
            first = start + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise _invalid(f"{name}: column 'embedding' is null at row {first}")
        if pa.types.is_fixed_size_list(column.type):
            dim = column.type.list_size
            values = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), dim)
        else:
            lengths = column.value_lengths().to_numpy(zero_copy_only=False)
            dim = int(lengths[0]) if out is None else out.shape[1]
            ragged = np.flatnonzero(lengths != dim)
            if ragged.size:
                row = start + int(ragged[0])
                raise _invalid(
                    f"{name}: column 'embedding' is ragged: row {row} has "
                    f"{int(lengths[ragged[0]])} values, expected {dim}"
                )
            values = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), dim)
        if out is None:
            if dim == 0:
                raise _invalid(f"{name}: column 'embedding' has dimension 0")
            out = np.empty((n_rows, dim), dtype=np.float32)
        elif dim != out.shape[1]:
            raise _invalid(
                f"{name}: column 'embedding' is ragged: row {start} has {dim} values, "
                f"expected {out.shape[1]}"
            )
        block = out[start : start + len(column)]
        block[...] = values
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = start + int(np.flatnonzero(~finite)[0])
            raise _invalid(f"{name}: column 'embedding' has NaN or inf at row {row}")
        start += len(column)
    assert out is not None
    return out


def _embedding_batches(parquet: pq.ParquetFile) -> Iterator[pa.RecordBatch]:
    pool = pa.default_memory_pool()
    for row_group in range(parquet.num_row_groups):
        yield from parquet.iter_batches(
            batch_size=BATCH_ROWS, row_groups=[row_group], columns=["embedding"], use_threads=False
        )
        pool.release_unused()


def _read_clustering(path: Path) -> pl.DataFrame:
    name = path.name
    if path.stat().st_size == 0:
        raise _invalid(f"{name}: the file is empty")
    try:
        # Everything as text first: a guess such as "1984" must stay a string, and a bad
        # cluster_id should be reported by value, not as a parser error.
        frame = pl.read_csv(path, separator="\t", infer_schema=False)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise _invalid(f"{name}: not a readable TSV file ({exc})") from exc
    missing = [column for column in CLUSTERING_REQUIRED if column not in frame.columns]
    if missing:
        raise _invalid(
            f"{name}: missing column(s) {missing}; found {frame.columns}, "
            f"expected at least {CLUSTERING_REQUIRED} (tab-separated)"
        )
    if frame.height == 0:
        raise _invalid(f"{name}: the file has no rows")
    # A line with too few fields is padded with nulls by the parser: report it as broken.
    incomplete = frame.select(pl.any_horizontal(pl.col(CLUSTERING_REQUIRED).is_null())).to_series()
    if incomplete.any():
        row = int(incomplete.arg_true()[0])
        missing_here = [column for column in CLUSTERING_REQUIRED if frame[column][row] is None]
        raise _invalid(
            f"{name}: line {row + 2} has no value for {missing_here} "
            "(a broken line with too few tab-separated fields?)"
        )
    casts = {"cluster_id": pl.Int64, "dist_to_cluster_avg": pl.Float64}
    for column, dtype in casts.items():
        if column not in frame.columns:
            continue
        cast = frame[column].cast(dtype, strict=False)
        bad = cast.is_null() & frame[column].is_not_null()
        if column == "cluster_id" and bad.any():
            row = int(bad.arg_true()[0])
            raise _invalid(
                f"{name}: column 'cluster_id' has a non-integer value "
                f"{frame[column][row]!r} at row {row}"
            )
        frame = frame.with_columns(cast.alias(column))
    keep = [*CLUSTERING_REQUIRED, "dist_to_cluster_avg"]
    return frame.select([column for column in keep if column in frame.columns])


def _join(meta: pl.DataFrame, clusters: pl.DataFrame, source: DatasetSource) -> pl.DataFrame:
    for frame, path in ((meta, source.embeddings_path), (clusters, source.clustering_path)):
        assert path is not None
        duplicated = frame.filter(pl.struct(KEY).is_duplicated())
        if duplicated.height:
            first = duplicated.row(0, named=True)
            raise _invalid(
                f"{path.name}: {duplicated.height} rows share a (preamble, guess) key, e.g. "
                f"({first['preamble']!r}, {first['guess']!r}); the join must be 1:1"
            )
    joined = meta.with_row_index("_row").join(clusters, on=KEY, how="full", coalesce=True)
    no_cluster = joined.filter(pl.col("cluster_id").is_null())
    if no_cluster.height:
        first = no_cluster.row(0, named=True)
        raise _invalid(
            f"{no_cluster.height} embedding row(s) have no clustering row, e.g. "
            f"({first['preamble']!r}, {first['guess']!r})"
        )
    no_embedding = joined.filter(pl.col("_row").is_null())
    if no_embedding.height:
        first = no_embedding.row(0, named=True)
        raise _invalid(
            f"{no_embedding.height} clustering row(s) have no embedding row, e.g. "
            f"({first['preamble']!r}, {first['guess']!r})"
        )
    if "dist_to_cluster_avg" not in joined.columns:
        joined = joined.with_columns(pl.lit(None, dtype=pl.Float64).alias("dist_to_cluster_avg"))
    return joined.sort("_row").select(
        "preamble", "token_id", "guess", "logit", "cluster_id", "dist_to_cluster_avg"
    )


def _check_type(name: str, column: str, dtype: pa.DataType, predicate) -> None:
    if not predicate(dtype):
        raise _invalid(f"{name}: column {column!r} has type {dtype}, which is not allowed here")


def _is_number(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_floating(dtype) or pa.types.is_integer(dtype))


def _is_text(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_string_view(dtype)
    )


def _is_variable_list(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_list(dtype) or pa.types.is_large_list(dtype))
