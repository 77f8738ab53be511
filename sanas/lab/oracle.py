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
from typing import Literal

import numpy as np
import torch

from sanas.kws.data.audio import SAMPLE_RATE, read_wav
from sanas.kws.data.stream_file import read_stream_labels
from sanas.kws.evaluation.metrics import DetectionConfig, detect, evaluate_stream, match_detections
from sanas.kws.model.kws_model import SANASKWS, KWSModel
from sanas.kws.model.networks import KWS_TIERS
from sanas.kws.streaming.engine import StreamRun, engine_for_model
from sanas.supernet.policies import FixedPolicy
from sanas.supernet.reuse import reuse_costlier_outputs

WINDOW_MS = 1000.0
CLIP_MS = 1000.0
HindsightCount = Literal["correct", "matched"]
HINDSIGHT_COUNTS: tuple[str, ...] = ("correct", "matched")


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


def _overlaps_ms(times_ms: np.ndarray, word_times_ms: Sequence[float]) -> np.ndarray:
    """(steps, words): how long each step's 1 s window [t, t + 1000) overlaps each word's
    clip [w, w + 1000), in ms (negative: apart)."""
    words = np.asarray(word_times_ms, dtype=float).reshape(1, -1)
    starts = np.asarray(times_ms, dtype=float)[:, None]
    return np.minimum(starts + WINDOW_MS, words + CLIP_MS) - np.maximum(starts, words)


def speech_steps(
    times_ms: np.ndarray, word_times_ms: Sequence[float], min_overlap_ms: float = 0.0
) -> np.ndarray:
    """Steps whose 1 s window [t, t + 1000) overlaps a word's clip [w, w + 1000) by more
    than ``min_overlap_ms`` (0: at all; 700: the three steps best aligned with the word;
    800: two)."""
    return (_overlaps_ms(times_ms, word_times_ms) > min_overlap_ms).any(axis=1)


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
    overlaps = _overlaps_ms(times_ms, [time for _, time in ground_truth])
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


def gated_posteriors(
    expensive: np.ndarray, cheap: np.ndarray, gate: np.ndarray, reuse_steps: int = 0
) -> np.ndarray:
    """The ``expensive`` posteriors (T, C) on the steps of ``gate``, the ``cheap`` ones
    elsewhere; with ``reuse_steps``, a cheap step within that many steps after an expensive
    one repeats the latter's posteriors (:func:`~sanas.supernet.reuse.reuse_costlier_outputs`)."""
    mixed = np.where(gate[:, None], expensive, cheap)
    if not reuse_steps:
        return mixed
    reused = reuse_costlier_outputs(
        torch.from_numpy(mixed), torch.from_numpy(gate.astype(np.int8)), reuse_steps
    )
    return reused.numpy()


def _steps_to_detect(
    times_ms: np.ndarray,
    expensive: np.ndarray,
    cheap: np.ndarray,
    labels: Sequence[str],
    word: tuple[str, float],
    config: DetectionConfig,
    candidates: int,
    count: HindsightCount,
    reuse_steps: int,
) -> tuple[int, ...] | None:
    """The fewest steps among the ``candidates`` best aligned with ``word`` on which the
    expensive tier must run (the cheap one elsewhere) for a fresh detector to fire on it
    (correctly, or with any label: ``count``); ``None`` when no set of up to three does
    (a detection averages three)."""
    overlaps = _overlaps_ms(times_ms, [word[1]])[:, 0]
    near = [int(s) for s in np.argsort(-overlaps, kind="stable")[:candidates] if overlaps[s] > 0]
    if not near:
        return None
    # the detector's whole view of this word: the averaging window before the first step
    # it could fire on, up to the tolerance after the word
    lo = int(
        np.searchsorted(times_ms, word[1] - config.time_tolerance_ms - config.averaging_window_ms)
    )
    hi = int(np.searchsorted(times_ms, word[1] + config.time_tolerance_ms, side="right"))
    lo, hi = min(lo, *near), max(hi, max(near) + 1)
    times, duration = times_ms[lo:hi], float(times_ms[hi - 1] - times_ms[lo]) + 1.0
    for size in range(4):
        for chosen in itertools.combinations(near, size):
            gate = np.zeros(hi - lo, dtype=bool)
            gate[[s - lo for s in chosen]] = True
            mixed = gated_posteriors(expensive[lo:hi], cheap[lo:hi], gate, reuse_steps)
            found = detect(times, mixed, labels, config)
            if getattr(match_detections(found, [word], config, duration_ms=duration), count):
                return chosen
    return None


