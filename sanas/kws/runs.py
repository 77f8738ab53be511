"""The run folder: what a training run writes, and how a trained model is read back.

Loading a model never imports the training loop. Every file is written atomically (a
temporary file renamed into place), so a killed process leaves either the old file or the
new one; weights are read as data only and checked against manifest.json
(:mod:`sanas.kws.run_files`)::

    config.json                 the full configuration
    metrics.csv, metrics.jsonl  one row per epoch
    checkpoint.pt               the latest state (written by the training loop)
    front/epoch-NNNN.pt         weights of each epoch on the validation cost/accuracy front
    pareto.json                 that front: (MACs per step, accuracy) points not dominated
    best.pt                     the most accurate epoch on the validation set (of a budgeted
                                search: the most accurate that holds its budget)
    manifest.json               size and SHA-256 of each weights file (.pt)
    .lock                       while a process writes the run (removed when it ends)
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from sanas.kws.config import ConfigError, TrainConfig
from sanas.kws.data.speech_commands import (
    kws_task,
)
from sanas.kws.model.kws_model import SANASKWS, KWSModel
from sanas.kws.model.operating_point import OperatingPoint
from sanas.kws.model.registry import build_kws_model
from sanas.kws.model.zoo import sanas_counterpart
from sanas.kws.run_files import (
    RunFileError,
    atomic_write,
    atomic_write_json,
    link_weights,
    load_weights,
    remove_weights,
    run_lock,
    save_weights,
)
from sanas.supernet.graph import SuperNetwork

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
FRONT_DIR = "front"
# Fields that may change when a run resumes: they do not change what is computed (threads
# and device may still change float rounding; ``out`` differs when a run folder was moved).
RESUMABLE_CHANGES = frozenset({"epochs", "device", "progress", "workers", "threads", "out"})
OPERATING_POINT = "operating_point.json"

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- results
@dataclass
class RunResult:
    """What a finished run produced: its folder, per-epoch metrics, front and best epoch."""

    run_dir: Path
    history: list[dict[str, Any]]
    front: list[dict[str, Any]]
    best_epoch: int
    best_accuracy: float
    best_macs_per_step: float


@dataclass
class RunState:
    """Everything a resumed run needs besides weights and optimiser (saved in checkpoints)."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    front: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0


def make_model(config: TrainConfig, num_classes: int) -> KWSModel:
    """A fresh model of the run's configuration (its registered model, width, options;
    its backbone frozen with ``search.frozen_backbone``)."""
    model = build_kws_model(
        config.model,  # type: ignore[arg-type]
        num_classes=num_classes,
        channels=config.channels,
        dropout=config.dropout,
        options=config.options,
        shared_convs=config.shared_convs,
    )
    if config.search.frozen_backbone:
        try:
            model.freeze_backbone()
        except ValueError as error:
            raise ConfigError(f"config field 'search.frozen_backbone': {error}") from None
    return model


def initialize_from(model: KWSModel, config: TrainConfig) -> None:
    """Copy the super network and input normaliser of run ``config.init_from`` (its best
    epoch) into ``model``; raise :class:`ConfigError` when the run is missing or its
    network differs.

    The run's graph may lack some of ``model``'s nodes (a static backbone starting the same
    backbone with early exits): those keep their fresh initialisation, and the nodes it
    has may take inputs from them (``features`` summing the new exits). Its task may have
    another number of classes (a 12-word network starting a wake word): the tensors of the
    nodes that output the class scores then keep their fresh initialisation too, named in a
    logged notice. Every node it holds must be ``model``'s, fed by the same nodes, and every
    other tensor it holds must match in shape.
    """
    source_dir = Path(config.init_from or "")
    try:
        source, source_config = load_run(source_dir)
    except (FileNotFoundError, ConfigError, RunFileError) as error:
        raise ConfigError(f"config field 'init_from': {error}") from None
    if source_config.search.holdout != config.search.holdout:
        raise ConfigError(
            f"config field 'init_from': {source_dir} held out search.holdout="
            f"{source_config.search.holdout} of the speakers, this run {config.search.holdout}: "
            "its network must not have trained on the speakers the search is rewarded on"
        )
    class_heads = _class_head_tensors(source.net, model.net)
    differences = [d for d in _graph_differences(source.net, model.net) if d not in class_heads]
    if differences:
        raise ConfigError(
            f"config field 'init_from': {source_dir} holds another super network "
            f"(differs in {', '.join(differences[:4])}{' …' if len(differences) > 4 else ''}); "
            "it must have the same model graph (or lack only some of this one's nodes) "
            "and channels (only its number of classes may differ)"
        )
    if class_heads:
        logger.warning(
            "init_from %s: its task has %d classes, this run's %d; left out (fresh): %s",
            source_dir,
            kws_task(source_config.task).num_classes,
            kws_task(config.task).num_classes,
            ", ".join(class_heads),
        )
    weights = {k: v for k, v in source.net.state_dict().items() if k not in class_heads}
    model.net.load_state_dict(weights, strict=False)
    model.input_norm.load_state_dict(source.input_norm.state_dict())


