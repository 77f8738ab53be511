"""Imitation: a SANAS controller learns to spend where a gate spent."""

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sanas.cli import app
from sanas.kws.model.kws_model import SANASKWS
from sanas.kws.model.networks import cnn_trad_fpool3
from sanas.kws.training.imitation import GateExample, imitate_gate


def _spends(model: SANASKWS, features: np.ndarray) -> np.ndarray:
    """Whether the controller, fed ``features`` step after step, turns conv_1 on."""
    column = model.net.stochastic_names.index("conv_1")
    hidden, previous, spends = None, None, []
    with torch.no_grad():
        for row in torch.as_tensor(features):
            distribution, hidden = model.controller.step(previous, hidden, 1)
            spends.append(bool(distribution.probs[0, column] > 0.5))
            previous = row.unsqueeze(0)
    return np.array(spends)


def test_the_controller_learns_to_spend_where_the_gate_did() -> None:
    """The gate spends on the step after each feature spike: seeing the previous step's
    features, the controller learns to do the same, and the cheap tier elsewhere."""
    torch.manual_seed(0)
    model = SANASKWS(cnn_trad_fpool3(shortcuts=True, channels=4, fixed_bottlenecks=True))
    rng = np.random.default_rng(0)
    features = rng.standard_normal((1200, 128)).astype(np.float32)
    gate = np.zeros(1200, dtype=bool)
    gate[1:] = features[:-1, 0] > 1.0  # about 16% of the steps
    example = GateExample(expensive=features, cheap=features, gate=gate)
    losses = imitate_gate(
        model, [example], epochs=30, chunk_steps=20, batch_size=8, lr=1e-2, progress=False
    )
    assert losses[-1] < 0.5 * losses[0]
    assert (_spends(model, features) == gate).mean() > 0.95


def test_bad_examples_are_named() -> None:
    with pytest.raises(ValueError, match="need one row per gate step"):
        GateExample(np.zeros((5, 3)), np.zeros((5, 3)), np.zeros(4, dtype=bool))
    model = SANASKWS(cnn_trad_fpool3(shortcuts=True, channels=4, fixed_bottlenecks=True))
    short = GateExample(np.zeros((5, 128)), np.zeros((5, 128)), np.zeros(5, dtype=bool))
    with pytest.raises(ValueError, match="shorter than one chunk"):
        imitate_gate(model, [short], chunk_steps=10, progress=False)
    with pytest.raises(ValueError, match="at least one example"):
        imitate_gate(model, [], progress=False)


def test_the_imitate_command_names_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(
        app, ["imitate", str(tmp_path), "--stream", str(tmp_path), "--out", str(tmp_path / "r")]
    )
    assert missing.exit_code == 2
    assert f"--stream {tmp_path}: no stream.wav there" in missing.output
    bad_gate = runner.invoke(
        app,
        ["imitate", str(tmp_path), "--stream", str(tmp_path), "--out", "r", "--gate", "psychic"],
    )
    assert bad_gate.exit_code == 2
    assert "--gate must be one of ('aligned', 'hindsight')" in bad_gate.output
