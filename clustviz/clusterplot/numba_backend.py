"""The numba backend: the loss terms as compiled loops, CPU tensors only.

* the sparse relaxation's pair terms (:mod:`.pair_loops`): the soft overlap makes one pass for
  the sigmoids' arguments, one that sums the soft edges per group pair and one that scatters
  the gradient; the sampled KL draws its random pairs inside the loop (other pairs than the
  torch backend's draw: deterministic, not identical). The loops release the GIL, so the
  relaxation's two lanes (:mod:`.threads`) run them on both cores.
* the dense path's two optimisations (:mod:`.layout_loops`), one preamble at a time: a
  40-point preamble's steps are a few loops each instead of some forty tensor ops whose
  dispatch costs more than their arithmetic. The tensors of :func:`~.losses.dense_terms` are
  handed over as C-contiguous float64/int64/bool arrays, so the loops compile once per process.

The loops compile on first use (:func:`numba_loops`, which also smoke-tests them) and are cached
on disk; where numba cannot compile them, ``backend="auto"`` takes torch.
"""

from __future__ import annotations

import logging
import math
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from clustviz.clusterplot.backends import TorchBackend
from clustviz.clusterplot.init import EmbedSettings
from clustviz.clusterplot.losses import CentroidPull, SoftOverlap, dense_terms
from clustviz.clusterplot.pair_losses import OverlapPairs
from clustviz.clusterplot.targets import KnnEdges
from clustviz.errors import UnavailableError

if TYPE_CHECKING:
    from clustviz.clusterplot.relaxation import RelaxSettings
    from clustviz.clusterplot.targets import OverlapTarget

__all__ = ["NumbaBackend", "numba_loops"]

_LOG = logging.getLogger(__name__)
_EMPTY_1D = np.zeros(0, np.float32)


