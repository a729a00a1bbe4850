"""The compute backend of one fit, chosen once (:func:`resolve_backend`) and passed down.

What differs between backends: the dense path's two optimisations (the init's neighbour
embedding and the relaxation, :meth:`TorchBackend.neighbour_embedding` and
:meth:`TorchBackend.gradient_layout`), and the large-n path's per-step pair work (soft-kNN
overlap terms, the sampled ``KL(P || Q)``, the k-nearest selections); everything else (anchors,
targets, discrepancies) is plain torch. Two backends, one interface:

* :class:`TorchBackend`: plain PyTorch on any device (the GPU's code; the CPU tests run it
  too). Each elementwise op is its own pass over the ``10⁵`` candidate pairs of a step.
* :class:`NumbaBackend`: the same formulas as numba loops (:mod:`.fused_loops`), CPU only. The
  soft overlap makes one pass for the sigmoids' arguments, one that sums the soft edges per
  group pair and one that scatters the gradient; the sampled KL draws its random pairs inside
  the loop (other pairs than the torch backend's draw: deterministic, not identical). The loops
  release the GIL, so the relaxation's two lanes (:mod:`.lanes`) run them on both cores.

The dense path's numba loops (:mod:`.dense_loops`) fit one preamble at a time: a 40-point
preamble's steps are a few loops each instead of some forty tensor ops whose dispatch costs more
than their arithmetic.

``backend="auto"`` takes numba on the CPU (it wins there: one preamble alone, and the n = 3000
relaxation, several times the torch backend's speed; large batches about even) when it
compiles, torch elsewhere. The tests hold both to the same autograd oracles
(``tests/clusterplot/test_backends.py``, ``tests/clusterplot/test_dense_backends.py``).

Planar layout throughout (:mod:`.planar`): coordinates ``(2, N)``, pairs row by row as
``columns (R, M)``.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from clustviz.clusterplot.planar import add_pair_grad, add_pull, flat_columns, pairs
from clustviz.errors import InvalidInputError, UnavailableError

if TYPE_CHECKING:
    from clustviz.clusterplot.optimize import OverlapTarget

__all__ = [
    "BACKEND_NAMES",
    "KnnEdges",
    "NumbaBackend",
    "OverlapPairs",
    "TorchBackend",
    "numba_loops",
    "resolve_backend",
]

BACKEND_NAMES = ("auto", "torch", "numba")
_LOG = logging.getLogger(__name__)
_EMPTY_1D = np.zeros(0, np.float32)
#: A term's loss: a tensor where the backend keeps it on the device (no sync per step).
Loss = float | torch.Tensor


@dataclass(slots=True)
class OverlapPairs:
    """The candidate pairs of one soft-kNN overlap term and the group pairs they add to.

    Edge weight of pair (i, j): ``σ((r_i - D_ij) / (T r_i))`` times ``weight`` (the folded
    rows' multiplicities, or None); edges are summed per group pair (``inverse``: pair → key),
    rows normalised over ``pair_a`` (``keep`` zeroes a group's own key, or None), ``cross``
    masks the keys that count (different clusters), ``target`` is R_H on the keys (0 off
    ``cross``); the loss is ``Σ |R - target| / count``."""

    columns: torch.Tensor  # (R, M) long: row i's candidate columns
    inverse: torch.Tensor  # (R · M,) long: each pair's key
    pair_a: torch.Tensor  # (P,) long: a key's row group
    cross: torch.Tensor  # (P,) float
    target: torch.Tensor  # (P,) float
    keep: torch.Tensor | None  # (P,) float
    weight: torch.Tensor | None  # (R, M) float
    n_groups: int
    count: float
    temperature: float
    width: int  # columns of the planar gradient the pairs scatter into
    # what a backend streams every step, made once per candidate set (prepare)
    flat: torch.Tensor | None = None  # torch: columns through flat_columns
    columns32: torch.Tensor | None = None  # numba: int32 (fewer bytes to stream)
    inverse32: torch.Tensor | None = None


@dataclass(slots=True)
class KnnEdges:
    """The kNN edges of X for the sampled ``KL(P || Q)``: P puts ``1 / (2E)`` on both
    directions of the E edges ``neighbours (n, knn_k)``."""

    neighbours: torch.Tensor  # (n, knn_k) long
    flat: torch.Tensor  # neighbours through flat_columns (width n)
    neighbours32: torch.Tensor  # int32, for the numba loops

    @classmethod
    def of(cls, neighbours: torch.Tensor) -> KnnEdges:
        """The edges of ``neighbours (n, knn_k)`` in every form a backend reads."""
        n = neighbours.shape[0]
        return cls(neighbours, flat_columns(neighbours, n), neighbours.int())


class TorchBackend:
    """Plain PyTorch, any device: the pair terms as vectorised torch ops."""

    name: ClassVar[str] = "torch"

    def neighbour_embedding(
        self, Y0: torch.Tensor, P: torch.Tensor, mask: torch.Tensor, *, steps: int, lr: float
    ) -> torch.Tensor:
        """The dense path's init: :func:`~.init.neighbour_embedding` of ``Y0 (B, n, 2)``."""
        from clustviz.clusterplot.init import neighbour_embedding

        return neighbour_embedding(Y0, P, mask, steps=steps, lr=lr)

    def gradient_layout(
        self, Y0: torch.Tensor, target: OverlapTarget, **settings: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The dense path's relaxation: :func:`~.optimize.gradient_layout`."""
        from clustviz.clusterplot.optimize import gradient_layout

        return gradient_layout(Y0, target, **settings)

    def prepare(self, pairs_: OverlapPairs) -> OverlapPairs:
        """``pairs_`` with what this backend streams every step (once per candidate set)."""
        pairs_.flat = flat_columns(pairs_.columns, pairs_.width)
        return pairs_

    def soft_overlap_grad(
        self,
        Zt: torch.Tensor,
        pairs_: OverlapPairs,
        radius: torch.Tensor,
        factor: float,
        grad: torch.Tensor,
    ) -> Loss:
        """``factor ·`` the soft-kNN overlap loss of the planar rows ``Zt (2, N)`` over
        ``pairs_`` (radii ``(R, 1)``); its gradient added into the planar ``grad``."""
        p = pairs_
        assert p.flat is not None, "prepare() the pairs first"
        diff, D = pairs(Zt, p.columns)
        scale = 1.0 / (p.temperature * radius)
        s = torch.sigmoid(torch.addcmul(radius * scale, D, scale, value=-1.0))
        w = s if p.weight is None else s * p.weight
        edges = torch.zeros_like(p.target).scatter_add_(0, p.inverse, w.reshape(-1))
        off = edges if p.keep is None else edges * p.keep
        rows = torch.zeros(p.n_groups, dtype=Zt.dtype, device=Zt.device)
        rows.scatter_add_(0, p.pair_a, off)
        # (the clamp stops the row-sum path: rows at 0 get no gradient)
        inv_rows = ((rows > 1e-12) / rows.clamp_min(1e-12)).index_select(0, p.pair_a)
        R = off * inv_rows * p.cross
        delta = R - p.target  # 0 off the counted pairs
        per_pair = factor / max(p.count, 1.0)
        loss = delta.abs().sum() * per_pair
        g_R = torch.sign(delta).mul_(per_pair)
        row_dot = torch.zeros_like(rows).scatter_add_(0, p.pair_a, g_R * R)
        g_off = g_R.sub_(row_dot.index_select(0, p.pair_a)).mul_(inv_rows)
        if p.keep is not None:
            g_off = g_off.mul_(p.keep)
        # -2 dL/dD_ij = -2 g_w · w (s - 1) / (T r): -2 folded into the per-row scale
        pull_per_d = (s - 1.0).mul_(w).mul_(scale * -2.0)
        g_w = g_off.index_select(0, p.inverse).view_as(w)
        add_pull(grad, p.flat, diff.mul_(g_w.mul_(pull_per_d)))
        return loss

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
    ) -> Loss:
        """``factor ·`` the sampled ``KL(P || Q)`` of the planar ``Yt (2, n)``, its gradient
        added into ``grad``: the kNN edges attract (each visited once with twice the weight:
        both directions count alike), ``negatives`` random pairs per point drawn from
        ``generator`` estimate the normaliser ``log Σ q``. The loss, or 0.0 when not
        ``with_loss``."""
        n = Yt.shape[1]
        other = self.draw_others(n, negatives, generator)
        diff, D = pairs(Yt, edges.neighbours)
        edge_weight = exaggeration / edges.neighbours.numel()
        add_pair_grad(grad, edges.flat, (factor * edge_weight) / (1.0 + D), diff)
        if with_loss:
            attraction = torch.log1p(D).sum() * (factor * edge_weight)
        diff, D = pairs(Yt, other)
        w = 1.0 / (1.0 + D)
        scale = (n - 1) / negatives  # each sample stands for (n - 1) / negatives pairs
        total = w.sum() * scale
        add_pair_grad(grad, flat_columns(other, n), (w * w) * (-factor * scale) / total, diff)
        return attraction + torch.log(total) * factor if with_loss else 0.0

    def draw_others(self, n: int, negatives: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, negatives)`` long: per point, random others drawn uniformly (the sampled
        KL's pairs) from ``generator``."""
        other = torch.randint(
            0, n - 1, (n, negatives), generator=generator, device=generator.device
        )
        return other + (other >= torch.arange(n, device=other.device).unsqueeze(1))

    def smallest(
        self, Zt: torch.Tensor, pairs_: OverlapPairs, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ordered, where)``, both ``(R, k)``: each row's ``k`` smallest ``|z_i - z_j|²``
        over its candidate columns (``k ≤ M``), ascending, and where they are in the row."""
        return pairs(Zt, pairs_.columns)[1].topk(k, dim=1, largest=False)

    def smallest_in_rows(self, dist: torch.Tensor, k: int) -> torch.Tensor:
        """The columns ``(R, k)`` (int64) of each row's ``k`` smallest entries of
        ``dist (R, n)``, ascending (``k ≤ n``)."""
        return dist.topk(k, dim=1, largest=False).indices


class NumbaBackend(TorchBackend):
    """The pair terms as fused numba loops (CPU tensors only); see the module docstring.

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
        from clustviz.clusterplot import dense_loops

        self.dense = dense_loops  # compiled on first use: the workers' warm-up fit

    def neighbour_embedding(
        self, Y0: torch.Tensor, P: torch.Tensor, mask: torch.Tensor, *, steps: int, lr: float
    ) -> torch.Tensor:
        from clustviz.clusterplot.dense_numba import numba_neighbour_embedding

        return numba_neighbour_embedding(self.dense, Y0, P, mask, steps=steps, lr=lr)

    def gradient_layout(
        self, Y0: torch.Tensor, target: OverlapTarget, **settings: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from clustviz.clusterplot.dense_numba import numba_gradient_layout

        return numba_gradient_layout(self.dense, Y0, target, **settings)

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


def resolve_backend(name: str, device: torch.device) -> TorchBackend:
    """The backend of a fit on ``device``: ``"auto"`` (numba on the CPU when it compiles,
    torch elsewhere), ``"torch"`` or ``"numba"`` (CPU only)."""
    if name == "torch":
        return TorchBackend()
    if name == "numba":
        if device.type != "cpu":
            raise InvalidInputError(
                f"backend='numba' runs on the CPU only, not on device {str(device)!r}; "
                "use backend='auto' or 'torch'",
                code="invalid_params",
            )
        return NumbaBackend()
    if name == "auto":
        if device.type == "cpu" and numba_loops() is not None:
            return NumbaBackend()
        return TorchBackend()
    raise InvalidInputError(
        f"backend={name!r} is not one of {', '.join(map(repr, BACKEND_NAMES))}",
        code="invalid_params",
    )


_STATE: dict[str, ModuleType | None] = {}
_COMPILING = threading.Lock()


def numba_loops() -> ModuleType | None:
    """The compiled numba loops (:mod:`.fused_loops`), or None where numba cannot compile
    them; compiled (or loaded from numba's disk cache) and smoke-tested on the first call."""
    with _COMPILING:  # two lanes, or two threads' fits, may both ask first
        if "loops" not in _STATE:
            _STATE["loops"] = _compile()
    return _STATE["loops"]


def _compile() -> ModuleType | None:
    try:
        from clustviz.clusterplot import fused_loops as loops

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
