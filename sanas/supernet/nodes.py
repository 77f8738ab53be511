"""The parts a super network is made of: its nodes, how a node merges its inputs, and what
a forward pass returns. Below :mod:`sanas.supernet.graph` and the executors, which both
use them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

Combine = Literal["sum", "concat"]


class GraphError(ValueError):
    """An invalid super network; the message names the node at fault."""


@dataclass
class Node:
    """One node of the DAG.

    ``inputs`` name the predecessors; their outputs are summed (``combine="sum"``) or
    concatenated along dim 1 (``"concat"``) before ``module`` is applied.
    """

    name: str
    inputs: Sequence[str] = ()
    module: nn.Module | None = None
    combine: Combine = "sum"
    stochastic: bool = True
    inputs_tuple: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise GraphError(f"node name must be a non-empty string, got {self.name!r}")
        if self.combine not in ("sum", "concat"):
            raise GraphError(
                f"node '{self.name}': combine must be 'sum' or 'concat', got {self.combine!r}"
            )
        self.inputs_tuple = tuple(self.inputs)


def combine_inputs(combine: Combine, tensors: Sequence[Tensor]) -> Tensor:
    """Merge predecessor outputs the way a node declares (sum, or concat along dim 1)."""
    if combine == "concat":
        return torch.cat(list(tensors), dim=1)
    total = tensors[0]
    for tensor in tensors[1:]:
        total = total + tensor
    return total


@dataclass
class SuperNetOutput:
    """Prediction, feature taps and the used set that produced them."""

    output: Tensor
    features: dict[str, Tensor]
    used: Tensor
