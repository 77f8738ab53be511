"""Do budgets hold? Linear, hinge and constrained objectives on a controlled problem.

Eight switchable components with costs 1, 2, 4, … 128; switching component k off adds
a known loss w_k (diminishing returns: w_k ∝ c_k^0.7). The unconstrained optimum uses
everything, so any budget under the total is binding. A Bernoulli distribution is trained
by REINFORCE exactly as in BSN; we report where its expected cost ends for each mode.
Fixed-λ modes land wherever their λ happens to balance the loss; the constrained mode
learns λ and lands on the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sanas.supernet.budgets import BudgetMode, make_budget
from sanas.supernet.distributions import StaticArchitecture
from sanas.supernet.estimators import batch_mean_baseline, reinforce_loss

COSTS = 2.0 ** torch.arange(8, dtype=torch.float64)
LOSS_WHEN_OFF = COSTS**0.7 / 10.0


@dataclass
class ModeResult:
    """Where one budget mode ended."""

    mode: str
    lam: float
    budget: float
    expected_cost: float
    expected_loss: float


def run_mode(
    mode: BudgetMode,
    budget: float,
    lam: float = 0.0,
    steps: int = 1500,
    batch: int = 64,
    seed: int = 0,
) -> ModeResult:
    """Train the distribution under one budget mode and return its final expected cost."""
    torch.manual_seed(seed)
    distribution = StaticArchitecture(len(COSTS), init_logit=3.0)
    objective = make_budget(mode, lam=lam, budget=budget)
    optimizer = torch.optim.Adam(distribution.parameters(), lr=0.05)
    for _ in range(steps):
        dist = distribution(batch)
        architecture = dist.sample()
        cost = architecture.double() @ COSTS
        loss = (1 - architecture.double()) @ LOSS_WHEN_OFF
        total = loss + objective.penalty(cost)
        surrogate = reinforce_loss(
            dist.log_prob(architecture), total.float(), batch_mean_baseline(total.float())
        )
        objective.update(cost)
        optimizer.zero_grad()
        surrogate.backward()
        optimizer.step()
    probs = torch.sigmoid(distribution.logits.detach()).double()
    return ModeResult(
        mode=mode,
        lam=lam,
        budget=budget,
        expected_cost=float(probs @ COSTS),
        expected_loss=float((1 - probs) @ LOSS_WHEN_OFF),
    )


def compare_modes(budget: float = 60.0, lam: float = 0.01, seed: int = 0) -> list[ModeResult]:
    """The three modes at the same budget (the fixed modes with the same λ guess)."""
    return [
        run_mode("linear", budget, lam=lam, seed=seed),
        run_mode("hinge", budget, lam=lam, seed=seed),
        run_mode("constrained", budget, seed=seed),
    ]
