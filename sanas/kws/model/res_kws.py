"""res8 and res15 (Tang & Lin 2018, "Deep Residual Learning for Small-Footprint Keyword
Spotting"; their honk configurations) as super networks.

A bias-free 3×3 convolution to 45 channels and ReLU (res8: then a 4×3 average pooling),
then 3×3 convolutions in residual pairs, each convolution followed by ReLU and batch norm
without affine parameters, with the normalisation of a pair's second convolution applied
after the sum; res15 adds a 13th convolution after its six pairs and dilates its
convolutions by 1, 2, 4, 8 and 16 (three at a time), res8 has three pairs and no dilation;
then global average pooling and a linear classifier.

Each pair is a skippable block (:func:`~sanas.kws.model.backbone.residual_block`). The
residual stream itself is un-normalised (honk adds the block to the previous *sum*), so the
normalisation after a sum belongs to what reads it next: the next block, or the head.
With a block off the stream passes unchanged. Exits follow blocks 1 and 2 of res8, 2 and 4
of res15.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from sanas.kws.model.backbone import (
    HEAD,
    INPUT,
    backbone_network,
    residual_block,
    scaled,
)
from sanas.kws.model.networks import INPUT_SHAPE
from sanas.supernet.graph import SuperNetwork
from sanas.supernet.nodes import Node

CHANNELS = 45


@dataclass(frozen=True)
class ResConfig:
    """A depth's layout: residual blocks, the average pooling after the first convolution,
    a convolution after the blocks, and dilations growing ×2 every three convolutions."""

    blocks: int
    pool: tuple[int, int] | None
    last_conv: bool
    dilated: bool


CONFIGS = {
    8: ResConfig(blocks=3, pool=(4, 3), last_conv=False, dilated=False),
    15: ResConfig(blocks=6, pool=None, last_conv=True, dilated=True),
}


def _conv_relu_norm(channels: int, dilation: int, norm: bool = True) -> list[nn.Module]:
    """A bias-free 3×3 convolution (dilated, padded to keep the size), ReLU, batch norm."""
    conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
    return [conv, nn.ReLU(), *([nn.BatchNorm2d(channels, affine=False)] if norm else [])]


def _head(channels: int, dilations: Sequence[int]) -> nn.Sequential:
    """The normalisation of the stream, any convolutions after the last block, pooling."""
    layers: list[nn.Module] = [nn.BatchNorm2d(channels, affine=False)]
    for dilation in dilations:
        layers += _conv_relu_norm(channels, dilation)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def res_kws(
    depth: int = 15,
    num_classes: int = 12,
    width: float = 1.0,
    dropout: float = 0.0,
    exits: bool = True,
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
) -> SuperNetwork:
    """res8 or res15 (``depth``) at ``width`` times 45 channels, with early exits (BSN,
    SANAS) or as published (``exits=False``)."""
    if depth not in CONFIGS:
        raise ValueError(f"res depth must be one of {tuple(CONFIGS)}, got {depth}")
    config = CONFIGS[depth]
    blocks = config.blocks
    channels = scaled(CHANNELS, width)
    convs = 2 * blocks + int(config.last_conv)
    dilations = [2 ** (i // 3) if config.dilated else 1 for i in range(convs)]
    stem: list[nn.Module] = [nn.Conv2d(1, channels, 3, padding=1, bias=False), nn.ReLU()]
    if config.pool:
        stem.append(nn.AvgPool2d(config.pool))
    body = [Node("stem", [INPUT], nn.Sequential(*stem), stochastic=False)]
    source = "stem"
    for b in range(1, blocks + 1):
        first, second = dilations[2 * b - 2], dilations[2 * b - 1]
        normalise = [nn.BatchNorm2d(channels, affine=False)] if b > 1 else []
        branch = nn.Sequential(
            *normalise,
            *_conv_relu_norm(channels, first),
            *_conv_relu_norm(channels, second, norm=False),
        )
        body += residual_block(b, source, branch)
        source = f"res_{b}"
    body.append(Node(HEAD, [source], _head(channels, dilations[2 * blocks :])))
    every = 1 if depth == 8 else 2
    taps = {f"res_{b}": channels for b in range(every, blocks, every)}
    return backbone_network(body, input_shape, channels, taps, num_classes, exits, dropout)