def hindsight_gate(
    times_ms: np.ndarray,
    expensive: np.ndarray,
    cheap: np.ndarray,
    labels: Sequence[str],
    ground_truth: Sequence[tuple[str, float]],
    max_expensive_steps: int,
    config: DetectionConfig | None = None,
    candidates: int = 5,
    count: HindsightCount = "correct",
    reuse_steps: int = 0,
) -> np.ndarray:
    """Steps (a boolean mask) on which to run the ``expensive`` tier, the ``cheap`` one
    elsewhere, so that the most words are detected correctly (``count="correct"``; or at
    all, whatever the label: ``"matched"``) with at most ``max_expensive_steps`` expensive
    steps, knowing the ground truth and both tiers' posteriors (T, C).

    Each word gets the fewest of its ``candidates`` best aligned steps that make a fresh
    detector fire on it as counted (none if the cheap tier alone does); words are then
    served cheapest first, which detects the most words when each word's cost is its
    own. Neighbouring words interact through the detector's state, so score the mask on
    the whole stream; it is a budgeted reference for gates, not a proof of optimality.
    ``reuse_steps``: the cheap steps after an expensive one repeat its posteriors
    (:func:`gated_posteriors`), so one expensive step can fill a detector's window."""
    config = DetectionConfig() if config is None else config
    if max_expensive_steps < 0:
        raise ValueError(f"max_expensive_steps must be >= 0, got {max_expensive_steps}")
    if count not in HINDSIGHT_COUNTS:
        raise ValueError(f"count must be one of {HINDSIGHT_COUNTS}, got {count!r}")
    times = np.asarray(times_ms, dtype=float)
    needs = [
        _steps_to_detect(
            times, expensive, cheap, labels, word, config, candidates, count, reuse_steps
        )
        for word in ground_truth
    ]
    mask = np.zeros(times.shape[0], dtype=bool)
    for steps in sorted((n for n in needs if n is not None), key=len):
        added = [s for s in steps if not mask[s]]
        if int(mask.sum()) + len(added) <= max_expensive_steps:
            mask[added] = True
    return mask


def expensive_steps_for(
    budget_per_step: float, steps: int, expensive_macs: float, cheap_macs: float
) -> int:
    """How many of ``steps`` can run the expensive tier, the cheap one on the rest, within
    ``budget_per_step`` MACs per step on average."""
    if expensive_macs <= cheap_macs:
        raise ValueError(
            f"the expensive tier ({expensive_macs:g} MACs) must cost more than the cheap one "
            f"({cheap_macs:g})"
        )
    spare = (budget_per_step - cheap_macs) * steps / (expensive_macs - cheap_macs)
    return max(0, min(steps, int(np.floor(spare + 1e-9))))


def hindsight_gate_within(
    expensive: StreamRun,
    cheap: StreamRun,
    labels: Sequence[str],
    ground_truth: Sequence[tuple[str, float]],
    budget_per_step: float | None = None,
    config: DetectionConfig | None = None,
    count: HindsightCount = "correct",
    reuse_steps: int = 0,
) -> np.ndarray:
    """:func:`hindsight_gate` between two tier runs of a stream, spending at most
    ``budget_per_step`` MACs per step on average (``None``: as much as the words need)."""
    steps = len(expensive.times_ms)
    most = steps
    if budget_per_step is not None:
        most = expensive_steps_for(
            budget_per_step,
            steps,
            float(expensive.macs_window.mean()),
            float(cheap.macs_window.mean()),
        )
    return hindsight_gate(
        expensive.times_ms,
        expensive.posteriors,
        cheap.posteriors,
        labels,
        ground_truth,
        most,
        config,
        count=count,
        reuse_steps=reuse_steps,
    )


