"""Run a keyword-spotting super network on every window of a feature sequence.

A training sequence of F frames holds windows of 101 frames every 20 frames. The plain
path cuts the windows out and runs each one (what the reference did), so the convolutions
are recomputed on the 81 frames that consecutive windows share.

The shared path computes the *time-convolutional trunk* once per sequence: the nodes whose
output row r depends only on input rows r … r+k−1 (stride 1, no padding and no pooling in
time: conv_0 and conv_1 of cnn-trad-fpool3). Window t then takes rows 20t … 20t+R−1 of
each such node, and the executor receives them as ``precomputed`` outputs: per-window
gating stays exact, since the executor still masks every node per window. The same row
arithmetic drives the streaming engine's caches (:mod:`sanas.kws.streaming.engine`).

In training mode a dropout layer inside the trunk draws one mask per sequence row, so
overlapping windows share it, where the plain path draws one per window; in evaluation
mode both paths agree to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from sanas.kws.data.sequences import STEP_FRAMES, WINDOW_FRAMES, windows
from sanas.supernet.executors import run_masked
from sanas.supernet.graph import SuperNetwork
from sanas.supernet.nodes import SuperNetOutput

_POINTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Identity,
    nn.Dropout,
)


def cut_windows(features: Tensor) -> Tensor:
    """(batch, frames, coeffs) → (batch, steps, 1, 101, coeffs): the network's inputs."""
    return windows(features).unsqueeze(2)


def run_trunk_node(net: SuperNetwork, name: str, x: Tensor) -> Tensor:
    """Apply trunk node ``name`` to (rows of) its input; the output is contiguous (NCHW).

    A one-channel input (the features) first gets channels-last strides: the convolution
    then returns channels-last, on which PyTorch's CPU max-pooling over frequency
    (cnn-trad-fpool3's (1, 3) pool) runs about 15x faster than in NCHW. The output goes
    back to NCHW, so that the next convolution does not reorder its weights at every call
    and a Linear's flatten needs no copy. (With one channel both layouts hold the same
    bytes and ``Tensor.contiguous`` keeps the NCHW strides, hence ``empty_like``.)
    """
    if x.shape[1] == 1:
        x = torch.empty_like(x, memory_format=torch.channels_last).copy_(x)
    return net.nodes[name].module(x).contiguous()


def slides_in_time(module: nn.Module) -> bool:
    """Whether output row r of ``module`` depends only on input rows r … r+k−1 (time = dim 2).

    True for convolutions with stride 1 and no padding in time, poolings of size and stride
    1 in time, element-wise layers, and Sequentials of those.
    """
    if isinstance(module, nn.Sequential):
        return all(slides_in_time(layer) for layer in module)
    if isinstance(module, nn.Conv2d):
        no_padding = module.padding == "valid" or _pair(module.padding)[0] == 0
        return module.stride[0] == 1 and no_padding
    if isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
        kernel, stride = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
        return kernel[0] == 1 and stride[0] == 1 and _pair(module.padding)[0] == 0
    return isinstance(module, _POINTWISE)


@dataclass(frozen=True)
class TrunkLayout:
    """The time-convolutional nodes of a network and their row arithmetic.

    Each node has a single input (``inputs``: the input node or another trunk node), so a
    used trunk node always has a used input. ``rows[n]`` is its output rows per window and
    ``shrink[n]`` its input rows minus output rows: output rows a … b−1 need input rows
    a … b−1+shrink. Row r of window t is row ``t * step + r`` of the sequence, for every node.
    """

    input_name: str
    nodes: tuple[str, ...]
    inputs: dict[str, str]
    rows: dict[str, int]
    shrink: dict[str, int]
    window: int


