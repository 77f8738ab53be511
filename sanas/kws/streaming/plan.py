"""Plans of the streaming engine (:mod:`sanas.kws.streaming.engine`): what a step's used set
needs, resolved once per distinct architecture, and the per-stream state a plan runs on.

A plan (:class:`Plan`) lists a used set's trunk nodes (:class:`TrunkStep`: a row kernel of
:mod:`sanas.kws.streaming.row_kernels` on its source's time-major rows, kept per stream in a
:class:`RowBuffer`) and its other nodes in topological order (:class:`Op`: merge the live
inputs, apply the kernel); no unused node is in it. :class:`Planner` makes each node's
kernel once, resolves and caches plans, and runs an op on a step's values: it alone knows
which nodes hold time-major rows and so how an op takes its inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from sanas.kws.model.window_forward import TrunkLayout
from sanas.kws.streaming.row_kernels import Dense, dense_kernel, node_kernel, row_kernel
from sanas.supernet.costs import MacsCost, node_input_shape
from sanas.supernet.graph import SuperNetwork
from sanas.supernet.nodes import combine_inputs


class RowBuffer:
    """Time-major rows of one trunk node for one stream, stream rows ``first`` …
    ``first + count − 1`` at ``storage[0, offset : offset + count]``.

    A window is a contiguous slice (no copy per step), batch dim included. New rows are
    written after the kept ones; when the storage is full, the kept rows move to its front,
    once every (capacity − rows) / step steps. A capacity of at least twice the window's
    rows keeps that move free of overlap.
    """

    def __init__(self, rows: int, width: int, channels: int) -> None:
        self.capacity = 3 * rows
        self.storage = torch.empty(1, self.capacity, width, channels)
        self.first = 0
        self.offset = 0
        self.count = 0

    def kept(self, start: int) -> int:
        """How many rows from stream row ``start`` on are held."""
        return max(0, self.first + self.count - start)

    def write(self, start: int, kept: int, new: Tensor) -> None:
        """Hold stream rows from ``start`` on: ``kept`` of the held rows (at most
        :meth:`kept`), then the ``new`` rows, (1, n, width, channels)."""
        added = new.shape[1]
        self.offset = self.offset + start - self.first if kept else 0
        self.first, self.count = start, kept
        if self.offset + kept + added > self.capacity:
            self.storage[:, :kept].copy_(self.storage[:, self.offset : self.offset + kept])
            self.offset = 0
        self.storage[:, self.offset + kept : self.offset + kept + added].copy_(new)
        self.count = kept + added

    def window(self, rows: int) -> Tensor:
        """The first ``rows`` held rows, (1, rows, width, channels) (a view)."""
        return self.storage[:, self.offset : self.offset + rows]


@dataclass(frozen=True)
class TrunkStep:
    """A used trunk node: its kernel on rows of its source (a node index)."""

    index: int
    name: str
    source: int
    rows: int
    row_macs: float


@dataclass(frozen=True)
class Op:
    """A used node after the trunk: merge the live inputs, apply the kernel.

    ``inputs``: (node index, how to take it): ``"value"`` as stored, ``"nchw"`` the NCHW view
    of time-major rows, ``"zeros"`` an unused input of a concat node. ``single``: the node
    index when the input is one stored value (the common case, taken without merging).
    """

    index: int
    kernel: Callable[[Tensor], Tensor] | None
    inputs: tuple[tuple[int, str], ...]
    combine: str
    single: int | None


@dataclass
class Plan:
    """What a used set needs, resolved once per distinct architecture."""

    used: Tensor  # (1, num_nodes)
    architecture: Tensor  # (S,) bool
    trunk: tuple[TrunkStep, ...]  # used trunk nodes, in topological order
    ops: tuple[Op, ...]  # the other used nodes, in topological order
    macs_window: float
    macs_fixed: float  # executed MACs outside the trunk


@dataclass
class StreamState:
    """State of one stream."""

    frames: Tensor  # (n, coeffs) frames from ``first_frame``
    first_frame: int = 0
    step: int = 0
    previous: Tensor | None = None  # (1, F) features of the previous step
    state: Tensor | None = None  # policy state, batch of 1
    recent: list[tuple[float, Tensor, Tensor]] = field(default_factory=list)  # for output reuse
    buffers: dict[str, RowBuffer] = field(default_factory=dict)  # trunk node → its rows


def _nchw(rows: Tensor) -> Tensor:
    """The NCHW view of time-major rows (batch, time, width, channels)."""
    return rows.permute(0, 3, 1, 2)


class Planner:
    """Resolves a network's used sets into plans (each once) and runs their ops.

    Args:
        net: the super network.
        layout: its trunk (:func:`~sanas.kws.model.window_forward.trunk_layout`).
        costs: its MACs (a trunk node's are charged per computed row).
    """

    def __init__(self, net: SuperNetwork, layout: TrunkLayout, costs: MacsCost) -> None:
        self.net = net
        self.layout = layout
        self.costs = costs
        self.row_macs = {name: costs.per_node[name] / layout.rows[name] for name in layout.nodes}
        # Nodes whose values are time-major rows: the input and the trunk.
        self.rows_nodes = {net.input_name, *layout.nodes}
        self.kernels: dict[str, nn.Module] = self._make_kernels()
        self._plans: dict[tuple[bool, ...], Plan] = {}

    def _make_kernels(self) -> dict[str, nn.Module]:
        """Each node's kernel: row kernels for the trunk, :class:`Dense` where a node is a
        dense layer (on time-major rows when fed by the input or the trunk), else
        :func:`node_kernel` (a ``Sequential`` as a flat chain, batch norms folded)."""
        kernels: dict[str, nn.Module] = {}
        for name in self.net.order[1:]:
            node = self.net.nodes[name]
            if node.module is None:
                continue
            if name in self.layout.nodes:
                kernels[name] = row_kernel(node.module)
                continue
            shape = node_input_shape(self.net, name)
            on_rows = len(node.inputs_tuple) == 1 and node.inputs_tuple[0] in self.rows_nodes
            dense = dense_kernel(node.module, shape, rows=on_rows)
            kernels[name] = node_kernel(node.module) if dense is None else dense
        return kernels

    def buffers(self) -> dict[str, RowBuffer]:
        """Empty row buffers for a new stream, one per trunk node."""
        shapes = self.net.output_shapes
        return {
            name: RowBuffer(self.layout.rows[name], shapes[name][2], shapes[name][0])
            for name in self.layout.nodes
        }

    # ------------------------------------------------------------------ resolution
    def plan(self, architecture: Tensor) -> Plan:
        """The plan of an architecture (S,), resolved on its first use."""
        key = tuple(architecture.tolist())
        plan = self._plans.get(key)
        if plan is None:
            used = self.net.used(architecture.unsqueeze(0), 1)
            names = self.net.used_names(used[0])
            trunk = tuple(n for n in self.layout.nodes if n in names)
            window = float(self.costs(used)[0])
            plan = Plan(
                used=used,
                architecture=architecture.bool(),
                trunk=tuple(self._trunk_step(name) for name in trunk),
                ops=tuple(
                    self._op(name, names)
                    for name in self.net.order[1:]
                    if name in names and name not in self.layout.nodes
                ),
                macs_window=window,
                macs_fixed=window - sum(self.costs.per_node[n] for n in trunk),
            )
            self._plans[key] = plan
        return plan

    def _trunk_step(self, name: str) -> TrunkStep:
        index = self.net.index
        return TrunkStep(
            index=index[name],
            name=name,
            source=index[self.layout.inputs[name]],
            rows=self.layout.rows[name],
            row_macs=self.row_macs[name],
        )

    def _op(self, name: str, used_names: frozenset[str]) -> Op:
        node = self.net.nodes[name]
        kernel = self.kernels.get(name)
        takes_rows = isinstance(kernel, Dense) and kernel.rows
        inputs = []
        for source in node.inputs_tuple:
            if source not in used_names:
                if node.combine == "concat":
                    inputs.append((self.net.index[source], "zeros"))
                continue  # a zero term changes nothing in a sum
            as_nchw = source in self.rows_nodes and not takes_rows
            inputs.append((self.net.index[source], "nchw" if as_nchw else "value"))
        single = inputs[0][0] if len(inputs) == 1 and inputs[0][1] == "value" else None
        return Op(self.net.index[name], kernel, tuple(inputs), node.combine, single)

    # ------------------------------------------------------------------- execution
    def apply(self, op: Op, values: list[Tensor | None], batch: int) -> Tensor:
        """Merge an op's inputs the way its node declares, then apply its kernel."""
        if op.single is not None:
            value = values[op.single]
            return value if op.kernel is None else op.kernel(value)  # type: ignore[arg-type]
        tensors = []
        for index, mode in op.inputs:
            if mode == "zeros":
                shape = self.net.output_shapes[self.net.order[index]]
                tensors.append(values[0].new_zeros(batch, *shape))  # type: ignore[union-attr]
            else:
                value = values[index]
                tensors.append(_nchw(value) if mode == "nchw" else value)  # type: ignore[arg-type]
        merged = tensors[0] if len(tensors) == 1 else combine_inputs(op.combine, tensors)  # type: ignore[arg-type]
        return merged if op.kernel is None else op.kernel(merged)

    def value(self, name: str, values: list[Tensor | None], batch: int) -> Tensor:
        """A node's output as the network gives it (zeros for an unused node)."""
        value = values[self.net.index[name]]
        if value is None:
            return torch.zeros(batch, *self.net.output_shapes[name])
        return _nchw(value) if name in self.rows_nodes else value
