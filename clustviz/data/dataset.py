"""A loaded, validated dataset and the per-preamble view the projectors consume."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from clustviz.errors import NotFoundError
from clustviz.labels import dense_labels

__all__ = ["Dataset", "PreambleView", "preamble_id"]


def preamble_id(text: str) -> str:
    """A short stable id for a preamble (its text contains spaces, quotes and apostrophes)."""
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


@dataclass(frozen=True, slots=True)
class PreambleView:
    """The guesses of one preamble, in the dataset's stable row order.

    ``X`` is ``(n, d)`` float32 C-contiguous and read-only: where the preamble's rows lie
    together in the file (the usual case) it is a window on the dataset's embeddings, not a
    copy, so thousands of views (a whole-dataset batch) cost no embedding memory. ``labels``
    re-indexes the global ``cluster_ids`` (up to hundreds, sparse per preamble) to
    ``0..n_clusters-1`` in increasing global id (:func:`clustviz.labels.dense_labels`), so a
    cluster keeps its colour across projectors of the same preamble; ``clusters[label]`` is a
    label's global id.
    """

    preamble: str
    X: np.ndarray
    guesses: list[str]
    token_ids: np.ndarray
    logits: np.ndarray
    cluster_ids: np.ndarray
    labels: np.ndarray
    clusters: np.ndarray  # (n_clusters,): the global id of each label, increasing

    @property
    def n_points(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_clusters(self) -> int:
        return len(self.clusters)


@dataclass(slots=True)
class Dataset:
    """Rows (file order), their float32 embeddings, and an O(1) index per preamble."""

    id: str
    name: str
    fingerprint: str
    rows: pl.DataFrame  # preamble, token_id, guess, logit, cluster_id, dist_to_cluster_avg
    embeddings: np.ndarray  # (N, d) float32, C-contiguous, row-aligned with ``rows``
    _index: dict[str, np.ndarray] = field(repr=False)  # preamble text -> row indices
    _ids: dict[str, str] = field(repr=False)  # preamble id -> text

    @property
    def n_rows(self) -> int:
        return self.rows.height

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def preambles(self) -> list[str]:
        """Preamble texts in order of first appearance in the embeddings file."""
        return list(self._index)

    def n_clusters_total(self) -> int:
        return int(self.rows["cluster_id"].n_unique())

    def resolve_preamble(self, preamble: str | None = None, preamble_id: str | None = None) -> str:
        """Return the preamble text given its text or its id; :class:`NotFoundError` otherwise."""
        if preamble_id is not None:
            text = self._ids.get(preamble_id)
            if text is None:
                raise NotFoundError(
                    f"preamble_id={preamble_id!r} is not in dataset {self.id!r}",
                    code="preamble_not_found",
                )
            return text
        if preamble is None or preamble not in self._index:
            raise NotFoundError(
                f"preamble={preamble!r} is not in dataset {self.id!r}",
                code="preamble_not_found",
            )
        return preamble

    def row_indices(self, preamble: str) -> np.ndarray:
        return self._index[self.resolve_preamble(preamble)]

    def view(self, preamble: str) -> PreambleView:
        """The guesses of one preamble; :class:`NotFoundError` if it is unknown."""
        rows_idx = self.row_indices(preamble)
        n, start = len(rows_idx), int(rows_idx[0])
        if bool((np.diff(rows_idx) == 1).all()):  # the usual file: a preamble's rows together
            part, X = self.rows.slice(start, n), self.embeddings[start : start + n]
        else:
            part, X = self.rows[rows_idx], self.embeddings[rows_idx]
        X = X.view()
        X.flags.writeable = False  # shared with the dataset (and with every other view)
        cluster_ids = part["cluster_id"].to_numpy()
        clusters, labels = dense_labels(cluster_ids)
        return PreambleView(
            preamble=preamble,
            X=X,
            guesses=part["guess"].to_list(),
            token_ids=part["token_id"].to_numpy(),
            logits=part["logit"].to_numpy(),
            cluster_ids=cluster_ids,
            labels=labels,
            clusters=clusters,
        )

    def preamble_summaries(self) -> pl.DataFrame:
        """One row per preamble: id, text, point count, distinct cluster count (file order)."""
        summary = self.rows.group_by("preamble", maintain_order=True).agg(
            pl.len().alias("n_points"), pl.col("cluster_id").n_unique().alias("n_clusters")
        )
        return summary.select(
            pl.col("preamble").map_elements(preamble_id, return_dtype=pl.String).alias("id"),
            pl.col("preamble").alias("text"),
            "n_points",
            "n_clusters",
        )
