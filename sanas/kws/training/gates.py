"""Ground-truth gates between two tiers of a super network: where a perfect controller
would spend, knowing the words of a stream (and, for the hindsight gate, both tiers'
posteriors). A controller imitates them (:mod:`sanas.kws.training.imitation`); the lab's
oracle scores them (:mod:`sanas.lab.oracle`). The two tiers of a model are
:func:`gate_tiers`: its full network and its cheapest path."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch

from sanas.kws.evaluation.metrics import DetectionConfig, detect, match_detections
from sanas.kws.model.kws_model import KWSModel
from sanas.kws.model.networks import KWS_TIERS
from sanas.kws.streaming.engine import StreamRun, engine_for_model
from sanas.supernet.policies import FixedPolicy
from sanas.supernet.reuse import reuse_costlier_outputs

WINDOW_MS = 1000.0


CLIP_MS = 1000.0


HindsightCount = Literal["correct", "matched"]


HINDSIGHT_COUNTS: tuple[str, ...] = ("correct", "matched")


def overlaps_ms(times_ms: np.ndarray, word_times_ms: Sequence[float]) -> np.ndarray:
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
    return (overlaps_ms(times_ms, word_times_ms) > min_overlap_ms).any(axis=1)


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
    overlaps = overlaps_ms(times_ms, [word[1]])[:, 0]
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


def cost_tiers(model: KWSModel) -> dict[str, frozenset[str]]:
    """The used sets of a model's fixed cost tiers, cheapest to full: cnn-trad-fpool3 +
    shortcuts' three (:data:`~sanas.kws.model.networks.KWS_TIERS`), any other network's
    cheapest architecture (e.g. a backbone's input exit) and full network (every node, or
    a frozen backbone alone)."""
    net = model.net
    if frozenset(net.order) == KWS_TIERS["full"]:
        return dict(KWS_TIERS)
    cheap, full = (
        net.used_names(net.used(architecture.cpu(), 1)[0])
        for architecture in (model.cheapest_architecture, model.full_tier)
    )
    return {"cheap": cheap, "full": full}


def gate_tiers(model: KWSModel) -> dict[str, frozenset[str]]:
    """The used sets of the two tiers a gate chooses between, ``"full"`` and ``"cheap"``
    (of :func:`cost_tiers`)."""
    tiers = cost_tiers(model)
    return {name: tiers[name] for name in ("full", "cheap")}


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
