"""A thread-safe catalog of the datasets in a data dir: discovery, lazy loading, bounded memory.

Datasets are loaded on first use and kept in a small LRU (``max_loaded``). A file replaced on
disk (size or mtime changed) is reloaded on next use, so its new fingerprint invalidates every
cached result of the old content. A malformed dataset is remembered as invalid with its reason
(until its files change) and never affects the others.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cachetools import LRUCache

from clustviz.data.dataset import Dataset
from clustviz.data.discovery import DatasetSource, discover_datasets
from clustviz.data.loading import load_dataset
from clustviz.errors import InvalidInputError, NotFoundError

__all__ = ["DataCatalog", "DatasetInfo"]


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """What the catalog knows of a dataset without holding it in memory."""

    id: str
    name: str
    status: str  # "ok" | "invalid" | "unchecked"
    error: str | None
    n_preambles: int | None
    n_rows: int | None
    dim: int | None
    n_clusters: int | None
    embeddings_file: str | None
    clustering_file: str | None


@dataclass(frozen=True, slots=True)
class _Checked:
    stat: tuple[int, ...]
    error: str | None
    n_preambles: int | None = None
    n_rows: int | None = None
    dim: int | None = None
    n_clusters: int | None = None


def _stat(source: DatasetSource) -> tuple[int, ...]:
    out: list[int] = []
    for path in (source.embeddings_path, source.clustering_path):
        if path is None:
            out += [-1, -1]
            continue
        try:
            info = path.stat()
            out += [info.st_size, info.st_mtime_ns]
        except OSError:
            out += [-1, -1]
    return tuple(out)


class DataCatalog:
    """Datasets under ``data_dir``; at most ``max_loaded`` held in memory at once."""

    def __init__(self, data_dir: Path, *, max_loaded: int = 4, rescan_seconds: float = 2.0) -> None:
        self.data_dir = Path(data_dir)
        self.max_loaded = max_loaded
        self.rescan_seconds = rescan_seconds
        self._sources: tuple[float, dict[str, DatasetSource]] | None = None
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        # (files' stat, dataset); a read (the hot path's too) makes it the most recently used,
        # and past ``max_loaded`` the least recently used one is dropped
        self._loaded: LRUCache[str, tuple[tuple[int, ...], Dataset]] = LRUCache(max_loaded)
        self._checked: dict[str, _Checked] = {}

    def sources(self) -> dict[str, DatasetSource]:
        """The datasets on disk, re-listed at most every ``rescan_seconds`` (hot path)."""
        now = time.monotonic()
        if self._sources is None or now - self._sources[0] > self.rescan_seconds:
            found = {source.id: source for source in discover_datasets(self.data_dir)}
            self._sources = (now, found)
        return self._sources[1]

    def list(self) -> list[DatasetInfo]:
        """Every dataset found, with status and counts where it has been checked."""
        return [self._info(source) for source in self.sources().values()]

    def info(self, dataset_id: str) -> DatasetInfo:
        return self._info(self._source(dataset_id))

    def check_all(self) -> None:
        """Load (and validate) every dataset once, evicting as needed: fills in statuses."""
        for dataset_id in self.sources():
            with contextlib.suppress(InvalidInputError, NotFoundError):
                self.get(dataset_id)

    def get_if_loaded(self, dataset_id: str) -> Dataset | None:
        """The dataset if it is loaded and its files are unchanged (two stats, no I/O)."""
        listing = self._sources
        if listing is None or time.monotonic() - listing[0] > self.rescan_seconds:
            return None
        source = listing[1].get(dataset_id)
        if source is None:
            return None
        with self._lock:
            hit = self._loaded.get(dataset_id)
        return hit[1] if hit is not None and hit[0] == _stat(source) else None

    def is_current(self, dataset_id: str, fingerprint: str) -> bool:
        """Whether the dataset loaded now (files unchanged) has content ``fingerprint``: an
        answer made from that content is still the answer. False when it is not loaded."""
        dataset = self.get_if_loaded(dataset_id)
        return dataset is not None and dataset.fingerprint == fingerprint

    def get(self, dataset_id: str) -> Dataset:
        """The loaded dataset; ``NotFoundError`` if unknown, ``InvalidInputError`` if malformed."""
        source = self._source(dataset_id)
        stat = _stat(source)
        with self._lock:
            hit = self._loaded.get(dataset_id)
            if hit is not None and hit[0] == stat:
                return hit[1]
            checked = self._checked.get(dataset_id)
            if checked is not None and checked.stat == stat and checked.error is not None:
                raise InvalidInputError(
                    f"dataset {dataset_id!r} is invalid: {checked.error}", code="invalid_dataset"
                )
            load_lock = self._load_locks.setdefault(dataset_id, threading.Lock())
        with load_lock:  # one loader per dataset; others wait for its result
            with self._lock:
                hit = self._loaded.get(dataset_id)
                if hit is not None and hit[0] == stat:
                    return hit[1]
            try:
                dataset = load_dataset(source)
            except InvalidInputError as exc:
                with self._lock:
                    self._checked[dataset_id] = _Checked(stat, exc.message)
                    self._loaded.pop(dataset_id, None)
                raise InvalidInputError(
                    f"dataset {dataset_id!r} is invalid: {exc.message}", code="invalid_dataset"
                ) from exc
            with self._lock:
                self._checked[dataset_id] = _Checked(
                    stat,
                    None,
                    n_preambles=len(dataset.preambles),
                    n_rows=dataset.n_rows,
                    dim=dataset.dim,
                    n_clusters=dataset.n_clusters_total(),
                )
                self._loaded[dataset_id] = (stat, dataset)
            return dataset

    def _source(self, dataset_id: str) -> DatasetSource:
        # The id is only ever compared with ids made from the directory listing: it never
        # becomes part of a path, so "../x" or "%2F" cannot reach outside the data dir.
        source = self.sources().get(dataset_id)
        if source is None:
            raise NotFoundError(f"dataset={dataset_id!r} is not known", code="dataset_not_found")
        return source

    def _info(self, source: DatasetSource) -> DatasetInfo:
        checked = self._checked.get(source.id)
        if source.error is not None:
            checked = _Checked(_stat(source), source.error)
        elif checked is not None and checked.stat != _stat(source):
            checked = None
        status = "unchecked" if checked is None else "invalid" if checked.error else "ok"
        return DatasetInfo(
            id=source.id,
            name=source.name,
            status=status,
            error=checked.error if checked else None,
            n_preambles=checked.n_preambles if checked else None,
            n_rows=checked.n_rows if checked else None,
            dim=checked.dim if checked else None,
            n_clusters=checked.n_clusters if checked else None,
            embeddings_file=source.embeddings_path.name if source.embeddings_path else None,
            clustering_file=source.clustering_path.name if source.clustering_path else None,
        )
