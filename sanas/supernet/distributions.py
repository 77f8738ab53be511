"""Distributions over architectures: independent Bernoullis over the stochastic nodes.

The logits come either from free parameters (:class:`StaticArchitecture`, BSN) or from a
controller module (SANAS); both give an :class:`ArchitectureDistribution`.
"""

from __future__ import annotations

import math
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

    def mode(self, threshold: float = 0.5) -> Tensor:
        """The deterministic architecture used at evaluation: H_n = 1[p_n > threshold].

        0.5 (the default) is the mode; a lower ``threshold`` switches on every node the
        distribution leans towards at least that much, an operating point of a trained
        distribution chosen after training (as a detection threshold is).
        """
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        return (self.logits > math.log(threshold / (1.0 - threshold))).to(self.logits.dtype)


class StaticArchitecture(nn.Module):
    """Free logits φ over the stochastic nodes (BSN); p_n = sigmoid(φ_n), φ initialised at 3."""

    def __init__(self, num_stochastic: int, init_logit: float = 3.0):
        super().__init__()
        self.logits = nn.Parameter(torch.full((num_stochastic,), float(init_logit)))

    def forward(self, batch_size: int) -> ArchitectureDistribution:
        """The same distribution for each of ``batch_size`` samples."""
        return ArchitectureDistribution(self.logits.expand(batch_size, -1))
