"""Recurrent controller: an architecture distribution per time step (SANAS, method.md §3).

The controller reads the features the super network produced at the previous step and
chooses the next step's architecture::

    z_0 = 0 (or a learned vector);  p_t = sigmoid(W z_{t−1} + b);  H_t ~ Bernoulli(p_t)
    z_t = GRUCell(f_t, z_{t−1})

``b`` starts at ``init_bias`` (3: p ≈ 0.95, almost every node on). Nothing here is audio:
any super network with a feature tap can be driven step by step.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn

from sanas.supernet.distributions import ArchitectureDistribution


class RecurrentController(nn.Module):
    """GRU over past features → Bernoulli logits over the stochastic nodes.

    Args:
        num_nodes: stochastic nodes of the super network (the distribution's size).
        feature_dim: size of the feature tap fed back at each step (128 in the paper).
        hidden: GRU state size (100 in the paper).
        init_bias: initial value of every head bias b_n.
        learned_initial_state: learn z_0 instead of fixing it at zero. The reference held
            z_0 in a parameter that no optimiser ever updated, i.e. zero.
    """

    def __init__(
        self,
        num_nodes: int,
        feature_dim: int = 128,
        hidden: int = 100,
        init_bias: float = 3.0,
        learned_initial_state: bool = False,
    ) -> None:
        super().__init__()
        self.num_nodes = num_nodes
        self.feature_dim = feature_dim
        self.hidden = hidden
        self.gru = nn.GRUCell(feature_dim, hidden)
        self.head = nn.Linear(hidden, num_nodes)
        nn.init.constant_(self.head.bias, init_bias)
        self.initial = nn.Parameter(torch.zeros(hidden), requires_grad=learned_initial_state)

    def initial_state(self, batch_size: int) -> Tensor:
        """z_0 for a batch, (batch, hidden)."""
        return self.initial.expand(batch_size, -1)

    def distribution(self, hidden: Tensor) -> ArchitectureDistribution:
        """The distribution of the next architecture given the state z_{t−1}."""
        return ArchitectureDistribution(self.head(hidden))

    def step(
        self, prev_features: Tensor | None, hidden: Tensor | None, batch_size: int | None = None
    ) -> tuple[ArchitectureDistribution, Tensor]:
        """Fold the previous step's features into the state; return the next distribution.

        ``prev_features=None`` marks the first step (no GRU update); ``hidden=None`` starts
        from z_0 (``batch_size`` is then needed when there are no features either).
        Returns the distribution of H_t and the state z_{t−1} it was computed from, which
        the caller passes back at the next step.
        """
        if hidden is None:
            if batch_size is None:
                if prev_features is None:
                    raise ValueError("step() needs batch_size when neither features nor state")
                batch_size = prev_features.shape[0]
            hidden = self.initial_state(batch_size)
        if prev_features is not None:
            hidden = self.gru(prev_features, hidden)
        return self.distribution(hidden), hidden

    def select(
        self,
        prev_features: Tensor | None,
        hidden: Tensor | None,
        batch_size: int | None = None,
        deterministic: bool = True,
        threshold: float = 0.5,
    ) -> tuple[Tensor, Tensor]:
        """What a streaming engine calls each step: (architecture {0,1}, new state), with
        no gradient.

        ``deterministic`` takes H_n = 1[p_n > threshold] (evaluation; 0.5: the mode);
        otherwise a sample.
        """
        # With gradients already off (the streaming engine runs in inference mode), entering
        # no_grad would cost a few µs per step, a few percent of a cheap step, for nothing.
        with torch.no_grad() if torch.is_grad_enabled() else nullcontext():
            distribution, hidden = self.step(prev_features, hidden, batch_size)
            architecture = distribution.mode(threshold) if deterministic else distribution.sample()
        return architecture, hidden
