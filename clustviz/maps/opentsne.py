"""t-SNE by openTSNE: FFT-accelerated gradients for large data, and a ``transform`` that places
new rows in a fitted embedding without moving it (openTSNE's recipe for large data: fit a
sample, add the rest). Progress is reported during both (openTSNE's callbacks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clustviz.maps.base import MapMethod, StageProgress
from clustviz.maps.params import OpenTSNEMapParams

__all__ = ["OpenTSNEMethod"]

#: openTSNE calls the callbacks every this many iterations (the progress's granularity).
CALLBACK_EVERY = 25


@dataclass(slots=True)
class _Iterations:
    """An openTSNE callback turning iterations into a stage fraction (openTSNE counts each
    optimisation phase from zero, so the calls are counted here).

    The fitted embedding keeps its callbacks and ``transform`` runs them too: before placing
    rows, :meth:`restart` points the same callback at the placing stage.
    """

    progress: StageProgress
    total: int
    calls: int = 0

    def restart(self, progress: StageProgress, total: int) -> None:
        self.progress, self.total, self.calls = progress, total, 0

    def __call__(self, iteration: int, error: float, embedding: np.ndarray) -> bool:
        self.calls += 1
        self.progress(min(1.0, self.calls * CALLBACK_EVERY / max(self.total, 1)))
        return False  # never stop the optimisation


class OpenTSNEMethod(MapMethod):
    name = "opentsne"
    params: OpenTSNEMapParams

    def _fit(self, X: np.ndarray, y: np.ndarray | None, progress: StageProgress) -> np.ndarray:
        from openTSNE import TSNE

        params = self.params
        self.iterations_ = _Iterations(progress, params.early_exaggeration_iter + params.n_iter)
        model = TSNE(
            n_components=2,
            perplexity=params.perplexity,
            early_exaggeration=params.early_exaggeration,
            early_exaggeration_iter=params.early_exaggeration_iter,
            n_iter=params.n_iter,
            learning_rate=params.learning_rate,
            metric=params.metric,
            initialization=params.initialization,
            dof=params.dof,
            n_jobs=1,  # see OpenTSNEMapParams: the answer must not depend on the thread count
            random_state=params.random_state,
            callbacks=self.iterations_,
            callbacks_every_iters=CALLBACK_EVERY,
            verbose=False,
        )
        self.embedding_ = model.fit(X)
        return np.array(self.embedding_)  # a copy: transform moves the fitted embedding

    def _transform(self, X: np.ndarray, progress: StageProgress) -> np.ndarray:
        params = self.params
        self.iterations_.restart(progress, params.transform_n_iter)
        # openTSNE's transform first centres the fitted embedding, in place: the rows placed
        # come back in the centred frame. Shift them back into the frame the fit returned.
        before = np.array(self.embedding_[0], dtype=np.float64)
        placed = self.embedding_.transform(
            X,
            n_iter=params.transform_n_iter,
            k=params.transform_k,
            perplexity=params.transform_perplexity,
        )
        shift = before - np.asarray(self.embedding_[0], dtype=np.float64)
        return np.asarray(placed) + shift
