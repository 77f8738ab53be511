"""The demo: what SANAS is for, shown end to end on synthetic speech in a few minutes.

It trains the static cnn-trad-fpool3 + shortcuts network on keywords spoken by espeak-ng,
derives a SANAS model from it by imitation (:mod:`sanas.kws.training.imitation`: its controller
learns to run the full network on the steps that hold a word and the cheapest path
elsewhere, and cheap steps reuse a recent full step's output), chooses the controller's
operating point on a validation stream, then scores both on a test stream of other
speakers: the counts of words with their 95 % intervals, the MACs per step on silence and
on words, a verdict that says what those counts support, and three figures.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sanas.kws.config import TrainConfig, load_recipe
from sanas.kws.data.audio import SAMPLE_RATE, read_wav
from sanas.kws.data.features import LogMel
from sanas.kws.data.speech_commands import UNKNOWN, SpeechCommands
from sanas.kws.data.stream_file import generate_streaming_test, read_stream_labels
from sanas.kws.data.synth import synthesize_keywords
from sanas.kws.evaluation.evaluate import StreamEvaluation, evaluate_run
from sanas.kws.evaluation.metrics import operating_front, plot_fa_fr_curve
from sanas.kws.evaluation.plots import (
    StreamTrace,
    plot_macs_per_class,
    plot_stream_comparison,
)
from sanas.kws.runs import read_operating_point
from sanas.kws.training.imitation import imitation_run
from sanas.kws.training.loop import train

# The baseline's training settings and how SANAS is derived from it: the demo-shortcuts
# and demo recipes (sanas/kws/recipes/, a reason beside each value).
DEMO_RECIPE: dict[str, Any] = {**load_recipe("demo-shortcuts").fields, "progress": False}
# Speakers (clips) per keyword: 15 % of them validate and 15 % test, so each stream draws
# its words from 9 speakers never trained on; a synthesis of a few seconds.
PER_WORD = 60
# Length of the validation and test streams, a word every 3 s: 200 words each, enough
# for a 95 % interval of about ±6 points on a share of words.
STREAM_MINUTES = 10.0
# imitation_run's arguments (the demo makes its own training-speaker stream).
IMITATION: dict[str, Any] = {
    k: v for k, v in (load_recipe("demo").imitate or {}).items() if k != "stream_minutes"
}
# Controller thresholds tried on the validation stream: a node is on when its probability
# exceeds the threshold, so a lower one spends more on the steps the controller leans to.
THRESHOLDS = (0.5, 0.3, 0.2, 0.1)
# The streams: folder → (speakers' split, seed offset). The validation stream chooses the
# operating point, the test stream only reports; the imitation stream is of training
# speakers (the aligned gate needs only the labels), twice as long as the others (more
# examples of words for the controller) and at least a minute (imitation learns from
# chunks of 150 steps, 30 s).
STREAMS = {"trainstream": ("training", 1), "valstream": ("validation", 0), "stream": ("testing", 0)}
# The share of a step's 1 s window a word must fill for the step to count as that word's
# (as training labels steps): the other steps are silence.
WORD_SHARE = 0.5
# Seconds of the test stream drawn in the timeline: about 20 words, readable on one page.
TIMELINE_SECONDS = 60.0
# The classes MACs per step are reported on, each a set of step classes.
CLASSES = {
    "silence": ("silence",),
    "keywords": ("keywords",),
    "unknown": ("unknown",),
    "words": ("keywords", "unknown"),
}
# Drawn only when a model trades false alarms for false rejects as its detection threshold
# moves (its operating front has two points or more) over MIN_FALSE_ALARMS or more false
# alarms: a curve through two or three events on a synthetic stream is noise.
FA_FR_FIGURE = "fa_fr_curve.png"
MIN_FALSE_ALARMS = 5
# A baseline with fewer than this share of the words right has not learned them: matching
# it proves nothing, and the verdict says so instead.
LEARNED = 0.25
Z_95 = 1.959964  # the normal quantile of a two-sided 95 % interval


@dataclass(frozen=True)
class ModelScores:
    """One model at one operating point on one stream: word counts, false alarms, and the
    mean MACs per step overall and on each class of step (silence, keywords, unknown)."""

    name: str
    run: Path
    threshold: float | None
    words: int
    matched: int
    correct: int
    wrong: int
    false_alarms: int
    fa_per_hour: float
    macs_per_step: float
    macs_by_class: dict[str, float]
    steps_by_class: dict[str, int]

    @property
    def words_macs_per_step(self) -> float:
        """Mean MACs of the steps that hold a word (keyword or not)."""
        return self.macs_by_class["words"]


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` measured and wrote: the test-stream scores of the baseline
    and of the SANAS operating point chosen on validation, every validation point, the
    printed table and verdict, the figures (``notes``: why one was not drawn) and the
    seconds it all took."""

    out: Path
    baseline: ModelScores
    sanas: ModelScores
    validation: list[ModelScores]
    table: str
    verdict: str
    figures: list[Path]
    notes: list[str]
    seconds: float


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion (bounds in [0, 1]; NaN without trials): unlike
    the normal approximation it stays inside [0, 1] and is honest at 0 or n successes."""
    if trials <= 0:
        return math.nan, math.nan
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(a: int, b: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """95 % interval of the difference a/n − b/n of two proportions (Newcombe's hybrid
    score method from the two Wilson intervals). It treats the two as independent; on one
    stream they are correlated, so the interval is wider than it need be, never narrower."""
    pa, pb = a / trials, b / trials
    la, ua = wilson_interval(a, trials, z)
    lb, ub = wilson_interval(b, trials, z)
    difference = pa - pb
    return (
        difference - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2),
        difference + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2),
    )


def step_classes(times_ms: np.ndarray, ground_truth: Sequence[tuple[str, float]]) -> np.ndarray:
    """Each step's class: "keywords", "unknown" (a word of no interest) or "silence", by
    the word that fills more than ``WORD_SHARE`` of its window [t, t + 1 s)."""
    classes = np.full(len(times_ms), "silence", dtype=object)
    starts = np.asarray(times_ms, dtype=float)
    for word, word_ms in ground_truth:
        overlap = np.minimum(starts + 1000.0, word_ms + 1000.0) - np.maximum(starts, word_ms)
        classes[overlap > WORD_SHARE * 1000.0] = "unknown" if word == UNKNOWN else "keywords"
    return classes


def _scores(
    name: str,
    run: Path,
    threshold: float | None,
    evaluation: StreamEvaluation,
    ground_truth: Sequence[tuple[str, float]],
) -> ModelScores:
    """A :class:`ModelScores` from one stream's evaluation."""
    macs = evaluation.run.macs_window
    classes = step_classes(evaluation.run.times_ms, ground_truth)
    members = {name: np.isin(classes, kinds) for name, kinds in CLASSES.items()}
    by_class = {
        name: float(macs[chosen].mean()) for name, chosen in members.items() if chosen.any()
    }
    score = evaluation.score
    return ModelScores(
        name=name,
        run=run,
        threshold=threshold,
        words=score.ground_truth,
        matched=score.matched,
        correct=score.correct,
        wrong=score.wrong,
        false_alarms=score.false_alarm,
        fa_per_hour=score.fa_per_hour,
        macs_per_step=evaluation.macs_per_step,
        macs_by_class=by_class,
        steps_by_class={name: int(chosen.sum()) for name, chosen in members.items()},
    )


