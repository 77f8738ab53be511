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
    manifest.json               size and SHA-256 of each .pt file (sanas.kws.run_files)

Rerunning the same command on the same folder resumes from ``checkpoint.pt`` (after a
crash or SIGKILL) and ends with exactly the result of an uninterrupted run: the data
order and each sequence depend only on (seed, epoch, index), and every RNG state is saved.

Library use::

    from sanas.kws.config import TrainConfig
    from sanas.kws.runs import load_run
    from sanas.kws.training.loop import train

    result = train(TrainConfig(data="speech_commands", out="runs/sanas", model="sanas"))
    model, config = load_run("runs/sanas")
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from sanas.kws.config import ConfigError, TrainConfig
from sanas.kws.data.features import MFCC
from sanas.kws.data.sequences import (
    SequenceBatch,
    SequenceDataset,
    collate_sequences,
)
from sanas.kws.data.speech_commands import (
    SpeechCommands,
    hold_out_speakers,
    kws_task,
    make_examples,
)
from sanas.kws.model.kws_model import KWSModel, KWSOutput
from sanas.kws.run_files import (
    RunFileError,
    atomic_write_json,
    load_weights,
    rng_state,
    run_lock,
    save_weights,
    set_rng_state,
)
from sanas.kws.runs import (
    CHECKPOINT,
    FRONT_DIR,
    RunResult,
    RunState,
    best_epoch,
    check_resumable,
    flat_metrics,
    front_name,
    initialize_from,
    make_model,
    update_front,
    with_absolute_paths,
    write_outputs,
)
from sanas.kws.training import distributed
from sanas.supernet.budgets import make_budget
from sanas.supernet.nodes import GraphError
from sanas.supernet.sequence import SequenceObjective

NORMALIZER_SEQUENCES = 256  # training sequences the input normaliser is fitted on


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
    train_examples, held_examples = hold_out_speakers(train_examples, config.search.holdout)
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


