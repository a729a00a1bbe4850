"""The compute backends of the large-n path (torch, numba): each pair term against its
autograd oracle, the selections against ``topk``, the choice of a backend, and the lanes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pair_cases import backend_overlap, overlap_case, reference_overlap_loss

from clustviz.clusterplot.backends import TorchBackend, resolve_backend
from clustviz.clusterplot.numba_backend import NumbaBackend, numba_loops
from clustviz.clusterplot.targets import KnnEdges
from clustviz.clusterplot.threads import Lanes
from clustviz.errors import InvalidInputError

CPU = torch.device("cpu")


@pytest.mark.parametrize("sort_rows", [False, True])
@pytest.mark.parametrize(("dense", "weighted"), [(True, False), (False, False), (False, True)])
def test_soft_overlap_matches_autograd(backend, dense: bool, weighted: bool, sort_rows) -> None:
    case = overlap_case(0, dense, weighted)
    if sort_rows:  # as the relaxation passes them: a row's pairs in key order
        R, M = case["columns"].shape
        order = case["inverse"].view(R, M).argsort(dim=1)
        case["inverse"] = case["inverse"].view(R, M).gather(1, order).reshape(-1)
        case["columns"] = case["columns"].gather(1, order)
        if weighted:
            case["weight"] = case["weight"].gather(1, order)
    loss, grad = backend_overlap(case, backend)
    Z = case["Zt"].clone().requires_grad_(True)
    expected = reference_overlap_loss(Z, case)
    expected.backward()
    assert loss == pytest.approx(float(expected.detach()), rel=1e-5)
    torch.testing.assert_close(grad, Z.grad.float(), rtol=1e-4, atol=1e-6)
    assert grad.abs().sum() > 0  # the case is not degenerate


def _kl_case(n: int = 30, knn_k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    Yt = torch.randn(2, n, generator=g)
    neighbours = (torch.arange(n).unsqueeze(1) + torch.randint(1, n, (n, knn_k), generator=g)) % n
    return Yt, neighbours


def test_kl_matches_autograd(backend) -> None:
    """The sampled ``KL(P || Q)`` on the pairs the backend draws (the same generator state
    gives the same pairs), against autograd of the plain formula."""
    Yt, neighbours = _kl_case()
    n, negatives = Yt.shape[1], 5
    other = backend.draw_others(n, negatives, torch.Generator().manual_seed(7))
    assert other.shape == (n, negatives) and not (other == torch.arange(n)[:, None]).any()
    grad = torch.zeros_like(Yt)
    loss = backend.kl_grad(
        Yt, KnnEdges.of(neighbours), negatives=negatives,
        generator=torch.Generator().manual_seed(7), exaggeration=4.0, factor=0.5, grad=grad,
    )  # fmt: skip
    Y = Yt.double().requires_grad_(True)
    D_nb = ((Y.unsqueeze(2) - Y[:, neighbours]) ** 2).sum(0)
    D_neg = ((Y.unsqueeze(2) - Y[:, other]) ** 2).sum(0)
    attraction = 4.0 / neighbours.numel() * torch.log1p(D_nb).sum()
    normaliser = torch.log((1.0 / (1.0 + D_neg)).sum() * (n - 1) / negatives)
    expected = 0.5 * (attraction + normaliser)
    expected.backward()
    assert float(loss) == pytest.approx(float(expected.detach()), rel=1e-5)
    torch.testing.assert_close(grad, Y.grad.float(), rtol=1e-4, atol=1e-6)


def test_kl_is_seeded_and_its_loss_changes_nothing(backend) -> None:
    Yt, neighbours = _kl_case(50, 6)
    runs = []
    for with_loss in (True, True, False):
        grad = torch.zeros_like(Yt)
        loss = backend.kl_grad(
            Yt, KnnEdges.of(neighbours), negatives=8,
            generator=torch.Generator().manual_seed(3), exaggeration=4.0, factor=0.5,
            grad=grad, with_loss=with_loss,
        )  # fmt: skip
        runs.append((float(loss), grad))
    assert runs[0][0] == runs[1][0] and runs[2][0] == 0.0
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=0, atol=0)  # same seed, same pairs
    torch.testing.assert_close(runs[2][1], runs[0][1], rtol=0, atol=0)


def test_random_others_are_uniform_over_the_others(backend) -> None:
    n, draws = 200, 2000
    other = backend.draw_others(n, draws, torch.Generator().manual_seed(11)).numpy()
    assert other.shape == (n, draws) and other.min() >= 0 and other.max() < n
    assert not (other == np.arange(n)[:, None]).any()
    counts = np.bincount(other.ravel(), minlength=n)
    expected = n * draws / n
    # chi-square with n - 1 = 199 degrees of freedom: 99.9 % quantile about 267
    assert ((counts - expected) ** 2 / expected).sum() < 267


def test_smallest_matches_topk(backend) -> None:
    from clustviz.clusterplot.planar import pairs

    case = overlap_case(4, dense=False, weighted=False)
    g = torch.Generator().manual_seed(4)
    R, M, k = 300, 40, 17
    Zt = torch.randn(2, R, generator=g)
    columns = torch.stack([torch.randperm(R, generator=g)[:M] for _ in range(R)])  # distinct
    from pair_cases import as_pairs

    _, prepared, _ = as_pairs({**case, "Zt": Zt, "columns": columns}, backend)
    ordered, where = backend.smallest(Zt, prepared, k)
    _, D = pairs(Zt, columns)
    expected, expected_where = D.topk(k, dim=1, largest=False)
    torch.testing.assert_close(ordered, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(D.gather(1, where), expected, rtol=1e-5, atol=1e-6)
    assert (where == expected_where).float().mean() > 0.99  # (only float ties may differ)


def test_smallest_in_rows_matches_topk(backend) -> None:
    dist = torch.rand(200, 500, generator=torch.Generator().manual_seed(5))
    expected = dist.topk(12, dim=1, largest=False).indices
    torch.testing.assert_close(backend.smallest_in_rows(dist, 12), expected, rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(3))
def test_soft_overlap_translation_invariant(backend, seed: int) -> None:
    case = overlap_case(seed, dense=False, weighted=True)
    loss, grad = backend_overlap(case, backend)
    shift = torch.tensor([[30.0], [-12.5]], dtype=torch.float64)
    moved_loss, moved_grad = backend_overlap({**case, "Zt": case["Zt"] + shift}, backend)
    assert np.isfinite(loss) and torch.isfinite(grad).all()
    assert moved_loss == pytest.approx(loss, rel=1e-5)
    torch.testing.assert_close(moved_grad, grad, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_soft_overlap_permutation_equivariant(backend, seed: int) -> None:
    """Renumbering the rows (and the candidates with them) renumbers the gradient; shuffling
    the candidates within rows changes nothing."""
    case = overlap_case(seed, dense=False, weighted=True)
    loss, grad = backend_overlap(case, backend)
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
    permuted_loss, permuted_grad = backend_overlap(permuted, backend)
    assert permuted_loss == pytest.approx(loss, rel=1e-5)
    torch.testing.assert_close(permuted_grad, grad[:, perm], rtol=1e-4, atol=1e-6)


def test_backend_is_resolved_once_and_validated() -> None:
    assert numba_loops() is not None  # a dependency: a failed compile must not go unnoticed
    assert isinstance(resolve_backend("auto", CPU), NumbaBackend)
    assert type(resolve_backend("torch", CPU)) is TorchBackend
    # off the CPU, auto is torch and numba is refused (by the device, not by its name)
    assert type(resolve_backend("auto", torch.device("meta"))) is TorchBackend
    with pytest.raises(InvalidInputError, match="backend='numba'") as error:
        resolve_backend("numba", torch.device("meta"))
    assert error.value.code == "invalid_params"
    with pytest.raises(InvalidInputError, match="'jit'"):
        resolve_backend("jit", CPU)


def test_a_large_fit_compiles_nothing_more(make_blobs) -> None:
    """The numba loops are compiled for the types a fit passes when they are first made
    ready (a new specialisation would compile at request time, a second or more)."""
    from clustviz.clusterplot import ClusterPlot, pair_loops

    names = ["overlap_arguments", "overlap_rest", "kl_attraction", "kl_repulsion", "random_others",
             "smallest", "smallest_in_rows", "normalised_overlap"]  # fmt: skip
    numba_loops()
    loops = [getattr(pair_loops, name) for name in names]
    before = [len(loop.signatures) for loop in loops]
    X, labels = make_blobs(30, 5, dim=16, spread=1.0, seed=1)
    model = ClusterPlot(  # dense_max_rows: the large path
        init_steps=20, n_steps=20, birch_threshold=4.0, device="cpu", dense_max_rows=16
    )
    model.fit_transform(X, labels)
    assert model.result_.backend == "numba"
    assert [len(loop.signatures) for loop in loops] == before


def test_lanes_return_in_order_and_raise() -> None:
    for parallel in (False, True):
        with Lanes(parallel) as lanes:
            assert lanes.both(lambda: "first", lambda: "second") == ("first", "second")
            with pytest.raises(ZeroDivisionError):
                lanes.both(lambda: 1 / 0, lambda: "second")
            with pytest.raises(KeyError):
                lanes.both(lambda: "first", lambda: {}["missing"])
        assert torch.get_num_threads() == lanes.threads  # restored on exit


def test_large_relaxation_in_lanes_equals_serial(make_blobs, backend) -> None:
    """The two lanes change where the relaxation's parts run, not what they compute (the
    random pairs come from one generator, drawn in one lane); with either backend."""
    from clustviz.clusterplot.anchors import compute_anchors
    from clustviz.clusterplot.batch import pad_batch
    from clustviz.clusterplot.init import power_pca
    from clustviz.clusterplot.relaxation import (
        RelaxSettings,
        SparseSettings,
        sparse_gradient_layout,
    )
    from clustviz.clusterplot.targets import sparse_target

    X, labels = make_blobs(30, 6, dim=16, spread=1.0, seed=4)
    batch = pad_batch([(X, labels)], CPU)
    anchors = compute_anchors(batch, "birch", threshold=5.0)
    A = anchors.size
    target = sparse_target(
        batch.X[0], batch.labels[0], anchors.point_anchor[0], anchors.cluster[0, :A],
        k=8, knn_k=6, anchors_in_graph=True, backend=backend,
    )  # fmt: skip
    assert len(target.anchor_rows)  # some anchors have rows of their own
    start = power_pca(batch.X[0], batch.X[0] @ batch.X[0].T, torch.Generator().manual_seed(0))
    settings = RelaxSettings(
        steps=30, lr=0.05, temperature=0.1, overlap_weight=3.0, label_overlap_weight=1.0,
        knn_weight=0.1, radius_every=16,
    )  # fmt: skip
    sparse = SparseSettings(refresh=50, candidates_per_k=3.0, negatives=8)
    layouts = []
    for parallel in (False, True):
        with Lanes(parallel) as lanes:
            Y, _ = sparse_gradient_layout(
                start, target, settings, sparse,
                generator=torch.Generator().manual_seed(0), lanes=lanes, backend=backend,
            )  # fmt: skip
            layouts.append(Y)
    torch.testing.assert_close(layouts[0], layouts[1], rtol=1e-5, atol=1e-5)
