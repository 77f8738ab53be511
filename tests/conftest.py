"""Shared fixtures: seeded randomness, a tiny tone dataset and the real Speech Commands
subset."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.bad_inputs import World

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SUBSET = REPO.parent / "shared" / "data" / "speech_commands_subset"
SAMPLE_RATE = 16000


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


@pytest.fixture(scope="session")
def tone_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Speech Commands folder: each word a tone of its own pitch, 8 speakers each."""
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    lists: dict[str, list[str]] = {"validation": [], "testing": []}
    for w, word in enumerate(("yes", "no", "cat")):  # cat: an unknown word
        (root / word).mkdir()
        for k in range(8):
            pitch = 300 + 250 * w + rng.uniform(-20, 20)
            tone = 0.5 * np.sin(2 * np.pi * pitch * t) * (np.abs(t - 0.5) < 0.3)
            clip = tone + 0.01 * rng.standard_normal(SAMPLE_RATE)
            name = f"{k:08x}_nohash_0.wav"
            sf.write(root / word / name, clip.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
            if k < 2:
                lists["validation" if k == 0 else "testing"].append(f"{word}/{name}")
    for split, names in lists.items():
        (root / f"{split}_list.txt").write_text("\n".join(names) + "\n")
    (root / "_background_noise_").mkdir()
    noise = 0.05 * rng.standard_normal(5 * SAMPLE_RATE)
    sf.write(root / "_background_noise_" / "white.wav", noise.astype(np.float32), SAMPLE_RATE)
    return root


@pytest.fixture(scope="session")
def tiny_run(tone_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder of a tiny static network (one epoch on ``tone_data``); copy it
    before changing it."""
    from sanas.kws.config import TrainConfig
    from sanas.kws.training.loop import train

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    config = {"data": str(tone_data), "out": str(out), "model": "static-shortcuts", "epochs": 1,
              "batch_size": 8, "channels": 2, "workers": 0, "progress": False}  # fmt: skip
    train(TrainConfig.from_dict(config))
    return out


@pytest.fixture(scope="session")
def tiny_stream(tone_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 15 s streaming test folder (stream.wav, labels.txt) made from ``tone_data``."""
    from sanas.kws.data.stream_file import generate_streaming_test

    out = tmp_path_factory.mktemp("tiny_stream")
    generate_streaming_test(tone_data, out, minutes=0.25, seed=0)
    return out


@pytest.fixture
def world(
    tmp_path: Path,
    tiny_run: Path,
    tiny_stream: Path,
    tone_data: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[World]:
    """The folders of one bad-input case (tests/bad_inputs.py): inputs/, out/, an empty
    working folder and an empty temporary folder."""
    for name in ("inputs", "cwd", "tmp"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    yield World(tmp_path, tiny_run, tiny_stream, tone_data, monkeypatch)
