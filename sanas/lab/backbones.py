"""The modern-backbone experiment: every family, static and adaptive, on the same streams.

Each family is a static run and, optionally, an adaptive run (SANAS by imitation or by
search) on that network. Every run is scored on a validation stream (to choose on), a test
stream (to report), a stream of background noise alone (what silence costs) and the test
list's 1 s clips (the field's headline number, full network). An adaptive run is scored at
its stored operating point and at each controller threshold τ of ``thresholds`` × number
of reused steps; the point reported is chosen on validation by a rule fixed in advance
(:func:`choose_point`). The results are one table (``table.md``, ``table.csv``), one
cost/accuracy figure (``cost_accuracy.png``) with every family's curve, and the test
stream's false-alarm / false-reject curves of each static network and chosen point
(``fa_fr_curve.png``). Each score is cached as JSON in ``OUT/scores/``, so a rerun after a
kill scores only what is missing.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from tqdm import tqdm

from sanas.kws.evaluation.clips import run_clip_accuracy
from sanas.kws.evaluation.evaluate import evaluate_run
from sanas.kws.evaluation.metrics import CurvePoint, plot_fa_fr_curve
from sanas.kws.model.operating_point import OperatingPoint
from sanas.kws.model.registry import model_info
from sanas.kws.runs import read_operating_point, run_config
from sanas.kws.training.imitation import IMITATION_RECORD
from sanas.kws.training.recipes import PRETRAIN_DIR

STREAMS = ("validation", "test", "noise")
MAX_COST_SHARE = 1 / 3  # an adaptive point may spend at most this share of its static network
EXTRA_FALSE_ALARMS_PER_HOUR = 1.0  # and make at most this many more false alarms per hour


@dataclass(frozen=True)
class Family:
    """A backbone's runs: its ``static`` run and, optionally, an ``adaptive`` one."""

    name: str
    static: Path
    adaptive: Path | None = None


@dataclass(frozen=True)
class Row:
    """One operating point of one run, scored on every stream (``None`` where not scored)."""

    family: str
    model: str
    run: str
    point: str
    adaptive: bool
    params: int
    clip_macs: int
    training_minutes: float
    clip_accuracy: float
    scores: dict[str, dict[str, Any]]
    reuse_steps: int | None = None
    chosen: bool = False


def _stream_files(folder: Path) -> tuple[Path, Path]:
    return folder / "stream.wav", folder / "labels.txt"


def _cached(path: Path, compute: Any) -> dict[str, Any]:
    """The JSON at ``path``, or ``compute()`` written there atomically first."""
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    part.write_text(json.dumps(value, indent=2))
    os.replace(part, path)
    return value


def cache_name(run: Path) -> str:
    """The folder of ``run``'s cached scores: its whole absolute path, flattened, since
    stages of different runs share names (every static stage is a ``pretrain``)."""
    return "__".join(run.absolute().parts[1:])


def training_minutes(run: Path) -> float:
    """Minutes of training in ``run`` and every pretraining stage inside it: the epochs'
    seconds (metrics.jsonl) and the imitation's."""
    seconds = 0.0
    while (run / "config.json").is_file():
        metrics = run / "metrics.jsonl"
        if metrics.is_file():
            lines = metrics.read_text().splitlines()
            seconds += sum(json.loads(line).get("seconds", 0.0) for line in lines if line)
        imitation = run / IMITATION_RECORD
        if imitation.is_file():
            seconds += json.loads(imitation.read_text()).get("seconds", 0.0)
        run = run / PRETRAIN_DIR
    return seconds / 60.0


def operating_points(
    run: Path, thresholds: Sequence[float], reuse_steps: Sequence[int] = ()
) -> dict[str, OperatingPoint]:
    """The run's stored operating point, then the same at each threshold × each number of
    reused steps (default: the stored one), by label ("τ 0.1, reuse 2"), without repeats."""
    stored = read_operating_point(run)
    stored = replace(stored, architecture_threshold=stored.architecture_threshold or 0.5)
    points = {"stored": stored}
    for tau, reuse in itertools.product(thresholds, reuse_steps or [stored.reuse_steps]):
        point = replace(stored, architecture_threshold=tau, reuse_steps=reuse)
        if point not in points.values():
            points[f"τ {tau:g}, reuse {reuse}"] = point
    return points


