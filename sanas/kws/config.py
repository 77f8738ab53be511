"""The training configuration: one validated dataclass, read from YAML/JSON or a recipe.

Every field is checked on construction from a mapping (:meth:`TrainConfig.from_dict`):
unknown names, wrong types and out-of-range values raise :class:`ConfigError` naming the
field, so a typo in a recipe or a ``--set`` never trains the wrong model silently.
"""

from __future__ import annotations

import contextlib
import json
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from sanas.kws.data.sequences import (
    SequenceConfig,
)
from sanas.kws.model.kws_model import MODEL_KINDS, SANASOptions

BUDGET_MODES = ("linear", "hinge", "constrained")
LR_SCHEDULES = ("constant", "cosine")


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
    the nodes it switches on (e.g. the conv_0 tier of :data:`~sanas.kws.model.networks.KWS_TIERS`):
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
    gate that counted on it (:mod:`sanas.lab.imitation`) must be evaluated with it.
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
