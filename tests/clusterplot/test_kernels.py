"""The large-n path's pair kernels (hand-written gradients, TorchScript) and its lanes."""

from __future__ import annotations

import os

import pytest
import torch
from pair_cases import overlap_case, reference_overlap_loss

from clustviz.clusterplot import kernels
from clustviz.clusterplot.lanes import Lanes


@pytest.fixture(params=["eager", "scripted"])
def kernel(request):  # type: ignore[no-untyped-def]
    """A kernel by name, as its Python function or as run after :func:`kernels.prepare`."""
    if request.param == "scripted" and not kernels.prepare():
        pytest.skip("the kernels do not run as TorchScript here")
    return lambda name: kernels.EAGER[name] if request.param == "eager" else getattr(kernels, name)


@pytest.mark.parametrize(("dense", "weighted"), [(True, False), (False, False), (False, True)])
def test_soft_overlap_gradient_matches_autograd(kernel, dense: bool, weighted: bool) -> None:
    case = overlap_case(0, dense, weighted)
    grad = torch.zeros_like(case["Zt"])
    loss = kernel("soft_overlap_grad")(**{**case, "Zt": case["Zt"].clone()}, grad=grad)
    Z = case["Zt"].clone().requires_grad_(True)
    expected = reference_overlap_loss(Z, case)
    expected.backward()
    torch.testing.assert_close(loss, expected.detach())
    torch.testing.assert_close(grad, Z.grad)
    assert grad.abs().sum() > 0  # the case is not degenerate


def test_kl_gradient_matches_autograd(kernel) -> None:
    g = torch.Generator().manual_seed(1)
    n, knn_k, negatives = 30, 4, 5
    Yt = torch.randn(2, n, generator=g, dtype=torch.float64)
    neighbours = (torch.arange(n).unsqueeze(1) + torch.randint(1, n, (n, knn_k), generator=g)) % n
    other = (torch.arange(n).unsqueeze(1) + torch.randint(1, n, (n, negatives), generator=g)) % n
    grad = torch.zeros_like(Yt)
    flat = kernels.flat_columns(neighbours, n)
    loss = kernel("kl_attraction")(Yt, neighbours, flat, 4.0, 0.5, grad)
    loss = loss + kernel("kl_repulsion")(Yt, other, 0.5, grad)

    Y = Yt.clone().requires_grad_(True)
    D_nb = ((Y.unsqueeze(2) - Y[:, neighbours]) ** 2).sum(0)
    D_neg = ((Y.unsqueeze(2) - Y[:, other]) ** 2).sum(0)
    attraction = 4.0 / neighbours.numel() * torch.log1p(D_nb).sum()
    normaliser = torch.log((1.0 / (1.0 + D_neg)).sum() * (n - 1) / negatives)
    expected = 0.5 * (attraction + normaliser)
    expected.backward()
    torch.testing.assert_close(loss, expected.detach())
    torch.testing.assert_close(grad, Y.grad)


def test_kernels_run_as_torchscript_with_the_eager_results() -> None:
    """Where torch can script, the kernels are scripted (a kernel edited into something
    TorchScript rejects would otherwise fall back silently, and slowly), and the scripted
    kernels compute what the Python functions compute."""
    if not hasattr(torch.jit, "script"):
        pytest.skip("this torch has no TorchScript")
    if os.environ.get("CLUSTVIZ_NO_TORCHSCRIPT") == "1":
        pytest.skip("TorchScript turned off by CLUSTVIZ_NO_TORCHSCRIPT")
    assert kernels.prepare()
    case = overlap_case(3, dense=False, weighted=True)
    outputs = []
    for fn in (kernels.soft_overlap_grad, kernels.EAGER["soft_overlap_grad"]):
        grad = torch.zeros_like(case["Zt"])
        loss = fn(**{**case, "Zt": case["Zt"].clone()}, grad=grad)
        outputs.append((loss, grad))
    assert isinstance(kernels.soft_overlap_grad, torch.jit.ScriptFunction)
    torch.testing.assert_close(outputs[0], outputs[1])


def test_lanes_return_in_order_and_raise() -> None:
    for parallel in (False, True):
        with Lanes(parallel) as lanes:
            assert lanes.both(lambda: "first", lambda: "second") == ("first", "second")
            with pytest.raises(ZeroDivisionError):
                lanes.both(lambda: 1 / 0, lambda: "second")
            with pytest.raises(KeyError):
                lanes.both(lambda: "first", lambda: {}["missing"])
        assert torch.get_num_threads() == lanes.threads  # restored on exit


@pytest.mark.parametrize("use_fused", [True, False])
def test_large_relaxation_in_lanes_equals_serial(make_blobs, monkeypatch, use_fused) -> None:
    """The two lanes change where the relaxation's parts run, not what they compute (the
    random pairs come from one generator, drawn in one lane); with the fused loops or the
    TorchScript kernels."""
    from clustviz.clusterplot import fused, large

    if use_fused and not fused.available():
        pytest.skip("numba cannot compile the fused loops here")
    monkeypatch.setattr(large, "_fused_on", lambda tensor: use_fused)
    from clustviz.clusterplot.anchors import compute_anchors
    from clustviz.clusterplot.batch import pad_batch

    X, labels = make_blobs(30, 6, dim=16, spread=1.0, seed=4)
    batch = pad_batch([(X, labels)], torch.device("cpu"))
    anchors = compute_anchors(batch, "birch", threshold=5.0)
    A = anchors.size
    target = large.large_target(
        batch.X[0],
        batch.labels[0],
        anchors.point_anchor[0],
        anchors.cluster[0, :A],
        k=8,
        knn_k=6,
        anchors_in_graph=True,
    )
    assert len(target.anchor_rows)  # some anchors have rows of their own
    start = large.large_pca(batch.X[0], batch.X[0] @ batch.X[0].T, torch.Generator().manual_seed(0))
    layouts = []
    for parallel in (False, True):
        generator = torch.Generator().manual_seed(0)
        with Lanes(parallel) as lanes:
            layouts.append(
                large.large_gradient_layout(
                    start,
                    target,
                    steps=30,
                    lr=0.05,
                    overlap_weight=3.0,
                    label_overlap_weight=1.0,
                    knn_weight=0.1,
                    temperature=0.1,
                    generator=generator,
                    lanes=lanes,
                )
            )
    torch.testing.assert_close(layouts[0], layouts[1], rtol=1e-5, atol=1e-5)
