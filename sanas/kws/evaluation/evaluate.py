"""Evaluate a trained keyword-spotting model on a streaming test file (method.md §6).

The model runs through the streaming engine (skipping, row caches) at batch size 1 over
the whole wav; its per-step posteriors go through TensorFlow's smoothing and matching
(:mod:`sanas.kws.evaluation.metrics`). Both MAC counts are reported: the paper's
per-window accounting and what the cached engine actually executed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sanas.kws.data.audio import SAMPLE_RATE, read_wav
from sanas.kws.data.speech_commands import kws_task
from sanas.kws.data.stream_file import read_stream_labels
from sanas.kws.evaluation.metrics import (
    CurvePoint,
    Detection,
    DetectionConfig,
    StreamingScore,
    detect,
    false_alarm_false_reject_curve,
    match_detections,
    number_or_none,
)
from sanas.kws.model.kws_model import KWSModel
from sanas.kws.model.operating_point import OperatingPoint
from sanas.kws.runs import load_run, read_operating_point
from sanas.kws.streaming.engine import StreamRun, engine_for_model


@dataclass
class StreamEvaluation:
    """Scores (both Matched conventions), costs and the raw per-step run of one stream."""

    score: StreamingScore
    reference_score: StreamingScore
    labels: tuple[str, ...]
    run: StreamRun
    detections: list[Detection]
    curve: list[CurvePoint]
    seconds: float
    duration_s: float
    node_names: tuple[str, ...]
    computed: np.ndarray  # (steps, node_names) booleans: the node was on a live path

    @property
    def macs_per_step(self) -> float:
        """Mean per-window MACs of the architectures used (the paper's "FLOPs per frame")."""
        return float(self.run.macs_window.mean())

    @property
    def executed_macs_per_step(self) -> float:
        """Mean MACs the cached engine really executed per step."""
        return float(self.run.macs_executed.mean())

    def to_dict(self) -> dict[str, Any]:
        """The JSON written by ``sanas evaluate``: percentages of ground-truth words (None on
        a stream without words, and a false-reject rate None without keywords)."""
        score = self.score
        return {
            "matched": number_or_none(score.matched_pct),
            "correct": number_or_none(score.correct_pct),
            "wrong": number_or_none(score.wrong_pct),
            "false_alarm": number_or_none(score.false_alarm_pct),
            "fa_per_hour": score.fa_per_hour,
            "matched_reference_convention": number_or_none(self.reference_score.matched_pct),
            "macs_per_step": self.macs_per_step,
            "executed_macs_per_step": self.executed_macs_per_step,
            "steps": len(self.run.times_ms),
            "ground_truth_words": score.ground_truth,
            "counts": score.to_dict(),
            "stream_seconds": self.duration_s,
            "real_time_factor": self.seconds / self.duration_s,
            "fa_fr_curve": [
                {
                    "threshold": p.threshold,
                    "false_alarms_per_hour": p.false_alarms_per_hour,
                    "false_reject_rate": number_or_none(p.false_reject_rate),
                }
                for p in self.curve
            ],
        }


def run_model_on_audio(
    model: KWSModel,
    audio: np.ndarray,
    cache: bool = True,
    threads: int = 1,
    budget: float | None = None,
) -> StreamRun:
    """Per-step posteriors, architectures and MACs of ``model`` over a recording;
    ``budget``: a SANAS model's mean MACs per step, held whatever the audio
    (:meth:`~sanas.kws.model.kws_model.KWSModel.streaming_policy`).

    Batch-1 steps are small: one thread avoids waiting on a busy second core.
    """
    engine = engine_for_model(model, cache=cache, budget=budget)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return engine.run(audio)
    finally:
        torch.set_num_threads(previous)


def evaluate_model_on_stream(
    model: KWSModel,
    labels: tuple[str, ...],
    wav_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    config: DetectionConfig | None = None,
    budget: float | None = None,
    threads: int = 1,
) -> StreamEvaluation:
    """Run ``model`` over a streaming wav and score it against its ``word,time_ms`` labels
    (``budget``, ``threads``: as :func:`run_model_on_audio`). Labels with a word
    outside ``labels`` or past the end of the audio are a
    :class:`~sanas.kws.data.stream_file.StreamFileError` naming the line; a file without
    a word is a stream of background noise alone, scored by its false alarms."""
    net = model.net
    return score_stream(
        lambda audio: run_model_on_audio(model, audio, threads=threads, budget=budget),
        labels,
        wav_path,
        labels_path,
        config,
        net.stochastic_names,
        lambda run: _computed_nodes(model, run.architectures),
    )


def score_stream(
    run_audio: Callable[[np.ndarray], StreamRun],
    labels: tuple[str, ...],
    wav_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    config: DetectionConfig | None,
    node_names: tuple[str, ...],
    computed: Callable[[StreamRun], np.ndarray],
) -> StreamEvaluation:
    """Score a backend (``run_audio``: audio to a :class:`StreamRun`, e.g. the torch
    engine or ONNX Runtime) on a streaming wav, as :func:`evaluate_model_on_stream`;
    ``computed``: a run's (steps, node_names) booleans of the nodes it computed."""
    config = config or DetectionConfig()
    audio = read_wav(wav_path)
    duration_ms = 1000.0 * len(audio) / SAMPLE_RATE
    # labels that do not fit the model or the audio would be scored as misses: refused;
    # none at all is a noise-only stream (`sanas data stream --noise-only`)
    ground_truth = read_stream_labels(
        labels_path, words=labels, duration_ms=duration_ms, allow_empty=True
    )
    start = time.perf_counter()
    try:
        run = run_audio(audio)
    except ValueError as error:  # e.g. shorter than one window
        raise ValueError(f"{wav_path}: {error}") from None
    seconds = time.perf_counter() - start
    detections = detect(run.times_ms, run.posteriors, labels, config)
    score, reference = (
        match_detections(
            detections, ground_truth, config, duration_ms=duration_ms, convention=convention
        )
        for convention in ("tensorflow", "reference")
    )
    return StreamEvaluation(
        score=score,
        reference_score=reference,
        labels=labels,
        run=run,
        detections=detections,
        curve=false_alarm_false_reject_curve(
            run.times_ms, run.posteriors, labels, ground_truth, duration_ms, config=config
        ),
        seconds=seconds,
        duration_s=duration_ms / 1000.0,
        node_names=node_names,
        computed=computed(run),
    )


def _computed_nodes(model: KWSModel, architectures: np.ndarray) -> np.ndarray:
    """(steps, stochastic nodes) booleans: the chosen nodes that lie on a live path (a
    node switched on without one costs nothing and is not computed)."""
    net = model.net
    used = net.used(torch.as_tensor(architectures), len(architectures))
    return used[:, [net.index[name] for name in net.stochastic_names]].numpy()


def evaluate_run(
    run_dir: str | os.PathLike[str],
    wav_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    json_path: str | os.PathLike[str] | None = None,
    point: OperatingPoint | None = None,
    threads: int = 1,
) -> StreamEvaluation:
    """Evaluate a training run's best model on a stream at ``point`` (None: the run's own
    operating point) with ``threads`` torch threads; optionally write the scores, and the
    point, as JSON."""
    point = point or read_operating_point(run_dir)
    model, config = load_run(run_dir, point=point)
    labels = tuple(kws_task(config.task).labels)
    evaluation = evaluate_model_on_stream(
        model, labels, wav_path, labels_path, budget=point.hold_budget, threads=threads
    )
    if json_path is not None:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"run": str(run_dir), "operating_point": point.to_dict()}
        path.write_text(json.dumps({**header, **evaluation.to_dict()}, indent=2))
    return evaluation
