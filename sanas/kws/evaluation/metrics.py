"""Streaming keyword-spotting evaluation: the TensorFlow speech_commands protocol (method.md §6).

A model run every few milliseconds over a long recording yields one posterior row per step.
:func:`detect` smooths the rows and fires detections as TensorFlow's
``RecognizeCommands::ProcessLatestResults`` (recognize_commands.cc, .py port) does, and
:func:`match_detections` scores them against ``word,time_ms`` ground truth as
``CalculateAccuracyStats`` (accuracy_utils.cc) does for test_streaming_accuracy.cc:

- Smoothing: the average of the rows whose time lies in ``[t - window, t]``. It is trusted
  only with at least ``minimum_count`` rows spanning at least ``window / 4``; otherwise the
  step is skipped and leaves the detector's state unchanged.
- Firing: the averaged top score must exceed the threshold (strictly), **and** the top label
  must differ from the last fired label, **and** more than ``suppression_ms`` must have
  passed since that firing -- unless the last fired label is ``_silence_`` (also the initial
  state), which lifts the suppression. TensorFlow combines the conditions with *and*:
  the same word cannot fire twice in a row, and no word fires within ``suppression_ms`` of
  another, until ``_silence_`` itself wins the smoothed vote. ``_silence_`` firings update
  that state but are never reported (test_streaming_accuracy.cc drops them);
  ``_unknown_`` firings are reported and scored like any word, and ``_unknown_``
  ground-truth words count in the totals (generate_streaming_test_wav.py writes them).
- Matching: each detection, in time order, takes the earliest ground-truth word within
  ``±time_tolerance_ms`` (bounds inclusive). Same label and word not yet taken: correct;
  otherwise wrong (including the right label on a word already taken); no word in range:
  false alarm. Words are told apart by index (TensorFlow keys them by their integer time).
- Matched: ``"tensorflow"`` counts the distinct words taken (the set in accuracy_utils.cc);
  ``"reference"`` counts every taken word again, so Matched = Correct + Wrong, as the SANAS
  reference and TensorFlow's Python port (accuracy_utils.py, a list) do.

Times are floats in ms; TensorFlow truncates them to integers, which only matters at exact
boundaries. Averages use cumulative sums, exact up to float rounding (about 1e-11 on an
hour of 20 ms steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from matplotlib.figure import Figure

SILENCE_LABEL = "_silence_"
UNKNOWN_LABEL = "_unknown_"
MS_PER_HOUR = 3_600_000.0
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(
    round(float(t), 2) for t in np.linspace(0.05, 0.95, 19)
)

Convention = Literal["tensorflow", "reference"]
_CONVENTIONS: tuple[str, ...] = ("tensorflow", "reference")


def _check_number(
    name: str, value: object, rule: str = "", ok: Callable[[float], bool] = lambda v: True
) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a finite real satisfying ``ok``."""
    is_real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    )
    if not (is_real and math.isfinite(value) and ok(value)):  # type: ignore[arg-type]
        raise ValueError(
            f"{name} must be a finite number{' ' + rule if rule else ''}, got {value!r}"
        )


_CONFIG_RULES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "averaging_window_ms": ("> 0", lambda v: v > 0),
    "detection_threshold": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "suppression_ms": (">= 0", lambda v: v >= 0),
    "time_tolerance_ms": (">= 0", lambda v: v >= 0),
}


@dataclass(frozen=True)
class DetectionConfig:
    """Smoothing, firing and matching parameters (test_streaming_accuracy.cc's values)."""

    averaging_window_ms: float = 500.0
    detection_threshold: float = 0.7
    suppression_ms: float = 1500.0
    minimum_count: int = 3
    time_tolerance_ms: float = 750.0

    def __post_init__(self) -> None:
        for name, (rule, ok) in _CONFIG_RULES.items():
            _check_number(f"DetectionConfig.{name}", getattr(self, name), rule, ok)
        count = self.minimum_count
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(
                f"DetectionConfig.minimum_count must be an integer >= 1, got {count!r}"
            )


@dataclass(frozen=True)
class Detection:
    """A fired command: its label, the step time (ms) and the averaged score that fired."""

    label: str
    time_ms: float
    score: float


