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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from sanas.kws.data.sequences import (
    SequenceConfig,
)
from sanas.kws.data.speech_commands import kws_task
from sanas.kws.model.options import SANASOptions
from sanas.kws.model.registry import model_family, model_names

BUDGET_MODES = ("linear", "hinge", "constrained")
LR_SCHEDULES = ("constant", "cosine")
# Fields of run folders written before the search section existed: read into it.
_FLAT_SEARCH_FIELDS = {
    "lam": "lam",
    "budget": "budget",
    "budget_mode": "budget_mode",
    "arch_lr": "arch_lr",
    "warmup_epochs": "warmup_epochs",
    "search_holdout": "holdout",
    "train_full_network": "train_full_network",
    "train_cheapest_network": "train_cheapest_network",
    "distill_cheapest": "distill_cheapest",
}
# Fields that moved out of training (reuse_steps: an operating point) or were removed.
_RETIRED_FIELDS = ("reuse_steps", "cost_adds")
_WHERE_IT_WENT = {
    **{flat: f"is now 'search.{nested}'" for flat, nested in _FLAT_SEARCH_FIELDS.items()},
    "reuse_steps": "is an operating point, not a training field: sanas evaluate --reuse-steps, "
    "or a recipe's operating_point section",
    "cost_adds": "was removed: MACs are counted as in the papers",
}


_SEARCHED = "a searched model (bsn, sanas, <backbone>-bsn or <backbone>-sanas)"


class ConfigError(ValueError):
    """An invalid training configuration; the message names the field."""


@dataclass
class SearchConfig:
    """How a BSN or SANAS model learns its architecture (ignored by static models).

    ``lam``: λ on raw MACs per step (useful around 1e-10 … 1e-7). ``budget_mode``:
    ``linear`` λ·C (SANAS), ``hinge`` λ·max(0, C − budget) (BSN) or ``constrained`` (λ
    learned so that E[C] ≤ ``budget``). ``arch_lr``: learning rate of the architecture's
    parameters (None: the network's). ``warmup_epochs``: epochs that train the network
    alone before the search starts. ``holdout``: share of the training speakers the
    network never trains on; the search is rewarded on their sequences (a static run with
    it trains on the other speakers: what such a search starts from).
    ``train_full_network`` / ``train_cheapest_network``: each batch also trains the all-on
    and the cheapest network (the sandwich rule), so both ends stay trained classifiers;
    ``distill_cheapest``: that cheapest network learns the all-on one's posteriors.
    ``frozen_backbone``: a backbone started from ``init_from`` keeps its weights and
    batch-norm statistics and only its early exits train; the full network is then the
    backbone alone, the pretrained static network exactly.
    docs/recipes.md says why each exists and which recipe uses it.
    """

    lam: float = 0.0
    budget: float | None = None
    budget_mode: str = "linear"
    arch_lr: float | None = None
    warmup_epochs: int = 0
    holdout: float = 0.0
    train_full_network: bool = False
    train_cheapest_network: bool = False
    distill_cheapest: bool = False
    frozen_backbone: bool = False

    def checks(self) -> list[tuple[str, Any, bool, str]]:
        """(field, value, valid, what it must be) for :meth:`TrainConfig.validate`."""
        linear = self.budget_mode == "linear"
        return [
            ("search.budget_mode", self.budget_mode, self.budget_mode in BUDGET_MODES,
             f"must be one of {BUDGET_MODES}"),
            ("search.lam", self.lam, self.lam >= 0, "must be >= 0"),
            ("search.budget", self.budget, linear or (self.budget or 0) > 0,
             f"must be > 0 with budget_mode {self.budget_mode!r}"),
            ("search.arch_lr", self.arch_lr, self.arch_lr is None or self.arch_lr > 0,
             "must be > 0"),
            ("search.warmup_epochs", self.warmup_epochs, self.warmup_epochs >= 0,
             "must be >= 0"),
            ("search.holdout", self.holdout, 0 <= self.holdout < 1, "must be in [0, 1)"),
            ("search.distill_cheapest", self.distill_cheapest,
             not self.distill_cheapest
             or (self.train_full_network and self.train_cheapest_network),
             "needs train_full_network and train_cheapest_network (the teacher and the "
             "student)"),
        ]  # fmt: skip