def trunk_layout(net: SuperNetwork, nodes: Sequence[str] | None = None) -> TrunkLayout:
    """Find (``nodes=None``) or check the time-convolutional trunk of ``net``.

    Found: every node with a single input that is the input node or a trunk node, a
    (channels, time, width) output and a module that :func:`slides_in_time`.
    """
    if len(net.input_shape) != 3:
        raise ValueError(f"input shape must be (channels, time, width), got {net.input_shape}")
    unknown = set(nodes or ()) - set(net.order)
    if unknown:
        raise ValueError(f"unknown nodes: {', '.join(sorted(unknown))}")
    time_dim = 1  # per-sample shapes are (channels, time, width)
    trunk: list[str] = []
    for name in net.order[1:]:
        node = net.nodes[name]
        single = len(node.inputs_tuple) == 1
        source = node.inputs_tuple[0] if single else ""
        eligible = (
            single
            and (source == net.input_name or source in trunk)
            and node.module is not None
            and len(net.output_shapes[name]) == 3
            and slides_in_time(node.module)
        )
        if eligible and (nodes is None or name in nodes):
            trunk.append(name)
        elif nodes is not None and name in nodes:
            raise ValueError(
                f"node '{name}' cannot be shared across windows: it needs a single input "
                "from the input or another shared node and a module with stride 1, no "
                "padding and no pooling in time"
            )

    def length(name: str) -> int:
        shape = net.input_shape if name == net.input_name else net.output_shapes[name]
        return shape[time_dim]

    inputs = {name: net.nodes[name].inputs_tuple[0] for name in trunk}
    return TrunkLayout(
        input_name=net.input_name,
        nodes=tuple(trunk),
        inputs=inputs,
        rows={name: length(name) for name in trunk},
        shrink={name: length(inputs[name]) - length(name) for name in trunk},
        window=length(net.input_name),
    )


class SharedTrunk:
    """Trunk node outputs over whole sequences, (batch, C, sequence rows, W), sliced per window."""

    def __init__(self, layout: TrunkLayout, outputs: dict[str, Tensor], steps: int, step: int):
        self.layout = layout
        self.outputs = outputs
        self.steps = steps
        self.step = step

    def window(self, t: int) -> dict[str, Tensor]:
        """Outputs of window ``t`` (views), to pass as ``precomputed`` to an executor."""
        if not 0 <= t < self.steps:
            raise IndexError(f"window {t} out of range: the sequence has {self.steps} windows")
        start = t * self.step
        return {
            name: out[:, :, start : start + self.layout.rows[name]]
            for name, out in self.outputs.items()
        }

    def windows(self) -> dict[str, Tensor]:
        """Outputs of every window, flattened to (batch * steps, C, rows, W) like the windows."""
        return {
            name: out.unfold(2, self.layout.rows[name], self.step)
            .permute(0, 2, 1, 4, 3)
            .flatten(0, 1)
            for name, out in self.outputs.items()
        }


def precompute_trunk(
    net: SuperNetwork,
    features: Tensor,
    nodes: Sequence[str] | None = None,
    step: int = STEP_FRAMES,
) -> SharedTrunk:
    """Run the trunk nodes once over (batch, frames, coeffs) sequences (gradients flow).

    ``nodes`` restricts the shared nodes (default: every node :func:`trunk_layout` finds).
    """
    layout = trunk_layout(net, nodes)
    frames = features.shape[1]
    if frames < layout.window:
        raise ValueError(f"{frames} frames: shorter than a window of {layout.window} frames")
    values = {net.input_name: features.unsqueeze(1)}
    for name in layout.nodes:
        values[name] = run_trunk_node(net, name, values[layout.inputs[name]])
    steps = (frames - layout.window) // step + 1
    return SharedTrunk(layout, {name: values[name] for name in layout.nodes}, steps, step)


def _forward_windows(
    net: SuperNetwork, features: Tensor, used: Tensor, precomputed: dict[str, Tensor] | None
) -> SuperNetOutput:
    windows = cut_windows(features)
    batch, steps = windows.shape[:2]
    flat = run_masked(net, windows.flatten(0, 1), used.flatten(0, 1), precomputed=precomputed)
    return SuperNetOutput(
        output=flat.output.unflatten(0, (batch, steps)),
        features={k: v.unflatten(0, (batch, steps)) for k, v in flat.features.items()},
        used=used,
    )


def forward_windows_plain(net: SuperNetwork, features: Tensor, used: Tensor) -> SuperNetOutput:
    """Masked forward of every window; ``used`` is (batch, steps, num_nodes).

    Returns outputs shaped (batch, steps, ...).
    """
    return _forward_windows(net, features, used, None)


def forward_windows_shared(net: SuperNetwork, features: Tensor, used: Tensor) -> SuperNetOutput:
    """:func:`forward_windows_plain` with the trunk computed once per sequence (same outputs)."""
    return _forward_windows(net, features, used, precompute_trunk(net, features).windows())


__all__ = [
    "STEP_FRAMES",
    "WINDOW_FRAMES",
    "SharedTrunk",
    "TrunkLayout",
    "cut_windows",
    "forward_windows_plain",
    "forward_windows_shared",
    "precompute_trunk",
    "run_trunk_node",
    "slides_in_time",
    "trunk_layout",
]