def _label(point: OperatingPoint, name: str) -> str:
    """How the table names a point: its threshold and reuse (and that it is stored)."""
    text = f"τ {point.architecture_threshold:g}, reuse {point.reuse_steps}"
    return f"{text} (stored)" if name == "stored" else text


def score_run(
    family: str,
    run: Path,
    streams: dict[str, Path],
    out: Path,
    points: dict[str, OperatingPoint] | None = None,
    progress: tqdm | None = None,
) -> list[Row]:
    """``run`` on every stream of ``streams`` (name → folder with stream.wav and labels.txt)
    at each of ``points`` (a SANAS run; None: a static run's one), with its clip accuracy;
    scores cached under ``out/scores``."""
    config = run_config(run)
    info = model_info(config.model, config.channels)
    cache = out / "scores" / cache_name(run)
    clip = _cached(
        cache / "clips_testing.json", lambda: run_clip_accuracy(run, "testing").to_dict()
    )
    minutes = training_minutes(run)
    rows = []
    for name, point in (points or {"": None}).items():
        scores = {}
        for stream, folder in streams.items():
            file = f"{stream}_{_label(point, '').replace(' ', '')}" if point else stream
            scores[stream] = _cached(
                cache / f"{file}.json",
                lambda f=folder, p=point: evaluate_run(run, *_stream_files(f), point=p).to_dict(),
            )
            if progress is not None:
                progress.update()
        rows.append(
            Row(
                family=family,
                model=config.model,
                run=str(run),
                point=_label(point, name) if point else "",
                adaptive=point is not None,
                params=info["params"],
                clip_macs=info["macs"],
                training_minutes=minutes,
                clip_accuracy=clip["accuracy"],
                scores=scores,
                reuse_steps=point.reuse_steps if point else None,
            )
        )
    return rows


def choose_point(static: Row, adaptive: Sequence[Row]) -> Row | None:
    """The adaptive point chosen on validation: the most Correct (then Matched, then fewer
    MACs) among those that spend at most :data:`MAX_COST_SHARE` of the static network's
    MACs per step and make at most :data:`EXTRA_FALSE_ALARMS_PER_HOUR` more false alarms
    per hour than it there; ``None`` when none does."""
    reference = static.scores["validation"]
    budget = MAX_COST_SHARE * reference["macs_per_step"]
    alarms = reference["fa_per_hour"] + EXTRA_FALSE_ALARMS_PER_HOUR
    within = [
        row
        for row in adaptive
        if row.scores["validation"]["macs_per_step"] <= budget
        and row.scores["validation"]["fa_per_hour"] <= alarms
    ]

    def key(row: Row) -> tuple[float, float, float]:
        val = row.scores["validation"]
        return val["correct"], val["matched"], -val["macs_per_step"]

    return max(within, key=key, default=None)


def run_backbone_experiment(
    families: Sequence[Family],
    streams: dict[str, Path],
    out: str | os.PathLike[str],
    thresholds: Sequence[float] = (0.5, 0.3, 0.1, 0.05),
    reuse_steps: Sequence[int] = (),
) -> list[Row]:
    """Score every family's runs, choose each adaptive point on validation, and write
    ``table.md``, ``table.csv`` and ``cost_accuracy.png`` into ``out``."""
    out = Path(out)
    missing = [name for name in streams if name not in STREAMS]
    if missing:
        raise ValueError(f"streams must be among {STREAMS}, got {', '.join(missing)}")
    rows: list[Row] = []
    with tqdm(desc="scoring", unit="stream") as progress:
        for family in families:
            static = score_run(family.name, family.static, streams, out, progress=progress)
            rows += static
            if family.adaptive is not None:
                sweep = operating_points(family.adaptive, thresholds, reuse_steps)
                points = score_run(family.name, family.adaptive, streams, out, sweep, progress)
                chosen = choose_point(static[0], points)
                rows += [replace(row, chosen=row is chosen) for row in points]
    write_table(rows, out)
    plot_cost_accuracy(rows, out / "cost_accuracy.png")
    curves = {
        f"{row.family} {row.point or 'static'}": [
            CurvePoint.from_dict(point) for point in row.scores["test"]["fa_fr_curve"]
        ]
        for row in rows
        if row.chosen or not row.adaptive
    }
    plot_fa_fr_curve(curves, out / "fa_fr_curve.png")
    return rows