def _graph_differences(source: SuperNetwork, target: SuperNetwork) -> list[str]:
    """What keeps ``source``'s weights from starting ``target``: its nodes that ``target``
    lacks or feeds otherwise (other than from nodes new to ``target``), and its tensors
    that ``target`` lacks or shapes otherwise; ``target``'s tensors of shared nodes that
    ``source`` lacks. Empty when ``target`` is ``source`` with some nodes added."""
    new = set(target.nodes) - set(source.nodes)
    differences = sorted(set(source.nodes) - set(target.nodes))
    for name, node in source.nodes.items():
        if name in target.nodes:
            inputs = [i for i in target.nodes[name].inputs_tuple if i not in new]
            if sorted(inputs) != sorted(node.inputs_tuple):
                differences.append(f"{name}'s inputs")
    theirs, ours = source.state_dict(), target.state_dict()
    for key in sorted(set(theirs) | set(ours)):
        if key not in ours or key not in theirs:
            if key not in theirs and _node_of(key) in new:
                continue  # a new node's weights: fresh
            differences.append(key)
        elif theirs[key].shape != ours[key].shape:
            differences.append(key)
    return differences


def _class_head_tensors(source: SuperNetwork, target: SuperNetwork) -> list[str]:
    """The tensors that differ only in the number of classes: those of the nodes that
    output the class scores (a vector of each network's class count, e.g. ``classifier``)
    whose shapes differ in their first (output) dimension alone."""
    source_classes = source.output_shapes[source.output_name]
    target_classes = target.output_shapes[target.output_name]
    if source_classes == target_classes:
        return []
    heads = {
        name
        for name in set(source.nodes) & set(target.nodes)
        if source.output_shapes[name] == source_classes
        and target.output_shapes[name] == target_classes
    }
    theirs, ours = source.state_dict(), target.state_dict()
    return sorted(
        key
        for key in set(theirs) & set(ours)
        if _node_of(key) in heads
        and theirs[key].shape[1:] == ours[key].shape[1:]
        and (theirs[key].shape[:1], ours[key].shape[:1]) == (source_classes, target_classes)
    )


def _node_of(key: str) -> str | None:
    """The node whose module holds the state-dict entry ``key`` (None for the network's own)."""
    prefix, _, rest = key.partition(".")
    return rest.partition(".")[0] if prefix == "modules_by_node" and rest else None


# ------------------------------------------------------------------------ run folder
def with_absolute_paths(config: TrainConfig) -> TrainConfig:
    """``config`` with its folders (data, out, init_from) as absolute paths: what a run
    stores, so that a rerun from another directory finds the same folders."""
    paths = {k: getattr(config, k) for k in ("data", "out", "init_from")}
    return replace(config, **{k: str(Path(v).resolve()) for k, v in paths.items() if v})


