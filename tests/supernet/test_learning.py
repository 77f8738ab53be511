"""Distributions, REINFORCE estimators and budget objectives."""

from __future__ import annotations

import math

import pytest
import torch

from sanas.examples.budget_modes import run_mode
from sanas.supernet.budgets import ConstrainedBudget, HingePenalty, LinearPenalty, make_budget
from sanas.supernet.costs import build_cost
from sanas.supernet.distributions import ArchitectureDistribution, StaticArchitecture
from sanas.supernet.estimators import (
    GroupedMovingAverageBaseline,
    MovingAverageBaseline,
    batch_mean_baseline,
    reinforce_loss,
    returns_to_go,
)
from tests.supernet.helpers import diamond


def test_distribution_log_prob_entropy_and_mode() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    dist = ArchitectureDistribution(logits)
    h = torch.tensor([[1.0, 0.0, 1.0]])
    p = torch.sigmoid(logits)[0]
    expected = math.log(p[0]) + math.log(1 - p[1]) + math.log(p[2])
    assert dist.log_prob(h).item() == pytest.approx(expected, rel=1e-6)
    assert dist.mode().tolist() == [[1.0, 0.0, 1.0]]
    assert dist.entropy().item() == pytest.approx(
        sum(-(q * math.log(q) + (1 - q) * math.log(1 - q)) for q in p.tolist()), rel=1e-6
    )


def test_static_architecture_starts_almost_fully_on() -> None:
    dist = StaticArchitecture(4)(batch_size=3)
    assert dist.probs.shape == (3, 4)
    assert torch.allclose(dist.probs, torch.full((3, 4), torch.sigmoid(torch.tensor(3.0)).item()))


def test_reinforce_converges_to_the_exact_gradient_of_the_expected_cost() -> None:
    """On a graph small enough to enumerate, the estimate matches Σ_H ∇P(H) C(H)."""
    net = diamond()
    macs = build_cost("macs", net)
    parallel = build_cost("parallel", net, workers=2)

    def objective(architecture: torch.Tensor) -> torch.Tensor:
        used = net.used(architecture, len(architecture))
        return (macs(used) / 100.0 + parallel(used)).float()

    logits = torch.tensor([0.3, -0.8, 1.2, 0.0, 2.0, -0.4], requires_grad=True)
    architectures = net.all_architectures()
    exact_value = (
        ArchitectureDistribution(logits).log_prob(architectures).exp() * objective(architectures)
    ).sum()
    (exact,) = torch.autograd.grad(exact_value, logits)

    samples = 400_000
    dist = ArchitectureDistribution(logits.expand(samples, -1))
    h = dist.sample()
    cost = objective(h)
    (estimate,) = torch.autograd.grad(
        reinforce_loss(dist.log_prob(h), cost, batch_mean_baseline(cost)), logits
    )
    assert torch.allclose(estimate, exact, atol=0.02 * exact.abs().max().item())
    assert (estimate - exact).norm() < 0.02 * exact.norm()


def test_reinforce_ignores_padded_steps() -> None:
    log_prob = torch.tensor([[1.0, 1.0], [1.0, 1.0]], requires_grad=True)
    cost = torch.tensor([[2.0, 100.0], [4.0, 100.0]])
    mask = torch.tensor([[True, False], [True, False]])
    loss = reinforce_loss(log_prob, cost, batch_mean_baseline(cost, mask), mask)
    assert loss.item() == pytest.approx(((2 - 3) + (4 - 3)) / 2)
    loss.backward()
    assert log_prob.grad[:, 1].abs().sum() == 0


def test_moving_average_baseline_is_bias_corrected_and_masked() -> None:
    baseline = MovingAverageBaseline(decay=0.9)
    assert baseline.value == 0.0
    assert baseline.update(
        torch.tensor([10.0, 20.0, 999.0]), torch.tensor([1, 1, 0])
    ) == pytest.approx(15.0)
    second = baseline.update(torch.tensor([25.0]))
    assert second == pytest.approx((0.9 * 0.1 * 15 + 0.1 * 25) / (0.9 * 0.1 + 0.1))


def test_grouped_baseline_keeps_one_debiased_average_per_group() -> None:
    baseline = GroupedMovingAverageBaseline(groups=3, decay=0.5)
    group = torch.tensor([0, 0, 1, 2])
    mask = torch.tensor([True, True, True, False])
    baseline.update(torch.tensor([1.0, 3.0, 10.0, 99.0]), group, mask)
    assert baseline.values(torch.tensor([0, 1, 2])).tolist() == [2.0, 10.0, 0.0]
    baseline.update(torch.tensor([4.0]), torch.tensor([0]))  # group 1 keeps its value
    # group 0: (0.5 · 0.5 · 2 + 0.5 · 4) / (0.5 · 0.5 + 0.5) = 2.5 / 0.75
    assert baseline.values(torch.tensor([0, 1])).tolist() == pytest.approx([2.5 / 0.75, 10.0])


def test_returns_to_go_discount_later_rewards() -> None:
    rewards = torch.tensor([[1.0, 2.0, 4.0]])
    assert returns_to_go(rewards, gamma=0.0).tolist() == [[1.0, 2.0, 4.0]]
    assert returns_to_go(rewards, gamma=0.5).tolist() == [[1 + 1 + 1, 2 + 2, 4.0]]
    mask = torch.tensor([[1, 1, 0]])
    assert returns_to_go(rewards, gamma=1.0, mask=mask).tolist() == [[3.0, 2.0, 0.0]]


def test_fixed_penalties() -> None:
    cost = torch.tensor([50.0, 150.0])
    assert LinearPenalty(0.1).penalty(cost).tolist() == [5.0, 15.0]
    assert HingePenalty(0.1, budget=100).penalty(cost).tolist() == [0.0, 5.0]


def test_constrained_multiplier_rises_over_budget_and_returns_to_zero_under_it() -> None:
    budget = ConstrainedBudget(100.0, dual_lr=0.1, proportional=0.0)
    for _ in range(5):
        budget.update(torch.tensor([200.0]))
    assert budget.lam > 0
    for _ in range(100):
        budget.update(torch.tensor([50.0]))
    assert budget.lam == 0.0


def test_make_budget_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="needs a budget"):
        make_budget("hinge", lam=1.0)
    with pytest.raises(ValueError, match="linear, hinge or constrained"):
        make_budget("soft", lam=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lambda must be >= 0"):
        make_budget("linear", lam=-1.0)


def test_constrained_mode_lands_on_the_budget_where_fixed_lambda_misses() -> None:
    budget = 60.0
    constrained = run_mode("constrained", budget)
    hinge = run_mode("hinge", budget, lam=0.003)
    linear = run_mode("linear", budget, lam=0.03)
    assert abs(constrained.expected_cost / budget - 1) <= 0.05
    assert abs(hinge.expected_cost / budget - 1) > 0.05
    assert abs(linear.expected_cost / budget - 1) > 0.05
