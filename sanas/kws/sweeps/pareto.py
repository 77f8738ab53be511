"""The cost/accuracy front across runs: which runs no other beats on both cost and accuracy.

Each run gives one point, chosen on validation: its Correct on the validation stream
(``RUN/valstream_eval.json``, written by a sweep or the Table-1 experiment) against the MACs
per step it spent there, or, when some run has no such scores, its best epoch's accuracy on
the validation sequences against their MACs per step (``metrics.jsonl``). A run's test
scores (``RUN/stream_eval.json``) are reported beside, never used to choose. A run is
dominated when another costs no more and scores no less, and is better in one of the two.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

from sanas.kws.runs import best_epoch, run_config
from sanas.kws.training.loop import selection_budget

VAL_SCORES = "valstream_eval.json"  # a run's scores on the validation stream
TEST_SCORES = "stream_eval.json"  # on the test stream
METRICS = ("auto", "correct", "accuracy")


class ParetoError(ValueError):
    """A folder that holds no run, or a run without validation metrics; the message names it."""


@dataclass(frozen=True)
class RunPoint:
    """One run on the cost/accuracy plane: its validation ``metric`` (``correct``: % of the
    stream's words; ``accuracy``: of the validation steps) and MACs per step, and the same
    on the test stream when the run was scored there."""

    run: str
    metric: str
    value: float
    macs_per_step: float
    test_value: float | None = None
    test_macs_per_step: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_runs(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The run folders named: a folder with config.json is a run; any other folder (a sweep,
    an experiment's ``runs/``) stands for its sub-folders that are runs with metrics."""
    runs = []
    for path in map(Path, paths):
        if (path / "config.json").is_file():
            runs.append(path)
        elif path.is_dir():
            found = [p for p in sorted(path.iterdir()) if _has_metrics(p)]
            if not found:
                raise ParetoError(f"{path}: neither a run folder nor a folder of finished runs")
            runs += found
        else:
            raise ParetoError(f"{path}: no such folder")
    return runs


def _has_metrics(folder: Path) -> bool:
    """Whether ``folder`` is a run with validation metrics (stream scores or epochs)."""
    return (folder / "config.json").is_file() and any(
        (folder / name).is_file() for name in (VAL_SCORES, "metrics.jsonl")
    )


def run_point(run: str | os.PathLike[str], metric: str = "correct") -> RunPoint:
    """The point of ``run`` on validation (``metric``: correct or accuracy), test beside."""
    run = Path(run)
    if metric == "correct":
        scores = _read_json(run / VAL_SCORES)
        test = _read_json(run / TEST_SCORES) if (run / TEST_SCORES).is_file() else None
        return RunPoint(
            str(run),
            metric,
            float(scores["correct"]),
            float(scores["macs_per_step"]),
            None if test is None else float(test["correct"]),
            None if test is None else float(test["macs_per_step"]),
        )
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise ParetoError(f"{run}: no validation metrics (no {VAL_SCORES}, no metrics.jsonl)")
    try:
        history = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        chosen = best_epoch(history, selection_budget(run_config(run)))
        row = next(r for r in history if r["epoch"] == chosen)
        return RunPoint(
            str(run), metric, float(row["val_accuracy"]), float(row["val_macs_per_step"])
        )
    except (ValueError, KeyError, TypeError, StopIteration) as error:
        raise ParetoError(f"{path}: not the metrics of a sanas run ({error!r})") from None


def _read_json(path: Path) -> dict[str, Any]:
    """The stream scores at ``path`` (``sanas evaluate --json``), with a numeric Correct and
    MACs per step, or a :class:`ParetoError` naming the file."""
    try:
        value = json.loads(path.read_text())
        for key in ("correct", "macs_per_step"):
            float(value[key])
        return value
    except FileNotFoundError:
        raise ParetoError(
            f"{path.parent}: not scored on a validation stream (no {path.name})"
        ) from None
    except (ValueError, KeyError, TypeError) as error:
        raise ParetoError(
            f"{path}: not the scores of `sanas evaluate --json` ({error!r})"
        ) from None


def pareto_front(
    runs: Sequence[str | os.PathLike[str]], metric: str = "auto"
) -> tuple[list[RunPoint], list[RunPoint]]:
    """(the front, the dominated points) of ``runs``, each sorted by MACs per step.
    ``metric``: ``correct`` (the validation stream), ``accuracy`` (the validation
    sequences) or ``auto``: correct when every run was scored on a validation stream."""
    if metric not in METRICS:
        raise ParetoError(f"metric must be one of {METRICS}, got {metric!r}")
    if not runs:
        raise ParetoError("no runs to compare")
    if metric == "auto":
        metric = "correct" if all((Path(r) / VAL_SCORES).is_file() for r in runs) else "accuracy"
    points = [run_point(run, metric) for run in runs]

    def dominated(p: RunPoint) -> bool:
        return any(
            q.macs_per_step <= p.macs_per_step
            and q.value >= p.value
            and (q.macs_per_step < p.macs_per_step or q.value > p.value)
            for q in points
        )

    order = sorted(points, key=lambda p: (p.macs_per_step, -p.value))
    return [p for p in order if not dominated(p)], [p for p in order if dominated(p)]


def plot(front: list[RunPoint], dominated: list[RunPoint], path: str | os.PathLike[str]) -> None:
    """Every run's point (the front joined as a staircase, dominated points grey), each
    labelled with its run folder's name; MACs per step on a log scale."""
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    labels = _labels([p.run for p in (*front, *dominated)])
    for points, style in ((dominated, {"color": "0.6"}), (front, {"color": "C0"})):
        axes.scatter([p.macs_per_step for p in points], [p.value for p in points], **style)
        for p in points:
            axes.annotate(labels[p.run], (p.macs_per_step, p.value), fontsize=6,
                          xytext=(3, 3), textcoords="offset points")  # fmt: skip
    axes.step([p.macs_per_step for p in front], [p.value for p in front], where="post",
              color="C0", label="front (chosen on validation)")  # fmt: skip
    metric = (front or dominated)[0].metric
    axes.set_xscale("log")
    axes.set_xlabel("MACs per step (validation)")
    axes.set_ylabel("Correct, % of words (validation stream)" if metric == "correct"
                    else "accuracy (validation sequences)")  # fmt: skip
    axes.legend(loc="best")
    axes.grid(alpha=0.3)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")


def _labels(runs: list[str]) -> dict[str, str]:
    """Short labels of runs: for a sweep's trials (trial.json) the settings that differ
    among them, keys without their section (``hold_budget=2e+06 seed=1``); else the run
    folder's name."""
    settings = {}
    for run in runs:
        record = Path(run) / "trial.json"
        if not record.is_file():
            return {run: Path(run).name for run in runs}
        settings[run] = {k: str(v) for k, v in json.loads(record.read_text())["settings"].items()}
    common = set.intersection(*(set(s.items()) for s in settings.values()))
    return {
        run: " ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in own.items()
                      if (k, v) not in common) or Path(run).name
        for run, own in settings.items()
    }  # fmt: skip


def _short(value: str) -> str:
    """A number as %g (``2e+06``); anything else as it is."""
    try:
        return f"{float(value):g}"
    except ValueError:
        return value


def write_hparams(folder: str | os.PathLike[str], trials: list[dict[str, Any]]) -> None:
    """TensorBoard HParams of a sweep: one child log per trial in ``folder`` (its settings
    as hyperparameters; its validation and test metrics, ``val/…`` and ``test/…``), each
    rewritten from the trial's record. ``tensorboard --logdir folder``, tab HPARAMS."""
    folder = Path(folder)
    with SummaryWriter(folder) as writer:
        for trial in trials:
            shutil.rmtree(folder / trial["name"], ignore_errors=True)
            metrics = {
                f"{split}/{key}": value
                for split in ("metrics", "test")
                for key, value in (trial.get(split) or {}).items()
                if value is not None
            }
            metrics = {k.replace("metrics/", "val/"): v for k, v in metrics.items()}
            settings = {k: v if isinstance(v, int | float | str | bool) else str(v)
                        for k, v in trial["settings"].items()}  # fmt: skip
            writer.add_hparams(settings, metrics, run_name=trial["name"])