def save_run(
    model: KWSModel, config: TrainConfig, point: OperatingPoint | None = None, **records: Any
) -> Path:
    """Write a model trained outside the training loop as a run folder at ``config.out``:
    config.json, best.pt (what :func:`load_run` reads), its operating point, then one JSON
    file per ``records`` entry (``name=value`` → name.json), each written atomically: a
    record's presence means the folder is complete."""
    config = with_absolute_paths(config)
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        atomic_write_json(run_dir / "config.json", config.to_dict())
        save_weights(run_dir, BEST, {"model": model.state_dict()})
        if point is not None:
            save_operating_point(run_dir, point)
        for name, value in records.items():
            atomic_write_json(run_dir / f"{name}.json", value)
    return run_dir


def flat_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts flattened to ``outer/inner`` columns for CSV and TensorBoard."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update({f"{key}/{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def write_outputs(run_dir: Path, state: RunState) -> None:
    """Rewrite every file derived from the state: metrics, pareto.json, best.pt, front/."""
    jsonl = "".join(json.dumps(row) + "\n" for row in state.history)
    atomic_write(run_dir / "metrics.jsonl", jsonl.encode())
    text = io.StringIO()
    if state.history:
        rows = [flat_metrics(row) for row in state.history]
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write(run_dir / "metrics.csv", text.getvalue().encode())
    pareto = {"x": "val_macs_per_step", "y": "val_accuracy", "points": state.front}
    atomic_write_json(run_dir / "pareto.json", pareto)
    keep = {point["checkpoint"] for point in state.front}
    for stale in (run_dir / FRONT_DIR).glob("*.pt"):
        if f"{FRONT_DIR}/{stale.name}" not in keep:
            remove_weights(run_dir, f"{FRONT_DIR}/{stale.name}")
    if not state.best_epoch:
        remove_weights(run_dir, BEST)
        return
    link_weights(run_dir, front_name(state.best_epoch), BEST)  # the best epoch is on the front


def front_name(epoch: int) -> str:
    return f"{FRONT_DIR}/epoch-{epoch:04d}.pt"


def update_front(front: list[dict[str, Any]], point: dict[str, Any]) -> list[dict[str, Any]]:
    """The front with ``point`` added unless dominated (cost ≤ and accuracy ≥, one strictly,
    or an equal earlier point); points it dominates leave."""
    x, y = point["val_macs_per_step"], point["val_accuracy"]

    def covers(p: dict[str, Any]) -> bool:
        return p["val_macs_per_step"] <= x and p["val_accuracy"] >= y

    if any(covers(p) for p in front):
        return front
    survivors = [p for p in front if not (x <= p["val_macs_per_step"] and y >= p["val_accuracy"])]
    return sorted([*survivors, point], key=lambda p: p["val_macs_per_step"])


def best_epoch(history: list[dict[str, Any]], budget: float | None = None) -> int:
    """Model selection: highest validation accuracy, then fewest MACs, then earliest.

    With a ``budget`` (MACs per step) only the epochs whose validation MACs per step
    hold it compete (when none does, the cheapest does): a budgeted search is judged
    by what it delivers within its budget, not by an early epoch that was still over it.
    """
    within = [r for r in history if budget is None or r["val_macs_per_step"] <= budget]
    if not within:
        within = [min(history, key=lambda r: (r["val_macs_per_step"], -r["val_accuracy"]))]
    best = min(within, key=lambda r: (-r["val_accuracy"], r["val_macs_per_step"], r["epoch"]))
    return int(best["epoch"])


def _what_is_computed(values: dict[str, Any]) -> dict[str, Any]:
    """Config fields that can change a run's result: a static model ignores the search
    section but its speaker holdout, and the options but the logit ReLU."""
    if values.get("model") not in ("static", "static-shortcuts"):
        return values
    values = {**values, "search": {"holdout": (values.get("search") or {}).get("holdout")}}
    options = values.get("options") or {}
    values["options"] = {"logit_relu": options.get("logit_relu")}
    return values


def _resolved_paths(values: dict[str, Any]) -> dict[str, Any]:
    """Input folders as absolute paths: a relative and an absolute spelling of the same
    folder are the same run."""
    for name in ("data", "init_from"):
        if values.get(name):
            values[name] = str(Path(values[name]).resolve())
    return values


def check_resumable(run_dir: Path, config: TrainConfig) -> None:
    """Refuse to resume a folder that holds a run of another configuration."""
    # Fields added since the run was written take their defaults (what the run did).
    saved_config = run_config(run_dir)
    saved, current = (
        _what_is_computed(_resolved_paths(c.to_dict())) for c in (saved_config, config)
    )
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    changed = [k for k in changed if k not in RESUMABLE_CHANGES]
    if changed:
        raise ConfigError(
            f"{run_dir} holds a run with a different configuration "
            f"({', '.join(f'{k}: {saved.get(k)!r} -> {current.get(k)!r}' for k in changed)}); "
            "use another --out, or the same configuration to resume"
        )


# ------------------------------------------------------------------------------ load
def run_config(run_dir: str | os.PathLike[str]) -> TrainConfig:
    """The configuration of a run folder (its config.json); a :class:`ConfigError` naming
    the file when it is not a sanas configuration."""
    path = _config_path(run_dir)
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()), legacy=True)
    except (ValueError, UnicodeDecodeError) as error:  # ConfigError and JSONDecodeError too
        raise ConfigError(f"{path}: not the config.json of a sanas run ({error})") from None