class NumbaBackend(TorchBackend):
    """The loss terms as numba loops (CPU tensors only); see the module docstring.

    Sums over pairs are kept in float64. Index arrays are int32; the loops are compiled once
    per process for exactly the types a fit passes (a test holds a fit to them: another
    specialisation would compile on a request)."""

    name: ClassVar[str] = "numba"

    def __init__(self) -> None:
        loops = numba_loops()
        if loops is None:
            raise UnavailableError(
                "backend='numba' was requested but numba cannot compile the loops here; "
                "use backend='auto' or 'torch'",
                code="backend_unavailable",
            )
        self.loops = loops
        from clustviz.clusterplot import layout_loops

        self.dense: ModuleType = layout_loops  # compiled on first use: the warm-up fit

    def neighbour_embedding(
        self, Y0: torch.Tensor, P: torch.Tensor, mask: torch.Tensor, settings: EmbedSettings
    ) -> torch.Tensor:
        """:func:`~.init.neighbour_embedding` by :func:`~.layout_loops.neighbour_embedding`."""
        n = Y0.shape[1]
        valid = mask.unsqueeze(1) & mask.unsqueeze(2) & ~torch.eye(n, dtype=torch.bool)
        out = np.empty(Y0.shape, np.float64)
        self.dense.neighbour_embedding(
            _f64(Y0), _f64(P), _f64(valid), settings.steps, settings.lr, settings.exaggeration, out
        )
        return torch.from_numpy(out).to(Y0.dtype) * mask.unsqueeze(-1)

    def gradient_layout(
        self,
        Y0: torch.Tensor,
        target: OverlapTarget,
        settings: RelaxSettings,
        pull: CentroidPull | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`~.relaxation.gradient_layout` by :func:`~.layout_loops.gradient_layout`."""
        B, steps = Y0.shape[0], settings.steps
        terms = dense_terms(Y0, target, settings.temperature)
        multiplicity = terms.sub.multiplicity
        out, trace = np.empty(Y0.shape, np.float64), np.zeros((steps, B), np.float64)
        if pull is None:  # no term: a factor of 0 (the loop skips it), empty targets
            n = Y0.shape[1]
            no_rows = np.zeros((B, n))
            pulled = (np.zeros(B), np.zeros((B, 0, 2)), no_rows, no_rows.astype(np.int64))
        else:
            pulled = (
                _f64(pull.factor),
                _f64(pull.targets),
                _f64(pull.share[..., 0]),
                _i64(pull.labels),
            )
        self.dense.gradient_layout(
            _f64(Y0), _i64(target.point_anchor), _f64(terms.weight[..., 0]),
            _f64(terms.inv_members[..., 0]), _i64(terms.rows.anchor_rows),
            *_term(terms.sub, B),
            np.zeros((B, 0)) if multiplicity is None else _f64(multiplicity),
            target.n_anchors,
            *_term(terms.label, B), target.n_clusters,
            _f64(target.P), _f64(terms.valid), steps, settings.lr, settings.overlap_weight,
            settings.label_overlap_weight, settings.knn_weight, settings.temperature,
            settings.radius_every, *pulled, out, trace,
        )  # fmt: skip
        return torch.from_numpy(out).to(Y0.dtype), torch.from_numpy(trace).to(Y0.dtype)

    def prepare(self, pairs_: OverlapPairs) -> OverlapPairs:
        pairs_.columns32, pairs_.inverse32 = pairs_.columns.int(), pairs_.inverse.int()
        return pairs_

    def soft_overlap_grad(
        self,
        Zt: torch.Tensor,
        pairs_: OverlapPairs,
        radius: torch.Tensor,
        factor: float,
        grad: torch.Tensor,
    ) -> float:
        p = pairs_
        assert p.columns32 is not None and p.inverse32 is not None, "prepare() the pairs first"
        Z, cand = _array(Zt), _array(p.columns32)
        r = _array(radius.reshape(-1))
        s = torch.empty(p.columns.numel(), dtype=Zt.dtype)
        self.loops.overlap_arguments(Z, cand, r, p.temperature, s.numpy())
        s.sigmoid_()  # vectorised: numba's scalar exp alone took as long as the rest
        return float(
            self.loops.overlap_rest(
                Z, cand, r, p.temperature, s.numpy(),
                _EMPTY_1D if p.weight is None else _array(p.weight.reshape(-1)),
                _array(p.inverse32),
                _EMPTY_1D if p.keep is None else _array(p.keep),
                _array(p.pair_a), _array(p.cross), _array(p.target),
                p.n_groups, p.count, factor, _array(grad, writable=True),
            )
        )  # fmt: skip

    def kl_grad(
        self,
        Yt: torch.Tensor,
        edges: KnnEdges,
        *,
        negatives: int,
        generator: torch.Generator,
        exaggeration: float,
        factor: float,
        grad: torch.Tensor,
        with_loss: bool = True,
    ) -> float:
        Y, g = _array(Yt), _array(grad, writable=True)
        edge_weight = exaggeration / edges.neighbours.numel()  # both directions of an edge
        D = torch.empty(edges.neighbours.numel() if with_loss else 0, dtype=Yt.dtype)
        self.loops.kl_attraction(Y, _array(edges.neighbours32), factor * edge_weight, g, D.numpy())
        other = self.draw_others(Y.shape[1], negatives, generator).numpy()
        total = self.loops.kl_repulsion(Y, other, factor, g)
        if not with_loss:
            return 0.0
        return math.log(total) * factor + float(torch.log1p(D).sum()) * factor * edge_weight

    def draw_others(self, n: int, negatives: int, generator: torch.Generator) -> torch.Tensor:
        # in the loop from one seed: torch.randint and the shift past i took 110 µs a call at
        # n = 3000, a third of the KL term
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return torch.from_numpy(self.loops.random_others(n, negatives, seed))

    def smallest(
        self, Zt: torch.Tensor, pairs_: OverlapPairs, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert pairs_.columns32 is not None, "prepare() the pairs first"
        R = pairs_.columns.shape[0]
        ordered = torch.empty(R, k, dtype=Zt.dtype)
        where = torch.empty(R, k, dtype=torch.int64)
        self.loops.smallest(_array(Zt), _array(pairs_.columns32), k, ordered.numpy(), where.numpy())
        return ordered, where

    def smallest_in_rows(self, dist: torch.Tensor, k: int) -> torch.Tensor:
        # insertion into a k-slot buffer: 2.2× torch.topk's speed on 1024 × 3030 rows
        out = torch.empty(dist.shape[0], k, dtype=torch.int64)
        self.loops.smallest_in_rows(_array(dist), k, out.numpy())
        return out


_STATE: dict[str, ModuleType | None] = {}
_COMPILING = threading.Lock()


def numba_loops() -> ModuleType | None:
    """The compiled numba loops (:mod:`.pair_loops`), or None where numba cannot compile
    them; compiled (or loaded from numba's disk cache) and smoke-tested on the first call."""
    with _COMPILING:  # two lanes, or two threads' fits, may both ask first
        if "loops" not in _STATE:
            _STATE["loops"] = _compile()
    return _STATE["loops"]


def _compile() -> ModuleType | None:
    try:
        from clustviz.clusterplot import pair_loops as loops

        _smoke_test(loops)
    except Exception as error:  # any numba failure leaves the torch backend
        _LOG.warning("numba loops unavailable, using the torch backend: %r", error)
        return None
    return loops


def _smoke_test(loops: ModuleType) -> None:
    """Run each loop once on a tiny input, with the types a fit passes (this is what
    triggers the compilation)."""
    backend = NumbaBackend.__new__(NumbaBackend)
    backend.loops = loops
    Zt = torch.tensor([[0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    cand = torch.tensor([[1, 2], [0, 2], [0, 1]])
    grad = torch.zeros_like(Zt)
    ones = torch.ones(6)
    for weight in (None, torch.ones(3, 2)):
        case = OverlapPairs(
            columns=cand, inverse=torch.arange(6), pair_a=torch.arange(6) // 2, cross=ones,
            target=ones * 0.5, keep=ones, weight=weight, n_groups=3, count=6.0,
            temperature=0.1, width=3,
        )  # fmt: skip
        backend.soft_overlap_grad(Zt, backend.prepare(case), torch.ones(3, 1), 1.0, grad)
        backend.smallest(Zt, case, 2)
    edges = KnnEdges.of(cand)
    generator = torch.Generator().manual_seed(0)
    for with_loss in (True, False):
        backend.kl_grad(
            Zt, edges, negatives=2, generator=generator, exaggeration=1.0, factor=1.0,
            grad=grad, with_loss=with_loss,
        )  # fmt: skip
    backend.smallest_in_rows(torch.ones(2, 3), 2)


def _array(tensor: torch.Tensor, writable: bool = False) -> np.ndarray:
    """A C-contiguous numpy view of a CPU tensor (a strided one would make numba compile
    another specialisation, at request time). ``writable``: the loops write into it, so it
    must be the tensor's own memory."""
    if tensor.is_contiguous():
        return tensor.numpy()
    if writable:
        raise ValueError("the numba loops write into contiguous tensors only")
    return tensor.contiguous().numpy()


def _f64(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=np.float64)


def _i64(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=np.int64)


def _term(term: SoftOverlap, B: int) -> list[Any]:
    """A soft overlap term's arrays in :func:`~.layout_loops.gradient_layout`'s order."""
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