def run_tiers(
    model: KWSModel, audio: np.ndarray, tiers: Mapping[str, frozenset[str]] = KWS_TIERS
) -> dict[str, StreamRun]:
    """``model``'s super network run over ``audio`` once per tier (a used set, every step
    on it; default: :data:`~sanas.kws.model.networks.KWS_TIERS`), in eval mode."""
    model.eval()
    runs = {}
    for name, used in tiers.items():
        engine = engine_for_model(model, policy=FixedPolicy(model.net.architecture_of(used)))
        with torch.inference_mode():
            runs[name] = engine.run(audio)
    return runs


def oracle_gating(
    model: KWSModel,
    labels: Sequence[str],
    wav_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    tiers: Mapping[str, frozenset[str]] = KWS_TIERS,
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
    as the model does, ``reuse_steps`` of its run)."""
    if cheap not in tiers:
        raise ValueError(f"cheap tier {cheap!r} is not one of {sorted(tiers)}")
    if architecture_thresholds and not isinstance(model, SANASKWS):
        raise ValueError(f"architecture thresholds need a SANAS model, not {type(model).__name__}")
    if any(stride < 1 for stride in strides):
        raise ValueError(f"strides must be at least 1, got {list(strides)}")
    audio = read_wav(wav_path)
    ground_truth = read_stream_labels(labels_path)
    duration_ms = 1000.0 * len(audio) / SAMPLE_RATE
    runs = run_tiers(model, audio, tiers)
    base = runs[cheap]
    times = base.times_ms
    policies = {name: ("tier", run.posteriors, run.macs_window) for name, run in runs.items()}
    gates: dict[str, tuple[str, str, np.ndarray]] = {}  # policy → family, tier, gate
    expensive_tiers = [name for name in runs if name != cheap]
    for overlap, name in itertools.product(min_overlaps_ms, expensive_tiers):
        speech = speech_steps(times, [time for _, time in ground_truth], overlap)
        suffix = f" >{overlap:g}ms" if overlap else ""
        gates[f"oracle {name}/{cheap}{suffix}"] = (f"oracle {name}/{cheap}", name, speech)
    for budget, name, count in itertools.product(
        hindsight_budgets, expensive_tiers, hindsight_counts
    ):
        gate = hindsight_gate_within(
            runs[name], base, labels, ground_truth, budget, config, count, reuse_steps
        )
        suffix = "" if count == "correct" else f", {count}"
        gates[f"hindsight {name}/{cheap} ≤{budget / 1e6:.3g}M{suffix}"] = (
            f"hindsight {name}/{cheap}{suffix}",
            name,
            gate,
        )
    for stride, name in itertools.product(strides, expensive_tiers):
        every = np.arange(len(times)) % stride == 0
        gates[f"every {stride} steps {name}/{cheap}"] = (f"stride {name}/{cheap}", name, every)
    for policy, (family, name, gate) in gates.items():
        run = runs[name]
        policies[policy] = (
            family,
            gated_posteriors(run.posteriors, base.posteriors, gate, reuse_steps),
            np.where(gate, run.macs_window, base.macs_window),
        )
    if isinstance(model, SANASKWS):
        own = model.architecture_threshold
        try:
            for threshold in architecture_thresholds:
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
    threshold = (config or DetectionConfig()).detection_threshold
    word_steps, targets = _word_steps(times, labels, ground_truth, min_overlap_ms=700.0)
    scores = []
    for name, (family, posteriors, macs) in policies.items():
        score = evaluate_stream(times, posteriors, labels, ground_truth, duration_ms, config)
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