def _evaluate(
    name: str, run: Path, stream: Path, threshold: float | None = None
) -> tuple[ModelScores, StreamEvaluation]:
    """Score ``run`` on a stream folder (at a controller ``threshold`` for SANAS)."""
    point = read_operating_point(run)
    if threshold is not None:
        point = point.replaced(architecture_threshold=threshold)
    suffix = "" if threshold is None else f"_t{threshold:g}"
    evaluation = evaluate_run(
        run,
        stream / "stream.wav",
        stream / "labels.txt",
        run / f"{stream.name}_eval{suffix}.json",
        point,
    )
    ground_truth = read_stream_labels(stream / "labels.txt")
    return _scores(name, run, threshold, evaluation, ground_truth), evaluation


def choose_point(points: Sequence[ModelScores]) -> ModelScores:
    """The operating point with the most words correct on validation; of equal counts,
    the cheapest."""
    return max(points, key=lambda p: (p.correct, -p.macs_per_step))


def _count(part: int, whole: int) -> str:
    """``"45/60  75 % (63–85 %)"``: a count of words, its share and Wilson interval."""
    low, high = wilson_interval(part, whole)
    return f"{part}/{whole}  {100 * part / whole:.0f} % ({100 * low:.0f}–{100 * high:.0f} %)"