def _loader(
    dataset: SequenceDataset, config: TrainConfig, order: Iterable[int], shared: bool = False
) -> DataLoader:
    """Batches of ``config.batch_size`` sequences in ``order``; ``shared``: this process's
    share of each (training on several processes, :mod:`~sanas.kws.training.distributed`)."""
    order = list(order)
    batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    return DataLoader(
        dataset,
        batch_sampler=distributed.shard_batches(order, config.batch_size) if shared else batches,
        collate_fn=collate_sequences,
        num_workers=config.workers,
        generator=torch.Generator(),  # keep the global RNG out of the loader
    )


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The training order of one epoch: a permutation depending only on (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def _optimizer(model: KWSModel, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam with weight decay on the network only; the architecture's parameters (BSN logits,
    SANAS controller) use ``arch_lr``, by default ``lr`` as in the reference. With Adam a
    logit moves about lr per step, so 1e-3 needs thousands of steps to leave its initial 3."""
    groups = [{"params": model.network_parameters(), "weight_decay": config.weight_decay}]
    if model.architecture_parameters():
        arch_lr = config.lr if config.search.arch_lr is None else config.search.arch_lr
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


def selection_budget(config: TrainConfig) -> float | None:
    """The budget the best epoch must hold: that of a hinge or constrained search."""
    budgeted = config.searches_architecture and config.search.budget_mode != "linear"
    return config.search.budget if budgeted else None


# ----------------------------------------------------------------------------- train
def train(config: TrainConfig) -> RunResult:
    """Train (or resume) the run ``config.out``; return its metrics, front and best epoch.

    Seeds torch, numpy and random with ``config.seed``; sets torch's CPU threads to
    ``config.threads`` for the run and restores them after. The folders are stored as
    absolute paths; the run folder is created once the data is read, and locked while the
    run writes it (a second process training into it is refused). Under torchrun
    (``WORLD_SIZE`` > 1) the processes train together and the first alone writes the run
    (:mod:`~sanas.kws.training.distributed`); each returns the first one's result.
    """
    config = with_absolute_paths(config.validate())
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        device = _device(config.device)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        np.random.seed(config.seed)
        data = _datasets(config)
        run_dir = Path(config.out)
        with distributed.process_group(device) as device:
            if not distributed.is_main():
                return _follow(config, data, device)
            run_dir.mkdir(parents=True, exist_ok=True)
            with run_lock(run_dir):
                return distributed.share(_train(config, data, run_dir, device))
    finally:
        torch.set_num_threads(threads)


class _Trainer(NamedTuple):
    """What trains: the model, its optimiser and objective, the extra paths it trains."""

    model: KWSModel
    optimizer: torch.optim.Optimizer
    objective: SequenceObjective
    paths: Tensor | None


def _trainer(config: TrainConfig, data: _Data, device: torch.device, fresh: bool) -> _Trainer:
    """A new model (``fresh``: started from ``init_from`` or with its input normaliser
    fitted; else a checkpoint will set it), its optimiser and its objective."""
    model = make_model(config, len(data.labels))
    if config.search.frozen_backbone and not config.init_from:
        raise ConfigError(
            "config field 'search.frozen_backbone' needs a trained backbone to keep: "
            "set init_from (or a recipe's pretrain)"
        )
    if config.init_from and fresh:  # a checkpoint holds its own weights
        initialize_from(model, config)
    elif config.normalize_features and fresh:  # a checkpoint holds the statistics
        _fit_normalizer(model, data.train)
    model = model.to(device)
    search = config.search
    budget = make_budget(search.budget_mode, search.lam, search.budget)  # type: ignore[arg-type]
    objective = config.options.objective(budget, len(data.labels), config.label_smoothing)
    return _Trainer(model, _optimizer(model, config), objective, _path_architectures(model, config))


def _checkpoint(trainer: _Trainer, state: RunState) -> dict[str, Any]:
    """Everything to resume from: weights, optimiser, objective, RNG states, run state."""
    return {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "objective": trainer.objective.state_dict(),
        "rng": rng_state(),
        "state": asdict(state),
    }


def _restore(trainer: _Trainer, checkpoint: dict[str, Any]) -> RunState:
    """Load a :func:`_checkpoint` into ``trainer``; return its run state."""
    trainer.model.load_state_dict(checkpoint["model"])
    trainer.optimizer.load_state_dict(checkpoint["optimizer"])
    trainer.objective.load_state_dict(checkpoint["objective"])
    set_rng_state(checkpoint["rng"])
    return RunState(**checkpoint["state"])


def _follow(config: TrainConfig, data: _Data, device: torch.device) -> RunResult:
    """A process other than the first under torchrun: start from the first one's state,
    train this process's share of every batch, write nothing; return the first's result."""
    trainer = _trainer(config, data, device, fresh=False)
    state = _restore(trainer, distributed.share({}))
    model, optimizer, objective, paths = trainer
    for epoch in range(state.epoch + 1, config.epochs + 1):
        _train_epoch(model, optimizer, objective, data, config, epoch, device, paths)
    return distributed.share(RunResult(Path(config.out), [], [], 0, math.nan, math.nan))


def _train(config: TrainConfig, data: _Data, run_dir: Path, device: torch.device) -> RunResult:
    (run_dir / FRONT_DIR).mkdir(exist_ok=True)
    labels = data.labels
    resuming = (run_dir / CHECKPOINT).is_file()
    trainer = _trainer(config, data, device, fresh=not resuming)
    model, optimizer, objective, paths = trainer
    state = RunState()
    if resuming:
        check_resumable(run_dir, config)
        state = _restore(trainer, _read_checkpoint(run_dir))
    distributed.share(_checkpoint(trainer, state))  # under torchrun, the others start from it
    write_outputs(run_dir, state)  # drop whatever a killed epoch left behind
    atomic_write_json(run_dir / "config.json", config.to_dict())

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
            for key, value in flat_metrics(row).items():
                if key != "epoch" and isinstance(value, int | float):
                    writer.add_scalar(key, value, epoch)
            _add_epoch(run_dir, state, row, model, selection_budget(config))
            save_weights(run_dir, CHECKPOINT, _checkpoint(trainer, state))
            write_outputs(run_dir, state)
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


def _read_checkpoint(run_dir: Path) -> dict[str, Any]:
    """checkpoint.pt, verified; a damaged one stops the run with what to do: it cannot
    resume exactly from anything else (front/ holds weights without optimiser or RNG)."""
    advice = (
        f"this run cannot resume from it: delete it to train {run_dir} again from epoch 1, "
        "or train into another --out"
    )
    checkpoint = load_weights(run_dir, CHECKPOINT, advice)
    missing = {"optimizer", "objective", "rng", "state"} - set(checkpoint)
    rng = checkpoint.get("rng")
    if missing or not (isinstance(rng, dict) and isinstance(rng.get("numpy"), list)):
        raise RunFileError(
            f"{run_dir / CHECKPOINT}: not a checkpoint of this sanas version "
            f"(lacks {', '.join(sorted(missing)) or 'a plain-data RNG state'}); {advice}"
        )
    return checkpoint


def _add_epoch(
    run_dir: Path, state: RunState, row: dict[str, Any], model: KWSModel, budget: float | None
) -> None:
    """Record a finished epoch: its row, its weights when it lands on the validation
    cost/accuracy front, and the best epoch so far (within ``budget``)."""
    epoch = row["epoch"]
    state.epoch = epoch
    state.history.append(row)
    point = {
        "epoch": epoch,
        "val_macs_per_step": row["val_macs_per_step"],
        "val_accuracy": row["val_accuracy"],
        "checkpoint": front_name(epoch),
    }
    state.front = update_front(state.front, point)
    if point in state.front:
        save_weights(run_dir, point["checkpoint"], {"model": model.state_dict(), "epoch": epoch})
    state.best_epoch = best_epoch(state.history, budget)


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
    order = _epoch_order(len(train_set), config.seed, epoch)
    loader = _loader(train_set, config, order, shared=True)
    labels = kws_task(config.task).labels
    tally = _Tally(len(labels))
    sums = {"arch_loss": 0.0, "penalty": 0.0, "baseline": 0.0}
    probs = torch.zeros(model.net.num_stochastic, dtype=torch.float64)
    batches = 0
    # The reference baseline averages padded steps in, so they must run; otherwise skip them.
    padded = config.searches_architecture and config.options.baseline == "ema_reference"
    search = epoch > config.search.warmup_epochs
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
            full_network=config.search.train_full_network,
            cheapest_network=config.search.train_cheapest_network,
            paths=paths,
        )
        loss, stats = objective(out, batch.labels, batch.mask, search=search, teaches=teaches)
        loss = loss + _sandwich_loss(out, batch, config.search.distill_cheapest)
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
        distributed.average_gradients(model, int(batch.mask.sum()))  # under torchrun
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
    return itertools.cycle(_loader(held_out, config, order, shared=True))
