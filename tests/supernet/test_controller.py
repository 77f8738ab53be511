"""The SANAS recurrent controller: p_t = sigmoid(W z_{t−1} + b), z_t = GRU(f_t, z_{t−1})."""

from __future__ import annotations

import pytest
import torch

from sanas.supernet.controller import RecurrentController
from sanas.supernet.executors import run_masked
from tests.supernet.helpers import diamond


def test_first_step_uses_the_bias_only() -> None:
    controller = RecurrentController(num_nodes=5, feature_dim=8, hidden=6, init_bias=3.0)
    distribution, hidden = controller.step(None, None, batch_size=4)
    assert hidden.shape == (4, 6)
    assert torch.equal(hidden, torch.zeros(4, 6))
    assert torch.allclose(distribution.probs, torch.sigmoid(torch.tensor(3.0)).expand(4, 5))


def test_step_folds_features_into_the_state() -> None:
    controller = RecurrentController(num_nodes=3, feature_dim=8, hidden=6)
    features = torch.randn(2, 8)
    z0 = controller.initial_state(2)
    distribution, hidden = controller.step(features, z0)
    assert torch.allclose(hidden, controller.gru(features, z0))
    assert torch.allclose(distribution.logits, controller.head(hidden))
    # the state is per sample: a different input changes only its own row
    other = features.clone()
    other[1] += 1.0
    _, hidden2 = controller.step(other, z0)
    assert torch.allclose(hidden2[0], hidden[0]) and not torch.allclose(hidden2[1], hidden[1])


def test_select_is_deterministic_by_default_and_samples_otherwise() -> None:
    controller = RecurrentController(num_nodes=4, feature_dim=8, hidden=6, init_bias=0.0)
    with torch.no_grad():
        controller.head.weight.zero_()
        controller.head.bias.copy_(torch.tensor([2.0, -2.0, 0.1, -0.1]))
    features = torch.randn(50, 8)
    mode, _ = controller.select(features, None)
    assert torch.equal(mode, torch.tensor([1.0, 0.0, 1.0, 0.0]).expand(50, 4))
    torch.manual_seed(1)
    sampled, _ = controller.select(features, None, deterministic=False)
    assert not torch.equal(sampled, mode)


def test_select_never_tracks_gradients_and_agrees_in_inference_mode() -> None:
    """With gradients on, select turns them off itself; under inference mode (the
    streaming engine) it skips that and chooses the same."""
    controller = RecurrentController(num_nodes=4, feature_dim=8, hidden=6, init_bias=0.0)
    features = torch.randn(3, 8)
    architecture, hidden = controller.select(features, None)
    assert not architecture.requires_grad and not hidden.requires_grad
    with torch.inference_mode():
        same, same_hidden = controller.select(features, None)
    assert torch.equal(same, architecture) and torch.equal(same_hidden, hidden)


def test_a_lower_threshold_switches_on_the_nodes_leaning_on() -> None:
    controller = RecurrentController(num_nodes=4, feature_dim=8, hidden=6, init_bias=0.0)
    with torch.no_grad():
        controller.head.weight.zero_()
        controller.head.bias.copy_(torch.tensor([2.0, -2.0, 0.1, -0.1]))  # p ≈ .88 .12 .52 .48
    on = [controller.select(None, None, 1, threshold=t)[0][0].tolist() for t in (0.9, 0.3, 0.1)]
    assert on == [[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\), got 1.0"):
        controller.select(None, None, 1, threshold=1.0)


def test_initial_state_is_fixed_unless_learned() -> None:
    fixed = RecurrentController(num_nodes=2, feature_dim=4, hidden=3)
    learned = RecurrentController(num_nodes=2, feature_dim=4, hidden=3, learned_initial_state=True)
    assert not fixed.initial.requires_grad and learned.initial.requires_grad
    distribution, _ = learned.step(None, None, batch_size=2)
    distribution.log_prob(torch.ones(2, 2)).sum().backward()
    assert learned.initial.grad is not None and learned.initial.grad.abs().sum() > 0


def test_step_needs_a_batch_size_from_somewhere() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        RecurrentController(num_nodes=2, feature_dim=4, hidden=3).step(None, None)


def test_drives_a_generic_super_network_step_by_step() -> None:
    """Nothing audio-specific: stream any network with a feature tap through it."""
    net = diamond()
    controller = RecurrentController(net.num_stochastic, feature_dim=8, hidden=5)
    hidden, previous = None, None
    for _ in range(3):
        architecture, hidden = controller.select(previous, hidden, batch_size=2)
        result = run_masked(net, torch.randn(2, 6), net.used(architecture, 2))
        previous = result.features["e"]
    assert hidden is not None and hidden.shape == (2, 5)