def format_demo_table(baseline: ModelScores, sanas: ModelScores, stream_minutes: float) -> str:
    """The test-stream table: word counts with 95 % Wilson intervals, false alarms, and
    mean MACs per step overall, on silence and on words, for both models side by side."""
    width = 34
    rows: list[tuple[str, str, str]] = [("", baseline.name, sanas.name)]
    for label, field in (
        ("Matched", "matched"),
        ("Correct", "correct"),
        ("Wrong", "wrong"),
    ):
        rows.append(
            (
                label,
                _count(getattr(baseline, field), baseline.words),
                _count(getattr(sanas, field), sanas.words),
            )
        )
    rows.append(
        (
            "False alarms",
            f"{baseline.false_alarms} ({baseline.fa_per_hour:.0f}/h)",
            f"{sanas.false_alarms} ({sanas.fa_per_hour:.0f}/h)",
        )
    )
    ratio = sanas.macs_per_step / baseline.macs_per_step
    rows.append(
        (
            "MACs/step, mean",
            f"{baseline.macs_per_step / 1e6:.2f}M",
            f"{sanas.macs_per_step / 1e6:.2f}M ({ratio:.2f}×)",
        )
    )
    for label, key in (
        ("  on silence", "silence"),
        ("  on keywords", "keywords"),
        ("  on unknown words", "unknown"),
    ):
        if key in baseline.macs_by_class and key in sanas.macs_by_class:
            rows.append(
                (
                    label,
                    f"{baseline.macs_by_class[key] / 1e6:.2f}M",
                    f"{sanas.macs_by_class[key] / 1e6:.2f}M",
                )
            )
    head = (
        f"test stream: {stream_minutes:g} min, {baseline.words} words of speakers never "
        "trained on; 95 % intervals in brackets"
    )
    lines = [head] + [f"{a:<20} {b:<{width}} {c}" for a, b, c in rows]
    return "\n".join(lines)


def _words(count: float) -> str:
    """``"+5 words"``, ``"-1 word"``, ``"0 words"``: a signed, rounded number of words."""
    rounded = round(count)
    return f"{rounded:+d} word{'' if abs(rounded) == 1 else 's'}" if rounded else "0 words"


def compare_counts(ours: int, theirs: int, words: int) -> tuple[str, int]:
    """One count of SANAS against the baseline's on the same ``words``: a line with the
    difference and its 95 % interval in words, and its sign (0: within noise, the interval
    holds 0; 1: SANAS higher; -1: lower)."""
    low, high = difference_interval(ours, theirs, words)
    sign = 1 if low > 0 else -1 if high < 0 else 0
    reading = {0: "within noise", 1: "SANAS higher", -1: "SANAS lower"}[sign]
    line = (
        f"{ours}/{words} vs {theirs}/{words}: {_words(ours - theirs)} "
        f"(95 % interval of the difference {_words(low * words)} to {_words(high * words)}), "
        f"{reading}"
    )
    return line, sign


def demo_verdict(baseline: ModelScores, sanas: ModelScores) -> str:
    """What the test-stream counts support: the cost ratio (overall, on silence, on words);
    Correct and Matched of SANAS against the baseline with the 95 % interval of each
    difference (:func:`compare_counts`); false alarms; and one sentence that claims no more
    than those intervals allow."""
    n = baseline.words
    cost = sanas.macs_per_step / baseline.macs_per_step
    silence = sanas.macs_by_class["silence"] / baseline.macs_by_class["silence"]
    words = sanas.words_macs_per_step / baseline.words_macs_per_step
    correct, correct_sign = compare_counts(sanas.correct, baseline.correct, n)
    matched, matched_sign = compare_counts(sanas.matched, baseline.matched, n)
    beyond = [
        f"{'more' if sign > 0 else 'fewer'} {name} words"
        for name, sign in (("Correct", correct_sign), ("Matched", matched_sign))
        if sign
    ]
    if baseline.correct < LEARNED * n:
        summary = (
            f"The baseline gets only {baseline.correct}/{n} words right: it has not learned "
            "the words, so matching it shows nothing; train longer (--epochs) or on more "
            "speakers (--per-word)."
        )
    elif beyond:
        summary = (
            f"So SANAS has {' and '.join(beyond)} than the baseline, beyond noise, "
            f"at {cost:.2f}× its compute."
        )
    else:
        summary = (
            f"So SANAS finds and labels as many words as the baseline, as far as {n} words "
            f"can tell, at {cost:.2f}× its compute."
        )
    return "\n".join(
        [
            f"verdict on the test stream ({n} words):",
            f"- compute: SANAS spends {cost:.2f}× the baseline's MACs per step "
            f"({silence:.2f}× on silence, {words:.2f}× on words)",
            f"- Correct {correct}",
            f"- Matched {matched}",
            f"- false alarms: {sanas.false_alarms} vs {baseline.false_alarms}",
            summary,
        ]
    )


