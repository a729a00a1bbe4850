"""The compute backend of one fit, chosen once (:func:`resolve_backend`) and passed down.

What differs between backends: the dense relaxation's two optimisations (the init's neighbour
embedding and the relaxation, :meth:`TorchBackend.neighbour_embedding` and
:meth:`TorchBackend.gradient_layout`), and the sparse relaxation's per-step pair work (soft-kNN
overlap terms, the sampled ``KL(P || Q)``, the k-nearest selections); everything else (anchors,
targets, discrepancies) is plain torch. Two backends, one interface:

* :class:`TorchBackend`: plain PyTorch on any device (the GPU's code; the CPU tests run it
  too): the terms of :mod:`.losses` and :mod:`.pair_losses` as tensor ops.
* :class:`~.numba_backend.NumbaBackend`: the same formulas as numba loops, CPU only
  (:mod:`.numba_backend`).

``backend="auto"`` takes numba on the CPU (it wins there: one preamble alone, and the n = 3000
relaxation, several times the torch backend's speed; large batches about even) when it
compiles, torch elsewhere. The tests hold both to the same autograd oracles
(``tests/clusterplot/test_backends.py``, ``tests/clusterplot/test_dense_backends.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from clustviz.clusterplot.pair_losses import (
    Loss,
    OverlapPairs,
    sampled_kl_grad,
    soft_overlap_grad,
)
from clustviz.clusterplot.planar import flat_columns, pairs
from clustviz.errors import InvalidInputError

if TYPE_CHECKING:
    from clustviz.clusterplot.init import EmbedSettings
    from clustviz.clusterplot.losses import CentroidPull
    from clustviz.clusterplot.relaxation import RelaxSettings
    from clustviz.clusterplot.targets import KnnEdges, OverlapTarget

__all__ = ["BACKEND_NAMES", "TorchBackend", "resolve_backend"]

BACKEND_NAMES = ("auto", "torch", "numba")


class TorchBackend:
    """Plain PyTorch, any device: the loss terms as vectorised torch ops."""

    name: ClassVar[str] = "torch"

    def neighbour_embedding(
        self, Y0: torch.Tensor, P: torch.Tensor, mask: torch.Tensor, settings: EmbedSettings
    ) -> torch.Tensor:
        """The dense path's init: :func:`~.init.neighbour_embedding` of ``Y0 (B, n, 2)``."""
        from clustviz.clusterplot.init import neighbour_embedding

        return neighbour_embedding(Y0, P, mask, settings)

    def gradient_layout(
        self,
        Y0: torch.Tensor,
        target: OverlapTarget,
        settings: RelaxSettings,
        pull: CentroidPull | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The dense relaxation: :func:`~.relaxation.gradient_layout` (with the centroid
        ``pull`` of a map alignment, if given)."""
        from clustviz.clusterplot.relaxation import gradient_layout

        return gradient_layout(Y0, target, settings, pull)

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
        ``pairs_`` (radii ``(R, 1)``); its gradient added into the planar ``grad``
        (:func:`~.pair_losses.soft_overlap_grad`)."""
        return soft_overlap_grad(Zt, pairs_, radius, factor, grad)

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
        added into ``grad`` (:func:`~.pair_losses.sampled_kl_grad`), on ``negatives`` random
        pairs per point drawn from ``generator``. The loss, or 0.0 when not ``with_loss``."""
        other = self.draw_others(Yt.shape[1], negatives, generator)
        return sampled_kl_grad(
            Yt,
            edges,
            other,
            exaggeration=exaggeration,
            factor=factor,
            grad=grad,
            with_loss=with_loss,
        )

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


def resolve_backend(name: str, device: torch.device) -> TorchBackend:
    """The backend of a fit on ``device``: ``"auto"`` (numba on the CPU when it compiles,
    torch elsewhere), ``"torch"`` or ``"numba"`` (CPU only)."""
    if name == "torch":
        return TorchBackend()
    from clustviz.clusterplot.numba_backend import NumbaBackend, numba_loops

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
