"""The numba backend's dense path: the torch tensors of :func:`~.optimize.dense_terms` handed
to :mod:`.dense_loops` as C-contiguous numpy arrays of one type each (float64, int64, bool),
so the loops compile once per process, and the answers handed back as torch tensors."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import torch

from clustviz.clusterplot.init import EXAGGERATION
from clustviz.clusterplot.optimize import OverlapTarget, SoftOverlap, dense_terms

__all__ = ["numba_gradient_layout", "numba_neighbour_embedding"]


def _f64(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=np.float64)


def _i64(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=np.int64)


def _term(term: SoftOverlap, B: int) -> list[Any]:
    """A soft overlap term's arrays in :func:`~.dense_loops.gradient_layout`'s order."""
    flat = np.zeros((B, 0, 0), np.int64) if term.flat is None else _i64(term.flat)
    return [
        _f64(term.pair_weight),
        np.ascontiguousarray(term.invalid.cpu().numpy()),
        flat,
        _f64(term.pairs),
        _f64(term.target),
        _f64(term.count),
        _i64(term.k),
    ]


def numba_neighbour_embedding(
    loops: ModuleType,
    Y0: torch.Tensor,
    P: torch.Tensor,
    mask: torch.Tensor,
    *,
    steps: int,
    lr: float,
) -> torch.Tensor:
    """:func:`~.init.neighbour_embedding` by :func:`~.dense_loops.neighbour_embedding`."""
    n = Y0.shape[1]
    valid = mask.unsqueeze(1) & mask.unsqueeze(2) & ~torch.eye(n, dtype=torch.bool)
    out = np.empty(Y0.shape, np.float64)
    loops.neighbour_embedding(_f64(Y0), _f64(P), _f64(valid), steps, lr, EXAGGERATION, out)
    return torch.from_numpy(out).to(Y0.dtype) * mask.unsqueeze(-1)


def numba_gradient_layout(
    loops: ModuleType,
    Y0: torch.Tensor,
    target: OverlapTarget,
    *,
    steps: int,
    lr: float,
    overlap_weight: float,
    label_overlap_weight: float,
    knn_weight: float,
    temperature: float,
    radius_every: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~.optimize.gradient_layout` by :func:`~.dense_loops.gradient_layout`."""
    B = Y0.shape[0]
    terms = dense_terms(Y0, target, temperature)
    multiplicity = terms.sub.multiplicity
    out, trace = np.empty(Y0.shape, np.float64), np.zeros((steps, B), np.float64)
    loops.gradient_layout(
        _f64(Y0), _i64(target.point_anchor), _f64(terms.weight[..., 0]),
        _f64(terms.inv_members[..., 0]), _i64(terms.rows.anchor_rows),
        *_term(terms.sub, B),
        np.zeros((B, 0)) if multiplicity is None else _f64(multiplicity),
        target.n_anchors,
        *_term(terms.label, B), target.n_clusters,
        _f64(target.P), _f64(terms.valid), steps, lr, overlap_weight, label_overlap_weight,
        knn_weight, temperature, radius_every, out, trace,
    )  # fmt: skip
    return torch.from_numpy(out).to(Y0.dtype), torch.from_numpy(trace).to(Y0.dtype)
