"""Multiply-accumulates of the layers inside a super network's nodes, counted by forward
hooks on a dry run: the per-node table behind :class:`~sanas.supernet.costs.MacsCost`.

The accounting is the papers' (their "FLOPs" or "Mult"), per sample:

- *matmul* layers, what ``torch.utils.flop_counter.FlopCounterMode`` counts (at two FLOPs
  per MAC): a convolution C_in / groups · C_out · prod(kernel) · prod(output size), so
  depthwise and grouped convolutions included; a linear layer in · out per output vector;
- *element-wise* layers: a normalisation layer (batch, instance, group or layer norm, and
  any module built on one) one per output element, its scale and shift as folded for
  inference; an average pooling one per element it reads.

Biases, activations, dropout and max pooling (comparisons) are free.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.pooling import _AdaptiveAvgPoolNd, _AvgPoolNd

if TYPE_CHECKING:
    from sanas.supernet.graph import SuperNetwork

NORMS = (_NormBase, nn.GroupNorm, nn.LayerNorm)
AVERAGE_POOLS = (_AvgPoolNd, _AdaptiveAvgPoolNd)


def matmul_macs(module: nn.Module, output: Tensor) -> int:
    """MACs of a convolution or linear layer for one sample (0 for any other layer)."""
    if isinstance(module, _ConvNd):
        kernel = math.prod(module.kernel_size)
        per_position = module.in_channels // module.groups * module.out_channels * kernel
        return per_position * math.prod(output.shape[2:])
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features * (output[0].numel() // module.out_features)
    return 0


def elementwise_macs(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> int:
    """MACs of a normalisation or average pooling layer for one sample (0 for others)."""
    if isinstance(module, NORMS):
        return output[0].numel()
    if isinstance(module, AVERAGE_POOLS):
        return inputs[0][0].numel()
    return 0


def node_input_shape(net: SuperNetwork, name: str) -> tuple[int, ...]:
    """Per-sample shape of a node's merged input."""
    node = net.nodes[name]
    if not node.inputs_tuple:
        return net.input_shape
    shapes = [net.output_shapes[p] for p in node.inputs_tuple]
    if node.combine == "concat":
        return (sum(s[0] for s in shapes), *shapes[0][1:])
    return shapes[0]


@torch.no_grad()
def module_macs(net: SuperNetwork, matmul_only: bool = False) -> dict[str, int]:
    """MACs of each node's module for one sample, found by hooks on a dry run.

    ``matmul_only``: only the convolutions and linear layers, what FlopCounterMode sees.
    """
    macs = {name: 0 for name in net.order}
    for name in net.order:
        module = net.nodes[name].module
        if module is None:
            continue

        def hook(
            mod: nn.Module, inputs: tuple[Tensor, ...], output: Tensor, node: str = name
        ) -> None:
            macs[node] += matmul_macs(mod, output)
            if not matmul_only:
                macs[node] += elementwise_macs(mod, inputs, output)

        handles = [leaf.register_forward_hook(hook) for leaf in module.modules()]
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        was_training = module.training
        module.eval()
        try:
            module(torch.zeros(1, *node_input_shape(net, name), device=device))
        finally:
            module.train(was_training)
            for handle in handles:
                handle.remove()
    return macs
