"""UMAP by TorchDR (PyTorch): the map on CUDA when the device resolves to it, on the CPU
otherwise, with TorchDR's own ``transform`` (new rows optimised against the frozen fitted
embedding) for rows it was not fitted on.

Boundaries kept here, not in TorchDR's hands:

* Randomness: TorchDR's ``random_state`` seeds every global generator (Python, NumPy, torch,
  CUDA) and sets cuDNN flags. It is never passed; the fit runs inside
  ``torch.random.fork_rng`` seeded with the map's seed, so the global state is restored after.
* Neighbours: FAISS's exact (``Flat``) index, on the host unless ``faiss-gpu`` is installed;
  the plain-torch backend builds the full ``n × n`` distance matrix, which a map cannot afford.
* No duplicate pass (``process_duplicates``): it sorts a copy of the whole input.
* Threads: on the CPU, torch runs on one thread during the fit and the transform: its
  reductions split over threads sum in another order, and the optimisation amplifies that
  into another map. On CUDA, TorchDR's scatter-adds are atomic: a CUDA map is of the same
  quality run to run, not the same bits.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from clustviz.device import resolve_device
from clustviz.maps.base import MapMethod, StageProgress
from clustviz.maps.params import TorchDRUMAPParams

__all__ = ["TorchDRUMAPMethod"]


@contextmanager
def _seeded(device: Any, seed: int) -> Iterator[None]:
    """Run with torch's generators (the CPU's and ``device``'s) seeded, restored afterwards."""
    import torch

    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(seed)
        yield


@contextmanager
def _one_cpu_thread(device: Any) -> Iterator[None]:
    """Torch on one thread inside the block on the CPU (process-wide: restored on exit)."""
    import torch

    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        # "faiss-gpu not installed, using CPU for Faiss": the documented behaviour here;
        # "NumPy array is not writable": the input is only read.
        warnings.simplefilter("ignore", UserWarning)
        yield


def _reporting(model_class: type) -> Any:
    """A subclass of TorchDR's UMAP that reports each optimisation step to ``report`` (set on
    the instance: the fit's stage, then the placing stage)."""

    class ReportingUMAP(model_class):
        report: StageProgress

        def on_training_step_end(self) -> Any:  # TorchDR's hook, once per fit step
            result = super().on_training_step_end()
            self.report((int(self.n_iter_) + 1) / self.max_iter)
            return result

        def _sample_transform_neg_indices(self, *args: Any) -> Any:
            # once per transform step (the transform loop has no hook); n_iter_ is the step
            self.report((int(self.n_iter_) + 1) / self._get_max_iter_transform())
            return super()._sample_transform_neg_indices(*args)

    return ReportingUMAP


class TorchDRUMAPMethod(MapMethod):
    name = "torchdr_umap"
    params: TorchDRUMAPParams

    def _fit(self, X: np.ndarray, y: np.ndarray | None, progress: StageProgress) -> np.ndarray:
        from torchdr import UMAP

        params = self.params
        self.device_ = resolve_device(params.device)
        self.resolved_["device"] = str(self.device_)
        self.model_ = _reporting(UMAP)(
            n_components=2,
            n_neighbors=params.n_neighbors,
            min_dist=params.min_dist,
            spread=params.spread,
            lr=params.lr,
            max_iter=params.max_iter,
            device=str(self.device_),
            backend="faiss",
            random_state=None,  # see the module docstring: seeded by _seeded instead
            process_duplicates=False,
            distributed=False,
            verbose=False,
        )
        self.model_.report = progress
        self.X_fit_ = X  # TorchDR's transform needs the fitted rows again, in the same order
        with _quiet(), _one_cpu_thread(self.device_), _seeded(self.device_, params.random_state):
            return _numpy(self.model_.fit_transform(X))

    def _transform(self, X: np.ndarray, progress: StageProgress) -> np.ndarray:
        self.model_.report = progress
        seed = self.params.random_state
        with _quiet(), _one_cpu_thread(self.device_), _seeded(self.device_, seed):
            return _numpy(self.model_.transform(X, X_train=self.X_fit_))


def _numpy(Y: Any) -> np.ndarray:
    if hasattr(Y, "detach"):
        Y = Y.detach().cpu().numpy()
    return np.asarray(Y)
