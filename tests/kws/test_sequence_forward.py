"""Shared convolutions over a sequence give the window-by-window results and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sanas.kws.model.networks import cnn_trad_fpool3
from sanas.kws.model.window_forward import (
    STEP_FRAMES,
    WINDOW_FRAMES,
    cut_windows,
    forward_windows_plain,
    forward_windows_shared,
    precompute_trunk,
    slides_in_time,
    trunk_layout,
)
from sanas.supernet.executors import run_masked
from sanas.supernet.graph import SuperNetwork
from sanas.supernet.nodes import Node

STEPS = 6
FRAMES = WINDOW_FRAMES + (STEPS - 1) * STEP_FRAMES


def _random_used(net: SuperNetwork, batch: int, steps: int) -> torch.Tensor:
    """(batch, steps, nodes) used sets of random architectures that reach the output."""
    architecture = (torch.rand(batch * steps, net.num_stochastic) < 0.7).float()
    for name in ("in", "features", "classifier"):
        architecture[:, net.stochastic_names.index(name)] = 1.0
    return net.used(architecture, batch * steps).view(batch, steps, -1)


def test_layout_of_cnn_trad_fpool3() -> None:
    layout = trunk_layout(cnn_trad_fpool3(shortcuts=True))
    assert layout.nodes == ("conv_0", "conv_1")
    assert layout.inputs == {"conv_0": "in", "conv_1": "conv_0"}
    assert layout.rows == {"conv_0": 82, "conv_1": 73}
    assert layout.shrink == {"conv_0": 19, "conv_1": 9}


def test_only_time_sliding_modules_are_shared() -> None:
    assert slides_in_time(nn.Sequential(nn.Conv2d(1, 2, (3, 3)), nn.MaxPool2d((1, 2)), nn.ReLU()))
    assert not slides_in_time(nn.Conv2d(1, 2, 3, stride=(2, 1)))
    assert not slides_in_time(nn.Conv2d(1, 2, 3, padding=1))
    assert not slides_in_time(nn.MaxPool2d(2))
    assert not slides_in_time(nn.Linear(3, 3))
    net = cnn_trad_fpool3()
    with pytest.raises(ValueError, match="lin_0"):
        trunk_layout(net, ["conv_0", "lin_0"])
    assert trunk_layout(net, ["conv_0"]).nodes == ("conv_0",)


def test_padded_convolution_is_not_shared() -> None:
    nodes = [
        Node("conv", ["in"], nn.Conv2d(1, 2, (3, 3), padding=(1, 0))),
        Node("out", ["conv"], nn.Sequential(nn.Flatten(), nn.Linear(2 * 101 * 38, 3))),
    ]
    net = SuperNetwork("in", (1, 101, 40), nodes, output="out")
    assert trunk_layout(net).nodes == ()


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_shared_equals_plain_in_eval_mode(dropout: float) -> None:
    net = cnn_trad_fpool3(shortcuts=True, dropout=dropout).eval()
    features = torch.randn(2, FRAMES, 40)
    used = _random_used(net, 2, STEPS)
    with torch.no_grad():
        plain = forward_windows_plain(net, features, used)
        shared = forward_windows_shared(net, features, used)
    torch.testing.assert_close(shared.output, plain.output, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        shared.features["features"], plain.features["features"], rtol=0, atol=1e-5
    )


def test_trunk_window_per_step_equals_plain() -> None:
    """The training loop's per-step call: run_masked(window t, used t, trunk.window(t))."""
    net = cnn_trad_fpool3(shortcuts=True).eval()
    features = torch.randn(3, FRAMES, 40)
    used = _random_used(net, 3, STEPS)
    windows = cut_windows(features)
    with torch.no_grad():
        trunk = precompute_trunk(net, features)
        plain = forward_windows_plain(net, features, used)
        for t in range(STEPS):
            step = run_masked(net, windows[:, t], used[:, t], precomputed=trunk.window(t))
            torch.testing.assert_close(step.output, plain.output[:, t], rtol=0, atol=1e-5)
    assert trunk.steps == STEPS
    with pytest.raises(IndexError):
        trunk.window(STEPS)


def test_gradients_match_plain() -> None:
    net = cnn_trad_fpool3(shortcuts=True).train()
    features = torch.randn(2, FRAMES, 40)
    used = _random_used(net, 2, STEPS)
    targets = torch.randint(0, 12, (2 * STEPS,))

    def gradients(run: object) -> list[torch.Tensor]:
        net.zero_grad()
        output = run(net, features, used).output  # type: ignore[operator]
        nn.functional.cross_entropy(output.flatten(0, 1), targets).backward()
        return [p.grad.clone() for p in net.parameters()]

    for plain, shared in zip(
        gradients(forward_windows_plain), gradients(forward_windows_shared), strict=True
    ):
        torch.testing.assert_close(shared, plain, rtol=1e-4, atol=1e-6)


def test_short_sequence_is_refused() -> None:
    with pytest.raises(ValueError, match="shorter than a window"):
        precompute_trunk(cnn_trad_fpool3(), torch.randn(1, WINDOW_FRAMES - 1, 40))
