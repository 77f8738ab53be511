"""The oracle gate: what input adaptivity could buy with a trained super network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sanas.kws.data.speech_commands import kws_task
from sanas.kws.data.stream_file import generate_streaming_test
from sanas.kws.evaluation.metrics import evaluate_stream
from sanas.kws.model.registry import build_kws_model
from sanas.kws.training.gates import (
    expensive_steps_for,
    gated_posteriors,
    hindsight_gate,
    speech_steps,
)
from sanas.lab.oracle import confident_word_steps, oracle_gating


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


def _two_tier_stream() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list]:
    """Four words 6 s apart. The expensive tier is sure of each word on the steps whose
    window overlaps it; the cheap tier gives the word 0.4 there (0.6 for the third word)
    and silence the rest. A detection (three steps averaged above 0.7) needs two
    expensive steps per word, one for the third."""
    labels = ["_silence_", "_unknown_", "yes", "no"]
    times = np.arange(0.0, 26_000.0, 200.0)
    truth = [("yes", 2000.0), ("no", 8000.0), ("yes", 14000.0), ("no", 20000.0)]
    expensive = np.tile([1.0, 0.0, 0.0, 0.0], (len(times), 1))
    cheap = expensive.copy()
    for word, start in truth:
        near = speech_steps(times, [start])
        label = labels.index(word)
        expensive[near] = np.eye(4)[label]
        share = 0.6 if start == 14000.0 else 0.4
        cheap[near] = [1 - share, 0.0, 0.0, 0.0]
        cheap[near, label] = share
    return times, expensive, cheap, labels, truth


@pytest.mark.parametrize(("most", "detected"), [(0, 0), (1, 1), (3, 2), (6, 3), (7, 4)])
def test_hindsight_gate_serves_the_words_that_need_the_fewest_expensive_steps(
    most: int, detected: int
) -> None:
    times, expensive, cheap, labels, truth = _two_tier_stream()
    gate = hindsight_gate(times, expensive, cheap, labels, truth, most)
    assert gate.sum() <= most
    mixed = np.where(gate[:, None], expensive, cheap)
    score = evaluate_stream(times, mixed, labels, truth, duration_ms=26_000.0)
    assert score.correct == detected
    if most == 1:  # the word the cheap tier nearly gets is served first
        assert speech_steps(times[gate], [14000.0]).all()


@pytest.mark.parametrize(("count", "matched"), [("correct", 3), ("matched", 4)])
def test_hindsight_gate_can_serve_words_detected_with_the_wrong_label(
    count: str, matched: int
) -> None:
    times, expensive, cheap, labels, truth = _two_tier_stream()
    # "yes" on the last "no": three expensive steps make it fire (the cheap tier says no)
    expensive[speech_steps(times, [20000.0])] = np.eye(4)[2]
    gate = hindsight_gate(times, expensive, cheap, labels, truth, 8, count=count)
    mixed = np.where(gate[:, None], expensive, cheap)
    score = evaluate_stream(times, mixed, labels, truth, duration_ms=26_000.0)
    assert (score.correct, score.matched) == (3, matched)
    with pytest.raises(ValueError, match="count must be one of"):
        hindsight_gate(times, expensive, cheap, labels, truth, 7, count="wrong")


def test_expensive_steps_for_a_budget_per_step() -> None:
    # 1/5 of the full network at 16 channels, the cheap path elsewhere
    assert expensive_steps_for(3.36e6, 100, 16.78e6, 0.52e6) == 17
    assert expensive_steps_for(0.4e6, 100, 16.78e6, 0.52e6) == 0
    assert expensive_steps_for(20e6, 100, 16.78e6, 0.52e6) == 100
    with pytest.raises(ValueError, match="must cost more than the cheap one"):
        expensive_steps_for(1e6, 10, 0.5e6, 0.52e6)


def test_controller_thresholds_need_a_sanas_model() -> None:
    model = build_kws_model("static-shortcuts", channels=2).eval()
    with pytest.raises(ValueError, match="architecture thresholds need a SANAS model"):
        oracle_gating(model, kws_task("12").labels, "x.wav", "y.txt", architecture_thresholds=[0.1])


def test_gated_posteriors_reuse_an_expensive_step_on_the_cheap_steps_after_it() -> None:
    expensive, cheap = np.full((6, 2), [1.0, 0.0]), np.full((6, 2), [0.0, 1.0])
    expensive[4] = [0.5, 0.5]  # another expensive output, to tell them apart
    gate = np.array([False, True, False, False, True, False])
    assert gated_posteriors(expensive, cheap, gate)[:, 0].tolist() == [0, 1, 0, 0, 0.5, 0]
    reused = gated_posteriors(expensive, cheap, gate, reuse_steps=2)
    assert reused[:, 0].tolist() == [0, 1, 1, 1, 0.5, 0.5]


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
            hindsight_budgets=(0.6e6,),
            hindsight_counts=("correct", "matched"),
            strides=(5,),
        )
    }
    oracles = ["oracle conv_0/cheap", "oracle full/cheap"]
    gates = [*oracles, *(f"{o} >800ms" for o in oracles)]
    hindsight = [
        f"hindsight {tier}/cheap ≤0.6M{count}"
        for tier in ("conv_0", "full")
        for count in ("", ", matched")
    ]
    strided = ["every 5 steps conv_0/cheap", "every 5 steps full/cheap"]
    controller = ["controller τ=0.5", "controller τ=0.01"]
    assert list(scores) == ["cheap", "conv_0", "full", *gates, *hindsight, *strided, *controller]
    steps = 5 * 30 - 4  # 30 s, a 1 s window every 200 ms
    cheap, full = scores["cheap"].macs_per_step, scores["full"].macs_per_step
    every_fifth = cheap + (full - cheap) * len(range(0, steps, 5)) / steps
    assert scores["every 5 steps full/cheap"].macs_per_step == pytest.approx(every_fifth)
    assert scores["every 5 steps full/cheap"].family == "stride full/cheap"
    for name in hindsight:
        assert scores["cheap"].macs_per_step <= scores[name].macs_per_step <= 0.6e6
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
