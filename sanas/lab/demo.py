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
import shutil
import time
from collections.abc import Callable, Sequence
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
from sanas.lab.demo_report import (
    DemoResult,
    ModelScores,
    demo_verdict,
    format_demo_table,
    format_validation,
)

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
