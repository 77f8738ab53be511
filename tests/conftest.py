"""Shared fixtures: seeded randomness and the real Speech Commands subset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SUBSET = REPO.parent / "shared" / "data" / "speech_commands_subset"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def speech_commands_root() -> Path:
    """The real Speech Commands subset (``SANAS_SPEECH_COMMANDS`` or ``../shared/...``).

    In CI (``CI=true``) its absence is a failure, never a silent skip.
    """
    root = Path(os.environ.get("SANAS_SPEECH_COMMANDS", DEFAULT_SUBSET))
    if not (root / "testing_list.txt").is_file():
        message = f"real Speech Commands subset not found at {root} (set SANAS_SPEECH_COMMANDS)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root
