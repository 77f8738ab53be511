"""The paper's experiment as one call: train static, BSN and SANAS models, evaluate them all
on the same streaming test file, and write Table 1, its CSV and the figures (cost/accuracy,
cost per class along training, and every model's false-alarm/false-reject curve).

Every run is scored on two streams made the same way: one from the validation list, on
which models are compared and chosen, and one from the testing list, which only reports
the chosen ones (``target_verdict``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sanas.kws.config import TrainConfig, load_recipe, merge_fields
from sanas.kws.data.speech_commands import SpeechCommands
from sanas.kws.data.stream_file import generate_streaming_test
from sanas.kws.evaluation.evaluate import evaluate_run
from sanas.kws.evaluation.metrics import CurvePoint, plot_fa_fr_curve
from sanas.kws.evaluation.plots import ModelPoint, plot_cost_accuracy, plot_cost_per_class
from sanas.kws.runs import BEST, RunResult, read_operating_point, run_config
from sanas.kws.sweeps.sweep import grid_space, run_on_ray
from sanas.kws.training.imitation import (
    IMITATION_RECORD,
    imitation_result,
    imitation_run,
)
from sanas.kws.training.loop import train
from sanas.lab.experiment_specs import RunSpec, default_specs

TABLE_COLUMNS = ("model", "matched", "correct", "wrong", "false_alarm", "macs_per_step")
FAMILIES = ("static", "bsn", "sanas")  # table order
# Stream folders of an experiment and the list each is built from.
STREAM_SPLITS = {"stream": "testing", "valstream": "validation"}
# The streams imitation learns from (training speakers, twice as long, other seeds):
# trainstream, then trainstream_2, trainstream_3, ... when it learns from several.
IMITATION_STREAM = "trainstream"
# The recipe every run of the experiment shares (sanas/kws/recipes/, each value's reason
# beside it): our training settings and SANASOptions.improved(); each run's spec sets its
# model and search, and BSN/SANAS train the network alone for the first fifth of the epochs.
RECIPE = "fpool3-sanas-improved"


def _train_and_evaluate(
    spec: RunSpec,
    base: dict[str, Any],
    out: str,
    thresholds: tuple[float, ...] = (0.5,),
    held_budget: float | None = None,
) -> list[dict[str, Any]]:
    """Worker: train one run (resuming if it exists), then score it on both streams (a
    finished run's scores are reused when they are newer than its weights): one row, or
    for a SANAS run one per architecture threshold ("<name> τ=<t>" unless t is 0.5),
    each holding ``held_budget`` MACs per step when given (", held <B>M")."""

    if spec.imitation is not None:
        result = _imitate(spec, base, out)
        config = run_config(result.run_dir)
    else:
        config = TrainConfig.from_dict(merge_fields(base, spec.fields))
        result = train(config)
    if spec.family != "sanas":
        return [_row(spec.name, spec.family, config.out, out, result)]
    held = "" if held_budget is None else f", held {held_budget / 1e6:.3g}M"
    series = f"{spec.name}{held}" if len(thresholds) > 1 else ""  # one curve per controller
    return [
        _row(
            f"{spec.name}{'' if t == 0.5 else f' τ={t:g}'}{held}",
            "sanas",
            config.out,
            out,
            result,
            t,
            held_budget,
            series,
        )
        for t in thresholds
    ]


def _imitate(spec: RunSpec, base: dict[str, Any], out: str) -> RunResult:
    """An imitation run (:attr:`RunSpec.imitation`), made unless its folder holds one."""
    run_dir = Path(base["out"])
    arguments = dict(spec.imitation or {})
    streams = imitation_streams(Path(out), arguments.pop("streams", 1))
    if not (run_dir / IMITATION_RECORD).is_file():
        imitation_run(
            base["init_from"], streams, run_dir, seed=base["seed"], progress=False, **arguments
        )
    return imitation_result(run_dir)


def imitation_streams(out: Path, count: int) -> list[Path]:
    """The folders of an experiment's first ``count`` imitation streams."""
    return [out / IMITATION_STREAM] + [out / f"{IMITATION_STREAM}_{k}" for k in range(2, count + 1)]


def _row(
    name: str,
    family: str,
    run: str,
    out: str,
    result: Any,
    threshold: float | None = None,
    held_budget: float | None = None,
    series: str = "",
) -> dict[str, Any]:
    """A table row: a trained run's scores on both streams at one operating point
    (``series``: the curve of the figure it belongs to, :class:`ModelPoint`)."""
    train_seconds = sum(epoch["seconds"] for epoch in result.history)  # resumed runs too
    scores, validation = (
        _stream_scores(run, Path(out) / f, threshold, held_budget) for f in STREAM_SPLITS
    )
    return {
        "model": name,
        "family": family,
        "series": series,
        "run": run,
        "architecture_threshold": threshold,
        "held_budget": held_budget,
        "matched": scores["matched"],
        "correct": scores["correct"],
        "wrong": scores["wrong"],
        "false_alarm": scores["false_alarm"],
        "fa_per_hour": scores["fa_per_hour"],
        "macs_per_step": scores["macs_per_step"],
        "executed_macs_per_step": scores["executed_macs_per_step"],
        "val_matched": validation["matched"],
        "val_correct": validation["correct"],
        "val_macs_per_step": validation["macs_per_step"],
        "val_accuracy": None if math.isnan(result.best_accuracy) else result.best_accuracy,
        "best_epoch": result.best_epoch,
        "train_seconds": train_seconds,
        "eval_seconds": scores["real_time_factor"] * scores["stream_seconds"],
    }


def _eval_file(
    run: str, stream_name: str, threshold: float | None, held_budget: float | None = None
) -> Path:
    """Where a run's scores on a stream are saved (one file per operating point)."""
    suffix = "" if threshold in (None, 0.5) else f"_t{threshold:g}"
    suffix += "" if held_budget is None else f"_held{held_budget:g}"
    return Path(run) / f"{stream_name}_eval{suffix}.json"


def _stream_scores(
    run: str, stream: Path, threshold: float | None = None, held_budget: float | None = None
) -> dict[str, Any]:
    """The run's scores on ``stream`` (:func:`_eval_file`), computed unless that file is
    newer than the run's best weights."""

    saved = _eval_file(run, stream.name, threshold, held_budget)
    if saved.is_file() and saved.stat().st_mtime > (Path(run) / BEST).stat().st_mtime:
        return json.loads(saved.read_text())
    wav, labels = stream / "stream.wav", stream / "labels.txt"
    point = read_operating_point(run).replaced(
        architecture_threshold=threshold, hold_budget=held_budget
    )
    return evaluate_run(run, wav, labels, saved, point).to_dict()


def format_table(rows: list[dict[str, Any]]) -> str:
    """Table 1 of the paper on the test stream (percentages of ground-truth words, MACs
    per step), then Matched/Correct on the validation stream and the training time."""
    width = max([22, *(len(row["model"]) for row in rows)])
    lines = [
        f"{'model':<{width}} {'Matched':>8} {'Correct':>8} {'Wrong':>6} {'FA':>5} "
        f"{'MACs/step':>10} {'executed':>9} {'val M/C':>11} {'train s':>8}"
    ]
    for row in rows:
        lines.append(
            f"{row['model']:<{width}} {row['matched']:>8.1f} {row['correct']:>8.1f} "
            f"{row['wrong']:>6.1f} {row['false_alarm']:>5.1f} "
            f"{row['macs_per_step'] / 1e6:>9.2f}M {row['executed_macs_per_step'] / 1e6:>8.2f}M "
            f"{row['val_matched']:>5.1f}/{row['val_correct']:<5.1f} {row['train_seconds']:>8.0f}"
        )
    return "\n".join(lines)


def target_verdict(
    rows: list[dict[str, Any]],
    references: Sequence[str] = ("+ shortcuts",),
    fraction: float = 0.2,
) -> str | None:
    """Issue 4's target, judged without tuning on the test stream: the reference is the
    best of the ``references`` rows on validation (Matched + Correct; e.g. the static
    baseline trained for several numbers of epochs); among SANAS points within
    ``fraction`` of its MACs per step on the validation stream, choose the best validation
    Matched + Correct; then compare its *test* Matched and Correct with the reference's.
    ``None`` when every reference or every SANAS point is missing."""
    candidates = [r for r in rows if r["model"] in references]
    if not candidates:
        return None
    base = max(candidates, key=lambda r: r["val_matched"] + r["val_correct"])
    reference = base["model"]
    limit = fraction * base["val_macs_per_step"]
    affordable = [r for r in rows if r["family"] == "sanas" and r["val_macs_per_step"] <= limit]
    if not affordable:
        return None
    chosen = max(affordable, key=lambda r: r["val_matched"] + r["val_correct"])
    met = chosen["matched"] >= base["matched"] and chosen["correct"] >= base["correct"]
    return (
        f"target {'met' if met else 'missed'}: {chosen['model']} (chosen on validation) "
        f"scores {chosen['matched']:.1f}/{chosen['correct']:.1f} Matched/Correct on the test "
        f"stream at {chosen['macs_per_step'] / base['macs_per_step']:.3f} of the MACs of "
        f"{reference} ({base['matched']:.1f}/{base['correct']:.1f})"
    )


def run_experiment(
    data: str | Path,
    out: str | Path,
    specs: list[RunSpec] | None = None,
    *,
    epochs: int = 20,
    channels: int = 16,
    minutes: float = 60.0,
    seed: int = 0,
    jobs: int = 2,
    base_fields: dict[str, Any] | None = None,
    architecture_thresholds: tuple[float, ...] = (0.5,),
    held_budget: float | None = None,
    references: Sequence[str] = ("+ shortcuts",),
    target_fraction: float = 0.2,
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train and evaluate every spec; write ``table.csv``, ``table.json`` and figures in ``out``.

    Each SANAS run is scored at every ``architecture_thresholds`` operating point of its
    controller (:class:`~sanas.kws.model.kws_model.SANASKWS`), each a row and a candidate of
    :func:`target_verdict`, which chooses among them on the validation stream;
    ``held_budget``: each holds that mean MACs per step on the streams
    (:class:`~sanas.kws.streaming.engine.GovernedPolicy`). ``references`` and
    ``target_fraction``: the static runs the target is judged against and the share of
    their MACs it allows (:func:`target_verdict`).

    The runs are trials of a sweep on Ray Tune (:func:`~sanas.kws.sweeps.sweep.run_on_ray`,
    ``jobs`` at once, Ray's files in ``out/ray``), in waves: the runs ready to start, then
    those that start from a run of an earlier wave (``start_from``). Runs resume where they
    stopped (rerun the same call after an interruption). Each run is reported through
    ``echo`` as its wave ends; a failed run does not stop the others (only those that start
    from it), and the call raises at the end naming every failure.
    """

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = specs or default_specs()
    names = [spec.name for spec in specs]
    for spec in specs:
        if spec.start_from is not None and spec.start_from not in names:
            raise ValueError(
                f"run {spec.name!r} starts from {spec.start_from!r}, which is not a run of "
                f"this experiment ({', '.join(names)})"
            )
    for folder, split in STREAM_SPLITS.items():
        if not (out / folder / "labels.txt").is_file():
            generate_streaming_test(
                SpeechCommands(data), out / folder, minutes=minutes, seed=seed, split=split
            )
    counts = [spec.imitation.get("streams", 1) for spec in specs if spec.imitation is not None]
    for k, folder in enumerate(imitation_streams(out, max(counts, default=0)), start=1):
        if not (folder / "labels.txt").is_file():
            generate_streaming_test(
                SpeechCommands(data), folder, minutes=2 * minutes, seed=seed + k, split="training"
            )
    base = shared_fields(data, epochs, channels, seed, base_fields or {})

    context = {"specs": {spec.name: spec for spec in specs}, "base": base, "out": str(out),
               "thresholds": architecture_thresholds, "held_budget": held_budget}  # fmt: skip
    waiting = list(specs)
    rows, failures, ended = [], [], set()
    while waiting:
        wave = [s.name for s in waiting if s.start_from is None or s.start_from in ended]
        if not wave:  # what still waits starts from a run that failed
            failures += [f"{s.name}: not run ({s.start_from!r} did not end)" for s in waiting]
            break
        waiting = [s for s in waiting if s.name not in wave]
        outcomes = run_on_ray(_experiment_trial, context, grid_space("run", wave), out,
                              max_concurrent=jobs, progress=False)  # fmt: skip
        for config, metrics, error in outcomes:
            name = config["run"]
            if error is not None or metrics is None:
                failures.append(f"{name}: {error}")
                echo(f"run {name!r} failed: {error}")
                continue
            ended.add(name)
            rows += metrics["rows"]
            for row in metrics["rows"]:
                echo(
                    f"run {row['model']!r} done: Matched {row['matched']:.1f}, "
                    f"Correct {row['correct']:.1f}, "
                    f"{row['macs_per_step'] / 1e6:.2f}M MACs/step, "
                    f"trained {row['train_seconds']:.0f} s"
                )
    if failures:
        raise RuntimeError("experiment runs failed: " + "; ".join(failures))
    rows.sort(key=lambda r: (FAMILIES.index(r["family"]), r["macs_per_step"]))
    _write_outputs(rows, out, references, target_fraction)
    return rows


def _experiment_trial(config: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """A Ray trial: the run ``config["run"]`` of the experiment (``context``: its specs,
    shared fields, folder and operating points), trained and scored: {"rows": its rows}."""
    spec = context["specs"][config["run"]]
    out = Path(context["out"])
    fields = {**context["base"], "out": str(out / "runs" / _slug(spec.name))}
    if spec.start_from is not None:
        fields["init_from"] = str(out / "runs" / _slug(spec.start_from))
    rows = _train_and_evaluate(
        spec, fields, str(out), context["thresholds"], context["held_budget"]
    )
    return {"rows": rows}


def shared_fields(
    data: str | Path, epochs: int, channels: int, seed: int, extra: dict[str, Any]
) -> dict[str, Any]:
    """The TrainConfig fields every run of an experiment starts from (its spec's fields go
    on top): the :data:`RECIPE`'s training settings, the experiment's data, length, width
    and seed, and network-only epochs for the first fifth of a search."""
    recipe = {k: v for k, v in load_recipe(RECIPE).fields.items() if k not in ("model", "search")}
    run = {"data": str(data), "epochs": epochs, "channels": channels, "seed": seed,
           "progress": False, "search": {"warmup_epochs": epochs // 5}}  # fmt: skip
    return merge_fields(recipe, run, extra)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in name).strip("_")


def _write_outputs(
    rows: list[dict[str, Any]], out: Path, references: Sequence[str], target_fraction: float
) -> None:
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "table.json").write_text(json.dumps(rows, indent=2))
    verdict = target_verdict(rows, references, target_fraction)
    (out / "table.txt").write_text(format_table(rows) + (f"\n{verdict}" if verdict else "") + "\n")
    plot_cost_accuracy(
        [
            ModelPoint(
                r["model"],
                r["family"],
                r["macs_per_step"],
                r["matched"],
                r["correct"],
                series=r["series"],
                label=f"τ={r['architecture_threshold']:g}" if r["series"] else "",
            )
            for r in rows
        ],
        out / "cost_accuracy.png",
    )
    curves = {}
    for row in rows:
        saved = _eval_file(row["run"], "stream", row["architecture_threshold"], row["held_budget"])
        scores = json.loads(saved.read_text())
        curves[row["model"]] = [CurvePoint.from_dict(point) for point in scores["fa_fr_curve"]]
    plot_fa_fr_curve(curves, out / "fa_fr_curve.png")
    # imitation runs have no training history per class
    sanas_rows = [
        r for r in rows if r["family"] == "sanas" and (Path(r["run"]) / "metrics.jsonl").is_file()
    ]
    if sanas_rows:
        chosen = max(sanas_rows, key=lambda r: r["correct"])
        history = [
            json.loads(line)
            for line in (Path(chosen["run"]) / "metrics.jsonl").read_text().splitlines()
        ]
        labels = list(history[0]["train_macs_per_class"])
        plot_cost_per_class(
            [h["epoch"] for h in history],
            {label: [h["train_macs_per_class"][label] for h in history] for label in labels},
            out / "cost_per_class.png",
        )
