"""Small super networks shared by the core's tests."""

from __future__ import annotations

from torch import nn

from sanas.supernet.graph import SuperNetwork
from sanas.supernet.nodes import Node


def dense(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, o), nn.ReLU())


def diamond() -> SuperNetwork:
    """in → a, b (parallel) → c (sum) → out, plus a concat node feeding out's sibling path."""
    nodes = [
        Node("a", ["in"], dense(6, 8)),
        Node("b", ["in"], dense(6, 8)),
        Node("c", ["a", "b"], nn.ReLU()),
        Node("d", ["a", "b"], nn.Linear(16, 8), combine="concat"),
        Node("e", ["c", "d"], None),
        Node("out", ["e"], nn.Linear(8, 3)),
    ]
    return SuperNetwork("in", (6,), nodes, output="out", feature_outputs=("e",))
