"""Distributions over architectures: independent Bernoullis over the stochastic nodes.

The logits come either from free parameters (:class:`StaticArchitecture`, BSN) or from a
controller module (SANAS); both give an :class:`ArchitectureDistribution`.
"""

from __future__ import annotations

from functools import cached_property

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli


class ArchitectureDistribution:
    """Product of Bernoullis; the last dimension of ``logits`` runs over stochastic nodes."""

    def __init__(self, logits: Tensor):
        self.logits = logits

    @cached_property
    def _bernoulli(self) -> Bernoulli:
        # built on first use: the deterministic mode (every streaming step) needs none
        return Bernoulli(logits=self.logits)

    @property
    def probs(self) -> Tensor:
        return self._bernoulli.probs

    def sample(self) -> Tensor:
        """A {0,1} architecture per row (no gradient; use :meth:`log_prob` for REINFORCE)."""
        return self._bernoulli.sample()

    def log_prob(self, architecture: Tensor) -> Tensor:
        """log P(H), summed over nodes (the reference averaged it; see the SANAS options)."""
        return self._bernoulli.log_prob(architecture.to(self.logits.dtype)).sum(dim=-1)

    def entropy(self) -> Tensor:
        """Entropy of each row's architecture distribution (nats)."""
        return self._bernoulli.entropy().sum(dim=-1)

    def mode(self) -> Tensor:
        """The deterministic architecture used at evaluation: H_n = 1[p_n > 0.5]."""
        return (self.logits > 0).to(self.logits.dtype)


class StaticArchitecture(nn.Module):
    """Free logits φ over the stochastic nodes (BSN); p_n = sigmoid(φ_n), φ initialised at 3."""

    def __init__(self, num_stochastic: int, init_logit: float = 3.0):
        super().__init__()
        self.logits = nn.Parameter(torch.full((num_stochastic,), float(init_logit)))

    def forward(self, batch_size: int) -> ArchitectureDistribution:
        """The same distribution for each of ``batch_size`` samples."""
        return ArchitectureDistribution(self.logits.expand(batch_size, -1))
