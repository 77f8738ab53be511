"""TC-ResNet (Choi et al. 2019, "Temporal Convolution for Real-time Keyword Spotting on
Mobile Devices") as a super network.

The coefficients of a frame are the channels of a 1-D signal over time: a 3-frame
convolution to 16·k channels, then residual blocks of two 9-frame convolutions (with batch
norm, ReLU after the first and after the sum), the first of each width with stride 2 in
time and a strided 1×1 convolution on its shortcut, then global average pooling and a
linear classifier. TC-ResNet8 has three blocks (24, 32, 48 channels), TC-ResNet14 six
(24, 24, 32, 32, 48, 48); ``width`` is the paper's multiplier k (TC-ResNet14-1.5: 1.5).

Every block is skippable (:func:`~sanas.kws.model.backbone.residual_block`): a strided
block off leaves its 1×1 shortcut. Exits follow every block but the last of TC-ResNet8
and every second block of TC-ResNet14.
"""

from __future__ import annotations

from torch import Tensor, nn

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

STEM_CHANNELS = 16
# (channels, stride in time) of each block
BLOCKS = {
    8: ((24, 2), (32, 2), (48, 2)),
    14: ((24, 2), (24, 1), (32, 2), (32, 1), (48, 2), (48, 1)),
}
KERNEL = 9  # frames of a block's convolutions


class CoefficientsAsChannels(nn.Module):
    """(batch, 1, time, coefficients) → (batch, coefficients, time, 1): each coefficient a
    channel of a signal over time, so that convolutions are temporal only."""

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 3, 2, 1)


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int) -> list[nn.Module]:
    """A temporal convolution (padded to keep ⌈time / stride⌉ rows) and its batch norm."""
    conv = nn.Conv2d(c_in, c_out, (kernel, 1), (stride, 1), (kernel // 2, 0), bias=False)
    return [conv, nn.BatchNorm2d(c_out)]


def tc_resnet(
    depth: int = 8,
    num_classes: int = 12,
    width: float = 1.0,
    dropout: float = 0.0,
    exits: bool = True,
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
) -> SuperNetwork:
    """TC-ResNet8 or TC-ResNet14 (``depth``) at width multiplier ``width``, with early exits
    (BSN, SANAS) or as published (``exits=False``)."""
    if depth not in BLOCKS:
        raise ValueError(f"TC-ResNet depth must be one of {tuple(BLOCKS)}, got {depth}")
    stem = scaled(STEM_CHANNELS, width)
    body = [
        Node(
            "stem",
            [INPUT],
            nn.Sequential(
                CoefficientsAsChannels(), *_conv_bn(input_shape[2], stem, 3, 1), nn.ReLU()
            ),
            stochastic=False,
        )
    ]
    source, c_in = "stem", stem
    channels = [scaled(c, width) for c, _ in BLOCKS[depth]]
    for i, (c_out, (_, stride)) in enumerate(zip(channels, BLOCKS[depth], strict=True), start=1):
        branch = nn.Sequential(
            *_conv_bn(c_in, c_out, KERNEL, stride), nn.ReLU(), *_conv_bn(c_out, c_out, KERNEL, 1)
        )
        shortcut = None
        if stride > 1 or c_out != c_in:
            shortcut = nn.Sequential(*_conv_bn(c_in, c_out, 1, stride), nn.ReLU())
        body += residual_block(i, source, branch, nn.ReLU(), shortcut)
        source, c_in = f"res_{i}", c_out
    body.append(Node(HEAD, [source], nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())))
    every = 1 if depth == 8 else 2
    taps = {f"res_{i}": channels[i - 1] for i in range(every, len(channels), every)}
    return backbone_network(body, input_shape, c_in, taps, num_classes, exits, dropout)