@dataclass
class TrainConfig:
    """Everything that defines a training run: the fields of a recipe or config file.

    ``model``: a registered model (``sanas models``). ``channels``: conv width (64 = the
    paper; 16 a CPU profile). ``label_smoothing``: of the training cross-entropy (0: none).
    ``lr_schedule``: ``constant`` or ``cosine``;
    ``lr_warmup_steps``: a linear ramp of every learning rate over the first optimizer
    steps. ``normalize_features``: fit a per-coefficient mean/std on training sequences
    and normalise the model's input with it (saved with the weights). ``shared_convs``:
    compute the convolutions once per sequence instead of once per window (same result).
    ``threads``: torch CPU threads (0: torch's default; 1 is fastest on a busy machine).
    ``workers``: processes preparing sequences beside training (0: none).
    ``limit_train`` / ``limit_val``: only the first N examples (quick runs). ``train_paths``:
    architectures also trained each batch, each given by the nodes it switches on.
    ``init_from``: a run folder whose best weights start this run (a fresh run only); its
    graph may lack some of this one's nodes, which keep their fresh initialisation, and its
    task may have another number of classes (the class scores' tensors start fresh).
    ``sequence``: how training sequences are drawn; ``options``: the SANAS reference's
    quirks (:class:`~sanas.kws.model.kws_model.SANASOptions`); ``search``: how a BSN or
    SANAS model learns its architecture (:class:`SearchConfig`).
    """

    data: str = ""
    out: str = ""
    model: str = "sanas"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    weight_decay: float = 1e-5
    seed: int = 0
    channels: int = 64
    dropout: float = 0.0
    label_smoothing: float = 0.0
    task: str = "12"
    normalize_features: bool = True
    shared_convs: bool = True
    device: str = "auto"
    threads: int = 1
    workers: int = 1
    limit_train: int | None = None
    limit_val: int | None = None
    progress: bool = True
    train_paths: tuple[tuple[str, ...], ...] | None = None
    init_from: str | None = None
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    options: SANASOptions = field(default_factory=SANASOptions)
    search: SearchConfig = field(default_factory=SearchConfig)

    @property
    def searches_architecture(self) -> bool:
        """Whether the model learns an architecture distribution (BSN, SANAS)."""
        return self.model in model_names() and model_family(self.model) in ("bsn", "sanas")

    def validate(self) -> TrainConfig:
        """Check values that types alone cannot; raise :class:`ConfigError` naming the field."""
        searched = self.searches_architecture
        search = self.search
        checks: list[tuple[str, Any, bool, str]] = [
            ("data", self.data, bool(self.data), "is required (a Speech Commands folder)"),
            ("out", self.out, bool(self.out), "is required (the run folder)"),
            ("model", self.model, self.model in model_names(), f"must be one of {model_names()}"),
            ("epochs", self.epochs, self.epochs >= 1, "must be >= 1"),
            ("lr_warmup_steps", self.lr_warmup_steps, self.lr_warmup_steps >= 0, "must be >= 0"),
            ("batch_size", self.batch_size, self.batch_size >= 1, "must be >= 1"),
            ("lr", self.lr, self.lr > 0, "must be > 0"),
            ("lr_schedule", self.lr_schedule, self.lr_schedule in LR_SCHEDULES,
             f"must be one of {LR_SCHEDULES}"),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0, "must be >= 0"),
            ("channels", self.channels, self.channels >= 1, "must be >= 1"),
            ("dropout", self.dropout, 0 <= self.dropout < 1, "must be in [0, 1)"),
            ("label_smoothing", self.label_smoothing, 0 <= self.label_smoothing < 1,
             "must be in [0, 1)"),
            *((f"sequence.{name}", getattr(self.sequence, name), getattr(self.sequence, name) >= 0,
               "must be >= 0")
              for name in ("time_masks", "time_mask_frames", "freq_masks", "freq_mask_bins")),
            ("device", self.device, self.device == "auto" or _valid_device(self.device),
             "must be auto, cpu, cuda or cuda:N"),
            ("task", self.task, _valid_task(self.task),
             "must be '12', '35' or 'wake:<label>' (a lower-case label, e.g. 'wake:computer')"),
            ("threads", self.threads, self.threads >= 0, "must be >= 0"),
            ("workers", self.workers, self.workers >= 0, "must be >= 0"),
            ("limit_train", self.limit_train, self.limit_train is None or self.limit_train >= 1,
             "must be >= 1"),
            ("limit_val", self.limit_val, self.limit_val is None or self.limit_val >= 1,
             "must be >= 1"),
            *search.checks(),
            ("search.train_full_network", search.train_full_network,
             not search.train_full_network or searched, f"needs {_SEARCHED}"),
            ("search.train_cheapest_network", search.train_cheapest_network,
             not search.train_cheapest_network or searched,
             f"needs {_SEARCHED}"),
            ("search.frozen_backbone", search.frozen_backbone,
             not search.frozen_backbone or searched, f"needs {_SEARCHED}"),
            ("options.baseline", self.options.baseline,
             self.options.baseline != "full_network" or search.train_full_network,
             "'full_network' needs search.train_full_network (it reads the all-on logits)"),
        ]  # fmt: skip
        for name, value, ok, message in checks:
            if not ok:
                raise ConfigError(f"config field '{name}' {message}, got {value!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, values: dict[str, Any], legacy: bool = False) -> TrainConfig:
        """Build and validate a config from a mapping, naming unknown or ill-typed fields.
        ``legacy``: the mapping is a config.json of an older run folder, whose search fields
        were flat and which held fields since retired (read into ``search``, or dropped)."""
        values = dict(values)
        moved = [k for k in (*_FLAT_SEARCH_FIELDS, *_RETIRED_FIELDS) if k in values]
        if moved and not legacy:
            raise ConfigError(f"config field '{moved[0]}' {_WHERE_IT_WENT.get(moved[0], '')}")
        search = dict(values.get("search") or {})
        for flat, nested in _FLAT_SEARCH_FIELDS.items():
            if flat in values:
                search[nested] = values.pop(flat)
        if search:
            values["search"] = search
        for retired in _RETIRED_FIELDS:
            values.pop(retired, None)
        if legacy and isinstance(values.get("options"), dict):
            values["options"] = {k: v for k, v in values["options"].items() if k != "gamma"}
        return _dataclass_from_dict(cls, values, "").validate()


def _valid_task(name: str) -> bool:
    try:
        kws_task(name)
    except ValueError:
        return False
    return True


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


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping of config fields in a YAML or JSON file (not validated yet)."""
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (expected YAML or JSON)") from None
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text) or {}
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: not valid YAML/JSON: {_one_line(error)}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config fields, got {values!r}")
    return values


def _one_line(error: Exception) -> str:
    """A parser's error on one line: what it found, and where."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is not None and problem:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(error).split())


def load_config(path: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
    """Read a YAML or JSON config file; ``overrides`` (not ``None``) replace its fields."""
    values = {**read_config_file(path), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return TrainConfig.from_dict(values)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


# ------------------------------------------------------------------------------ recipes
RECIPES_DIR = Path(__file__).parent / "recipes"
_RECIPE_KEYS = ("description", "extends", "pretrain", "imitate", "operating_point")


@dataclass(frozen=True)
class Recipe:
    """A named training setup: a YAML file of ``sanas/kws/recipes/``.

    ``fields``: the :class:`TrainConfig` fields it sets (after ``extends``: another
    recipe's fields, which these override). ``pretrain``: a recipe trained first into
    ``OUT/pretrain``, whose weights start this run (``init_from``). ``imitate``: instead of
    training, the SANAS controller of that pretrained network imitates a gate
    (:func:`~sanas.kws.training.imitation.imitation_run`'s settings, plus
    ``stream_minutes``: the training-speaker stream it learns from). ``operating_point``:
    stored in the run, what evaluation and streaming use by default.
    """

    name: str
    description: str
    fields: dict[str, Any]
    pretrain: str | None = None
    imitate: dict[str, Any] | None = None
    operating_point: dict[str, Any] | None = None


def recipe_names() -> list[str]:
    """Every packaged recipe, sorted."""
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name: str) -> Recipe:
    """The recipe ``name`` with its ``extends`` chain resolved; a :class:`ConfigError` lists
    the valid names when there is no such recipe."""
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no recipe {name!r}; recipes: {', '.join(recipe_names())}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(values, dict) or not isinstance(values.get("description"), str):
        raise ConfigError(f"{path}: a recipe is a mapping with a 'description' line")
    own = {key: values.pop(key, None) for key in _RECIPE_KEYS}
    fields = values
    if own["extends"]:
        parent = load_recipe(own["extends"])
        fields = merge_fields(parent.fields, values)
        own["pretrain"] = own["pretrain"] or parent.pretrain
        own["imitate"] = own["imitate"] or parent.imitate
        own["operating_point"] = own["operating_point"] or parent.operating_point
    return Recipe(
        name, own["description"], fields, own["pretrain"], own["imitate"], own["operating_point"]
    )


def recipe_config(recipe: Recipe, settings: Sequence[str] = (), **fields: Any) -> TrainConfig:
    """The validated :class:`TrainConfig` of ``recipe``, then ``fields`` (e.g. data, out;
    ``None`` is ignored), then ``settings`` (``key=value`` strings, dotted keys for nested
    sections, values read as YAML: ``search.budget=3e6``, ``options.logit_relu=false``)."""
    values = merge_fields(recipe.fields, {k: v for k, v in fields.items() if v is not None})
    try:
        return TrainConfig.from_dict(apply_settings(values, settings))
    except ConfigError as error:
        raise ConfigError(f"recipe {recipe.name!r}: {error}") from None


def apply_settings(values: dict[str, Any], settings: Sequence[str]) -> dict[str, Any]:
    """``values`` with each ``key=value`` setting on top (dotted keys for sections)."""
    for setting in settings:
        key, value = parse_setting(setting)
        values = merge_fields(values, _nested(key, value))
    return values


def parse_setting(setting: str) -> tuple[str, Any]:
    """``"key=value"`` as (key, YAML value); a :class:`ConfigError` otherwise."""
    key, sep, text = setting.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value (e.g. search.budget=3e6), got {setting!r}")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, str):  # YAML 1.1 reads 3e6 (no dot) as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    return key.strip(), value


def _nested(key: str, value: Any) -> dict[str, Any]:
    """``"a.b"``, v → {"a": {"b": v}}."""
    for part in reversed(key.split(".")[1:]):
        value = {part: value}
    return {key.split(".")[0]: value}


def merge_fields(*layers: dict[str, Any]) -> dict[str, Any]:
    """Config mappings, each on top of the ones before, sections merged key by key."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = merge_fields(merged[key], value)
            else:
                merged[key] = value
    return merged
