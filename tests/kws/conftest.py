"""Fixtures of the keyword-spotting tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SAMPLE_RATE = 16000


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
