"""REINFORCE for non-differentiable costs, with variance-reducing baselines.

We minimise E_H[cost(H)]; its gradient is E[(cost − b) ∇ log P(H)] for any baseline b
that does not depend on H. :func:`reinforce_loss` returns a surrogate whose gradient is
that estimate, so it simply joins the ordinary loss before ``backward()``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def reinforce_loss(
    log_prob: Tensor, cost: Tensor, baseline: Tensor | float = 0.0, mask: Tensor | None = None
) -> Tensor:
    """Surrogate loss mean((cost − b) · log P(H)); costs and baseline carry no gradient.

    Shapes: ``log_prob`` and ``cost`` (batch,) or (batch, steps); ``mask`` marks real steps.
    """
    advantage = (cost - baseline).detach()
    return _masked_mean(advantage * log_prob, mask)


def batch_mean_baseline(cost: Tensor, mask: Tensor | None = None) -> Tensor:
    """The mean cost of the batch (BSN's baseline), ignoring padded steps."""
    return _masked_mean(cost.detach(), mask)


class MovingAverageBaseline:
    """Exponential moving average of the cost, bias-corrected and blind to padded steps.

    ``decay`` weights the past: value ← decay · value + (1 − decay) · batch mean. The
    reference weighted the *newest* batch by 0.9 and averaged padded steps in; here the
    estimate is debiased like Adam's moments so early batches are not pulled toward 0.
    """

    def __init__(self, decay: float = 0.9):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self._average = 0.0
        self._weight = 0.0

    @property
    def value(self) -> float:
        """The current baseline (0 before the first update)."""
        return self._average / self._weight if self._weight else 0.0

    def update(self, cost: Tensor, mask: Tensor | None = None) -> float:
        """Fold a batch in and return the baseline to use for the *next* batch."""
        batch_mean = float(_masked_mean(cost.detach(), mask))
        self._average = self.decay * self._average + (1 - self.decay) * batch_mean
        self._weight = self.decay * self._weight + (1 - self.decay)
        return self.value


class GroupedMovingAverageBaseline:
    """One bias-corrected moving average of the cost per group, e.g. per class label.

    Whatever does not depend on the sampled architecture may choose the baseline without
    biasing the gradient; at training time a step's label is such information. Easy
    steps (silence) and hard ones (keywords) then stop adding their difference in loss
    to the noise of every architecture's advantage: what remains is how this
    architecture did against the usual for this kind of input.
    """

    def __init__(self, groups: int, decay: float = 0.9):
        if groups < 1:
            raise ValueError(f"groups must be at least 1, got {groups}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self._average = torch.zeros(groups, dtype=torch.float64)
        self._weight = torch.zeros(groups, dtype=torch.float64)

    def values(self, group: Tensor) -> Tensor:
        """The baseline of each element of ``group`` (int64; 0 for groups not seen yet)."""
        seen = self._weight > 0
        value = torch.where(seen, self._average / self._weight.clamp_min(1e-300), 0.0)
        return value.to(group.device)[group]

    def update(self, cost: Tensor, group: Tensor, mask: Tensor | None = None) -> None:
        """Fold in the mean cost of each group present in the batch (real steps only)."""
        if mask is not None:
            cost, group = cost[mask], group[mask]
        cost, group = cost.detach().double().flatten().cpu(), group.flatten().cpu()
        sums = torch.zeros_like(self._average).index_add_(0, group, cost)
        counts = torch.zeros_like(self._average).index_add_(0, group, torch.ones_like(cost))
        present = counts > 0
        mean = sums[present] / counts[present]
        self._average[present] = self.decay * self._average[present] + (1 - self.decay) * mean
        self._weight[present] = self.decay * self._weight[present] + (1 - self.decay)


def returns_to_go(rewards: Tensor, gamma: float, mask: Tensor | None = None) -> Tensor:
    """Per-step returns G_t = Σ_{k≥t} γ^{k−t} r_k over (batch, steps); γ = 0 gives r_t.

    With γ > 0 a step's architecture is also credited with its effect on later steps
    (the reference used γ = 0). Padded steps contribute nothing.
    """
    if mask is not None:
        rewards = rewards * mask.to(rewards.dtype)
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        out[:, t] = running
    return out
