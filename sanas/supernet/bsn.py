"""Budgeted Super Network (BSN): a super network plus a learned static distribution.

One training step samples an architecture per example, trains the weights by backprop
of the task loss through the sampled network, and the distribution by REINFORCE on
task loss + budget penalty (method.md §2). Evaluation uses the mode (p > 0.5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sanas.supernet.budgets import BudgetObjective
from sanas.supernet.costs import Cost
from sanas.supernet.distributions import StaticArchitecture
from sanas.supernet.estimators import batch_mean_baseline, reinforce_loss
from sanas.supernet.graph import SuperNetwork
from sanas.supernet.nodes import SuperNetOutput

LossFn = Callable[[Tensor, Tensor], Tensor]  # per-sample loss: (output, target) -> (batch,)


@dataclass
class StepStats:
    """What one training step measured (means over the batch)."""

    task_loss: float
    cost: float
    penalty: float
    lam: float


class BudgetedSuperNetwork(nn.Module):
    """A :class:`SuperNetwork` whose architecture distribution is a free Bernoulli per node."""

    def __init__(self, net: SuperNetwork, init_logit: float = 3.0):
        super().__init__()
        self.net = net
        self.distribution = StaticArchitecture(net.num_stochastic, init_logit)

    def deterministic_architecture(self) -> Tensor:
        """H_n = 1[p_n > 0.5]: the architecture used at evaluation."""
        return self.distribution(1).mode()[0]

    def forward(self, x: Tensor, executor: str = "skipping") -> SuperNetOutput:
        """Predict with the deterministic architecture, skipping unused nodes by default."""
        return self.net(x, self.deterministic_architecture(), executor=executor)  # type: ignore[arg-type]

    def training_step(
        self, x: Tensor, target: Tensor, loss_fn: LossFn, cost: Cost, budget: BudgetObjective
    ) -> tuple[Tensor, StepStats]:
        """Loss to backpropagate (task loss + REINFORCE surrogate) and the step's statistics."""
        distribution = self.distribution(x.shape[0])
        architecture = distribution.sample()
        result = self.net(x, architecture, executor="masked")
        task_loss = loss_fn(result.output, target)
        sample_cost = cost(result.used).to(task_loss.dtype)
        penalty = budget.penalty(sample_cost)
        total_cost = task_loss.detach() + penalty
        surrogate = reinforce_loss(
            distribution.log_prob(architecture), total_cost, batch_mean_baseline(total_cost)
        )
        budget.update(sample_cost)
        stats = StepStats(
            task_loss=float(task_loss.detach().mean()),
            cost=float(sample_cost.mean()),
            penalty=float(penalty.mean()),
            lam=float(budget.lam),
        )
        return task_loss.mean() + surrogate, stats

    @torch.no_grad()
    def expected_cost(self, cost: Cost, samples: int = 2048) -> float:
        """Monte-Carlo E_H[C(H)] under the current distribution."""
        architecture = self.distribution(samples).sample()
        return float(cost(self.net.used(architecture, samples)).mean())