@dataclass(frozen=True)
class StreamingScore:
    """Counts of one stream's evaluation; percentages are of the ground-truth words."""

    matched: int
    correct: int
    wrong: int
    false_alarm: int
    ground_truth: int
    duration_ms: float
    convention: Convention

    def _percent(self, count: int) -> float:
        return 100.0 * count / self.ground_truth if self.ground_truth else math.nan

    @property
    def matched_pct(self) -> float:
        return self._percent(self.matched)

    @property
    def correct_pct(self) -> float:
        return self._percent(self.correct)

    @property
    def wrong_pct(self) -> float:
        return self._percent(self.wrong)

    @property
    def false_alarm_pct(self) -> float:
        """False alarms as % of ground-truth words (Table 1's FA column; may exceed 100)."""
        return self._percent(self.false_alarm)

    @property
    def fa_per_hour(self) -> float:
        return self.false_alarm * MS_PER_HOUR / self.duration_ms

    def to_dict(self) -> dict[str, int | float | str | None]:
        """Counts, percentages and FA/h as one flat, JSON-ready mapping (a percentage of no
        word is None: JSON has no NaN)."""
        derived = ("matched_pct", "correct_pct", "wrong_pct", "false_alarm_pct", "fa_per_hour")
        return {**asdict(self), **{name: number_or_none(getattr(self, name)) for name in derived}}


def number_or_none(value: float) -> float | None:
    """``value``, or None for NaN (an undefined rate): what JSON can hold."""
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class CurvePoint:
    """One threshold of the sweep; ``false_reject_rate`` is a fraction in [0, 1]."""

    threshold: float
    false_alarms_per_hour: float
    false_reject_rate: float

    @classmethod
    def from_dict(cls, values: Mapping[str, float | None]) -> CurvePoint:
        """From a scores JSON, where an undefined rate (no keyword in the stream) is null."""
        return cls(**{k: math.nan if v is None else v for k, v in values.items()})


@dataclass(frozen=True)
class _Smoothed:
    """Per-step smoothed top label and score, and whether the step may fire at all."""

    times_ms: np.ndarray
    top_index: np.ndarray
    top_score: np.ndarray
    reliable: np.ndarray
    labels: tuple[str, ...]


