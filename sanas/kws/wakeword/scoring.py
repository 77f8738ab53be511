"""Scoring a wake-word detector on a test stream: the DET curve and the miss rate at a
false-alarm rate per hour, with the same matching for every system.

A system's detections at each threshold of its sweep are matched against the phrase's
onsets by :func:`~sanas.kws.evaluation.metrics.match_detections`: a detection within
``time_tolerance_ms`` of an onset not yet taken finds it, one with no onset in range is a
false alarm. The miss rate at ``r`` false alarms per hour is the lowest miss rate among
the thresholds whose false alarms per hour are at most ``r`` (1 when none is).

For a sanas run the phrase's posterior is smoothed as the streaming detector does
(:func:`~sanas.kws.evaluation.metrics.smooth_posteriors`) and fires when it exceeds the
threshold, at most once per ``suppression_ms``, whatever the other labels do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sanas.kws.data.audio import SAMPLE_RATE
from sanas.kws.evaluation.evaluate import run_model_on_audio
from sanas.kws.evaluation.metrics import (
    CurvePoint,
    Detection,
    DetectionConfig,
    match_detections,
    smooth_posteriors,
)
from sanas.kws.model.kws_model import KWSModel
from sanas.supernet.costs import MacsCost

# The phrase's onset is found from the energy of its recording: a looser tolerance than
# Speech Commands' clip starts (750 ms); no background word is this close to one.
WAKE_DETECTION = DetectionConfig(time_tolerance_ms=1500.0)
FALSE_ALARM_RATES: tuple[float, ...] = (0.1, 0.5, 1.0)
SANAS_THRESHOLDS: tuple[float, ...] = (
    *(round(float(t), 2) for t in np.linspace(0.01, 0.99, 99)),
    0.995, 0.998, 0.999, 0.9995, 0.9998, 0.9999,
)  # fmt: skip
WINDOW_MS = 1000.0  # a step's window (101 frames): a step is non-speech when it holds none


@dataclass
class SystemScore:
    """One system's DET curve on a stream, its cost, and its detections at its default
    threshold (``default_threshold``)."""

    name: str
    curve: list[CurvePoint]
    cpu_seconds: float
    audio_seconds: float
    default_threshold: float
    false_activations_ms: list[float]
    extra: dict[str, Any] = field(default_factory=dict)

    def miss_rates(self) -> dict[str, float]:
        """Miss rate keyed by false alarms per hour (``"0.1"``, ``"0.5"``, ``"1"``)."""
        return {f"{rate:g}": miss_rate_at(self.curve, rate) for rate in FALSE_ALARM_RATES}

    def to_dict(self) -> dict[str, Any]:
        """The system's entry of ``report.json``."""
        return {
            "miss_rate": self.miss_rates(),
            "cpu_ms_per_audio_s": 1000.0 * self.cpu_seconds / self.audio_seconds,
            **self.extra,
            "default_threshold": self.default_threshold,
            "false_activations_at_default_threshold": len(self.false_activations_ms),
            "det": [
                {
                    "threshold": p.threshold,
                    "false_alarms_per_hour": p.false_alarms_per_hour,
                    "miss_rate": p.false_reject_rate,
                }
                for p in self.curve
            ],
        }


def miss_rate_at(points: Sequence[CurvePoint], false_alarms_per_hour: float) -> float:
    """The lowest miss rate among ``points`` with at most ``false_alarms_per_hour``
    (1.0 when none has so few: a threshold above every score misses everything)."""
    rates = [
        p.false_reject_rate for p in points if p.false_alarms_per_hour <= false_alarms_per_hour
    ]
    return min(rates, default=1.0)


def det_curve(
    detections: Mapping[float, Sequence[Detection]],
    ground_truth: Sequence[tuple[str, float]],
    duration_ms: float,
    config: DetectionConfig = WAKE_DETECTION,
) -> list[CurvePoint]:
    """Miss rate and false alarms per hour of each threshold's detections, by threshold."""
    points = []
    for threshold in sorted(detections):
        score = match_detections(
            detections[threshold], ground_truth, config, duration_ms=duration_ms
        )
        missed = 1.0 - score.correct / score.ground_truth if score.ground_truth else math.nan
        points.append(CurvePoint(threshold, score.fa_per_hour, missed))
    return points


