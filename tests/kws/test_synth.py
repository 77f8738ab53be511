"""Synthetic keywords: layout, audio format, speaker-disjoint splits, clear failures."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sanas.kws.data.speech_commands import SpeechCommands
from sanas.kws.data.synth import (
    SynthError,
    pick_speakers,
    synthesize_keywords,
    voice_families,
)

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not installed (make system-deps)"
)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    synthesize_keywords(root, ["yes", "no"], 3, seed=0, unknown_words=["cat"], noise_seconds=5)
    return root


def test_layout_and_audio(synth_root: Path) -> None:
    words = sorted(p.name for p in synth_root.iterdir() if p.is_dir())
    assert words == ["_background_noise_", "cat", "no", "yes"]
    for word in ("yes", "no"):
        clips = sorted((synth_root / word).glob("*.wav"))
        assert len(clips) == 3
        for clip in clips:
            speaker, nohash, k = clip.stem.split("_", 2)
            assert len(speaker) == 8 and nohash == "nohash" and k == "0"
            audio, rate = sf.read(clip)
            assert rate == 16000 and audio.shape == (16000,)
            assert sf.info(clip).subtype == "PCM_16"
            assert np.abs(audio).max() > 0.25  # a spoken word, not silence
    assert len(list((synth_root / "cat").glob("*.wav"))) == 1  # half of 3, at least one
    noises = sorted(p.name for p in (synth_root / "_background_noise_").glob("*.wav"))
    assert noises == ["brown_noise.wav", "pink_noise.wav", "white_noise.wav"]


def test_splits_are_speaker_disjoint_and_readable(synth_root: Path) -> None:
    dataset = SpeechCommands(synth_root)
    dataset.check_speaker_disjoint()
    speakers = [dataset.speakers(split) for split in ("training", "validation", "testing")]
    assert [len(s) for s in speakers] == [1, 1, 1]
    assert len(set.union(*speakers)) == 3


def test_same_seed_same_files(synth_root: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    synthesize_keywords(again, ["yes", "no"], 3, seed=0, unknown_words=["cat"], noise_seconds=5)
    for path in synth_root.rglob("*"):
        if path.is_file():
            assert (again / path.relative_to(synth_root)).read_bytes() == path.read_bytes()


def test_small_sets_mix_base_voices() -> None:
    families = voice_families(["espeak-ng"])
    picked = pick_speakers(families, len(families), np.random.default_rng(0))
    assert len({voice.name.split("+")[0] for voice in picked}) == len(families)


def test_refuses_bad_requests(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(SynthError, match="not empty"):
        synthesize_keywords(tmp_path / "full", ["yes"], 1)
    with pytest.raises(SynthError, match=r"cannot synthesize '\.\./x'"):
        synthesize_keywords(tmp_path / "a", ["../x"], 1)
    with pytest.raises(SynthError, match="also listed as unknown"):
        synthesize_keywords(tmp_path / "b", ["yes"], 1, unknown_words=["yes"])


def test_missing_espeak_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SynthError, match="apt-get install espeak-ng"):
        synthesize_keywords(tmp_path / "out", ["yes"], 1)
