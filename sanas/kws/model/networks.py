"""Keyword-spotting super networks: cnn-trad-fpool3, with or without its four shortcuts.

Node names, shapes and costs follow method.md §4. Input per step: 1 × 101 × 40 (101
frames of 10 ms, 40 coefficients). Models are made by name from :data:`MODELS`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from sanas.supernet.graph import SuperNetwork
from sanas.supernet.nodes import Node

INPUT_SHAPE = (1, 101, 40)
FEATURES_DIM = 128
# Used sets of cnn-trad-fpool3 + shortcuts, one per cost tier (method.md §4): the cheapest
# path, conv_0 without conv_1, and every node.
KWS_TIERS: dict[str, frozenset[str]] = {
    "cheap": frozenset({"in", "shortcut_0", "features", "classifier"}),
    "conv_0": frozenset({"in", "conv_0", "shortcut_0", "shortcut_1", "features", "classifier"}),
    "full": frozenset(
        {"in", "conv_0", "conv_1", "lin_0", "lin_1", "features", "classifier"}
        | {f"shortcut_{i}" for i in range(4)}
    ),
}


def _dense(
    in_features: int, out_features: int, dropout: float, flatten: bool = False
) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    layers += [nn.Linear(in_features, out_features), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def cnn_trad_fpool3(
    num_classes: int = 12,
    shortcuts: bool = False,
    dropout: float = 0.0,
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
    channels: int = 64,
    fixed_bottlenecks: bool = False,
) -> SuperNetwork:
    """cnn-trad-fpool3 (Sainath & Parada 2015) as a super network, optionally with shortcuts.

    Every node, the input included, is stochastic, as in SANAS; static models simply run
    with every node on. ``fixed_bottlenecks``: in, features and classifier, which every
    path crosses, are always on instead. ``channels`` (64 in the paper) gives a narrower
    profile for CPU-bound experiments; the paper's figures need the default.
    """
    _, frames, coefficients = input_shape
    conv0_frames, conv0_bins = frames - 19, (coefficients - 7) // 3
    conv1_frames, conv1_bins = conv0_frames - 9, conv0_bins - 3
    conv0_flat = channels * conv0_frames * conv0_bins
    conv1_flat = channels * conv1_frames * conv1_bins
    conv_0 = [nn.Conv2d(1, channels, kernel_size=(20, 8)), nn.MaxPool2d((1, 3)), nn.ReLU()]
    conv_1 = [nn.Conv2d(channels, channels, kernel_size=(10, 4)), nn.ReLU()]
    if dropout:
        conv_0.append(nn.Dropout(dropout))
        conv_1.append(nn.Dropout(dropout))
    nodes = [
        Node("conv_0", ["in"], nn.Sequential(*conv_0)),
        Node("conv_1", ["conv_0"], nn.Sequential(*conv_1)),
        Node("lin_0", ["conv_1"], _dense(conv1_flat, 32, 0.0, flatten=True)),
        Node("lin_1", ["lin_0"], _dense(32, FEATURES_DIM, dropout)),
    ]
    feature_inputs = ["lin_1"]
    if shortcuts:
        nodes += [
            Node(
                "shortcut_0",
                ["in"],
                _dense(frames * coefficients, FEATURES_DIM, dropout, flatten=True),
            ),
            Node("shortcut_1", ["conv_0"], _dense(conv0_flat, FEATURES_DIM, dropout, flatten=True)),
            Node("shortcut_2", ["conv_1"], _dense(conv1_flat, FEATURES_DIM, dropout, flatten=True)),
            Node("shortcut_3", ["lin_0"], _dense(32, FEATURES_DIM, dropout)),
        ]
        feature_inputs += ["shortcut_0", "shortcut_1", "shortcut_2", "shortcut_3"]
    nodes += [
        Node("features", feature_inputs, nn.ReLU()),
        Node("classifier", ["features"], nn.Linear(FEATURES_DIM, num_classes)),
    ]
    return SuperNetwork(
        "in",
        input_shape,
        nodes,
        output="classifier",
        feature_outputs=("features",),
        input_stochastic=True,
        fixed_bottlenecks=fixed_bottlenecks,
    )


MODELS: dict[str, Callable[..., SuperNetwork]] = {
    "cnn-trad-fpool3": lambda **kw: cnn_trad_fpool3(shortcuts=False, **kw),
    "cnn-trad-fpool3-shortcuts": lambda **kw: cnn_trad_fpool3(shortcuts=True, **kw),
}


def build_model(name: str, **options: object) -> SuperNetwork:
    """Make a registered keyword-spotting super network by name."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    return MODELS[name](**options)
