"""Architecture policies: how each step of a sequence (e.g. an audio stream) gets its
architecture at inference time, for any super network.

A policy maps the previous step's feature taps and its own state to the next step's
{0,1} architecture over the stochastic nodes: a fixed architecture, a recurrent
controller's choice, a replayed schedule, or any of them under a budget that holds on
every input (:class:`GovernedPolicy`).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from sanas.supernet.governor import BudgetGovernor

BURST_STEPS = 30.0  # a held budget saves up to 6 s of steps for a spoken word


class ArchitecturePolicy(Protocol):
    """Chooses the architecture of the next step of a batch of streams.

    ``previous``: the feature taps of their previous step, (batch, F), or ``None`` at the
    first step; ``state``: what the policy returned for them at their previous step, stacked
    along dim 0 (``None`` at the first step). Returns (batch, S) {0,1} architectures over
    the stochastic nodes and the new state (``None`` for a stateless policy).
    """

    def __call__(
        self, previous: Tensor | None, state: Tensor | None, batch: int
    ) -> tuple[Tensor, Tensor | None]: ...


class FixedPolicy:
    """The same architecture at every step, e.g. a BSN's deterministic architecture (a
    static model needs no policy: the engine's default turns every node on)."""

    def __init__(self, architecture: Tensor) -> None:
        self.architecture = torch.as_tensor(architecture)

    def __call__(
        self, previous: Tensor | None, state: Tensor | None, batch: int
    ) -> tuple[Tensor, Tensor | None]:
        return self.architecture.expand(batch, -1), None


class ArchitectureController(Protocol):
    """What a SANAS controller offers the engine (:class:`RecurrentController`)."""

    def select(
        self,
        prev_features: Tensor | None,
        hidden: Tensor | None,
        batch_size: int | None = None,
        deterministic: bool = True,
        threshold: float = 0.5,
    ) -> tuple[Tensor, Tensor]: ...


class ControllerPolicy:
    """SANAS: a recurrent controller picks each step's architecture from the previous
    step's features: the nodes whose probability exceeds ``threshold`` (0.5: its mode, as
    in evaluation), or a sample when not ``deterministic``."""

    def __init__(
        self,
        controller: ArchitectureController,
        deterministic: bool = True,
        threshold: float = 0.5,
    ) -> None:
        self.controller = controller
        self.deterministic = deterministic
        self.threshold = threshold

    def __call__(
        self, previous: Tensor | None, state: Tensor | None, batch: int
    ) -> tuple[Tensor, Tensor | None]:
        return self.controller.select(previous, state, batch, self.deterministic, self.threshold)


class GovernedPolicy:
    """Another policy under a :class:`~sanas.supernet.governor.BudgetGovernor`: its
    architectures run while each stream's balance pays for them, the governor's fallback
    otherwise, so the mean cost per step holds on any stream. The state carries the
    inner policy's state and each stream's balance (last column)."""

    def __init__(self, policy: ArchitecturePolicy, governor: BudgetGovernor) -> None:
        self.policy = policy
        self.governor = governor

    def __call__(
        self, previous: Tensor | None, state: Tensor | None, batch: int
    ) -> tuple[Tensor, Tensor | None]:
        if state is None:
            inner, balance = None, self.governor.initial_balance(batch)
        else:
            inner = state[:, :-1].to(previous.dtype) if state.shape[1] > 1 else None
            balance = state[:, -1]
        architecture, inner = self.policy(previous, inner, batch)
        architecture, balance = self.governor.enforce(architecture, balance)
        columns = [] if inner is None else [inner.to(balance.dtype)]
        return architecture, torch.cat([*columns, balance.unsqueeze(1)], dim=1)


class ScheduledPolicy:
    """Step t of every stream uses ``architectures[t % len(architectures)]``: a replayed
    schedule (tests, benchmarks of a given mix of tiers)."""

    def __init__(self, architectures: Tensor) -> None:
        self.architectures = torch.as_tensor(architectures)

    def __call__(
        self, previous: Tensor | None, state: Tensor | None, batch: int
    ) -> tuple[Tensor, Tensor | None]:
        step = torch.zeros(batch, dtype=torch.long) if state is None else state + 1
        return self.architectures[step % len(self.architectures)], step
