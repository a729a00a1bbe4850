"""The large-n path's CPU hot loops as fused numba loops: the pair terms of a step in three
passes over the pairs where :mod:`.kernels` makes about twenty, and the kNN selections.

A TorchScript kernel of :mod:`.kernels` runs each elementwise op as its own pass over the
10⁵ candidate pairs of a step, so on the CPU the relaxation is bound by memory traffic, not
arithmetic (n = 3000: about 20 passes over 145 k pairs per term and step). Here the soft
overlap makes one pass for the sigmoids' arguments, one that sums the soft edges per group
pair (a row's pairs come sorted by group pair, so equal keys are summed in a register) and
one that scatters the gradient; the sigmoids themselves stay a vectorised torch op (numba's
scalar ``exp`` alone took as long as the rest). The sampled KL draws its random pairs inside
the loop. Each row's k nearest candidates (the soft radii) and each distance row's k
smallest entries (the high-D kNN graphs) are picked by insertion into a k-slot buffer, 2×
``torch.topk``'s speed at these sizes.

Same formulas as :func:`.kernels.soft_overlap_grad`, :func:`.kernels.kl_attraction` and
:func:`.kernels.kl_repulsion` (the tests hold them to autograd), used on CPU tensors only: on
a GPU the TorchScript kernels run. The loops release the GIL, so the relaxation's two lanes
(:mod:`.lanes`) run them on both cores; sums over pairs are kept in float64. Index arrays are
int32 (fewer bytes to stream); the loops are compiled once per process for exactly the types
a fit passes (a test holds a fit to them: another specialisation would compile on a request).

numba (a dependency of umap-learn too) compiles them on first use, cached on disk
(``cache=True``; the service points ``NUMBA_CACHE_DIR`` at its state dir), and the workers'
warm-up fit makes them ready before any request. ``CLUSTVIZ_NO_FUSED=1``, or a numba that
fails to compile them, leaves the TorchScript kernels in place.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from typing import Any

import numpy as np
import torch

__all__ = ["available", "kl_grad", "smallest", "smallest_in_rows", "soft_overlap_grad"]

_EMPTY_1D = np.zeros(0, np.float32)
_STATE: dict[str, Any] = {}  # "ok": compiled and usable; "loops": the numba module
_COMPILING = threading.Lock()
_LOG = logging.getLogger(__name__)


def available() -> bool:
    """Whether the fused loops are compiled and usable in this process (compiles them on the
    first call)."""
    with _COMPILING:  # the relaxation's two lanes may both ask first
        if "ok" not in _STATE:
            _STATE["ok"] = _compile()
    return bool(_STATE["ok"])


def soft_overlap_grad(
    Zt: torch.Tensor,
    columns: torch.Tensor,
    radius: torch.Tensor,
    temperature: float,
    weight: torch.Tensor | None,
    inverse: torch.Tensor,
    keep: torch.Tensor | None,
    pair_a: torch.Tensor,
    cross: torch.Tensor,
    target: torch.Tensor,
    n_groups: int,
    count: float,
    factor: float,
    grad: torch.Tensor,
) -> float:
    """:func:`.kernels.soft_overlap_grad` (same arguments less ``flat``) on CPU tensors:
    ``factor ·`` the soft-kNN overlap loss, its gradient added into the planar ``grad``."""
    loops = _STATE["loops"]
    Z, cand = _array(Zt), _array(columns)
    r = _array(radius.reshape(-1))
    s = torch.empty(columns.numel(), dtype=Zt.dtype)
    loops.overlap_arguments(Z, cand, r, temperature, s.numpy())
    s.sigmoid_()  # vectorised; see the module docstring
    return loops.overlap_rest(
        Z,
        cand,
        r,
        temperature,
        s.numpy(),
        _EMPTY_1D if weight is None else _array(weight.reshape(-1)),
        _array(inverse),
        _EMPTY_1D if keep is None else _array(keep),
        _array(pair_a),
        _array(cross),
        _array(target),
        n_groups,
        count,
        factor,
        _array(grad, writable=True),
    )


def kl_grad(
    Yt: torch.Tensor,
    neighbours: torch.Tensor,
    negatives: int,
    generator: torch.Generator,
    exaggeration: float,
    factor: float,
    grad: torch.Tensor,
    with_loss: bool = True,
) -> float:
    """:func:`.kernels.kl_attraction` plus :func:`.kernels.kl_repulsion` on CPU tensors: the
    sampled ``KL(P || Q)`` of the planar ``Yt (2, n)`` over the kNN edges ``neighbours`` and
    ``negatives`` random pairs per point, its gradient added into ``grad``; the loss (0.0
    when ``with_loss`` is False: the attraction's logarithms are then skipped).

    The random pairs come from a seed drawn from ``generator`` (deterministic, not the same
    pairs as the TorchScript path draws)."""
    loops = _STATE["loops"]
    Y, g = _array(Yt), _array(grad, writable=True)
    edge_weight = exaggeration / neighbours.numel()  # both directions of an edge
    D = torch.empty(neighbours.numel() if with_loss else 0, dtype=Yt.dtype)
    loops.kl_attraction(Y, _array(neighbours), factor * edge_weight, g, D.numpy())
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    other = loops.random_others(Y.shape[1], negatives, seed)
    loss = math.log(loops.kl_repulsion(Y, other, factor, g)) * factor
    if with_loss:
        loss += float(torch.log1p(D).sum()) * factor * edge_weight
    return loss


def smallest(Zt: torch.Tensor, columns: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ordered, where)``, both ``(R, k)``: each row's ``k`` smallest ``|z_i - z_j|²`` over
    its ``columns (R, M)`` (``k ≤ M``), ascending, and where they are in the row (as
    ``topk(k, largest=False)`` gives them)."""
    R = columns.shape[0]
    ordered = torch.empty(R, k, dtype=Zt.dtype)
    where = torch.empty(R, k, dtype=torch.int64)
    _STATE["loops"].smallest(_array(Zt), _array(columns), k, ordered.numpy(), where.numpy())
    return ordered, where


def smallest_in_rows(dist: torch.Tensor, k: int) -> torch.Tensor:
    """The columns ``(R, k)`` (int64) of each row's ``k`` smallest entries of ``dist (R, n)``,
    ascending (as ``dist.topk(k, largest=False).indices``; ``k ≤ n``)."""
    out = torch.empty(dist.shape[0], k, dtype=torch.int64)
    _STATE["loops"].smallest_in_rows(_array(dist), k, out.numpy())
    return out


def _array(tensor: torch.Tensor, writable: bool = False) -> np.ndarray:
    """A C-contiguous numpy view of a CPU tensor (a strided one would make numba compile
    another specialisation, at request time). ``writable``: the loops write into it, so it
    must be the tensor's own memory."""
    if tensor.is_contiguous():
        return tensor.numpy()
    if writable:
        raise ValueError("fused kernels write into contiguous tensors only")
    return tensor.contiguous().numpy()


def _compile() -> bool:
    """Compile the loops (or load them from numba's cache) and run them once; False if numba
    is missing, disabled or fails."""
    if os.environ.get("CLUSTVIZ_NO_FUSED") == "1":
        return False
    try:
        from clustviz.clusterplot import fused_loops as loops

        _STATE["loops"] = loops
        _smoke_test()
    except Exception as error:  # any numba failure leaves the TorchScript kernels in place
        _STATE.pop("loops", None)
        _LOG.warning("fused CPU loops unavailable, using the TorchScript kernels: %r", error)
        return False
    return True


def _smoke_test() -> None:
    """Run each loop once on a tiny input (this is what triggers the compilation)."""
    Zt = torch.tensor([[0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    cand = torch.tensor([[1, 2], [0, 2], [0, 1]], dtype=torch.int32)
    grad = torch.zeros_like(Zt)
    radius = torch.ones(3, 1)
    keys = torch.arange(6, dtype=torch.int32)
    pair_a = torch.arange(6) // 2
    ones = torch.ones(6)
    for weight in (None, torch.ones(3, 2)):
        soft_overlap_grad(
            Zt, cand, radius, 0.1, weight, keys, ones, pair_a, ones, ones * 0.5, 3, 6.0, 1.0, grad
        )
    kl_grad(Zt, cand, 2, torch.Generator().manual_seed(0), 1.0, 1.0, grad)
    smallest(Zt, cand, 2)
    smallest_in_rows(torch.ones(2, 3), 2)
