"""BC-ResNet (Kim et al. 2021, "Broadcasted Residual Learning for Efficient Keyword
Spotting") as a super network; BC-ResNet-τ has τ times BC-ResNet-1's channels.

Layout here is (channels, time, frequency). A 5×5 convolution with stride 2 in frequency
(16τ channels), then 12 broadcasted residual blocks in four stages of 2, 2, 4 and 4 blocks
(8τ, 12τ, 16τ, 20τ channels; stride 2 in frequency at the start of stages 2 and 3; temporal
dilation 1, 2, 4, 8), then a 5×5 depthwise convolution over the last 5 frequency bins, a
1×1 convolution to 32τ channels, average pooling and a linear classifier. A block computes

    y = ReLU(x + f2(x) + broadcast(f1(mean over frequency of f2(x))))

with f2 a 3-bin frequency-depthwise convolution and sub-spectral norm (5 sub-bands), f1 a
3-frame temporal depthwise convolution, batch norm, swish, a 1×1 convolution and channel
dropout. A stage's first block, whose width changes, starts with a 1×1 convolution (batch
norm, ReLU) and has no identity path: it always runs (``trans_*``). The other eight are
skippable (``block_*``: off, y = x). Exits follow stages 1, 2 and 3.
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

BASE_CHANNELS = 8  # BC-ResNet-1's; the widths are multiples of it
STAGES = (2, 2, 4, 4)  # blocks per stage
STAGE_WIDTHS = (1.0, 1.5, 2.0, 2.5)  # stage channels, in base channels
STRIDED_STAGES = (2, 3)  # stages whose first block halves the frequency bins
SUB_BANDS = 5


class SubSpectralNorm(nn.Module):
    """Batch norm with statistics and affine parameters per channel *and* frequency
    sub-band (Chang et al. 2021): the bins split into ``sub_bands`` contiguous groups."""

    def __init__(self, channels: int, sub_bands: int = SUB_BANDS) -> None:
        super().__init__()
        self.sub_bands = sub_bands
        self.norm = nn.BatchNorm2d(channels * sub_bands)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, time, bins = x.shape
        bands = x.reshape(batch, channels, time, self.sub_bands, bins // self.sub_bands)
        y = self.norm(bands.transpose(2, 3).reshape(batch, -1, time, bins // self.sub_bands))
        return y.reshape(batch, channels, self.sub_bands, time, -1).transpose(2, 3).reshape_as(x)


class BroadcastResidual(nn.Module):
    """f2(x) + broadcast(f1(frequency mean of f2(x))): a BC-ResBlock's residual (and, in a
    transition block, with the 1×1 convolution that changes the width in front of f2)."""

    def __init__(self, c_in: int, c_out: int, stride: int, dilation: int, dropout: float) -> None:
        super().__init__()
        front: list[nn.Module] = []
        if c_in != c_out:
            front = [nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        frequency = nn.Conv2d(c_out, c_out, (1, 3), (1, stride), (0, 1), groups=c_out, bias=False)
        self.f2 = nn.Sequential(*front, frequency, SubSpectralNorm(c_out))
        self.frequency_mean = nn.AdaptiveAvgPool2d((None, 1))
        temporal = nn.Conv2d(
            c_out, c_out, (3, 1), padding=(dilation, 0), dilation=(dilation, 1), groups=c_out,
            bias=False,
        )  # fmt: skip
        self.f1 = nn.Sequential(
            temporal,
            nn.BatchNorm2d(c_out),
            nn.SiLU(),
            nn.Conv2d(c_out, c_out, 1, bias=False),
            nn.Dropout2d(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        local = self.f2(x)
        return local + self.f1(self.frequency_mean(local))


def _stage_nodes(
    stage: int, source: str, c_in: int, c_out: int, first: int, dropout: float
) -> list[Node]:
    """A stage's nodes: its transition block ``trans_{stage}``, then skippable blocks
    numbered from ``first``; the last node is the stage's output."""
    stride = 2 if stage in STRIDED_STAGES else 1
    dilation = 2 ** (stage - 1)
    transition = nn.Sequential(BroadcastResidual(c_in, c_out, stride, dilation, dropout), nn.ReLU())
    nodes = [Node(f"trans_{stage}", [source], transition, stochastic=False)]
    source = f"trans_{stage}"
    for index in range(first, first + STAGES[stage - 1] - 1):
        branch = BroadcastResidual(c_out, c_out, 1, dilation, dropout)
        nodes += residual_block(index, source, branch, nn.ReLU())
        source = f"res_{index}"
    return nodes


def bc_resnet(
    tau: float = 1.0,
    num_classes: int = 12,
    width: float = 1.0,
    dropout: float = 0.1,
    exits: bool = True,
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
) -> SuperNetwork:
    """BC-ResNet-``tau`` at ``width`` times its channels (BC-ResNet-(τ · width)), with early
    exits (BSN, SANAS) or as published (``exits=False``); ``dropout``: the blocks' channel
    dropout (the paper's 0.1)."""
    base = scaled(BASE_CHANNELS, tau * width)
    stem = 2 * base
    body = [
        Node(
            "stem",
            [INPUT],
            nn.Sequential(
                nn.Conv2d(1, stem, 5, (1, 2), 2, bias=False), nn.BatchNorm2d(stem), nn.ReLU()
            ),
            stochastic=False,
        )
    ]
    source, c_in, first = "stem", stem, 1
    taps: dict[str, int] = {}
    for stage, share in enumerate(STAGE_WIDTHS, start=1):
        c_out = int(base * share)
        body += _stage_nodes(stage, source, c_in, c_out, first, dropout)
        source, c_in, first = body[-1].name, c_out, first + STAGES[stage - 1] - 1
        if stage < len(STAGES):
            taps[source] = c_out
    embedding = 4 * base
    head = nn.Sequential(
        nn.Conv2d(c_in, c_in, 5, padding=(2, 0), groups=c_in, bias=False),
        nn.Conv2d(c_in, embedding, 1, bias=False),
        nn.BatchNorm2d(embedding),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    body.append(Node(HEAD, [source], head))
    return backbone_network(body, input_shape, embedding, taps, num_classes, exits)
