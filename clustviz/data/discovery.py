"""Find datasets in a data dir laid out the way clamp writes them.

::

    DATA_DIR/embeddings/<model>|k=40+layer=7.parquet
    DATA_DIR/clustering/<same stem>+<cluster params>.tsv      (one or more per embeddings file)

Each (embeddings, clustering) pair is one dataset. ``DATA_DIR`` may also hold several such
layouts one level down (``DATA_DIR/<collection>/embeddings/...``). File names contain
``| : +`` and are only ever read from the directory listing, never taken from a request.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DatasetSource", "discover_datasets"]

EMBEDDINGS_DIR = "embeddings"
CLUSTERING_DIR = "clustering"


@dataclass(frozen=True, slots=True)
class DatasetSource:
    """Where one dataset lives. ``error`` is set when the pair is incomplete."""

    id: str
    name: str
    embeddings_path: Path | None
    clustering_path: Path | None
    error: str | None = None


def discover_datasets(data_dir: Path) -> list[DatasetSource]:
    """List every dataset under ``data_dir``, sorted by id; incomplete pairs carry an ``error``."""
    data_dir = Path(data_dir)
    roots = [data_dir] if (data_dir / EMBEDDINGS_DIR).is_dir() else []
    if data_dir.is_dir():
        roots += sorted(
            child
            for child in data_dir.iterdir()
            if child.is_dir() and (child / EMBEDDINGS_DIR).is_dir()
        )
    sources: list[DatasetSource] = []
    for root in roots:
        sources.extend(_discover_layout(root, data_dir))
    return sorted(sources, key=lambda source: source.id)


def _discover_layout(root: Path, data_dir: Path) -> list[DatasetSource]:
    embeddings = sorted((root / EMBEDDINGS_DIR).glob("*.parquet"))
    clustering_dir = root / CLUSTERING_DIR
    clusterings = sorted(clustering_dir.glob("*.tsv")) if clustering_dir.is_dir() else []
    matched: set[Path] = set()
    sources = []
    for embeddings_path in embeddings:
        stem = embeddings_path.stem
        # "<stem>+<params>.tsv": the "+" after the stem keeps "a|k=4" from matching "a|k=40".
        pairs = [path for path in clusterings if path.stem.startswith(stem + "+")]
        matched.update(pairs)
        if not pairs:
            sources.append(
                _source(
                    root,
                    data_dir,
                    embeddings_path,
                    None,
                    error=f"no clustering file '{stem}+*.tsv' in {CLUSTERING_DIR}/",
                )
            )
        for clustering_path in pairs:
            sources.append(_source(root, data_dir, embeddings_path, clustering_path))
    for clustering_path in clusterings:
        if clustering_path not in matched:
            sources.append(
                _source(
                    root,
                    data_dir,
                    None,
                    clustering_path,
                    error="no embeddings parquet whose name is a prefix of this clustering file",
                )
            )
    return sources


def _source(
    root: Path,
    data_dir: Path,
    embeddings_path: Path | None,
    clustering_path: Path | None,
    *,
    error: str | None = None,
) -> DatasetSource:
    anchor = clustering_path or embeddings_path
    assert anchor is not None
    relative = anchor.relative_to(data_dir).as_posix()
    name = anchor.stem.replace("|", " | ").replace("+", " + ")
    return DatasetSource(
        id=dataset_id(relative, anchor.stem),
        name=name,
        embeddings_path=embeddings_path,
        clustering_path=clustering_path,
        error=error,
    )


def dataset_id(relative_path: str, stem: str) -> str:
    """A stable, URL-safe id: a readable slug of the stem plus a hash of the relative path."""
    model = stem.split("|", 1)[0].split(":")[-1]
    n_clusters = re.search(r"n_clusters=(\d+)", stem)
    layer = re.search(r"layer=(\d+)", stem)
    parts = [model]
    if layer:
        parts.append(f"layer{layer.group(1)}")
    if n_clusters:
        parts.append(f"c{n_clusters.group(1)}")
    slug = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")[:48]
    digest = hashlib.blake2b(relative_path.encode(), digest_size=4).hexdigest()
    return f"{slug}-{digest}" if slug else digest
