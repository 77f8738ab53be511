"""The SANAS training objective over sequences of steps, for any per-step super network.

A sequence model (e.g. a recurrent controller choosing each step's architecture) produces,
per step t, logits, the log-probability of the sampled architecture and its cost C_t. The
loss is the mean cross-entropy over real steps plus the REINFORCE surrogate on the per-step
cost Δ_t + penalty(C_t) minus a baseline, with later steps' costs discounted by γ. Nothing
here knows about audio: padded steps carry the label :data:`IGNORE_INDEX`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from sanas.supernet.budgets import BudgetObjective
from sanas.supernet.estimators import (
    GroupedMovingAverageBaseline,
    MovingAverageBaseline,
    reinforce_loss,
    returns_to_go,
)

IGNORE_INDEX = -100  # label of padded steps (torch's cross-entropy default ignore_index)
SequenceBaseline = Literal["ema_reference", "ema", "ema_class", "full_network"]


class SequenceOutput(Protocol):
    """What the objective reads of a model's output over (batch, T) steps."""

    logits: Tensor  # (batch, T, classes)
    log_prob: Tensor | None  # (batch, T): log P of each step's sampled architecture
    cost: Tensor  # (batch, T)
    full_logits: Tensor | None  # (batch, T, classes) of the all-on network, if computed


BASELINES = ("ema_reference", "ema", "ema_class", "full_network")


@dataclass
class ObjectiveStats:
    """What one training step measured (means over the batch's real steps)."""

    task_loss: float
    arch_loss: float
    cost: float
    penalty: float
    baseline: float
    lam: float


class SequenceObjective:
    """Training loss of a :class:`SequenceOutput`: mean cross-entropy over real steps plus the
    REINFORCE surrogate on per-step costs Δ_t + penalty(C_t), minus a baseline, discounted
    over later steps by ``gamma``. Holds the baseline and budget state (checkpointed).
    ``label_smoothing``: the cross-entropy's (Szegedy et al. 2016; the network's loss and
    the REINFORCE step costs alike)."""

    def __init__(
        self,
        budget: BudgetObjective,
        baseline: SequenceBaseline = "ema_reference",
        gamma: float = 0.0,
        num_classes: int = 12,
        label_smoothing: float = 0.0,
    ) -> None:
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.budget = budget
        self.baseline_kind = baseline
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        reference = baseline == "ema_reference"
        self.baseline: MovingAverageBaseline | GroupedMovingAverageBaseline
        if self.baseline_kind in ("ema_class", "full_network"):
            self.baseline = GroupedMovingAverageBaseline(num_classes, decay=0.9)
        else:
            self.baseline = MovingAverageBaseline(decay=0.1 if reference else 0.9)

    def __call__(
        self,
        output: SequenceOutput,
        labels: Tensor,
        mask: Tensor,
        search: bool = True,
        teaches: Literal["both", "network", "architecture"] = "both",
    ) -> tuple[Tensor, ObjectiveStats]:
        """The loss to backpropagate and the step's statistics.

        ``search=False`` (warm-up) trains the network only: no REINFORCE term, and the
        budget's λ does not move; the baseline still follows the step costs.
        ``teaches``: ``"network"`` returns the task loss alone and leaves the baseline
        and budget untouched; ``"architecture"`` returns the REINFORCE term alone (a
        batch held out from the network's training, whose losses measure how each
        architecture generalises); ``"both"``: their sum.
        """
        ce = F.cross_entropy(
            output.logits.flatten(0, 1),
            labels.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="none",
            label_smoothing=self.label_smoothing,
        ).view(labels.shape)
        valid = mask.sum().clamp_min(1)
        task_loss = ce.sum() / valid
        mean_cost = float(output.cost[mask].mean()) if mask.any() else 0.0
        if output.log_prob is None or teaches == "network":
            stats = ObjectiveStats(float(task_loss.detach()), 0.0, mean_cost, 0.0, 0.0, 0.0)
            if teaches == "architecture":  # a static model has no architecture to teach
                return task_loss.new_zeros(()), stats
            return task_loss, stats
        penalty = self.budget.penalty(output.cost).to(ce.dtype)
        step_cost = ce.detach() + penalty
        if isinstance(self.baseline, GroupedMovingAverageBaseline):
            classes = labels.clamp_min(0)  # padded steps (IGNORE_INDEX) are masked out
            critic = self._critic(output, labels, ce)
            baseline = critic + self.baseline.values(classes).to(step_cost.dtype)
            self.baseline.update(step_cost - critic, classes, mask)
        elif self.baseline_kind == "ema_reference":
            baseline = self.baseline.update(step_cost)  # every step, padded ones included
        else:
            baseline = self.baseline.value
            self.baseline.update(step_cost, mask)
        arch_loss = task_loss.new_zeros(())
        if search:
            advantage = returns_to_go(step_cost - baseline, self.gamma, mask)
            arch_loss = reinforce_loss(output.log_prob, advantage, 0.0, mask)
            self.budget.update(output.cost[mask])
        stats = ObjectiveStats(
            task_loss=float(task_loss.detach()),
            arch_loss=float(arch_loss.detach()),
            cost=mean_cost,
            penalty=float(penalty[mask].mean()) if mask.any() else 0.0,
            baseline=float(baseline[mask].mean()) if torch.is_tensor(baseline) else baseline,
            lam=float(self.budget.lam),
        )
        return (arch_loss if teaches == "architecture" else task_loss + arch_loss), stats

    def _critic(self, output: SequenceOutput, labels: Tensor, ce: Tensor) -> Tensor:
        """The per-step part of the baseline: the full network's loss on the same window
        (baseline ``full_network``), else 0."""
        if self.baseline_kind != "full_network":
            return torch.zeros_like(ce)
        if output.full_logits is None:
            raise ValueError("baseline 'full_network' needs the all-on logits: full_network=True")
        return F.cross_entropy(
            output.full_logits.detach().flatten(0, 1),
            labels.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="none",
        ).view(labels.shape)

    def state_dict(self) -> dict[str, object]:
        """Baseline and budget state, for checkpoints."""
        state: dict[str, object] = {"baseline": dict(vars(self.baseline))}
        state["budget"] = dict(vars(self.budget))
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore :meth:`state_dict`."""
        vars(self.baseline).update(state["baseline"])  # type: ignore[arg-type]
        vars(self.budget).update(state["budget"])  # type: ignore[arg-type]