def false_alarm_times(
    detections: Sequence[Detection],
    ground_truth: Sequence[tuple[str, float]],
    config: DetectionConfig = WAKE_DETECTION,
) -> list[float]:
    """Times of the detections with no phrase within the tolerance: the false alarms."""
    onsets = np.array([t for _, t in ground_truth], dtype=np.float64)
    tolerance = config.time_tolerance_ms
    return [d.time_ms for d in detections if not np.any(np.abs(onsets - d.time_ms) <= tolerance)]


def fire_phrase(
    times_ms: np.ndarray,
    score: np.ndarray,
    reliable: np.ndarray,
    label: str,
    threshold: float,
    suppression_ms: float,
) -> list[Detection]:
    """Detections of ``label``: steps whose smoothed ``score`` exceeds ``threshold``, at
    most one per ``suppression_ms`` (the steps not ``reliable`` never fire)."""
    detections: list[Detection] = []
    last = -math.inf
    for step in np.flatnonzero(reliable & (score > threshold)):
        if times_ms[step] - last > suppression_ms:
            last = float(times_ms[step])
            detections.append(Detection(label, last, float(score[step])))
    return detections


def score_sanas(
    model: KWSModel,
    labels: Sequence[str],
    phrase: str,
    audio: np.ndarray,
    ground_truth: Sequence[tuple[str, float]],
    speech: Callable[[np.ndarray], np.ndarray] | None = None,
    budget: float | None = None,
    default_threshold: float = WAKE_DETECTION.detection_threshold,
    thresholds: Sequence[float] = SANAS_THRESHOLDS,
) -> SystemScore:
    """Run ``model`` once over ``audio`` (one thread, the streaming engine) and sweep the
    threshold on ``phrase``'s smoothed posterior; ``speech``: a function of step times to
    booleans (the step's window holds speech), for the MACs on speech and non-speech."""
    if phrase not in labels:
        raise ValueError(f"phrase {phrase!r} is not a label of the run ({', '.join(labels)})")
    duration_ms = 1000.0 * len(audio) / SAMPLE_RATE
    start = time.process_time()
    run = run_model_on_audio(model, audio, threads=1, budget=budget)
    cpu = time.process_time() - start
    averaged, reliable = smooth_posteriors(run.times_ms, run.posteriors, labels, WAKE_DETECTION)
    score = averaged[:, list(labels).index(phrase)]

    def fired(threshold: float) -> list[Detection]:
        return fire_phrase(
            run.times_ms, score, reliable, phrase, threshold, WAKE_DETECTION.suppression_ms
        )

    curve = det_curve({t: fired(t) for t in thresholds}, ground_truth, duration_ms)
    net = model.net
    full = float(MacsCost(net)(net.used(None, 1))[0])
    extra: dict[str, Any] = {
        "full_network_macs_per_step": full,
        "macs_per_step": float(run.macs_window.mean()),
        "executed_macs_per_step": float(run.macs_executed.mean()),
        "steps": len(run.times_ms),
    }
    if speech is not None:
        extra.update(_macs_by_speech(run.macs_window, speech(run.times_ms), full))
    return SystemScore(
        name="sanas",
        curve=curve,
        cpu_seconds=cpu,
        audio_seconds=duration_ms / 1000.0,
        default_threshold=default_threshold,
        false_activations_ms=false_alarm_times(fired(default_threshold), ground_truth),
        extra=extra,
    )


def _macs_by_speech(macs: np.ndarray, speech: np.ndarray, full: float) -> dict[str, Any]:
    """Mean MACs per step on speech and on non-speech steps, and the non-speech mean as a
    fraction of the full network's."""
    on_speech = macs[speech]
    off_speech = macs[~speech]
    quiet = float(off_speech.mean()) if len(off_speech) else math.nan
    return {
        "speech_steps": int(speech.sum()),
        "non_speech_steps": int((~speech).sum()),
        "speech_macs_per_step": float(on_speech.mean()) if len(on_speech) else math.nan,
        "non_speech_macs_per_step": quiet,
        "non_speech_macs_fraction": quiet / full,
    }
