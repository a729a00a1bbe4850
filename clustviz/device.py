"""The one place that turns ``"auto" | "cpu" | "cuda"`` into a ``torch.device``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from clustviz.errors import UnavailableError

if TYPE_CHECKING:
    import torch

DeviceName = Literal["auto", "cpu", "cuda"]

__all__ = ["DeviceName", "resolve_device"]


def resolve_device(name: str = "auto") -> torch.device:
    """Resolve a device name once, at start-up.

    ``auto`` picks CUDA when available and falls back to the CPU; an explicit ``cuda`` without
    CUDA is an error (:class:`UnavailableError`), never a silent fallback.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UnavailableError(
                f"device={name!r} was requested but CUDA is not available "
                f"(torch {torch.__version__}); use device='auto' or 'cpu'",
                code="device_unavailable",
            )
        return torch.device(name)
    raise UnavailableError(
        f"device={name!r} is not one of 'auto', 'cpu', 'cuda'", code="device_unavailable"
    )