def smooth_posteriors(
    times_ms: np.ndarray,
    posteriors: np.ndarray,
    labels: Sequence[str],
    config: DetectionConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a stream and average each step's window, as RecognizeCommands does: the
    averaged posteriors (T, C) and whether each step is trusted to fire (T,) booleans."""
    config = DetectionConfig() if config is None else config
    times = np.asarray(times_ms, dtype=np.float64)
    scores = np.asarray(posteriors, dtype=np.float64)
    names = tuple(labels)
    if times.ndim != 1:
        raise ValueError(f"times_ms must be 1-D (T,), got shape {times.shape}")
    if scores.ndim != 2 or scores.shape[0] != times.shape[0]:
        raise ValueError(
            f"posteriors must have shape (T, C) with T = len(times_ms) = {times.shape[0]}, "
            f"got {scores.shape}"
        )
    if not names or scores.shape[1] != len(names):
        raise ValueError(
            f"posteriors have {scores.shape[1]} columns but {len(names)} labels were given"
        )
    if not all(isinstance(name, str) and name for name in names) or len(set(names)) != len(names):
        raise ValueError(f"labels must be distinct non-empty strings, got {names!r}")
    if not np.isfinite(times).all():
        raise ValueError("times_ms must be finite")
    if np.any(np.diff(times) < 0):
        step = int(np.argmax(np.diff(times) < 0)) + 1
        raise ValueError(
            f"times_ms must be non-decreasing, but step {step} ({times[step]}) comes before "
            f"step {step - 1} ({times[step - 1]})"
        )
    if not np.isfinite(scores).all():
        raise ValueError("posteriors must be finite (found NaN or inf)")

    start = np.searchsorted(times, times - config.averaging_window_ms, side="left")
    count = np.arange(1, times.shape[0] + 1) - start
    cumulative = np.concatenate([np.zeros((1, scores.shape[1])), np.cumsum(scores, axis=0)])
    averaged = (cumulative[1:] - cumulative[start]) / count[:, None]
    reliable = (count >= config.minimum_count) & (
        times - times[start] >= config.averaging_window_ms / 4
    )
    return averaged, reliable


def _smooth(
    times_ms: np.ndarray, posteriors: np.ndarray, labels: Sequence[str], config: DetectionConfig
) -> _Smoothed:
    """:func:`smooth_posteriors` with each step's top label and its averaged score."""
    averaged, reliable = smooth_posteriors(times_ms, posteriors, labels, config)
    top_index = averaged.argmax(axis=1)
    top_score = np.take_along_axis(averaged, top_index[:, None], axis=1)[:, 0]
    times = np.asarray(times_ms, dtype=np.float64)
    return _Smoothed(times, top_index, top_score, reliable, tuple(labels))


def _fire(smoothed: _Smoothed, threshold: float, suppression_ms: float) -> list[Detection]:
    """Run RecognizeCommands' firing rule over the steps whose smoothed score passes."""
    detections: list[Detection] = []
    last_label, last_time = SILENCE_LABEL, -math.inf
    for step in np.flatnonzero(smoothed.reliable & (smoothed.top_score > threshold)):
        label = smoothed.labels[smoothed.top_index[step]]
        time_ms = float(smoothed.times_ms[step])
        since_last = math.inf if last_label == SILENCE_LABEL else time_ms - last_time
        if label == last_label or since_last <= suppression_ms:
            continue
        last_label, last_time = label, time_ms
        if label != SILENCE_LABEL:
            detections.append(Detection(label, time_ms, float(smoothed.top_score[step])))
    return detections


def detect(
    times_ms: np.ndarray,
    posteriors: np.ndarray,
    labels: Sequence[str],
    config: DetectionConfig | None = None,
) -> list[Detection]:
    """Smooth per-step posteriors (T, C) at ``times_ms`` (T,) and return the fired commands.

    ``times_ms`` must be non-decreasing; ``_silence_`` is never reported (module docstring).
    As in test_streaming_accuracy.cc, a step's time is the *start* of its analysis window:
    ground-truth times are where each 1 s clip starts, and the default tolerance is ±750 ms.
    """
    config = DetectionConfig() if config is None else config
    smoothed = _smooth(times_ms, posteriors, labels, config)
    return _fire(smoothed, config.detection_threshold, config.suppression_ms)


def _ground_truth_arrays(ground_truth: Sequence[tuple[str, float]]) -> tuple[list[str], np.ndarray]:
    """Validate ``(label, time_ms)`` pairs and return them sorted by time (stable)."""
    for position, item in enumerate(ground_truth):
        pair = isinstance(item, (tuple, list)) and len(item) == 2
        if not (pair and isinstance(item[0], str) and item[0]):
            raise ValueError(
                f"ground_truth[{position}] must be a (label, time_ms) pair, got {item!r}"
            )
        _check_number(f"ground_truth[{position}] time_ms", item[1])
    order = sorted(range(len(ground_truth)), key=lambda k: float(ground_truth[k][1]))
    labels = [ground_truth[k][0] for k in order]
    times = np.array([float(ground_truth[k][1]) for k in order], dtype=np.float64)
    return labels, times


def _assign(
    detections: Sequence[Detection],
    gt_labels: Sequence[str],
    gt_times: np.ndarray,
    tolerance_ms: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Match detections to words; return the taken word per non-false-alarm detection
    (in detection time order) and whether each of those is correct."""
    ordered = sorted(detections, key=lambda d: d.time_ms)
    det_times = np.array([d.time_ms for d in ordered], dtype=np.float64)
    first = np.searchsorted(gt_times, det_times - tolerance_ms, side="left")
    in_range = np.append(gt_times, math.inf)[first] <= det_times + tolerance_ms
    words = first[in_range]
    taken_by = [d for d, hit in zip(ordered, in_range, strict=True) if hit]
    same_label = np.array(
        [d.label == gt_labels[w] for d, w in zip(taken_by, words, strict=True)], dtype=bool
    )
    first_take = np.zeros(words.shape[0], dtype=bool)
    first_take[np.unique(words, return_index=True)[1]] = True
    return words, same_label & first_take


def _check_duration(duration_ms: float) -> None:
    _check_number("duration_ms", duration_ms, "> 0", lambda v: v > 0)


def match_detections(
    detections: Sequence[Detection],
    ground_truth: Sequence[tuple[str, float]],
    config: DetectionConfig | None = None,
    *,
    duration_ms: float,
    convention: Convention = "tensorflow",
) -> StreamingScore:
    """Score detections against ``(label, time_ms)`` words of a stream of ``duration_ms``.

    Only ``config.time_tolerance_ms`` is used; ``convention`` picks how Matched is counted.
    """
    config = DetectionConfig() if config is None else config
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention must be one of {_CONVENTIONS}, got {convention!r}")
    _check_duration(duration_ms)
    gt_labels, gt_times = _ground_truth_arrays(ground_truth)
    words, correct = _assign(detections, gt_labels, gt_times, config.time_tolerance_ms)
    n_correct = int(correct.sum())
    matched = len(np.unique(words)) if convention == "tensorflow" else len(words)
    return StreamingScore(
        matched=matched,
        correct=n_correct,
        wrong=len(words) - n_correct,
        false_alarm=len(detections) - len(words),
        ground_truth=len(gt_labels),
        duration_ms=float(duration_ms),
        convention=convention,
    )


def evaluate_stream(
    times_ms: np.ndarray,
    posteriors: np.ndarray,
    labels: Sequence[str],
    ground_truth: Sequence[tuple[str, float]],
    duration_ms: float,
    config: DetectionConfig | None = None,
    *,
    convention: Convention = "tensorflow",
) -> StreamingScore:
    """Detect on one stream's posteriors and score the detections (Table 1's numbers)."""
    detections = detect(times_ms, posteriors, labels, config)
    return match_detections(
        detections, ground_truth, config, duration_ms=duration_ms, convention=convention
    )


def false_alarm_false_reject_curve(
    times_ms: np.ndarray,
    posteriors: np.ndarray,
    labels: Sequence[str],
    ground_truth: Sequence[tuple[str, float]],
    duration_ms: float,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    config: DetectionConfig | None = None,
) -> list[CurvePoint]:
    """Sweep the detection threshold: false alarms per hour against false-reject rate.

    False alarms are those of :func:`match_detections` (no word within tolerance), so the
    point at ``config.detection_threshold`` agrees with :func:`evaluate_stream`. A false
    reject is a keyword (not ``_unknown_``/``_silence_``) with no correct detection; NaN
    when the stream has none. The firing state makes neither axis monotone in general: a
    detection removed by a higher threshold no longer suppresses the ones after it.
    """
    config = DetectionConfig() if config is None else config
    _check_duration(duration_ms)
    for threshold in thresholds:
        _check_number("thresholds entry", threshold, "in [0, 1]", lambda v: 0 <= v <= 1)
    smoothed = _smooth(times_ms, posteriors, labels, config)
    gt_labels, gt_times = _ground_truth_arrays(ground_truth)
    is_keyword = np.array(
        [lab not in (SILENCE_LABEL, UNKNOWN_LABEL) for lab in gt_labels], dtype=bool
    )
    n_keywords = int(is_keyword.sum())
    points = []
    for threshold in thresholds:
        detections = _fire(smoothed, float(threshold), config.suppression_ms)
        words, correct = _assign(detections, gt_labels, gt_times, config.time_tolerance_ms)
        false_alarms = len(detections) - len(words)
        detected = int(is_keyword[words[correct]].sum())
        points.append(
            CurvePoint(
                threshold=float(threshold),
                false_alarms_per_hour=false_alarms * MS_PER_HOUR / duration_ms,
                false_reject_rate=1.0 - detected / n_keywords if n_keywords else math.nan,
            )
        )
    return points


def operating_front(points: Sequence[CurvePoint]) -> list[CurvePoint]:
    """The thresholds worth operating at: by rising false alarms per hour, each point that
    rejects fewer keywords than every point with no more false alarms (NaN rates dropped).

    The sweep is not monotone (see :func:`false_alarm_false_reject_curve`), so a line
    through the thresholds in order zigzags; this front is the curve a user chooses from.
    """
    front: list[CurvePoint] = []
    ordered = sorted(
        (p for p in points if not math.isnan(p.false_reject_rate)),
        key=lambda p: (p.false_alarms_per_hour, p.false_reject_rate),
    )
    for point in ordered:
        if not front or point.false_reject_rate < front[-1].false_reject_rate:
            front.append(point)
    return front


def plot_fa_fr_curve(
    points_by_model: Mapping[str, Sequence[CurvePoint]],
    path: str | Path,
    y_label: str = "false rejects (% of keywords)",
) -> Path:
    """Draw each model's :func:`operating_front` as a step line, FA/h (log x, exact 0 kept
    via symlog) against FR % (``y_label``, e.g. a wake word's miss rate), over faint
    markers for every threshold, into ``path``."""
    if not points_by_model:
        raise ValueError("points_by_model is empty: nothing to plot")
    positive = [
        p.false_alarms_per_hour
        for points in points_by_model.values()
        for p in points
        if p.false_alarms_per_hour > 0
    ]
    figure = Figure(figsize=(6.0, 4.5), layout="constrained")
    axes = figure.add_subplot()
    axes.set_xscale("symlog", linthresh=min(positive, default=1.0))
    for name, points in points_by_model.items():
        front = operating_front(points)
        (line,) = axes.plot(
            [p.false_alarms_per_hour for p in front],
            [100.0 * p.false_reject_rate for p in front],
            drawstyle="steps-post",
            marker="o",
            markersize=3,
            label=name,
        )
        axes.scatter(
            [p.false_alarms_per_hour for p in points],
            [100.0 * p.false_reject_rate for p in points],
            s=6,
            color=line.get_color(),
            alpha=0.25,
        )
    axes.set_xlabel("false alarms per hour")
    axes.set_ylabel(y_label)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=120)
    return target