def _flat(row: Row) -> dict[str, Any]:
    """A row as one CSV line: the run's fields, then each stream's scores prefixed."""
    values = {k: v for k, v in asdict(row).items() if k != "scores"}
    for stream, score in row.scores.items():
        for key in ("matched", "correct", "wrong", "false_alarm", "fa_per_hour",
                    "macs_per_step", "executed_macs_per_step"):  # fmt: skip
            values[f"{stream}_{key}"] = score.get(key)
    return values


def _number(value: Any, digits: int = 1, scale: float = 1.0, unit: str = "") -> str:
    return "–" if value is None else f"{value / scale:.{digits}f}{unit}"


TABLE_HEADER = (
    "family", "model", "point", "params", "MACs / 1 s clip", "test clips %", "val Correct",
    "test Matched / Correct / Wrong / FA", "test FA/h", "MACs / step (test)", "executed",
    "noise MACs / step", "noise FA", "training min",
)  # fmt: skip


def _cells(row: Row) -> list[str]:
    """A row of ``table.md``: word scores in % of the stream's words."""
    val, test = row.scores["validation"], row.scores["test"]
    noise = row.scores.get("noise", {})
    words = " / ".join(_number(test[k]) for k in ("matched", "correct", "wrong", "false_alarm"))
    return [
        row.family,
        row.model,
        (row.point or "static") + (" **(chosen)**" if row.chosen else ""),
        f"{row.params:,}",
        _number(row.clip_macs, 2, 1e6, "M"),
        _number(row.clip_accuracy),
        _number(val["correct"]),
        words,
        _number(test["fa_per_hour"]),
        _number(test["macs_per_step"], 3, 1e6, "M"),
        _number(test["executed_macs_per_step"], 3, 1e6, "M"),
        _number(noise.get("macs_per_step"), 3, 1e6, "M"),
        str(noise.get("counts", {}).get("false_alarm", "–")),
        _number(row.training_minutes),
    ]


def write_table(rows: Sequence[Row], out: Path) -> None:
    """``table.csv`` (every value) and ``table.md`` (what a reader compares)."""
    out.mkdir(parents=True, exist_ok=True)
    flat = [_flat(row) for row in rows]
    with (out / "table.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(flat[0]))
        writer.writeheader()
        writer.writerows(flat)
    lines = [TABLE_HEADER, ["---"] * len(TABLE_HEADER), *map(_cells, rows)]
    (out / "table.md").write_text("".join(f"| {' | '.join(line)} |\n" for line in lines))


def plot_cost_accuracy(rows: Sequence[Row], path: Path) -> None:
    """Test-stream Correct against MACs per step: each family's static network (a square)
    and its adaptive points (a line through its thresholds; the chosen one circled)."""
    figure = Figure(figsize=(9.5, 5))
    axes = figure.subplots()
    colors: dict[str, str] = {}
    drawn: set[str] = set()  # a static run two families share is drawn once
    for row in rows:
        color = colors.setdefault(row.family, f"C{len(colors)}")
        test = row.scores["test"]
        if not row.adaptive and row.run not in drawn:
            drawn.add(row.run)
            axes.scatter(test["macs_per_step"], test["correct"], marker="s", color=color,
                         label=f"{row.family} static")  # fmt: skip
    for family, color in colors.items():
        adaptive = [r for r in rows if r.family == family and r.adaptive]
        if not adaptive:
            continue
        # one curve through the thresholds, at the chosen point's number of reused steps
        shown = next((r for r in adaptive if r.chosen), adaptive[0]).reuse_steps
        points = sorted(
            (r.scores["test"]["macs_per_step"], r.scores["test"]["correct"], r.chosen)
            for r in adaptive
            if r.reuse_steps == shown
        )
        axes.plot([p[0] for p in points], [p[1] for p in points], "o-", color=color,
                  label=f"{family} adaptive (reuse {shown})")  # fmt: skip
        for macs, correct, chosen in points:
            if chosen:
                axes.scatter(macs, correct, s=160, facecolors="none", edgecolors=color)
    axes.set_xscale("log")
    axes.set_xlabel("MACs per 200 ms step on the test stream (log)")
    axes.set_ylabel("Correct on the test stream (% of words)")
    axes.set_title("Cost and accuracy of every family (circled: chosen on validation)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
