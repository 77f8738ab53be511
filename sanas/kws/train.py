"""Train a keyword-spotting model on streaming sequences: static, BSN or SANAS.

A plain loop (one file, read top to bottom): build the data and the model from a
:class:`TrainConfig`, then per epoch train on freshly drawn sequences, evaluate on the
fixed validation sequences, and write everything a run needs into its folder::

    config.json                 the full configuration
    metrics.csv, metrics.jsonl  one row per epoch (losses, accuracy, MACs per step and per
                                class, λ, node probabilities, seconds)
    tensorboard/                the same scalars as TensorBoard events
    checkpoint.pt               the latest state (model, optimiser, baseline and budget,
                                RNG states, history), written atomically every epoch
    front/epoch-NNNN.pt         weights of each epoch on the validation cost/accuracy front
    pareto.json                 that front: (MACs per step, accuracy) points not dominated
    best.pt                     the most accurate epoch on the validation set (of a budgeted
                                search: the most accurate that holds its budget)

Rerunning the same command on the same folder resumes from ``checkpoint.pt`` (after a
crash or SIGKILL) and ends with exactly the result of an uninterrupted run: the data
order and each sequence depend only on (seed, epoch, index), and every RNG state is saved.

Library use::

    from sanas.kws.train import TrainConfig, train, load_run
    result = train(TrainConfig(data="speech_commands", out="runs/sanas", model="sanas"))
    model, config = load_run("runs/sanas")
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import random
import tempfile
import time
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from sanas.kws.data.sequences import (
    SequenceBatch,
    SequenceConfig,
    SequenceDataset,
    collate_sequences,
)
from sanas.kws.data.speech_commands import (
    SpeechCommands,
    hold_out_speakers,
    kws_task,
    make_examples,
)
from sanas.kws.features import MFCC
from sanas.kws.sanas_model import (
    MODEL_KINDS,
    SANASKWS,
    KWSModel,
    KWSOutput,
    SANASOptions,
    SequenceObjective,
    build_kws_model,
)
from sanas.supernet.budgets import make_budget
from sanas.supernet.graph import GraphError

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
FRONT_DIR = "front"
BUDGET_MODES = ("linear", "hinge", "constrained")
LR_SCHEDULES = ("constant", "cosine")
NORMALIZER_SEQUENCES = 256  # training sequences the input normaliser is fitted on
# Fields that may change when a run resumes: they do not change what is computed (threads
# and device may still change float rounding; ``out`` differs when a run folder was moved).
RESUMABLE_CHANGES = frozenset({"epochs", "device", "progress", "workers", "threads", "out"})
SEARCH_FIELDS = frozenset(
    {
        "lam",
        "budget",
        "budget_mode",
        "arch_lr",
        "warmup_epochs",
        "train_full_network",
        "train_cheapest_network",
        "distill_cheapest",
    }
)


class ConfigError(ValueError):
    """An invalid training configuration; the message names the field."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (the fields of a YAML/JSON config file).

    ``model``: static (cnn-trad-fpool3), static-shortcuts, bsn or sanas. ``lam``: λ on raw
    MACs (useful around 1e-10 … 1e-7). ``budget_mode``: linear λ·C (SANAS), hinge
    λ·max(0, C − budget) (BSN) or constrained (λ learned so that E[C] ≤ budget).
    ``channels``: conv width (64 = the paper; 16 or 32 for CPU runs). ``shared_convs``:
    compute the convolutions once per sequence instead of once per window. ``threads``:
    torch CPU threads (0: torch's default); 1 is fastest on a shared or busy machine, where
    a second thread mostly waits for its core. ``workers``: processes preparing sequences
    (MFCC) beside training (0: in the training process). ``limit_train`` / ``limit_val``:
    use only the first N examples (quick runs). ``sequence``: how training sequences are
    drawn; ``options``: the SANAS reference quirks (:class:`SANASOptions`).
    ``normalize_features``: fit a per-coefficient mean/std on training sequences and
    normalise the model's input with it (saved with the weights; the reference feeds raw
    MFCCs). ``lr_schedule``: ``constant`` (the reference) or ``cosine`` (every learning
    rate decays to 0 over ``epochs``, set at the start of each epoch). ``lr_warmup_steps``:
    the learning rates ramp up linearly over the first optimizer steps (the reference: 0).
    Adam moves every weight by about lr per step, whatever its gradient, so at lr 1e-3 the
    first steps of the wide layers (shortcut_2 reads 37,376 inputs at full width) swing the
    logits by orders of magnitude (the loss jumps from 2.5 to 9.4 at the second batch),
    and conv_1's ReLUs all die within ten batches, for good: the convolutional paths then
    add nothing. Clipping the gradient norm does not help (Adam ignores the scale). On the
    real subset at 16 channels, the share of conv_1 outputs alive after 400 steps: 0 at
    1e-3, 0.17 at 1e-3 with a 300-step warm-up, 0.49 at 3e-4 with it (the experiment's
    recipe), for the same training loss. ``warmup_epochs``
    (BSN, SANAS): the first epochs train the network weights only, on architectures drawn
    from the initial distribution (every node on with p ≈ 0.95); the search starts after.
    Without it, REINFORCE compares architectures while all of them are still bad, the
    cost term wins, and the distribution can collapse to the cheapest path for good.
    ``train_full_network`` (BSN, SANAS): each batch also trains the network with every
    node on (the "sandwich rule" of slimmable networks): paths the search switches off
    keep learning, so the search keeps comparing trained architectures (costs a second
    forward and backward per batch). ``train_cheapest_network`` (BSN, SANAS): likewise the
    cheapest architecture (the sandwich's other end, in → shortcut_0 → classifier): the path
    a budget pushes silence onto is then a trained classifier from the first search step,
    not only once the controller has learned to pick it (costs little: no convolution).
    ``distill_cheapest`` (with both ends of the sandwich): the cheapest network learns the
    full network's posteriors on the same windows (detached) instead of the labels, the
    "in-place distillation" of universally slimmable networks (Yu & Huang, 2019). In a
    stream the cheap path runs between the expensive steps of a word, and the smoothing
    averages its posteriors with theirs: it helps most by agreeing with the full network.
    ``train_paths`` (any model): each batch also trains these architectures, each given by
    the nodes it switches on (e.g. the conv_0 tier of :data:`~sanas.kws.models.KWS_TIERS`):
    a path between the sandwich's ends that a budget needs is then a trained classifier of
    its own. Without it, paths that are neither end are trained only when the sampler or
    the controller happens to draw them: on the real subset the conv_0 tier of a searched
    16-channel network scored no better than the cheapest path (21.2/17.0 Matched/Correct
    on the validation stream, against 20.9/16.0), although at 16 channels 1/5 of the full
    network's MACs can pay for it on a step in three, but for conv_1 on a step in six.
    ``init_from``: a run folder whose best weights (super network and input normaliser)
    start this run; the architecture distribution starts fresh. Searching a super network
    that was first trained whole is the usual one-shot NAS recipe: the search then
    compares trained paths from its first step instead of paths it is still disrupting.
    Only a fresh run reads it (a resumed run has its own weights), and the source must
    have held out the same speakers (``search_holdout``). ``search_holdout``: hold out this
    fraction of the training speakers (:func:`hold_out_speakers`) from the network's
    training; in the search epochs the architecture's REINFORCE reward comes from their
    sequences alone (one held-out batch beside each training batch), as ENAS and DARTS
    fit the architecture on data the weights did not fit. On the training sequences
    themselves a network that memorised them makes every path look about as good: on the
    real subset the cheap path's extra loss against the full network was 0.10 nats on
    word steps and 0.11 on silence there, against 0.40 and 0.07 on validation clips,
    so the controller learned nothing about when to spend. A static model with it
    simply trains on the other speakers (what a search then starts from).
    ``reuse_steps``: in evaluation (validation and streams) a step repeats the output of
    the most recent of that many steps before it that ran a costlier architecture
    (:func:`~sanas.supernet.reuse.reuse_costlier_outputs`; 0: none). A controller imitating a
    gate that counted on it (:mod:`sanas.kws.imitation`) must be evaluated with it.
    """

    data: str = ""
    out: str = ""
    model: str = "sanas"
    lam: float = 0.0
    budget: float | None = None
    budget_mode: str = "linear"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    arch_lr: float | None = None
    weight_decay: float = 1e-5
    seed: int = 0
    channels: int = 64
    dropout: float = 0.0
    device: str = "auto"
    shared_convs: bool = True
    task: str = "12"
    cost_adds: str = "reference"
    threads: int = 1
    workers: int = 1
    limit_train: int | None = None
    limit_val: int | None = None
    progress: bool = True
    normalize_features: bool = True
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    warmup_epochs: int = 0
    train_full_network: bool = False
    train_cheapest_network: bool = False
    distill_cheapest: bool = False
    train_paths: tuple[tuple[str, ...], ...] | None = None
    init_from: str | None = None
    search_holdout: float = 0.0
    reuse_steps: int = 0
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    options: SANASOptions = field(default_factory=SANASOptions)

    @property
    def searches_architecture(self) -> bool:
        """Whether the model learns an architecture distribution (BSN, SANAS)."""
        return self.model in ("bsn", "sanas")

    def validate(self) -> TrainConfig:
        """Check values that types alone cannot; raise :class:`ConfigError` naming the field."""
        linear = self.budget_mode == "linear"
        checks: list[tuple[str, Any, bool, str]] = [
            ("data", self.data, bool(self.data), "is required (a Speech Commands folder)"),
            ("out", self.out, bool(self.out), "is required (the run folder)"),
            ("model", self.model, self.model in MODEL_KINDS, f"must be one of {MODEL_KINDS}"),
            ("budget_mode", self.budget_mode, self.budget_mode in BUDGET_MODES,
             f"must be one of {BUDGET_MODES}"),
            ("lam", self.lam, self.lam >= 0, "must be >= 0"),
            ("budget", self.budget, linear or (self.budget or 0) > 0,
             f"must be > 0 with budget_mode {self.budget_mode!r}"),
            ("epochs", self.epochs, self.epochs >= 1, "must be >= 1"),
            ("warmup_epochs", self.warmup_epochs, self.warmup_epochs >= 0, "must be >= 0"),
            ("lr_warmup_steps", self.lr_warmup_steps, self.lr_warmup_steps >= 0, "must be >= 0"),
            ("batch_size", self.batch_size, self.batch_size >= 1, "must be >= 1"),
            ("lr", self.lr, self.lr > 0, "must be > 0"),
            ("lr_schedule", self.lr_schedule, self.lr_schedule in LR_SCHEDULES,
             f"must be one of {LR_SCHEDULES}"),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0, "must be >= 0"),
            ("channels", self.channels, self.channels >= 1, "must be >= 1"),
            ("dropout", self.dropout, 0 <= self.dropout < 1, "must be in [0, 1)"),
            ("device", self.device, self.device == "auto" or _valid_device(self.device),
             "must be auto, cpu, cuda or cuda:N"),
            ("task", self.task, self.task in ("12", "35"), "must be '12' or '35'"),
            ("cost_adds", self.cost_adds, self.cost_adds in ("reference", "exact"),
             "must be 'reference' or 'exact'"),
            ("threads", self.threads, self.threads >= 0, "must be >= 0"),
            ("workers", self.workers, self.workers >= 0, "must be >= 0"),
            ("limit_train", self.limit_train, self.limit_train is None or self.limit_train >= 1,
             "must be >= 1"),
            ("limit_val", self.limit_val, self.limit_val is None or self.limit_val >= 1,
             "must be >= 1"),
            ("train_full_network", self.train_full_network,
             not self.train_full_network or self.searches_architecture,
             "needs a searched model (bsn or sanas)"),
            ("search_holdout", self.search_holdout, 0 <= self.search_holdout < 1,
             "must be in [0, 1)"),
            ("reuse_steps", self.reuse_steps, self.reuse_steps >= 0, "must be >= 0"),
            ("train_cheapest_network", self.train_cheapest_network,
             not self.train_cheapest_network or self.searches_architecture,
             "needs a searched model (bsn or sanas)"),
            ("distill_cheapest", self.distill_cheapest,
             not self.distill_cheapest
             or (self.train_full_network and self.train_cheapest_network),
             "needs train_full_network and train_cheapest_network (the teacher and the "
             "student)"),
            ("options.baseline", self.options.baseline,
             self.options.baseline != "full_network" or self.train_full_network,
             "'full_network' needs train_full_network (it reads the all-on logits)"),
            ("options.gamma", self.options.gamma, self.model == "sanas" or not self.options.gamma,
             "must be 0 unless model is sanas (only a controller acts on later steps)"),
        ]  # fmt: skip
        for name, value, ok, message in checks:
            if not ok:
                raise ConfigError(f"config field '{name}' {message}, got {value!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build and validate a config from a mapping, naming unknown or ill-typed fields."""
        return _dataclass_from_dict(cls, values, "").validate()


def _valid_device(name: str) -> bool:
    try:
        torch.device(name)
    except RuntimeError:
        return False
    return True


def _dataclass_from_dict(cls: type, values: Any, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from ``values`` with type checks on every field."""
    if not isinstance(values, dict):
        where = f"config field '{prefix[:-1]}'" if prefix else "config"
        raise ConfigError(f"{where} must be a mapping of fields, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        names = ", ".join(f"'{prefix}{name}'" for name in unknown)
        raise ConfigError(f"unknown config field(s) {names}; known: {', '.join(sorted(known))}")
    kwargs = {
        name: _coerce(hints[name], value, f"{prefix}{name}") for name, value in values.items()
    }
    try:
        return cls(**kwargs)
    except ValueError as error:
        raise ConfigError(f"config field '{prefix[:-1] or cls.__name__}': {error}") from None


def _coerce(hint: Any, value: Any, name: str) -> Any:
    """``value`` as type ``hint`` (bool, int, float, str, None, Literal, tuple, dataclass)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return _coerce(options[0], value, name)
    if is_dataclass(hint):
        return _dataclass_from_dict(hint, value, f"{name}.")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config field '{name}' must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple) or not value:
            raise ConfigError(f"config field '{name}' must be a non-empty list, got {value!r}")
        return tuple(_coerce(args[0], item, name) for item in value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-8 (no dot) as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(hint)
    if ok is None:
        raise ConfigError(f"config field '{name}': unsupported type {hint!r}")
    if not ok:
        kind = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}[hint]
        raise ConfigError(f"config field '{name}' must be {kind}, got {value!r}")
    return float(value) if hint is float else value


def load_config(path: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
    """Read a YAML or JSON config file; ``overrides`` (not ``None``) replace its fields."""
    import yaml

    path = Path(path)
    text = path.read_text()
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text) or {}
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: not valid YAML/JSON: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config fields, got {values!r}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig.from_dict(values)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


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
class _State:
    """Everything a resumed run needs besides weights and optimiser (saved in checkpoints)."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    front: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0


# ------------------------------------------------------------------------ data & model
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config field 'device' is {name!r} but CUDA is not available")
    return device


class _Data(NamedTuple):
    """The sequences of a run: training (new each epoch), the held-out speakers' (the
    architecture's reward, ``None`` without ``search_holdout``), fixed validation."""

    train: SequenceDataset
    held_out: SequenceDataset | None
    val: SequenceDataset
    labels: tuple[str, ...]


def _datasets(config: TrainConfig) -> _Data:
    dataset = SpeechCommands(config.data)
    task = kws_task(config.task)
    train_examples = make_examples(dataset, "training", task, seed=config.seed)
    train_examples, held_examples = hold_out_speakers(train_examples, config.search_holdout)
    val_examples = make_examples(dataset, "validation", task, seed=config.seed)
    frontend = MFCC()
    common = {
        "frontend": frontend,
        "background_paths": dataset.background_paths,
        "config": config.sequence,
        "silence_label": task.silence_index,
    }
    train_set = SequenceDataset(train_examples[: config.limit_train], seed=config.seed, **common)
    held_set = None
    if held_examples:
        held_set = SequenceDataset(
            held_examples[: config.limit_train], seed=config.seed + 2, **common
        )
    val_set = SequenceDataset(
        val_examples[: config.limit_val], seed=config.seed + 1, fixed=True, **common
    )
    return _Data(train_set, held_set, val_set, task.labels)


def _loader(dataset: SequenceDataset, config: TrainConfig, order: Iterable[int]) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=list(order),
        collate_fn=collate_sequences,
        num_workers=config.workers,
        generator=torch.Generator(),  # keep the global RNG out of the loader
    )


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The training order of one epoch: a permutation depending only on (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def _make_model(config: TrainConfig, num_classes: int) -> KWSModel:
    model = build_kws_model(
        config.model,  # type: ignore[arg-type]
        num_classes=num_classes,
        channels=config.channels,
        dropout=config.dropout,
        options=config.options,
        shared_convs=config.shared_convs,
        cost_adds=config.cost_adds,  # type: ignore[arg-type]
    )
    model.reuse_steps = config.reuse_steps
    return model


def _optimizer(model: KWSModel, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam with weight decay on the network only; the architecture's parameters (BSN logits,
    SANAS controller) use ``arch_lr``, by default ``lr`` as in the reference. With Adam a
    logit moves about lr per step, so 1e-3 needs thousands of steps to leave its initial 3."""
    groups = [{"params": model.network_parameters(), "weight_decay": config.weight_decay}]
    if model.architecture_parameters():
        arch_lr = config.lr if config.arch_lr is None else config.arch_lr
        groups.append(
            {"params": model.architecture_parameters(), "weight_decay": 0.0, "lr": arch_lr}
        )
    optimizer = torch.optim.Adam(groups, lr=config.lr)
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    return optimizer


def lr_factor(config: TrainConfig, epoch: int, step: int) -> float:
    """Multiplier of every base learning rate at optimizer step ``step`` (0-based, counted
    over the whole run) of ``epoch`` (1-based): the epoch's ``lr_schedule`` value times the
    linear warm-up (step + 1) / ``lr_warmup_steps``. A function of (epoch, step) alone, so a
    resumed run follows the same schedule."""
    factor = 1.0
    if config.lr_schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / config.epochs))
    if step < config.lr_warmup_steps:
        factor *= (step + 1) / config.lr_warmup_steps
    return factor


def _set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor


def _fit_normalizer(model: KWSModel, train_set: SequenceDataset) -> None:
    """Input statistics from the first training sequences of epoch 0 (deterministic)."""
    train_set.set_epoch(0)
    count = min(NORMALIZER_SEQUENCES, len(train_set))
    model.input_norm.fit([train_set[i].features for i in range(count)])


def _initialize_from(model: KWSModel, config: TrainConfig) -> None:
    """Copy the super network and input normaliser of run ``config.init_from`` (its best
    epoch) into ``model``; raise :class:`ConfigError` when the run is missing or its
    network differs."""
    source_dir = Path(config.init_from or "")
    try:
        source, source_config = load_run(source_dir)
    except (FileNotFoundError, ConfigError) as error:
        raise ConfigError(f"config field 'init_from': {error}") from None
    if source_config.search_holdout != config.search_holdout:
        raise ConfigError(
            f"config field 'init_from': {source_dir} held out search_holdout="
            f"{source_config.search_holdout} of the speakers, this run {config.search_holdout}: "
            "its network must not have trained on the speakers the search is rewarded on"
        )
    theirs = source.net.state_dict()
    ours = model.net.state_dict()
    mismatched = sorted(
        name
        for name in set(theirs) | set(ours)
        if name not in theirs or name not in ours or theirs[name].shape != ours[name].shape
    )
    if mismatched:
        raise ConfigError(
            f"config field 'init_from': {source_dir} holds another super network "
            f"(differs in {', '.join(mismatched[:4])}{' …' if len(mismatched) > 4 else ''}); "
            "it must have the same model graph, channels and task"
        )
    model.net.load_state_dict(theirs)
    model.input_norm.load_state_dict(source.input_norm.state_dict())


# ------------------------------------------------------------------------- statistics
class _Tally:
    """Running sums over the real steps of an epoch: loss, accuracy, MACs per step and class."""

    def __init__(self, num_classes: int) -> None:
        self.steps = 0
        self.correct = 0
        self.loss = 0.0
        self.macs = 0.0
        self.class_macs = torch.zeros(num_classes, dtype=torch.float64)
        self.class_steps = torch.zeros(num_classes, dtype=torch.float64)

    def add(
        self, logits: torch.Tensor, cost: torch.Tensor, batch: SequenceBatch, loss: float
    ) -> None:
        mask = batch.mask
        labels = batch.labels[mask].cpu()
        steps = int(mask.sum())
        cost = cost[mask].cpu()
        self.steps += steps
        self.correct += int((logits[mask].argmax(-1).cpu() == labels).sum())
        self.loss += loss * steps
        self.macs += float(cost.sum())
        self.class_macs.index_add_(0, labels, cost)
        self.class_steps.index_add_(0, labels, torch.ones_like(cost))

    def summary(self, prefix: str, labels: tuple[str, ...]) -> dict[str, Any]:
        n = max(self.steps, 1)
        per_class = self.class_macs / self.class_steps.clamp_min(1)
        return {
            f"{prefix}_loss": self.loss / n,
            f"{prefix}_accuracy": self.correct / n,
            f"{prefix}_macs_per_step": self.macs / n,
            f"{prefix}_macs_per_class": {
                label: float(v) if self.class_steps[i] else None
                for i, (label, v) in enumerate(zip(labels, per_class, strict=True))
            },
        }


@torch.no_grad()
def evaluate(
    model: KWSModel, batches: list[SequenceBatch], labels: tuple[str, ...]
) -> dict[str, Any]:
    """Accuracy, loss and MACs per step (overall and per class) with deterministic
    architectures (the mode of each distribution)."""
    model.eval()
    tally = _Tally(len(labels))
    for batch in batches:
        out = model(batch.features, batch.mask)
        mask = batch.mask
        loss = torch.nn.functional.cross_entropy(out.logits[mask], batch.labels[mask])
        tally.add(out.logits, out.cost, batch, float(loss))
    return tally.summary("val", labels)


# ------------------------------------------------------------------------ run folder
def _atomic_write(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _atomic_write_json(path: Path, value: Any) -> None:
    _atomic_write(path, (json.dumps(value, indent=2) + "\n").encode())


def _atomic_save(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _atomic_write(path, buffer.getvalue())


def save_run(model: KWSModel, config: TrainConfig, **records: Any) -> Path:
    """Write a model trained outside :func:`train` as a run folder at ``config.out``:
    config.json, best.pt (what :func:`load_run` reads), then one JSON file per ``records``
    entry (``name=value`` → name.json), each written atomically: a record's presence
    means the folder is complete."""
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write_json(run_dir / "config.json", config.to_dict())
    _atomic_save({"model": model.state_dict()}, run_dir / BEST)
    for name, value in records.items():
        _atomic_write_json(run_dir / f"{name}.json", value)
    return run_dir


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts flattened to ``outer/inner`` columns for CSV and TensorBoard."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update({f"{key}/{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _write_outputs(run_dir: Path, state: _State) -> None:
    """Rewrite every file derived from the state: metrics, pareto.json, best.pt, front/."""
    jsonl = "".join(json.dumps(row) + "\n" for row in state.history)
    _atomic_write(run_dir / "metrics.jsonl", jsonl.encode())
    text = io.StringIO()
    if state.history:
        rows = [_flat(row) for row in state.history]
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _atomic_write(run_dir / "metrics.csv", text.getvalue().encode())
    pareto = {"x": "val_macs_per_step", "y": "val_accuracy", "points": state.front}
    _atomic_write_json(run_dir / "pareto.json", pareto)
    keep = {point["checkpoint"] for point in state.front}
    for stale in (run_dir / FRONT_DIR).glob("*.pt"):
        if f"{FRONT_DIR}/{stale.name}" not in keep:
            stale.unlink()
    best = run_dir / BEST
    if not state.best_epoch:
        best.unlink(missing_ok=True)
        return
    temporary = run_dir / f".{BEST}.tmp"  # the best epoch is on the front: link its file
    temporary.unlink(missing_ok=True)
    os.link(run_dir / _front_name(state.best_epoch), temporary)
    os.replace(temporary, best)


def _front_name(epoch: int) -> str:
    return f"{FRONT_DIR}/epoch-{epoch:04d}.pt"


def _update_front(front: list[dict[str, Any]], point: dict[str, Any]) -> list[dict[str, Any]]:
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


def _rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _what_is_computed(values: dict[str, Any]) -> dict[str, Any]:
    """Config fields that can change a run's result: a static model ignores every
    architecture-search field (λ, budget, arch_lr, warm-up, and the options except the
    logit ReLU)."""
    if values.get("model") not in ("static", "static-shortcuts"):
        return values
    values = {k: v for k, v in values.items() if k not in SEARCH_FIELDS}
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


def _check_resumable(run_dir: Path, config: TrainConfig) -> None:
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


def _selection_budget(config: TrainConfig) -> float | None:
    """The budget the best epoch must hold: that of a hinge or constrained search."""
    budgeted = config.searches_architecture and config.budget_mode != "linear"
    return config.budget if budgeted else None


# ----------------------------------------------------------------------------- train
def train(config: TrainConfig) -> RunResult:
    """Train (or resume) the run ``config.out``; return its metrics, front and best epoch.

    Seeds torch, numpy and random with ``config.seed``; sets torch's CPU threads to
    ``config.threads`` for the run and restores them after.
    """
    config.validate()
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(config)
    finally:
        torch.set_num_threads(threads)


def _train(config: TrainConfig) -> RunResult:
    device = _device(config.device)
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / FRONT_DIR).mkdir(exist_ok=True)
    checkpoint_path = run_dir / CHECKPOINT

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    data = _datasets(config)
    train_set, labels = data.train, data.labels
    model = _make_model(config, len(labels))
    resuming = checkpoint_path.is_file()
    if config.init_from and not resuming:  # a checkpoint holds its own weights
        _initialize_from(model, config)
    elif config.normalize_features and not resuming:  # a checkpoint holds the statistics
        _fit_normalizer(model, train_set)
    model = model.to(device)
    paths = _path_architectures(model, config)
    optimizer = _optimizer(model, config)
    budget = make_budget(config.budget_mode, config.lam, config.budget)  # type: ignore[arg-type]
    objective = SequenceObjective(budget, config.options, num_classes=len(labels))
    state = _State()
    if resuming:
        _check_resumable(run_dir, config)
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        objective.load_state_dict(checkpoint["objective"])
        _set_rng_state(checkpoint["rng"])
        state = _State(**checkpoint["state"])
    _write_outputs(run_dir, state)  # drop whatever a killed epoch left behind
    _atomic_write_json(run_dir / "config.json", config.to_dict())

    val_batches = [b.to(device) for b in _loader(data.val, config, range(len(data.val)))]
    writer = SummaryWriter(run_dir / "tensorboard", purge_step=state.epoch + 1)
    try:
        for epoch in range(state.epoch + 1, config.epochs + 1):
            started = time.perf_counter()
            row: dict[str, Any] = {"epoch": epoch}
            # the epoch's scheduled rate (past the warm-up)
            row["lr"] = config.lr * lr_factor(config, epoch, config.lr_warmup_steps)
            row.update(
                _train_epoch(model, optimizer, objective, data, config, epoch, device, paths)
            )
            row.update(evaluate(model, val_batches, labels))
            row["seconds"] = time.perf_counter() - started
            state.epoch = epoch
            state.history.append(row)
            for key, value in _flat(row).items():
                if key != "epoch" and isinstance(value, int | float):
                    writer.add_scalar(key, value, epoch)
            point = {
                "epoch": epoch,
                "val_macs_per_step": row["val_macs_per_step"],
                "val_accuracy": row["val_accuracy"],
                "checkpoint": _front_name(epoch),
            }
            front = _update_front(state.front, point)
            if point in front:
                _atomic_save(
                    {"model": model.state_dict(), "epoch": epoch}, run_dir / point["checkpoint"]
                )
            state.front = front
            state.best_epoch = best_epoch(state.history, _selection_budget(config))
            _atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "objective": objective.state_dict(),
                    "rng": _rng_state(),
                    "state": asdict(state),
                },
                checkpoint_path,
            )
            _write_outputs(run_dir, state)
    finally:
        writer.close()
    best = next(r for r in state.history if r["epoch"] == state.best_epoch)
    return RunResult(
        run_dir=run_dir,
        history=state.history,
        front=state.front,
        best_epoch=state.best_epoch,
        best_accuracy=best["val_accuracy"],
        best_macs_per_step=best["val_macs_per_step"],
    )


def _train_epoch(
    model: KWSModel,
    optimizer: torch.optim.Optimizer,
    objective: SequenceObjective,
    data: _Data,
    config: TrainConfig,
    epoch: int,
    device: torch.device,
    paths: Tensor | None = None,
) -> dict[str, Any]:
    """One pass over freshly drawn training sequences; returns the epoch's train metrics.
    ``paths`` (K, S): architectures trained beside the model's own (``train_paths``)."""
    model.train()
    train_set = data.train
    train_set.set_epoch(epoch)
    loader = _loader(train_set, config, _epoch_order(len(train_set), config.seed, epoch))
    labels = kws_task(config.task).labels
    tally = _Tally(len(labels))
    sums = {"arch_loss": 0.0, "penalty": 0.0, "baseline": 0.0}
    probs = torch.zeros(model.net.num_stochastic, dtype=torch.float64)
    batches = 0
    # The reference baseline averages padded steps in, so they must run; otherwise skip them.
    padded = config.searches_architecture and config.options.baseline == "ema_reference"
    search = epoch > config.warmup_epochs
    rewards = None
    if search and data.held_out is not None and config.searches_architecture:
        rewards = _held_out_batches(data.held_out, config, epoch)
    teaches: Literal["network", "both"] = "network" if rewards else "both"
    critic = config.options.baseline == "full_network"  # the held-out pass needs all-on logits
    bar = tqdm(
        loader, desc=f"epoch {epoch}/{config.epochs}", disable=not config.progress, unit="batch"
    )
    first_step = (epoch - 1) * len(loader)
    for index, batch in enumerate(bar):
        _set_lr(optimizer, lr_factor(config, epoch, first_step + index))
        batch = batch.to(device)
        mask = None if padded else batch.mask
        # the sandwich passes (validated: only for bsn and sanas) reuse the convolutions
        out = model(
            batch.features,
            mask,
            full_network=config.train_full_network,
            cheapest_network=config.train_cheapest_network,
            paths=paths,
        )
        loss, stats = objective(out, batch.labels, batch.mask, search=search, teaches=teaches)
        loss = loss + _sandwich_loss(out, batch, config.distill_cheapest)
        search_stats = stats
        if rewards:  # the architecture learns from the held-out speakers only
            held = next(rewards).to(device)
            held_out = model(held.features, None if padded else held.mask, full_network=critic)
            arch_loss, search_stats = objective(
                held_out, held.labels, held.mask, teaches="architecture"
            )
            loss = loss + arch_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        tally.add(out.logits.detach(), out.cost, batch, stats.task_loss)
        for key in sums:
            sums[key] += getattr(search_stats, key)
        if out.probs is not None:
            probs += out.probs.detach()[batch.mask].mean(0).double().cpu()
        batches += 1
        bar.set_postfix(loss=f"{stats.task_loss:.3f}", macs=f"{stats.cost:.3g}")
    row = tally.summary("train", labels)
    row.update({key: value / max(batches, 1) for key, value in sums.items()})
    row["lam"] = float(objective.budget.lam)
    if config.searches_architecture:
        row["node_probability"] = {
            name: float(p) / max(batches, 1)
            for name, p in zip(model.net.stochastic_names, probs, strict=True)
        }
    return row


def _sandwich_loss(out: KWSOutput, batch: SequenceBatch, distill: bool) -> Tensor:
    """Cross-entropy of the extra passes (full and cheapest network, fixed paths) on the
    real steps; ``distill``: the cheapest learns the full network's detached posteriors."""
    mask, labels, loss = batch.mask, batch.labels[batch.mask], out.logits.new_zeros(())
    if out.full_logits is not None:
        loss = loss + F.cross_entropy(out.full_logits[mask], labels)
    if out.cheapest_logits is not None:
        target = out.full_logits[mask].detach().softmax(-1) if distill else labels
        loss = loss + F.cross_entropy(out.cheapest_logits[mask], target)
    if out.path_logits is not None:
        loss = loss + sum(F.cross_entropy(logits[mask], labels) for logits in out.path_logits)
    return loss


def _path_architectures(model: KWSModel, config: TrainConfig) -> Tensor | None:
    """The (K, S) architectures of ``train_paths``, or a :class:`ConfigError` naming it."""
    if config.train_paths is None:
        return None
    try:
        return torch.stack([model.net.architecture_of(path) for path in config.train_paths])
    except GraphError as error:
        raise ConfigError(f"config field 'train_paths': {error}") from None


def _held_out_batches(
    held_out: SequenceDataset, config: TrainConfig, epoch: int
) -> Iterator[SequenceBatch]:
    """The held-out speakers' sequences of ``epoch``, in batches, round and round."""
    held_out.set_epoch(epoch)
    order = _epoch_order(len(held_out), config.seed + 2, epoch)
    return itertools.cycle(_loader(held_out, config, order))


# ------------------------------------------------------------------------------ load
def run_config(run_dir: str | os.PathLike[str]) -> TrainConfig:
    """The configuration of a run folder (its config.json)."""
    config_path = Path(run_dir) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir}: no config.json; not a training run folder")
    return TrainConfig.from_dict(json.loads(config_path.read_text()))


