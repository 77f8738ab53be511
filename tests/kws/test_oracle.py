"""The oracle gate: what input adaptivity could buy with a trained super network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sanas.kws.data.speech_commands import kws_task
from sanas.kws.data.stream_file import generate_streaming_test
from sanas.kws.oracle import confident_word_steps, oracle_gating, speech_steps
from sanas.kws.sanas_model import build_kws_model


def test_speech_steps_are_windows_overlapping_a_word() -> None:
    times = np.array([0.0, 200.0, 1000.0, 1800.0, 2000.0, 3000.0])
    # a word clip over [1900, 2900): windows [t, t + 1000) that overlap it
    assert speech_steps(times, [1900.0]).tolist() == [False, False, True, True, True, False]
    assert not speech_steps(times, []).any()
    # overlaps: 100, 900 and 900 ms; more than 800 ms keeps the two best aligned
    assert speech_steps(times, [1900.0], 800).tolist() == [False] * 3 + [True, True, False]


def test_confident_word_steps_are_right_and_above_the_threshold_where_a_word_is() -> None:
    labels = ["_silence_", "_unknown_", "yes", "no"]
    times = np.arange(0.0, 6000.0, 200.0)  # the steps of 800, 1000, 1200 ms hold a word at 1000
    posteriors = np.zeros((len(times), 4))
    posteriors[:, 0] = 1.0  # silence elsewhere
    posteriors[4] = [0.1, 0.0, 0.9, 0.0]  # 800 ms: right and confident
    posteriors[5] = [0.0, 0.4, 0.6, 0.0]  # 1000 ms: right, not confident enough
    posteriors[6] = [0.0, 0.0, 0.0, 1.0]  # 1200 ms: confident and wrong
    truth = [("yes", 1000.0), ("no", 4000.0)]
    posteriors[19:22] = [0.0, 0.0, 0.2, 0.8]  # 3800-4200 ms: all three right
    share = confident_word_steps(times, posteriors, labels, truth)
    assert share == pytest.approx(4 / 6)
    assert confident_word_steps(times, posteriors, labels, truth, threshold=0.5) == 5 / 6
    assert np.isnan(confident_word_steps(times, posteriors, labels, []))


def test_controller_thresholds_need_a_sanas_model() -> None:
    model = build_kws_model("static-shortcuts", channels=2).eval()
    with pytest.raises(ValueError, match="architecture thresholds need a SANAS model"):
        oracle_gating(model, kws_task("12").labels, "x.wav", "y.txt", architecture_thresholds=[0.1])


def test_oracle_mixes_lie_between_the_cheap_tier_and_the_expensive_one(
    tone_data: Path, tmp_path: Path
) -> None:
    generate_streaming_test(tone_data, tmp_path, minutes=0.5, seed=0)
    torch.manual_seed(0)
    model = build_kws_model("sanas", channels=2).eval()
    scores = {
        s.policy: s
        for s in oracle_gating(
            model,
            kws_task("12").labels,
            tmp_path / "stream.wav",
            tmp_path / "labels.txt",
            min_overlaps_ms=(0.0, 800.0),
            architecture_thresholds=(0.5, 0.01),
        )
    }
    oracles = ["oracle conv_0/cheap", "oracle full/cheap"]
    gates = [*oracles, *(f"{o} >800ms" for o in oracles)]
    controller = ["controller τ=0.5", "controller τ=0.01"]
    assert list(scores) == ["cheap", "conv_0", "full", *gates, *controller]
    assert scores["oracle full/cheap >800ms"].family == "oracle full/cheap"
    # the untrained controller leans on (p ≈ 0.95): every node on at either threshold
    assert scores["controller τ=0.01"].macs_per_step == scores["full"].macs_per_step
    assert model.architecture_threshold == 0.5  # restored
    strict = scores["oracle full/cheap >800ms"].macs_per_step
    assert scores["cheap"].macs_per_step < strict < scores["oracle full/cheap"].macs_per_step
    assert scores["cheap"].macs_per_step == 519_168  # method.md §4's cheapest path
    for tier in ("conv_0", "full"):
        mixed = scores[f"oracle {tier}/cheap"].macs_per_step
        assert scores["cheap"].macs_per_step < mixed < scores[tier].macs_per_step
    for score in scores.values():
        assert 0 <= score.correct <= score.matched <= 100
