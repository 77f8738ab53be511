"""Masked and skipping executors: same outputs, and skipping really skips."""

from __future__ import annotations

import torch
from torch import nn

from sanas.kws.model.networks import build_model
from sanas.supernet.executors import run_masked, run_skipping
from tests.supernet.helpers import diamond


class CallCounter(nn.Module):
    """Wraps a module and counts how many rows it was called on."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        return self.inner(x)


def test_masked_and_skipping_agree_on_every_architecture() -> None:
    net = diamond()
    architectures = net.all_architectures()
    x = torch.randn(len(architectures), 6)
    used = net.used(architectures, len(architectures))
    masked, skipping = run_masked(net, x, used), run_skipping(net, x, used)
    assert torch.allclose(masked.output, skipping.output, atol=1e-6, rtol=0)
    assert torch.allclose(masked.features["e"], skipping.features["e"], atol=1e-6, rtol=0)


def test_unused_outputs_are_exact_zeros_not_bias_terms() -> None:
    net = diamond()
    architecture = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # a, b off: out has no live input
    for executor in ("masked", "skipping"):
        result = net(torch.randn(3, 6), architecture, executor=executor)
        assert torch.count_nonzero(result.output) == 0


def test_skipping_never_calls_modules_of_unused_nodes() -> None:
    net = diamond()
    spies = {name: CallCounter(net.nodes[name].module) for name in ("a", "b", "d")}
    for name, spy in spies.items():
        net.nodes[name].module = spy
    architecture = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])  # b and d off
    run_skipping(net, torch.randn(4, 6), net.used(architecture, 4))
    assert (spies["a"].calls, spies["b"].calls, spies["d"].calls) == (1, 0, 0)


def test_skipping_runs_a_node_only_on_the_rows_that_use_it() -> None:
    net = diamond()
    spy = CallCounter(net.nodes["b"].module)
    net.nodes["b"].module = spy
    architectures = torch.ones(5, 6)
    architectures[:3, 1] = 0  # b off for 3 of 5 samples
    run_skipping(net, torch.randn(5, 6), net.used(architectures, 5))
    assert spy.rows == 2


def test_gradients_flow_through_both_executors_alike() -> None:
    net = diamond()
    architectures = torch.randint(0, 2, (16, 6)).float()
    x = torch.randn(16, 6)
    grads = []
    for executor in ("masked", "skipping"):
        net.zero_grad()
        net(x, architectures, executor=executor).output.square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_precomputed_outputs_replace_the_module_call() -> None:
    net = diamond()
    x = torch.randn(2, 6)
    used = net.used(None, 2)
    replacement = torch.ones(2, 8)
    for run in (run_masked, run_skipping):
        expected = run(net, x, used, precomputed={"a": net.nodes["a"].module(x)}).output
        assert torch.allclose(run(net, x, used).output, expected)
        assert not torch.allclose(
            run(net, x, used, precomputed={"a": replacement}).output, expected
        )


def test_executors_agree_on_the_keyword_spotting_super_network() -> None:
    net = build_model("cnn-trad-fpool3-shortcuts", channels=8).eval()
    x = torch.randn(6, 1, 101, 40)
    architectures = torch.randint(0, 2, (6, net.num_stochastic)).float()
    architectures[:, 0] = 1
    with torch.no_grad():
        masked = net(x, architectures, executor="masked")
        skipping = net(x, architectures, executor="skipping")
    assert torch.allclose(masked.output, skipping.output, atol=1e-6, rtol=1e-6)