def load_run(
    run_dir: str | os.PathLike[str],
    which: Literal["best", "last"] = "best",
    architecture_threshold: float | None = None,
    reuse_steps: int | None = None,
) -> tuple[KWSModel, TrainConfig]:
    """The model of a run folder (its best epoch, or the last checkpoint) in eval mode,
    and its configuration. ``architecture_threshold`` (SANAS runs only): the operating
    point of its controller (:class:`~sanas.kws.sanas_model.SANASKWS`; None: 0.5).
    ``reuse_steps``: replaces the run's own output reuse (``TrainConfig.reuse_steps``)."""
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    weights = run_dir / (BEST if which == "best" else CHECKPOINT)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing; has the run finished an epoch?")
    model = _make_model(config, kws_task(config.task).num_classes)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=False)["model"])
    if architecture_threshold is not None:
        if not isinstance(model, SANASKWS):
            raise ValueError(
                f"{run_dir}: an architecture threshold needs a sanas run, this one is "
                f"{config.model!r}"
            )
        model.architecture_threshold = architecture_threshold
    if reuse_steps is not None:
        model.reuse_steps = reuse_steps
    return model.eval(), config


def sanas_from_run(run_dir: str | os.PathLike[str], **fields: Any) -> tuple[SANASKWS, TrainConfig]:
    """A SANAS model on the super network of a trained run (its best weights and input
    normaliser, e.g. a static + shortcuts network), its controller fresh, and its config:
    the run's with ``fields`` replaced, as a ``sanas`` model started from it."""
    source_config = run_config(run_dir)
    values = {**source_config.to_dict(), **fields, "model": "sanas", "init_from": str(run_dir)}
    config = TrainConfig.from_dict(values)
    model = typing.cast(SANASKWS, _make_model(config, kws_task(config.task).num_classes))
    _initialize_from(model, config)  # loads the run's weights, naming what is missing
    return model, config


__all__ = [
    "ConfigError",
    "RunResult",
    "TrainConfig",
    "best_epoch",
    "evaluate",
    "load_config",
    "load_run",
    "run_config",
    "sanas_from_run",
    "save_run",
    "train",
]
