"""What input adaptivity could buy with a trained super network: an oracle gate.

A controller can only gain by spending compute where it changes the outcome. This
diagnostic measures that room directly. It runs a model's super network over a stream
once per fixed *tier* (a used set), then mixes the tiers per step with the ground truth:
the expensive tier on steps whose window overlaps a spoken word, the cheap one elsewhere
(a perfect voice-activity gate). Each policy is scored like the model itself.

If the oracle mix scores no better than the cheap tier alone, no controller can do
better by being input-adaptive: the expensive paths of these weights add nothing. If it
scores better, the gap is what a controller leaves on the table. A SANAS model's own
controller can be scored beside the gates at several architecture thresholds, on the
same stream: the two curves side by side show that gap.

A budget asks a sharper question: :func:`hindsight_gate` knows the ground truth *and* both
tiers' posteriors, and spends a fixed number of expensive steps on the words that need the
fewest to be detected correctly. A controller that chooses between the same two tiers,
seeing only the past, cannot expect to detect more words correctly at that budget (up to
interactions between neighbouring words). So if the hindsight gate falls short of a
static network, that budget is out of reach of these weights for such a controller.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sanas.kws.data.audio import SAMPLE_RATE, read_wav
from sanas.kws.data.stream_file import read_stream_labels
from sanas.kws.evaluation.metrics import DetectionConfig, evaluate_stream
from sanas.kws.model.kws_model import SANASKWS, KWSModel
from sanas.kws.streaming.engine import StreamRun, engine_for_model
from sanas.kws.training.gates import (
    HindsightCount,
    cost_tiers,
    gated_posteriors,
    hindsight_gate_within,
    overlaps_ms,
    run_tiers,
    speech_steps,
)

_Gate = tuple[str, str, np.ndarray]  # family, expensive tier, steps on it (T,) bool
_Policy = tuple[str, np.ndarray, np.ndarray]  # family, posteriors (T, C), MACs per step (T,)


@dataclass(frozen=True)
class PolicyScore:
    """One policy's streaming scores (percent of ground-truth words), mean MACs per step and
    :func:`confident_word_steps` (a share); ``family``: "tier" (a fixed used set),
    "oracle <tier>/<cheap>" (a gate, whatever its overlap) or "controller" (the model's
    own, at one architecture threshold)."""

    policy: str
    family: str
    matched: float
    correct: float
    wrong: float
    false_alarm: float
    macs_per_step: float
    confident_steps: float


def confident_word_steps(
    times_ms: np.ndarray,
    posteriors: np.ndarray,
    labels: Sequence[str],
    ground_truth: Sequence[tuple[str, float]],
    threshold: float = DetectionConfig().detection_threshold,
    min_overlap_ms: float = 700.0,
) -> float:
    """Share of the steps best aligned with a word (window overlap above
    ``min_overlap_ms``: the three of each word at 700) whose top posterior is that word's
    label and above ``threshold``: the steps a detection is made of (it averages those of
    500 ms, three steps, against the same threshold). Window accuracy misses this: a path
    can be right as often as another on those steps yet confident half as often."""
    steps, targets = _word_steps(times_ms, labels, ground_truth, min_overlap_ms)
    return _confident_share(posteriors, steps, targets, threshold)


def _word_steps(
    times_ms: np.ndarray,
    labels: Sequence[str],
    ground_truth: Sequence[tuple[str, float]],
    min_overlap_ms: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The steps overlapping a word by more than ``min_overlap_ms`` and, for each, the label
    index of the word it overlaps most."""
    overlaps = overlaps_ms(times_ms, [time for _, time in ground_truth])
    steps = np.flatnonzero((overlaps > min_overlap_ms).any(axis=1))
    index = {label: i for i, label in enumerate(labels)}
    words = np.array([index[word] for word, _ in ground_truth], dtype=int)
    if steps.size == 0:  # no word (argmax needs one)
        return steps, steps
    return steps, words[overlaps[steps].argmax(axis=1)]


def _confident_share(
    posteriors: np.ndarray, steps: np.ndarray, targets: np.ndarray, threshold: float
) -> float:
    """Share of ``steps`` whose top posterior is their target label and above ``threshold``
    (NaN without steps)."""
    if steps.size == 0:
        return float("nan")
    chosen = posteriors[steps]
    right = chosen.argmax(axis=1) == targets
    return float((right & (chosen.max(axis=1) > threshold)).mean())


