"""The fused CPU loops (numba) of the large-n path: same losses and gradients as the
TorchScript kernels, checked against autograd."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from pair_cases import overlap_case, reference_overlap_loss

from clustviz.clusterplot import fused, kernels


@pytest.fixture(autouse=True)
def _compiled() -> None:
    """Compiled on first use (not at collection). numba is a dependency: loops that fail to
    compile would fall back to the slower kernels silently, so that fails here."""
    if os.environ.get("CLUSTVIZ_NO_FUSED") == "1":
        pytest.skip("fused loops turned off by CLUSTVIZ_NO_FUSED")
    assert fused.available()


def _single(case: dict) -> dict:
    """The case in float32, as the layouts run (the loops accumulate in float64)."""
    return {
        key: value.float()
        if isinstance(value, torch.Tensor) and value.is_floating_point()
        else value
        for key, value in case.items()
    }


@pytest.mark.parametrize("sort_rows", [False, True])
@pytest.mark.parametrize(("dense", "weighted"), [(True, False), (False, False), (False, True)])
def test_fused_overlap_matches_autograd(dense: bool, weighted: bool, sort_rows: bool) -> None:
    case = overlap_case(0, dense, weighted)
    if sort_rows:  # as the relaxation passes them: a row's pairs in key order
        R, M = case["columns"].shape
        order = case["inverse"].view(R, M).argsort(dim=1)
        case["inverse"] = case["inverse"].view(R, M).gather(1, order).reshape(-1)
        case["columns"] = case["columns"].gather(1, order)
        if weighted:
            case["weight"] = case["weight"].gather(1, order)
    args = {key: value for key, value in _single(case).items() if key != "flat"}
    args["columns"], args["inverse"] = args["columns"].int(), args["inverse"].int()
    grad = torch.zeros_like(args["Zt"])
    loss = fused.soft_overlap_grad(**args, grad=grad)
    Z = case["Zt"].clone().requires_grad_(True)
    expected = reference_overlap_loss(Z, case)
    expected.backward()
    assert loss == pytest.approx(float(expected.detach()), rel=1e-5)
    torch.testing.assert_close(grad, Z.grad.float(), rtol=1e-4, atol=1e-6)
    assert grad.abs().sum() > 0  # the case is not degenerate


def test_fused_kl_matches_autograd() -> None:
    from clustviz.clusterplot import fused_loops

    g = torch.Generator().manual_seed(1)
    n, knn_k, negatives = 30, 4, 5
    Y = torch.randn(2, n, generator=g, dtype=torch.float64)
    neighbours = (torch.arange(n).unsqueeze(1) + torch.randint(1, n, (n, knn_k), generator=g)) % n
    other = fused_loops.random_others(n, negatives, 7)
    grad = torch.zeros(2, n)
    D = torch.empty(neighbours.numel())
    Yt = Y.float()
    fused_loops.kl_attraction(Yt.numpy(), neighbours.int().numpy(), 4.0 / neighbours.numel() * 0.5,
                              grad.numpy(), D.numpy())  # fmt: skip
    total = fused_loops.kl_repulsion(Yt.numpy(), other, 0.5, grad.numpy())

    Y.requires_grad_(True)
    D_nb = ((Y.unsqueeze(2) - Y[:, neighbours]) ** 2).sum(0)
    D_neg = ((Y.unsqueeze(2) - Y[:, torch.from_numpy(other)]) ** 2).sum(0)
    normaliser = (1.0 / (1.0 + D_neg)).sum() * (n - 1) / negatives
    expected = 0.5 * (4.0 / neighbours.numel() * torch.log1p(D_nb).sum() + torch.log(normaliser))
    expected.backward()
    torch.testing.assert_close(D, D_nb.detach().float().reshape(-1))
    assert total == pytest.approx(float(normaliser.detach()), rel=1e-5)
    torch.testing.assert_close(grad, Y.grad.float(), rtol=1e-4, atol=1e-6)


def test_kl_grad_is_seeded_and_matches_its_parts() -> None:
    g = torch.Generator().manual_seed(2)
    n = 50
    Yt = torch.randn(2, n, generator=g)
    neighbours = (torch.arange(n).unsqueeze(1) + torch.randint(1, n, (n, 6), generator=g)) % n
    runs = []
    for with_loss in (True, True, False):
        grad = torch.zeros_like(Yt)
        seeded = torch.Generator().manual_seed(3)
        loss = fused.kl_grad(Yt, neighbours.int(), 8, seeded, 4.0, 0.5, grad, with_loss)
        runs.append((loss, grad))
    assert runs[0][0] == runs[1][0]
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=0, atol=0)  # same seed, same pairs
    torch.testing.assert_close(runs[2][1], runs[0][1], rtol=0, atol=0)  # the loss changes nothing
    # the loss is the TorchScript kernels' on the same pairs
    from clustviz.clusterplot import fused_loops

    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(3)))
    other = torch.from_numpy(fused_loops.random_others(n, 8, seed))
    flat = kernels.flat_columns(neighbours, n)
    grad = torch.zeros_like(Yt)
    expected = kernels.EAGER["kl_attraction"](Yt, neighbours, flat, 4.0, 0.5, grad)
    expected = expected + kernels.EAGER["kl_repulsion"](Yt, other, 0.5, grad)
    assert runs[0][0] == pytest.approx(float(expected.detach()), rel=1e-5)
    torch.testing.assert_close(runs[0][1], grad, rtol=1e-4, atol=1e-7)


def test_random_others_are_uniform_over_the_others() -> None:
    from clustviz.clusterplot import fused_loops

    n, draws = 200, 2000
    other = fused_loops.random_others(n, draws, 11)
    assert other.shape == (n, draws) and other.min() >= 0 and other.max() < n
    assert not (other == np.arange(n)[:, None]).any()
    counts = np.bincount(other.ravel(), minlength=n)
    expected = n * draws / n
    # chi-square with n - 1 = 199 degrees of freedom: 99.9 % quantile about 267
    assert ((counts - expected) ** 2 / expected).sum() < 267
    np.testing.assert_array_equal(
        fused_loops.random_others(n, 8, 5), fused_loops.random_others(n, 8, 5)
    )
    assert (fused_loops.random_others(n, 8, 5) != fused_loops.random_others(n, 8, 6)).any()


def test_smallest_matches_topk() -> None:
    g = torch.Generator().manual_seed(4)
    R, M, k = 300, 40, 17
    Zt = torch.randn(2, R, generator=g)
    columns = torch.stack([torch.randperm(R, generator=g)[:M] for _ in range(R)])  # distinct
    ordered, where = fused.smallest(Zt, columns.int(), k)
    _, D = kernels.pairs(Zt, columns)
    expected, expected_where = D.topk(k, dim=1, largest=False)
    torch.testing.assert_close(ordered, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(D.gather(1, where), expected, rtol=1e-5, atol=1e-6)
    assert (where == expected_where).float().mean() > 0.99  # (only float ties may differ)


def test_disabled_by_environment() -> None:
    code = "from clustviz.clusterplot import fused; print(fused.available())"
    env = {**os.environ, "CLUSTVIZ_NO_FUSED": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_a_large_fit_compiles_nothing_more(make_blobs, monkeypatch) -> None:
    """The loops are compiled for the types a fit passes when they are first made ready (a
    new specialisation would compile at request time, a second or more)."""
    import clustviz.clusterplot.projector as projector
    from clustviz.clusterplot import ClusterPlot, fused_loops

    names = ["overlap_arguments", "overlap_rest", "kl_attraction", "kl_repulsion", "random_others",
             "smallest", "smallest_in_rows"]  # fmt: skip
    loops = [getattr(fused_loops, name) for name in names]
    before = [len(loop.signatures) for loop in loops]
    monkeypatch.setattr(projector, "DENSE_MAX_ROWS", 10)  # the large path
    X, labels = make_blobs(30, 5, dim=16, spread=1.0, seed=1)
    ClusterPlot(init_steps=20, n_steps=20, birch_threshold=4.0, device="cpu").fit_transform(
        X, labels
    )
    assert [len(loop.signatures) for loop in loops] == before


def test_smallest_in_rows_matches_topk() -> None:
    g = torch.Generator().manual_seed(5)
    dist = torch.rand(200, 500, generator=g)
    expected = dist.topk(12, dim=1, largest=False).indices
    torch.testing.assert_close(fused.smallest_in_rows(dist, 12), expected, rtol=0, atol=0)
    ties = torch.zeros(3, 10)  # all equal: the first k columns are kept
    assert (fused.smallest_in_rows(ties, 4) == torch.arange(4)).all()


def _fused_overlap(case: dict) -> tuple[float, torch.Tensor]:
    args = {key: value for key, value in _single(case).items() if key != "flat"}
    args["columns"], args["inverse"] = args["columns"].int(), args["inverse"].int()
    grad = torch.zeros_like(args["Zt"])
    return fused.soft_overlap_grad(**args, grad=grad), grad


@pytest.mark.parametrize("seed", range(4))
def test_fused_overlap_finite_and_translation_invariant(seed: int) -> None:
    case = overlap_case(seed, dense=False, weighted=True)
    loss, grad = _fused_overlap(case)
    shift = torch.tensor([[30.0], [-12.5]], dtype=torch.float64)
    moved_loss, moved_grad = _fused_overlap({**case, "Zt": case["Zt"] + shift})
    assert np.isfinite(loss) and torch.isfinite(grad).all()
    assert moved_loss == pytest.approx(loss, rel=1e-5)
    torch.testing.assert_close(moved_grad, grad, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_fused_overlap_permutation_equivariant(seed: int) -> None:
    """Renumbering the rows (and the candidates with them) renumbers the gradient; shuffling
    the candidates within rows changes nothing."""
    case = overlap_case(seed, dense=False, weighted=True)
    loss, grad = _fused_overlap(case)
    R, M = case["columns"].shape
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(R, generator=g)  # new row i is old row perm[i]
    where = torch.argsort(perm)  # old row j is new row where[j]
    shuffle = torch.stack([torch.randperm(M, generator=g) for _ in range(R)])  # within rows

    def renumber(pairs: torch.Tensor) -> torch.Tensor:  # (R, M) per-pair values, new order
        return pairs[perm].gather(1, shuffle)

    permuted = {
        **case,
        "Zt": case["Zt"][:, perm],
        "columns": renumber(where[case["columns"]]),
        "radius": case["radius"][perm],
        "weight": renumber(case["weight"]),
        "inverse": renumber(case["inverse"].view(R, M)).reshape(-1),
    }
    permuted_loss, permuted_grad = _fused_overlap(permuted)
    assert permuted_loss == pytest.approx(loss, rel=1e-5)
    torch.testing.assert_close(permuted_grad, grad[:, perm], rtol=1e-4, atol=1e-6)
