"""Output reuse: a cheap step reuses the output of a recent, costlier step.

When a sequence model runs a different architecture at each step, a step that ran a
cheap architecture can repeat the output of the most recent step, at most ``steps``
before, that ran a costlier one, instead of its own. Consecutive steps see mostly the
same input (a 1 s window every 200 ms overlaps the next by 800 ms), so a recent costly
output is often a better estimate than a fresh cheap one: the frame-skipping idea of
acoustic models that evaluate a network every k-th frame and copy its posteriors
(Vanhoucke et al., 2013), with the steps to compute chosen per input. It costs nothing:
the reused output was computed already. ``steps=0`` keeps every step's own output.
"""

from __future__ import annotations

import torch
from torch import Tensor


def reuse_costlier_outputs(outputs: Tensor, costs: Tensor, steps: int) -> Tensor:
    """``outputs`` (..., T, C) with each step replaced by that of the most recent of the
    ``steps`` steps before it whose cost (``costs``, (..., T)) is higher than its own,
    when there is one. Reused outputs are the original ones: a reuse never chains beyond
    ``steps`` steps from the step that computed it."""
    if steps < 0:
        raise ValueError(f"reuse steps must be >= 0, got {steps}")
    if costs.shape != outputs.shape[:-1]:
        raise ValueError(
            f"costs must have the outputs' leading shape {tuple(outputs.shape[:-1])}, "
            f"got {tuple(costs.shape)}"
        )
    reused = outputs.clone()
    replaced = torch.zeros_like(costs, dtype=torch.bool)
    for back in range(1, min(steps, costs.shape[-1] - 1) + 1):
        take = (costs[..., :-back] > costs[..., back:]) & ~replaced[..., back:]
        reused[..., back:, :] = torch.where(
            take.unsqueeze(-1), outputs[..., :-back, :], reused[..., back:, :]
        )
        replaced[..., back:] |= take
    return reused
