"""Two ways to run a super network for per-sample architectures, with the same outputs.

- :func:`run_masked` computes every node on the whole batch and multiplies by the used
  mask: one dense pass, what training on per-sample architectures needs.
- :func:`run_skipping` runs each node only on the samples that use it; a node that no
  sample uses never has its module called. Unused nodes yield exact zeros in both.

Both accept ``precomputed``: node outputs (before masking) that the caller already has,
e.g. convolutions computed once over a whole sequence or rows kept in a streaming cache;
those nodes' modules are not called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import Tensor, nn

from sanas.supernet.nodes import SuperNetOutput, combine_inputs

if TYPE_CHECKING:
    from sanas.supernet.graph import SuperNetwork

NodeCall = Callable[[str, nn.Module, Tensor], Tensor]


def default_call(name: str, module: nn.Module, x: Tensor) -> Tensor:
    """Call a node's module; executors accept a replacement (e.g. a streaming cache)."""
    return module(x)


def _mask(used_column: Tensor, like: Tensor) -> Tensor:
    return used_column.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def run_masked(
    net: SuperNetwork, x: Tensor, used: Tensor, precomputed: dict[str, Tensor] | None = None
) -> SuperNetOutput:
    """Compute all nodes on the full batch and zero the outputs of unused ones."""
    precomputed = precomputed or {}
    outputs: list[Tensor] = []
    for i, name in enumerate(net.order):
        node = net.nodes[name]
        if i == 0:
            value = x
        elif name in precomputed:
            value = precomputed[name]
        else:
            merged = combine_inputs(node.combine, [outputs[p] for p in net.predecessors[i]])
            value = merged if node.module is None else node.module(merged)
        outputs.append(value * _mask(used[:, i], value))
    return _collect(net, outputs, used)


def run_skipping(
    net: SuperNetwork,
    x: Tensor,
    used: Tensor,
    call: NodeCall = default_call,
    precomputed: dict[str, Tensor] | None = None,
) -> SuperNetOutput:
    """Compute each node only for the samples that use it; skip it entirely when none do.

    Outputs of unused nodes are exact zeros; samples are gathered and scattered only when
    a node is used by part of the batch, so batch size 1 runs with no indexing overhead.
    """
    precomputed = precomputed or {}
    batch = x.shape[0]
    counts = used.sum(dim=0).tolist()
    outputs: list[Tensor | None] = [None] * net.num_nodes
    for i, name in enumerate(net.order):
        if counts[i] == 0:
            continue
        node = net.nodes[name]
        everyone = counts[i] == batch
        rows = None if everyone else used[:, i].nonzero().squeeze(1)
        if i == 0 or name in precomputed:
            given = x if i == 0 else precomputed[name]
            value = given if everyone else given.index_select(0, rows)
        else:
            value = _gather_inputs(net, i, outputs, rows, batch)
            if node.module is not None:
                value = call(name, node.module, value)
        if not everyone:
            value = value.new_zeros(batch, *value.shape[1:]).index_copy(0, rows, value)
        outputs[i] = value

    def dense(name: str) -> Tensor:
        out = outputs[net.index[name]]
        return out if out is not None else x.new_zeros(batch, *net.output_shapes[name])

    return SuperNetOutput(
        output=dense(net.output_name),
        features={name: dense(name) for name in net.feature_outputs},
        used=used,
    )


def _gather_inputs(
    net: SuperNetwork, i: int, outputs: list[Tensor | None], rows: Tensor | None, batch: int
) -> Tensor:
    """Merge a node's live predecessor outputs for the selected rows (zeros stand for the rest)."""
    node = net.nodes[net.order[i]]
    tensors: list[Tensor] = []
    for p in net.predecessors[i]:
        out = outputs[p]
        if out is None:
            if node.combine == "sum":
                continue  # a zero term changes nothing in a sum
            ref = next(o for o in outputs if o is not None)
            n_rows = batch if rows is None else rows.numel()
            out = ref.new_zeros(n_rows, *net.output_shapes[net.order[p]])
        elif rows is not None:
            out = out.index_select(0, rows)
        tensors.append(out)
    return combine_inputs(node.combine, tensors)


def _collect(net: SuperNetwork, outputs: list[Tensor], used: Tensor) -> SuperNetOutput:
    return SuperNetOutput(
        output=outputs[net.index[net.output_name]],
        features={name: outputs[net.index[name]] for name in net.feature_outputs},
        used=used,
    )
