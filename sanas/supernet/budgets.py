"""Budget objectives: how an architecture's cost enters the loss.

- :class:`LinearPenalty`: λ · C (SANAS).
- :class:`HingePenalty`: λ · max(0, C − B) (BSN).
- :class:`ConstrainedBudget`: λ ≥ 0 learned by dual ascent on E[C] ≤ B, so that the
  expected cost actually ends at or under the budget whatever the scale of the task loss.

Every objective has ``penalty(cost)`` (per sample, added to the REINFORCE cost) and
``update(cost)`` (called once per step; a no-op for the fixed-λ modes).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

BudgetMode = Literal["linear", "hinge", "constrained"]


class LinearPenalty:
    """λ · C."""

    def __init__(self, lam: float):
        if lam < 0:
            raise ValueError(f"lambda must be >= 0, got {lam}")
        self.lam = lam

    def penalty(self, cost: Tensor) -> Tensor:
        return self.lam * cost

    def update(self, cost: Tensor) -> None:
        """Fixed λ: nothing to learn."""


class HingePenalty(LinearPenalty):
    """λ · max(0, C − B): no penalty under the budget."""

    def __init__(self, lam: float, budget: float):
        super().__init__(lam)
        if budget <= 0:
            raise ValueError(f"budget must be > 0, got {budget}")
        self.budget = budget

    def penalty(self, cost: Tensor) -> Tensor:
        return self.lam * torch.relu(cost - self.budget)


class ConstrainedBudget:
    """Lagrangian λ · (C / B − 1) with λ ≥ 0 learned so that E[C] settles at B.

    λ follows a PI controller on the error e = log(mean C / B) of each batch (a
    "PID Lagrangian", Stooke et al. 2020): the integral I ← max(0, I + dual_lr · e) is
    plain projected dual ascent, and the proportional term ``proportional · e`` reacts at
    once, which damps the overshoot and oscillation of pure dual ascent (λ keeps growing
    while the distribution catches up, then drives the cost far under the budget). The
    log error treats 20× over and 20× under alike, the integral's step is clipped to
    ±``max_error`` (anti-windup while the distribution is still far from the budget), and
    dividing costs by B makes the gains scale-free.
    """

    def __init__(
        self,
        budget: float,
        dual_lr: float = 0.02,
        proportional: float = 1.0,
        lam: float = 0.0,
        max_error: float = 0.5,
    ):
        if budget <= 0:
            raise ValueError(f"budget must be > 0, got {budget}")
        if dual_lr <= 0 or proportional < 0:
            raise ValueError(
                f"need dual_lr > 0 and proportional >= 0, got {dual_lr}, {proportional}"
            )
        self.budget = budget
        self.dual_lr = dual_lr
        self.proportional = proportional
        self.max_error = max_error
        self.integral = lam
        self.lam = lam

    def penalty(self, cost: Tensor) -> Tensor:
        return self.lam * (cost / self.budget - 1.0)

    def update(self, cost: Tensor) -> None:
        ratio = max(float(cost.detach().to(torch.float64).mean()) / self.budget, 1e-3)
        error = math.log(ratio)
        clipped = min(max(error, -self.max_error), self.max_error)
        self.integral = max(0.0, self.integral + self.dual_lr * clipped)
        self.lam = max(0.0, self.integral + self.proportional * error)


BudgetObjective = LinearPenalty | ConstrainedBudget


def make_budget(
    mode: BudgetMode, lam: float = 0.0, budget: float | None = None, dual_lr: float = 0.02
) -> BudgetObjective:
    """Build a budget objective by name, checking that the fields it needs are given."""
    if mode == "linear":
        return LinearPenalty(lam)
    if mode not in ("hinge", "constrained"):
        raise ValueError(f"budget mode must be linear, hinge or constrained, got {mode!r}")
    if budget is None:
        raise ValueError(f"budget mode {mode!r} needs a budget")
    if mode == "hinge":
        return HingePenalty(lam, budget)
    return ConstrainedBudget(budget, dual_lr=dual_lr, lam=lam)
