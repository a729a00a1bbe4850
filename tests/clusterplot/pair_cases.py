"""Small candidate graphs for the large-n path's pair terms, and their losses written
plainly for autograd: the oracle every backend is held to."""

from __future__ import annotations

import torch

from clustviz.clusterplot.backends import TorchBackend
from clustviz.clusterplot.pair_losses import OverlapPairs


def overlap_case(seed: int, dense: bool, weighted: bool) -> dict:
    """A small candidate graph: 40 rows in 8 groups of 3 clusters, 6 candidates per row."""
    g = torch.Generator().manual_seed(seed)
    n_rows, m, G = 40, 6, 8
    Zt = torch.randn(2, n_rows, generator=g, dtype=torch.float64)
    columns = (
        torch.arange(n_rows).unsqueeze(1) + torch.randint(1, n_rows, (n_rows, m), generator=g)
    ) % n_rows
    group = torch.randint(0, G, (n_rows,), generator=g)
    group_cluster = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    keys = (group.unsqueeze(1) * G + group[columns]).reshape(-1)
    if dense:
        pair_keys, inverse = torch.arange(G * G), keys
    else:
        pair_keys, inverse = torch.unique(keys, return_inverse=True)
    pair_a, pair_b = pair_keys // G, pair_keys % G
    cross = (group_cluster[pair_a] != group_cluster[pair_b]).double()
    return {
        "Zt": Zt,
        "columns": columns,
        "radius": torch.rand(n_rows, 1, generator=g, dtype=torch.float64) + 0.5,
        "temperature": 0.3,
        "weight": torch.randint(1, 3, (n_rows, m), generator=g).double() if weighted else None,
        "inverse": inverse,
        "keep": None if dense else (pair_a != pair_b).double(),
        "pair_a": pair_a,
        "cross": cross,
        "target": torch.rand(len(pair_keys), generator=g, dtype=torch.float64) * cross,
        "n_groups": G,
        "count": float(cross.sum()),
        "factor": 2.5,
    }


def reference_overlap_loss(Z: torch.Tensor, case: dict) -> torch.Tensor:
    """The soft-kNN overlap loss, written plainly for autograd."""
    R = case["columns"].shape[0]
    D = ((Z[:, :R].unsqueeze(2) - Z[:, case["columns"]]) ** 2).sum(0)
    radius = case["radius"]
    w = torch.sigmoid((radius - D) / (case["temperature"] * radius))
    if case["weight"] is not None:
        w = w * case["weight"]
    edges = torch.zeros_like(case["target"]).index_add(0, case["inverse"], w.reshape(-1))
    if case["keep"] is not None:
        edges = edges * case["keep"]
    rows = torch.zeros(case["n_groups"], dtype=Z.dtype).index_add(0, case["pair_a"], edges)
    overlap = edges / rows[case["pair_a"]] * case["cross"]
    return case["factor"] * (overlap - case["target"]).abs().sum() / case["count"]


def as_pairs(case: dict, backend: TorchBackend) -> tuple[torch.Tensor, OverlapPairs, torch.Tensor]:
    """``(Zt, pairs, radius)`` of a case for ``backend``, in float32 as the layouts run (the
    numba loops are compiled for exactly those types)."""

    def single(value: torch.Tensor | None) -> torch.Tensor | None:
        return None if value is None else value.float()

    pairs = OverlapPairs(
        columns=case["columns"],
        inverse=case["inverse"],
        pair_a=case["pair_a"],
        cross=case["cross"].float(),
        target=case["target"].float(),
        keep=single(case["keep"]),
        weight=single(case["weight"]),
        n_groups=case["n_groups"],
        count=case["count"],
        temperature=case["temperature"],
        width=case["Zt"].shape[1],
    )
    return case["Zt"].float(), backend.prepare(pairs), case["radius"].float()


def backend_overlap(case: dict, backend: TorchBackend) -> tuple[float, torch.Tensor]:
    """A backend's loss and planar gradient for a case."""
    Zt, pairs, radius = as_pairs(case, backend)
    grad = torch.zeros_like(Zt)
    loss = backend.soft_overlap_grad(Zt, pairs, radius, case["factor"], grad)
    return float(loss), grad
