"""Pictures of the keyword-spotting experiments (matplotlib, no display needed).

- :func:`plot_cost_accuracy`: accuracy against MACs per step for every model (the
  paper's Figure 5).
- :func:`plot_cost_per_class`: mean MACs per step of each class along training (Figure 6:
  silence should become cheap and keywords expensive).
- :func:`plot_stream_timeline`: a stream's spectrogram, per-step MACs and computed nodes,
  detections and ground truth.
- :func:`plot_stream_comparison`: one stream's spectrogram and words over the per-step MACs
  and detections of several models, one panel each (static against SANAS at a glance).
- :func:`plot_macs_per_class`: mean MACs per step on silence, keywords and other words,
  one bar per model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


@dataclass(frozen=True)
class ModelPoint:
    """One evaluated model: its name, family and where it lands.

    ``series``: points of one curve, e.g. one trained run at several operating points
    (default: the whole family is one curve, as a sweep over λ); ``label``: what the
    point is annotated with when it belongs to a named series (e.g. "τ=0.1"; the series
    name is written once, by its costliest point).
    """

    name: str
    family: str  # e.g. "static", "bsn", "sanas"
    macs_per_step: float
    matched: float
    correct: float
    series: str = ""
    label: str = ""


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_cost_accuracy(points: Sequence[ModelPoint], path: str | Path) -> Path:
    """Correct (solid) and Matched (dotted), % of words, against MACs per step, log-x: one
    marker per family, one colour and legend entry per curve (a family's points, or each
    series of operating points of one run), its points labelled."""
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    markers = {"static": "s", "bsn": "^", "sanas": "o"}
    curves = dict.fromkeys((p.family, p.series) for p in points)
    for index, (family, series) in enumerate(curves):
        color, marker = f"C{index}", markers.get(family, "D")
        chosen = sorted((p for p in points if (p.family, p.series) == (family, series)), key=_cost)
        macs = [p.macs_per_step for p in chosen]
        axes.plot(
            macs, [p.correct for p in chosen], marker=marker, color=color, label=series or family
        )
        axes.plot(
            macs, [p.matched for p in chosen], marker=marker, color=color, linestyle=":", alpha=0.5
        )
        for p in chosen:
            axes.annotate(
                p.label if series else p.name,
                (p.macs_per_step, p.correct),
                fontsize=7,
                textcoords="offset points",
                xytext=(3, 3),
            )
    axes.set_xscale("log")
    axes.set_xlabel("MACs per step (200 ms)")
    axes.set_ylabel("% of ground-truth words")
    axes.set_title("Streaming accuracy against cost (solid: Correct, dotted: Matched)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)
    return _save(figure, path)


def _cost(point: ModelPoint) -> float:
    return point.macs_per_step


def plot_cost_per_class(
    epochs: Sequence[int], cost_per_class: Mapping[str, Sequence[float]], path: str | Path
) -> Path:
    """Mean MACs per step of each class (label of the step) along training epochs."""
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    for label, values in cost_per_class.items():
        style = "--" if label.startswith("_") else "-"  # silence and unknown dashed
        # matplotlib hides legend labels that start with "_": show "silence", "unknown".
        axes.plot(epochs, values, style, marker=".", label=label.strip("_"))
    axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("mean MACs per step")
    axes.set_title("Cost per class during training")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    return _save(figure, path)


def plot_stream_timeline(
    log_mel: np.ndarray,
    step_times_ms: np.ndarray,
    step_macs: np.ndarray,
    used: np.ndarray,
    node_names: Sequence[str],
    detections: Sequence[tuple[str, float]],
    ground_truth: Sequence[tuple[str, float]],
    path: str | Path,
) -> Path:
    """Spectrogram (frames × bins at 10 ms), per-step MACs, the nodes computed at each step
    (``used``, steps × ``node_names``), words and detections.

    Step times are window *starts* (TensorFlow's convention); each step covers 1 s.
    """
    figure = Figure(figsize=(12, 7))
    spec_ax, macs_ax, nodes_ax = figure.subplots(3, 1, sharex=True, height_ratios=[2, 1, 1.4])
    seconds = log_mel.shape[0] / 100.0
    spec_ax.imshow(
        log_mel.T,
        origin="lower",
        aspect="auto",
        extent=(0, seconds, 0, log_mel.shape[1]),
        cmap="magma",
    )
    for word, time_ms in ground_truth:
        spec_ax.axvline(time_ms / 1000, color="cyan", linewidth=0.8)
        spec_ax.text(time_ms / 1000, log_mel.shape[1] * 0.9, word, color="cyan", fontsize=7)
    for word, time_ms in detections:
        spec_ax.axvline(time_ms / 1000, color="lime", linestyle="--", linewidth=0.8)
        spec_ax.text(time_ms / 1000, log_mel.shape[1] * 0.05, word, color="lime", fontsize=7)
    spec_ax.set_ylabel("mel bin")
    spec_ax.set_title("ground truth (cyan), detections (green)")
    step_end = (step_times_ms + 1000.0) / 1000.0  # a step is decided once its window is heard
    macs_ax.step(step_end, step_macs, where="post")
    macs_ax.set_yscale("symlog", linthresh=1e5)
    macs_ax.set_ylabel("MACs / step")
    nodes_ax.imshow(
        used.T.astype(float),
        aspect="auto",
        interpolation="nearest",
        cmap="Greys",
        extent=(step_end[0] - 0.2, step_end[-1], -0.5, len(node_names) - 0.5),
        origin="lower",
    )
    nodes_ax.set_yticks(range(len(node_names)), node_names, fontsize=7)
    nodes_ax.set_xlabel("time (s)")
    nodes_ax.set_ylabel("computed nodes")
    return _save(figure, path)


@dataclass(frozen=True)
class StreamTrace:
    """One model on a stream: its name (the panel's title), step times (window starts,
    ms), MACs of each step and detections as (label, step time in ms)."""

    name: str
    times_ms: np.ndarray
    macs: np.ndarray
    detections: Sequence[tuple[str, float]]


def plot_stream_comparison(
    log_mel: np.ndarray,
    ground_truth: Sequence[tuple[str, float]],
    traces: Sequence[StreamTrace],
    path: str | Path,
    seconds: float,
) -> Path:
    """The first ``seconds`` of a stream: its spectrogram (frames × bins at 10 ms) with the
    spoken words, then one panel per model with its MACs per step (in millions, a shared
    linear scale, each step drawn at the centre of its 1 s window, where the word it hears
    is) and its detections written above them. Words of no interest are "(other)"."""
    figure = Figure(figsize=(13, 2.4 + 1.7 * len(traces)), layout="constrained")
    axes = figure.subplots(
        1 + len(traces), 1, sharex=True, height_ratios=[1.6] + [1.0] * len(traces)
    )
    spec_ax, model_axes = axes[0], axes[1:]
    frames = min(log_mel.shape[0], round(100 * seconds))
    spec_ax.imshow(
        log_mel[:frames].T,
        origin="lower",
        aspect="auto",
        extent=(0, frames / 100.0, 0, log_mel.shape[1]),
        cmap="magma",
    )
    shown = [(w, t / 1000.0) for w, t in ground_truth if t / 1000.0 < seconds]
    raised, previous = False, -math.inf
    for word, start in shown:
        other = word.startswith("_")
        raised = start - previous < 2.2 and not raised  # close words on two rows
        previous = start
        spec_ax.text(
            start + 0.5,
            log_mel.shape[1] * (1.12 if raised else 1.03),
            "(other)" if other else word,
            ha="center",
            fontsize=8,
            color="0.45" if other else "black",
        )
    spec_ax.set_yticks([])
    spec_ax.set_ylabel("audio")
    spec_ax.set_title(
        "words spoken (above the spectrogram), then each model's cost and detections",
        loc="left",
        fontsize=9,
        pad=24,
    )
    top = 1.25 * max(float(trace.macs.max()) for trace in traces) / 1e6
    for index, (ax, trace) in enumerate(zip(model_axes, traces, strict=True)):
        centre = (np.asarray(trace.times_ms) + 500.0) / 1000.0
        inside = centre <= seconds
        ax.fill_between(
            centre[inside],
            trace.macs[inside] / 1e6,
            step="mid",
            color=f"C{index}",
            alpha=0.6,
            linewidth=0,
        )
        for _, start in shown:  # where the words are, faintly, to read the cost against
            ax.axvspan(start, start + 1.0, color="0.85", zorder=0, linewidth=0)
        for label, time_ms in trace.detections:
            if (time_ms + 500.0) / 1000.0 <= seconds:
                ax.text(
                    (time_ms + 500.0) / 1000.0,
                    top * 0.86,
                    "(other)" if label.startswith("_") else label,
                    ha="center",
                    fontsize=8,
                    color="darkgreen",
                )
        mean = float(trace.macs.mean()) / 1e6
        ax.set_title(
            f"{trace.name}: {mean:.2f}M MACs per step on the whole stream; "
            "detections in green, word positions shaded",
            loc="left",
            fontsize=9,
        )
        ax.set_ylim(0, top)
        ax.set_ylabel("M MACs / step")
        ax.grid(True, axis="y", alpha=0.3)
    model_axes[-1].set_xlim(0, seconds)
    model_axes[-1].set_xlabel("time (s); each step drawn at the centre of its 1 s window")
    return _save(figure, path)


def plot_macs_per_class(
    macs_by_model: Mapping[str, Mapping[str, float]],
    steps: Mapping[str, int],
    path: str | Path,
    title: str,
) -> Path:
    """Mean MACs per step on silence, on keywords and on other ("unknown") words, one bar
    per model in each group, each bar labelled with its value in millions; ``steps``: how
    many steps of the stream each class has (written under its name)."""
    groups = [
        g
        for g in ("silence", "keywords", "unknown")
        if all(g in by_class for by_class in macs_by_model.values())
    ]
    names = {"silence": "silence", "keywords": "keywords", "unknown": "other words"}
    total = sum(steps[g] for g in groups)
    figure = Figure(figsize=(7, 4.4), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / max(len(macs_by_model), 1)
    for index, (model, by_class) in enumerate(macs_by_model.items()):
        x = np.arange(len(groups)) + (index - (len(macs_by_model) - 1) / 2) * width
        values = [by_class[g] / 1e6 for g in groups]
        bars = axes.bar(x, values, width, label=model, color=f"C{index}")
        axes.bar_label(bars, [f"{v:.2f}M" for v in values], fontsize=8, padding=2)
    axes.set_xticks(
        range(len(groups)),
        [f"{names[g]}\n{steps[g]} steps ({100 * steps[g] / total:.0f} %)" for g in groups],
    )
    axes.set_ylabel("mean MACs per step (millions)")
    axes.set_title(title, fontsize=9)
    axes.margins(y=0.12)
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    axes.grid(True, axis="y", alpha=0.3)
    return _save(figure, path)