def oracle_gating(
    model: KWSModel,
    labels: Sequence[str],
    wav_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    tiers: Mapping[str, frozenset[str]] | None = None,
    cheap: str = "cheap",
    config: DetectionConfig | None = None,
    min_overlaps_ms: Sequence[float] = (0.0,),
    architecture_thresholds: Sequence[float] = (),
    hindsight_budgets: Sequence[float] = (),
    hindsight_counts: Sequence[HindsightCount] = ("correct",),
    strides: Sequence[int] = (),
    reuse_steps: int = 0,
) -> list[PolicyScore]:
    """Score every fixed tier of ``model`` on a stream, then each other tier gated by the
    ground truth against the ``cheap`` one ("oracle <tier>/<cheap>"), once per minimum
    overlap of a step's window with a word (:func:`speech_steps`; a stricter gate spends
    the expensive tier on fewer, better aligned steps: "oracle <tier>/<cheap> >800ms"),
    then by :func:`hindsight_gate` within each of ``hindsight_budgets`` MACs per step
    ("hindsight <tier>/<cheap> ≤3.36M"), once per way of counting a word in
    ``hindsight_counts`` (", matched" when not "correct"), then on every k-th step for
    each k of ``strides``, blind to the input ("every 5 steps <tier>/<cheap>": frame
    skipping), then a SANAS model's own controller at each of ``architecture_thresholds``
    ("controller τ=0.1"). ``reuse_steps``: in every gate, the cheap steps after an
    expensive one reuse its posteriors (:func:`gated_posteriors`; the controller reuses
    as the model does, ``reuse_steps`` of its run). ``tiers``: by default the model's
    :func:`cost_tiers`."""
    tiers = cost_tiers(model) if tiers is None else tiers
    if cheap not in tiers:
        raise ValueError(f"cheap tier {cheap!r} is not one of {sorted(tiers)}")
    if architecture_thresholds and not isinstance(model, SANASKWS):
        raise ValueError(f"architecture thresholds need a SANAS model, not {type(model).__name__}")
    if any(stride < 1 for stride in strides):
        raise ValueError(f"strides must be at least 1, got {list(strides)}")
    audio = read_wav(wav_path)
    ground_truth = read_stream_labels(labels_path)
    runs = run_tiers(model, audio, tiers)
    base = runs[cheap]
    times = base.times_ms
    expensive = [name for name in runs if name != cheap]
    gates = {
        **_overlap_gates(times, ground_truth, expensive, cheap, min_overlaps_ms),
        **_hindsight_gates(
            runs,
            cheap,
            labels,
            ground_truth,
            config,
            hindsight_budgets,
            hindsight_counts,
            reuse_steps,
        ),
        **_stride_gates(len(times), expensive, cheap, strides),
    }
    policies = {name: ("tier", run.posteriors, run.macs_window) for name, run in runs.items()}
    for policy, (family, name, gate) in gates.items():
        run = runs[name]
        policies[policy] = (
            family,
            gated_posteriors(run.posteriors, base.posteriors, gate, reuse_steps),
            np.where(gate, run.macs_window, base.macs_window),
        )
    if isinstance(model, SANASKWS):
        policies.update(_controller_policies(model, audio, architecture_thresholds))
    duration_ms = 1000.0 * len(audio) / SAMPLE_RATE
    return _scores(policies, times, labels, ground_truth, duration_ms, config)


def _overlap_gates(
    times_ms: np.ndarray,
    ground_truth: Sequence[tuple[str, float]],
    expensive: Sequence[str],
    cheap: str,
    min_overlaps_ms: Sequence[float],
) -> dict[str, _Gate]:
    """The ground-truth gates of each expensive tier, once per minimum overlap
    (:func:`speech_steps`)."""
    gates = {}
    for overlap, name in itertools.product(min_overlaps_ms, expensive):
        speech = speech_steps(times_ms, [time for _, time in ground_truth], overlap)
        suffix = f" >{overlap:g}ms" if overlap else ""
        gates[f"oracle {name}/{cheap}{suffix}"] = (f"oracle {name}/{cheap}", name, speech)
    return gates


def _hindsight_gates(
    runs: Mapping[str, StreamRun],
    cheap: str,
    labels: Sequence[str],
    ground_truth: Sequence[tuple[str, float]],
    config: DetectionConfig | None,
    budgets: Sequence[float],
    counts: Sequence[HindsightCount],
    reuse_steps: int,
) -> dict[str, _Gate]:
    """The :func:`hindsight_gate_within` gates of each expensive tier against the ``cheap``
    one, once per budget and way of counting a word."""
    expensive = [name for name in runs if name != cheap]
    gates = {}
    for budget, name, count in itertools.product(budgets, expensive, counts):
        gate = hindsight_gate_within(
            runs[name], runs[cheap], labels, ground_truth, budget, config, count, reuse_steps
        )
        suffix = "" if count == "correct" else f", {count}"
        family = f"hindsight {name}/{cheap}{suffix}"
        gates[f"hindsight {name}/{cheap} ≤{budget / 1e6:.3g}M{suffix}"] = (family, name, gate)
    return gates


def _stride_gates(
    steps: int, expensive: Sequence[str], cheap: str, strides: Sequence[int]
) -> dict[str, _Gate]:
    """Input-blind gates: each expensive tier on every k-th step (frame skipping)."""
    gates = {}
    for stride, name in itertools.product(strides, expensive):
        every = np.arange(steps) % stride == 0
        gates[f"every {stride} steps {name}/{cheap}"] = (f"stride {name}/{cheap}", name, every)
    return gates


def _controller_policies(
    model: SANASKWS, audio: np.ndarray, thresholds: Sequence[float]
) -> dict[str, _Policy]:
    """The model's own controller at each architecture threshold (the model's own is
    restored after)."""
    policies: dict[str, _Policy] = {}
    own = model.architecture_threshold
    try:
        for threshold in thresholds:
            model.architecture_threshold = threshold
            with torch.inference_mode():
                run = engine_for_model(model).run(audio)
            policies[f"controller τ={threshold:g}"] = (
                "controller",
                run.posteriors,
                run.macs_window,
            )
    finally:
        model.architecture_threshold = own
    return policies


def _scores(
    policies: Mapping[str, _Policy],
    times_ms: np.ndarray,
    labels: Sequence[str],
    ground_truth: Sequence[tuple[str, float]],
    duration_ms: float,
    config: DetectionConfig | None,
) -> list[PolicyScore]:
    """Each policy scored on the stream like the model itself."""
    threshold = (config or DetectionConfig()).detection_threshold
    word_steps, targets = _word_steps(times_ms, labels, ground_truth, min_overlap_ms=700.0)
    scores = []
    for name, (family, posteriors, macs) in policies.items():
        score = evaluate_stream(times_ms, posteriors, labels, ground_truth, duration_ms, config)
        scores.append(
            PolicyScore(
                name,
                family,
                score.matched_pct,
                score.correct_pct,
                score.wrong_pct,
                score.false_alarm_pct,
                float(macs.mean()),
                _confident_share(posteriors, word_steps, targets, threshold),
            )
        )
    return scores
