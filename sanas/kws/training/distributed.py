"""Training on several processes, one or more machines: ``torchrun ... -m sanas train ...``.

torchrun starts the processes and sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; when
``WORLD_SIZE`` > 1 the training loop joins them in a process group (gloo on CPUs, NCCL on
GPUs, one GPU per process). Each process takes its share of every batch (the global batch
is ``batch_size``, as one process would train it), computes its gradients, and
:func:`average_gradients` makes every process's gradients those of the whole batch, the
architecture's parameters' too, so every process takes the same optimizer step. The first
process (rank 0) alone reads and writes the run folder: it sends the starting state
(fresh, initialised or resumed from a checkpoint) to the others, validates, and saves.
With ``WORLD_SIZE`` unset or 1 every function here does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from sanas.kws.config import ConfigError

T = TypeVar("T")


def world_size() -> int:
    """How many processes train together (torchrun's ``WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's place among them (torchrun's ``RANK``; 0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process writes the run folder (rank 0)."""
    return rank() == 0


@contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Join the processes torchrun started (none to join when ``WORLD_SIZE`` ≤ 1) and
    yield this process's device: on GPUs the ``LOCAL_RANK``-th, with NCCL; else gloo."""
    if world_size() <= 1 or dist.is_initialized():
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def shard_batches(order: Sequence[int], batch_size: int) -> list[list[int]]:
    """This process's share of each batch of ``order`` (``batch_size`` sequences each, as one
    process cuts them): rank r takes the sequences r, r + W, r + 2W, ... of each. A last
    batch with fewer sequences than processes is left out (a process would have none)."""
    processes, own = world_size(), rank()
    if batch_size % processes:
        raise ConfigError(
            f"config field 'batch_size' ({batch_size}) must be a multiple of the "
            f"{processes} training processes: each takes an equal share of every batch"
        )
    batches = [list(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]
    return [batch[own::processes] for batch in batches if len(batch) >= processes]


def average_gradients(model: nn.Module, weight: float) -> None:
    """Replace each parameter's gradient by the processes' average weighted by ``weight``
    (this process's real steps): a loss that averages over each process's steps then gets
    the gradient of the average over the whole batch's steps, as one process computes it.
    A parameter that has no gradient in any process (a node no sampled architecture used)
    keeps none, so the optimizer leaves it as one process would."""
    if world_size() <= 1:
        return
    parameters = [p for p in model.parameters() if p.requires_grad]
    used = [float(p.grad is not None) for p in parameters]
    has_grad = torch.tensor([*used, float(weight)], device=parameters[0].device)
    dist.all_reduce(has_grad)
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in parameters]
    )
    flat = flat * weight
    dist.all_reduce(flat)
    flat /= has_grad[-1]
    offset = 0
    for parameter, anywhere in zip(parameters, has_grad[:-1].tolist(), strict=True):
        size = parameter.numel()
        parameter.grad = flat[offset : offset + size].view_as(parameter) if anywhere else None
        offset += size


def share(value: T) -> T:
    """The first process's ``value``, sent to every process (any picklable value; the
    others pass a placeholder): the starting state, the final result."""
    if world_size() <= 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
