"""What the keyword-spotting backbones share (TC-ResNet, BC-ResNet, res8/res15): skippable
residual blocks, early exits and the head that merges them, so that each family's file
holds only its own layers.

A backbone's *body* is a list of nodes from the input ``in`` to ``head``, the published
network's last layers down to its pooled embedding (D values), and ``classifier`` is the
published final linear layer on ``features``. Its gates are what residual networks offer:

- **Skippable blocks.** A residual block is two nodes: ``block_i``, its residual branch
  (stochastic), and ``res_i``, the sum of the branch and the identity path (the block's
  input, or a strided shortcut node) through the block's output layer. With the branch
  off, ``res_i`` is the identity path alone: the block is skipped, not the network.
- **Early exits** (``exits=True``, BSN and SANAS). Each tap (a stage's output) and the
  input itself get a small head to the same D values: global average pooling and a linear
  layer, the input a 4 × 10 grid of average features. ``features`` sums the live ones with
  ``head`` (as cnn-trad-fpool3's shortcuts, method.md §4): with the body's later nodes
  off the network exits early, and with the input's exit alone it is a linear classifier
  of well under 1 % of the full cost. Without exits (a static model) ``features`` is the
  embedding and the full network is the published one.

Widths scale with ``width`` (a share of the published channels: a model's ``channels`` / 64,
so that 64 is the paper's network and 16 a CPU profile); every layer keeps at least one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

from torch import nn

from sanas.supernet.graph import SuperNetwork
from sanas.supernet.nodes import Node

INPUT = "in"
HEAD = "head"
FEATURES = "features"
CLASSIFIER = "classifier"
EXIT_PREFIX = "exit_"  # the early exits' nodes: exit_0 on the input, exit_k on the k-th tap
PAPER_CHANNELS = 64  # a model's ``channels`` at which a backbone has its published widths
INPUT_EXIT_GRID = (4, 10)  # time segments × frequency bands the input's exit averages


def scaled(channels: float, width: float) -> int:
    """Published ``channels`` at ``width`` (rounded down, at least 1)."""
    return max(1, int(channels * width))


def residual_block(
    index: int,
    source: str,
    branch: nn.Module,
    merge: nn.Module | None = None,
    shortcut: nn.Module | None = None,
) -> list[Node]:
    """Nodes of a skippable residual block fed by ``source``: ``block_{index}`` (the
    branch, stochastic), ``shortcut_{index}`` when the identity path needs a layer (a
    stride or a change of width; always on) and ``res_{index}`` = merge(branch + identity).
    """
    identity = source
    nodes = [Node(f"block_{index}", [source], branch)]
    if shortcut is not None:
        identity = f"shortcut_{index}"
        nodes.append(Node(identity, [source], shortcut, stochastic=False))
    nodes.append(Node(f"res_{index}", [f"block_{index}", identity], merge, stochastic=False))
    return nodes


def pooled_exit(channels: int, dim: int) -> nn.Sequential:
    """An early exit on a (channels, time, frequency) tap: global average, linear, ReLU."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, dim), nn.ReLU())


def grid_average(size: tuple[int, int], grid: tuple[int, int]) -> nn.Module:
    """``AdaptiveAvgPool2d(grid)`` on maps of ``size``, as the plain ``AvgPool2d`` that
    computes the same when its bins along each axis have one length at a regular stride
    (101 frames in 4 segments: 26 frames every 25). An adaptive pooling whose bins do not
    divide its input exports to ONNX as a gather with a table of indices (8 KB in a
    TC-ResNet8's file); the plain one as one ``AveragePool``."""
    kernel, stride = [], []
    for n, bins in zip(size, grid, strict=True):
        starts = [i * n // bins for i in range(bins)]
        lengths = {-((i + 1) * n // -bins) - start for i, start in enumerate(starts)}
        steps = {b - a for a, b in pairwise(starts)} or {1}
        if len(lengths) > 1 or len(steps) > 1:
            return nn.AdaptiveAvgPool2d(grid)
        kernel.append(lengths.pop())
        stride.append(steps.pop())
    return nn.AvgPool2d(tuple(kernel), tuple(stride))


def input_exit(dim: int, size: tuple[int, int]) -> nn.Sequential:
    """The exit on the input window itself (``size``: its frames × features): average
    features on a 4 × 10 grid of time segments and frequency bands, linear, ReLU (a few
    thousand MACs)."""
    cells = INPUT_EXIT_GRID[0] * INPUT_EXIT_GRID[1]
    return nn.Sequential(
        grid_average(size, INPUT_EXIT_GRID), nn.Flatten(), nn.Linear(cells, dim), nn.ReLU()
    )


def backbone_network(
    body: Sequence[Node],
    input_shape: tuple[int, int, int],
    embedding: int,
    taps: Mapping[str, int],
    num_classes: int,
    exits: bool,
    dropout: float = 0.0,
) -> SuperNetwork:
    """The super network of a backbone's ``body`` (nodes from ``in`` to ``head``, whose
    output is the ``embedding``-dim pooled vector), with ``features`` and ``classifier``.

    ``taps`` maps the nodes that get an early exit to their channels (used with ``exits``
    only); ``dropout`` precedes the classifier.
    """
    nodes = list(body)
    merged = [HEAD]
    if exits:
        nodes.append(Node(f"{EXIT_PREFIX}0", [INPUT], input_exit(embedding, input_shape[1:])))
        for k, (tap, channels) in enumerate(taps.items(), start=1):
            nodes.append(Node(f"{EXIT_PREFIX}{k}", [tap], pooled_exit(channels, embedding)))
        merged = [f"{EXIT_PREFIX}{k}" for k in range(len(taps) + 1)] + merged
    classifier = [nn.Dropout(dropout)] if dropout else []
    classifier.append(nn.Linear(embedding, num_classes))
    nodes += [
        Node(FEATURES, merged, None, stochastic=False),
        Node(CLASSIFIER, [FEATURES], nn.Sequential(*classifier), stochastic=False),
    ]
    return SuperNetwork(INPUT, input_shape, nodes, output=CLASSIFIER, feature_outputs=(FEATURES,))


def backbone_nodes(net: SuperNetwork) -> tuple[str, ...]:
    """The nodes of ``net`` that are not early exits: with every exit off, the published
    network. Raises ``ValueError`` for a network without exits (nothing to tell apart)."""
    if not any(name.startswith(EXIT_PREFIX) for name in net.order):
        raise ValueError(
            f"the network has no early exits (nodes named {EXIT_PREFIX}*): its backbone is "
            "the whole network"
        )
    return tuple(name for name in net.order if not name.startswith(EXIT_PREFIX))