def _synthesize(data: Path, per_word: int, seed: int) -> None:
    """The synthetic dataset in ``data``, written to a sibling folder first and renamed, so
    that an interrupted synthesis never leaves a half dataset that looks whole."""
    partial = data.with_name(data.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    synthesize_keywords(
        partial, per_word=per_word, seed=seed, validation_percentage=15, testing_percentage=15
    )
    partial.rename(data)


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to mix runs of other settings in ``out``; record these settings there."""
    path = out / "demo_settings.json"
    settings = json.loads(json.dumps(settings))  # as read back: tuples become lists
    if path.is_file():
        before = json.loads(path.read_text())
        if before != settings:
            changed = sorted(k for k in settings if before.get(k) != settings[k])
            raise ValueError(
                f"{out} holds a demo made with other settings ({', '.join(changed)}); "
                "use another --out or delete it"
            )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2))


def run_demo(
    out: str | Path,
    per_word: int = PER_WORD,
    epochs: int = DEMO_RECIPE["epochs"],
    channels: int = DEMO_RECIPE["channels"],
    minutes: float = STREAM_MINUTES,
    seed: int = 0,
    progress: Callable[[str], None] | None = print,
) -> DemoResult:
    """Synthesise the data, train the baseline, derive SANAS by imitation, choose its
    operating point on validation, score both on the test stream and write the table,
    verdict and figures into ``out``. ``per_word``: speakers (clips) per keyword;
    ``minutes``: length of the validation and test streams (a word every 3 s); reruns
    with the same settings reuse what is done."""
    if per_word < 3 or epochs < 1 or channels < 1 or minutes <= 0:
        raise ValueError(
            "need per_word >= 3 (a speaker for each split), epochs >= 1, channels >= 1 and "
            f"minutes > 0; got {per_word}, {epochs}, {channels}, {minutes}"
        )
    started = time.perf_counter()
    say = progress or (lambda _: None)
    out = Path(out)
    _check_settings(
        out,
        {
            "per_word": per_word,
            "epochs": epochs,
            "channels": channels,
            "minutes": minutes,
            "seed": seed,
            "recipe": DEMO_RECIPE,
            "imitation": IMITATION,
            "thresholds": THRESHOLDS,
        },
    )
    data = out / "synthetic_speech_commands"
    if not data.is_dir():
        say(f"synthesising {per_word} speakers per keyword into {data} ...")
        _synthesize(data, per_word, seed)
    dataset = SpeechCommands(data)
    for folder, (split, offset) in STREAMS.items():
        length = max(2 * minutes, 1.0) if split == "training" else minutes
        if not (out / folder / "labels.txt").is_file():
            generate_streaming_test(
                dataset, out / folder, minutes=length, seed=seed + offset, split=split
            )
    baseline_run = out / "runs" / "baseline"
    say(f"training the static + shortcuts baseline ({epochs} epochs, {channels} channels) ...")
    config = TrainConfig.from_dict(
        {
            **DEMO_RECIPE,
            "data": str(data),
            "out": str(baseline_run),
            "epochs": epochs,
            "channels": channels,
            "seed": seed,
        }
    )
    train(config)
    sanas_run = out / "runs" / "sanas"
    if not (sanas_run / "imitation.json").is_file():
        say("deriving SANAS: its controller imitates the aligned gate ...")
        imitation_run(
            baseline_run, [out / "trainstream"], sanas_run, seed=seed, progress=False, **IMITATION
        )
    say("choosing the controller's threshold on the validation stream ...")
    validation = [
        _evaluate(f"SANAS τ={t:g}", sanas_run, out / "valstream", t)[0] for t in THRESHOLDS
    ]
    chosen = choose_point(validation)
    say("scoring both on the test stream ...")
    baseline, baseline_eval = _evaluate("static + shortcuts", baseline_run, out / "stream")
    sanas, sanas_eval = _evaluate(
        f"SANAS (τ={chosen.threshold:g})", sanas_run, out / "stream", chosen.threshold
    )
    table = format_demo_table(baseline, sanas, minutes)
    verdict = demo_verdict(baseline, sanas)
    figures, notes = _figures(out, baseline, sanas, baseline_eval, sanas_eval)
    seconds = time.perf_counter() - started
    result = DemoResult(out, baseline, sanas, validation, table, verdict, figures, notes, seconds)
    _write(result)
    return result


def _figures(
    out: Path,
    baseline: ModelScores,
    sanas: ModelScores,
    baseline_eval: StreamEvaluation,
    sanas_eval: StreamEvaluation,
) -> tuple[list[Path], list[str]]:
    """The stream timeline, MACs per class and, when it has something to show, the
    false-alarm / false-reject figure; and a note saying why it was not drawn."""
    stream = out / "stream"
    audio = read_wav(stream / "stream.wav")[: round(SAMPLE_RATE * TIMELINE_SECONDS)]
    log_mel = LogMel()(torch.from_numpy(audio)).numpy()
    ground_truth = [(w, t) for w, t in read_stream_labels(stream / "labels.txt")]
    traces = [
        StreamTrace(
            scores.name,
            evaluation.run.times_ms,
            evaluation.run.macs_window,
            [(d.label, d.time_ms) for d in evaluation.detections],
        )
        for scores, evaluation in ((baseline, baseline_eval), (sanas, sanas_eval))
    ]
    figures = [
        plot_stream_comparison(
            log_mel, ground_truth, traces, out / "stream_timeline.png", TIMELINE_SECONDS
        ),
        plot_macs_per_class(
            {s.name: s.macs_by_class for s in (baseline, sanas)},
            baseline.steps_by_class,
            out / "macs_per_class.png",
            title=f"MACs per step on the test stream: {baseline.name} vs {sanas.name}",
        ),
    ]
    evaluations = {s.name: e for s, e in ((baseline, baseline_eval), (sanas, sanas_eval))}
    fronts = {name: operating_front(e.curve) for name, e in evaluations.items()}
    most = max(
        (
            round(point.false_alarms_per_hour * evaluations[name].duration_s / 3600)
            for name, front in fronts.items()
            for point in front
        ),
        default=0,
    )
    if any(len(front) > 1 for front in fronts.values()) and most >= MIN_FALSE_ALARMS:
        curves = {name: e.curve for name, e in evaluations.items()}
        return [*figures, plot_fa_fr_curve(curves, out / FA_FR_FIGURE)], []
    (out / FA_FR_FIGURE).unlink(missing_ok=True)
    if most < MIN_FALSE_ALARMS:
        why = (
            "the detection thresholds on either model's best trade-offs make at most "
            f"{most} false alarm{'' if most == 1 else 's'} on the test stream, too few for "
            "a curve"
        )
    else:
        why = "each model has one best trade-off, the fewest false alarms and false rejects"
    return figures, [f"{FA_FR_FIGURE} not drawn: {why}"]


def _write(result: DemoResult) -> None:
    """``table.txt`` (table, validation points, verdict) and ``demo.json`` in ``out``."""
    (result.out / "table.txt").write_text(
        "\n".join([result.table, "", format_validation(result), "", result.verdict, ""])
    )
    record = {
        "baseline": _as_json(result.baseline),
        "sanas": _as_json(result.sanas),
        "validation": [_as_json(p) for p in result.validation],
        "verdict": result.verdict,
        "figures": [str(p) for p in result.figures],
        "notes": result.notes,
        "seconds": result.seconds,
    }
    (result.out / "demo.json").write_text(json.dumps(record, indent=2))


def _as_json(scores: ModelScores) -> dict[str, Any]:
    return {**scores.__dict__, "run": str(scores.run)}


def format_validation(result: DemoResult) -> str:
    """The controller's operating points on the validation stream, the chosen one marked."""
    lines = ["validation stream (chooses the threshold: most Correct, then fewest MACs):"]
    for point in result.validation:
        mark = "←" if point.threshold == result.sanas.threshold else ""
        lines.append(
            f"  τ={point.threshold:<4g} Correct {point.correct}/{point.words}  Matched "
            f"{point.matched}/{point.words}  {point.macs_per_step / 1e6:.2f}M MACs/step {mark}"
        )
    return "\n".join(lines)