def _config_path(run_dir: str | os.PathLike[str]) -> Path:
    """The run's config.json; a clear error when the folder is not a run."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no config.json; not a training run folder")
    return path


def read_operating_point(run_dir: str | os.PathLike[str]) -> OperatingPoint:
    """The operating point stored in a run folder (``operating_point.json``; the default
    point when it has none)."""
    path = Path(run_dir) / OPERATING_POINT
    if path.is_file():
        try:
            return OperatingPoint.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError) as error:
            raise ConfigError(f"{path}: {error}") from None
    # Runs written before operating points had their output reuse in config.json.
    run_config(run_dir)  # names a config.json that is not one
    legacy = json.loads(_config_path(run_dir).read_text()).get("reuse_steps", 0)
    try:
        return OperatingPoint(reuse_steps=legacy)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{_config_path(run_dir)}: 'reuse_steps': {error}") from None


def save_operating_point(run_dir: str | os.PathLike[str], point: OperatingPoint) -> None:
    """Store ``point`` as the run's default operating point (atomically)."""
    atomic_write_json(Path(run_dir) / OPERATING_POINT, point.to_dict())


def load_run(
    run_dir: str | os.PathLike[str],
    which: Literal["best", "last"] = "best",
    point: OperatingPoint | None = None,
) -> tuple[KWSModel, TrainConfig]:
    """The model of a run folder (its best epoch, or the last checkpoint) in eval mode at
    ``point`` (None: the run's own, :func:`read_operating_point`), and its configuration."""
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    name = BEST if which == "best" else CHECKPOINT
    if not (run_dir / name).is_file():
        raise FileNotFoundError(f"{run_dir / name}: missing; has the run finished an epoch?")
    advice = "copy the run folder again from where it came, or train it again"
    state = load_weights(run_dir, name, advice)["model"]
    model = make_model(config, kws_task(config.task).num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise RunFileError(
            f"{run_dir / name}: holds the weights of another network than config.json "
            f"describes ({str(error).splitlines()[0]} …); {advice}"
        ) from None
    try:
        (point or read_operating_point(run_dir)).apply(model)
    except ValueError as error:
        raise ValueError(f"{run_dir}: {error}; this run is {config.model!r}") from None
    return model.eval(), config


def sanas_from_run(run_dir: str | os.PathLike[str], **fields: Any) -> tuple[SANASKWS, TrainConfig]:
    """A SANAS model on the super network of a trained run (its best weights and input
    normaliser, e.g. a static + shortcuts network), its controller fresh, and its config:
    the run's with ``fields`` replaced, as the SANAS model of its network
    (:func:`~sanas.kws.model.zoo.sanas_counterpart`) started from it."""
    source_config = run_config(run_dir)
    model_name = sanas_counterpart(source_config.model)
    values = {**source_config.to_dict(), **fields, "model": model_name, "init_from": str(run_dir)}
    config = TrainConfig.from_dict(values)
    model = typing.cast(SANASKWS, make_model(config, kws_task(config.task).num_classes))
    initialize_from(model, config)  # loads the run's weights, naming what is missing
    return model, config
