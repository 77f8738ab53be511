"""Run a keyword-spotting super network on every window of a feature sequence.

A training sequence of F frames holds windows of 101 frames every 20 frames. The plain
path cuts the windows out and runs each one (what the reference did).
"""

from __future__ import annotations

from torch import Tensor

from sanas.supernet.executors import run_masked
from sanas.supernet.graph import SuperNetOutput, SuperNetwork

WINDOW_FRAMES = 101
STEP_FRAMES = 20


def cut_windows(features: Tensor, step: int = STEP_FRAMES, window: int = WINDOW_FRAMES) -> Tensor:
    """(batch, frames, coeffs) → (batch, steps, 1, window, coeffs) windows every ``step`` frames."""
    return features.unfold(1, window, step).permute(0, 1, 3, 2).unsqueeze(2)


def forward_windows_plain(net: SuperNetwork, features: Tensor, used: Tensor) -> SuperNetOutput:
    """Masked forward of every window; ``used`` is (batch, steps, num_nodes).

    Returns outputs shaped (batch, steps, ...).
    """
    windows = cut_windows(features)
    batch, steps = windows.shape[:2]
    flat = run_masked(net, windows.flatten(0, 1), used.flatten(0, 1))
    return SuperNetOutput(
        output=flat.output.unflatten(0, (batch, steps)),
        features={k: v.unflatten(0, (batch, steps)) for k, v in flat.features.items()},
        used=used,
    )
