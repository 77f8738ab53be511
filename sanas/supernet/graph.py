"""Super network: a DAG of named nodes whose stochastic subset is switched on and off.

A node combines its predecessors' outputs (``sum`` or ``concat``) and applies its module
(``None`` means identity). An *architecture* H is a per-sample {0,1} vector over the
stochastic nodes; nodes that are not stochastic are always on. Only *used* nodes
(forward-active and backward-useful, method.md §1) are computed or charged: an unused node
outputs exact zeros, including a node that is on but has no live input.

The graph is validated at construction (unknown inputs, cycles, dangling nodes, shape
mismatches found by a dry run), each error naming the node at fault.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Literal

import torch
from torch import Tensor, nn

from sanas.supernet.executors import run_masked, run_skipping
from sanas.supernet.nodes import GraphError, Node, SuperNetOutput, combine_inputs


class SuperNetwork(nn.Module):
    """A validated DAG of nodes with one input, one output and optional feature taps.

    Args:
        input_name: name of the input node (an identity node fed with ``x``).
        input_shape: per-sample shape of ``x``, used for the validating dry run.
        nodes: every other node, in any order.
        output: the output node (the prediction).
        feature_outputs: extra node outputs returned beside the prediction.
        input_stochastic: whether the input node itself can be switched off.
    """

    def __init__(
        self,
        input_name: str,
        input_shape: Sequence[int],
        nodes: Iterable[Node],
        output: str,
        feature_outputs: Sequence[str] = (),
        input_stochastic: bool = False,
        fixed_bottlenecks: bool = False,
    ) -> None:
        super().__init__()
        node_list = [Node(input_name, (), None, "sum", input_stochastic), *nodes]
        self.input_name = input_name
        self.input_shape = tuple(int(s) for s in input_shape)
        self.output_name = output
        self.feature_outputs = tuple(feature_outputs)
        self.nodes: dict[str, Node] = {}
        for node in node_list:
            if node.name in self.nodes:
                raise GraphError(f"node '{node.name}' is declared twice")
            self.nodes[node.name] = node
        self._check_references()
        self.order: tuple[str, ...] = self._topological_order()
        self.index = {name: i for i, name in enumerate(self.order)}
        self.predecessors: tuple[tuple[int, ...], ...] = tuple(
            tuple(self.index[p] for p in self.nodes[name].inputs_tuple) for name in self.order
        )
        successors: list[list[int]] = [[] for _ in self.order]
        for i, preds in enumerate(self.predecessors):
            for p in preds:
                successors[p].append(i)
        self.successors: tuple[tuple[int, ...], ...] = tuple(tuple(s) for s in successors)
        self._check_connected()
        if fixed_bottlenecks:  # switching one off switches the network off: not a choice
            for name in self.bottleneck_names():
                self.nodes[name] = replace(self.nodes[name], stochastic=False)
        self.stochastic_names: tuple[str, ...] = tuple(
            name for name in self.order if self.nodes[name].stochastic
        )
        stochastic_index = torch.tensor(
            [self.index[n] for n in self.stochastic_names], dtype=torch.long
        )
        self.register_buffer("_stochastic_index", stochastic_index, persistent=False)
        self.modules_by_node = nn.ModuleDict(
            {name: node.module for name, node in self.nodes.items() if node.module is not None}
        )
        self.output_shapes: dict[str, tuple[int, ...]] = self._dry_run()

    # ----------------------------------------------------------------- validation
    def _check_references(self) -> None:
        for node in self.nodes.values():
            if node.name == self.input_name:
                continue
            if not node.inputs_tuple:
                raise GraphError(f"node '{node.name}' has no inputs")
            for name in node.inputs_tuple:
                if name not in self.nodes:
                    raise GraphError(f"node '{node.name}' takes input from unknown node '{name}'")
        for name in (self.output_name, *self.feature_outputs):
            if name not in self.nodes:
                raise GraphError(f"output node '{name}' is not declared")

    def _topological_order(self) -> tuple[str, ...]:
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done
        order: list[str] = []

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = [*path[path.index(name) :], name]
                raise GraphError(f"cycle through node '{name}': {' -> '.join(cycle)}")
            state[name] = 1
            for pred in self.nodes[name].inputs_tuple:
                visit(pred, [*path, name])
            state[name] = 2
            order.append(name)

        for name in self.nodes:
            visit(name, [])
        return tuple(order)

    def _check_connected(self) -> None:
        reachable = {self.index[self.input_name]}
        for i in range(len(self.order)):
            if any(p in reachable for p in self.predecessors[i]):
                reachable.add(i)
        useful = {self.index[self.output_name]}
        for i in reversed(range(len(self.order))):
            if any(s in useful for s in self.successors[i]):
                useful.add(i)
        for i, name in enumerate(self.order):
            if i not in reachable:
                raise GraphError(f"node '{name}' is dangling: it is not reachable from the input")
            if i not in useful and name not in self.feature_outputs:
                raise GraphError(f"node '{name}' is dangling: it does not lead to the output")

    @torch.no_grad()
    def _dry_run(self) -> dict[str, tuple[int, ...]]:
        was_training = self.training
        self.eval()
        try:
            device = next((p.device for p in self.parameters()), torch.device("cpu"))
            outputs: dict[str, Tensor] = {
                self.input_name: torch.zeros(2, *self.input_shape, device=device)
            }
            for name in self.order[1:]:
                node = self.nodes[name]
                tensors = [outputs[p] for p in node.inputs_tuple]
                try:
                    merged = combine_inputs(node.combine, tensors)
                except RuntimeError as err:
                    shapes = ", ".join(
                        f"{p}: {tuple(outputs[p].shape[1:])}" for p in node.inputs_tuple
                    )
                    raise GraphError(
                        f"node '{name}' cannot {node.combine} its inputs ({shapes}): {err}"
                    ) from None
                try:
                    outputs[name] = merged if node.module is None else node.module(merged)
                except RuntimeError as err:
                    raise GraphError(
                        f"node '{name}' fails on input of shape {tuple(merged.shape[1:])}: {err}"
                    ) from None
        finally:
            self.train(was_training)
        return {name: tuple(t.shape[1:]) for name, t in outputs.items()}

    def bottleneck_names(self) -> tuple[str, ...]:
        """Nodes that every path from the input to the output passes through (the input
        and output included), in topological order. With one of them off nothing reaches
        the output: a search that may switch them off mostly learns not to."""
        names = []
        for cut in self.order:
            reached: set[str] = set()
            for name in self.order:
                inputs = self.nodes[name].inputs_tuple
                if name != cut and (name == self.input_name or reached.intersection(inputs)):
                    reached.add(name)
            if self.output_name not in reached:
                names.append(cut)
        return tuple(names)

    # --------------------------------------------------------------- architectures
    @property
    def num_nodes(self) -> int:
        return len(self.order)

    @property
    def num_stochastic(self) -> int:
        return len(self.stochastic_names)

    def full_architecture(self, architecture: Tensor | None, batch_size: int) -> Tensor:
        """Expand a (batch, num_stochastic) architecture to (batch, num_nodes) booleans.

        ``None`` means every node on. A 1-D architecture is shared by the whole batch.
        """
        device = self._stochastic_index.device
        full = torch.ones(batch_size, self.num_nodes, dtype=torch.bool, device=device)
        if architecture is None:
            return full
        arch = torch.as_tensor(architecture, device=device)
        if arch.dim() == 1:
            arch = arch.unsqueeze(0).expand(batch_size, -1)
        if arch.shape != (batch_size, self.num_stochastic):
            raise ValueError(
                f"architecture must have shape ({batch_size}, {self.num_stochastic}) "
                f"(one entry per stochastic node: {', '.join(self.stochastic_names)}), "
                f"got {tuple(arch.shape)}"
            )
        full[:, self._stochastic_index] = arch.bool()
        return full

    def used(self, architecture: Tensor | None, batch_size: int = 1) -> Tensor:
        """The used set, (batch, num_nodes) booleans in topological order.

        used = forward-active ∧ backward-useful (method.md §1), vectorised over the batch.
        """
        on = self.full_architecture(architecture, batch_size)
        columns = on.unbind(dim=1)
        active: list[Tensor] = []
        for i, preds in enumerate(self.predecessors):
            if not preds:
                active.append(columns[i])
            else:
                live = active[preds[0]]
                for p in preds[1:]:
                    live = live | active[p]
                active.append(columns[i] & live)
        useful: list[Tensor | None] = [None] * self.num_nodes
        keep = {self.index[self.output_name]}
        for i in reversed(range(self.num_nodes)):
            wanted = torch.ones_like(columns[i]) if i in keep else torch.zeros_like(columns[i])
            for s in self.successors[i]:
                wanted = wanted | useful[s]  # type: ignore[operator]
            useful[i] = columns[i] & wanted
        return torch.stack([a & u for a, u in zip(active, useful, strict=True)], dim=1)  # type: ignore[operator]

    def all_architectures(self, limit: int = 16) -> Tensor:
        """Every architecture over the stochastic nodes, (2^S, S) {0,1}, for small graphs."""
        if self.num_stochastic > limit:
            raise ValueError(
                f"{self.num_stochastic} stochastic nodes make 2^{self.num_stochastic} "
                f"architectures, more than the limit 2^{limit}"
            )
        codes = torch.arange(2**self.num_stochastic).unsqueeze(1)
        bits = 2 ** torch.arange(self.num_stochastic)
        return ((codes & bits) > 0).to(torch.float32)

    def most_probable_architecture(self, probs: Tensor) -> Tensor:
        """The architecture, (S,) {0,1}, of the most probable *used set* under independent
        Bernoulli node probabilities ``probs`` (S,).

        Thresholding each node at 0.5 can pick a network that is rarely sampled: with many
        nodes at p = 0.8 most samples drop one of them, and a used set gathers the mass of
        every architecture that reduces to it. Only sets that reach the output count (the
        empty set, often the most probable, predicts nothing). Exact by enumeration (small
        graphs); ties go to the set with fewer nodes.
        """
        architectures = self.all_architectures()
        probs = probs.detach().double().clamp(1e-12, 1 - 1e-12)
        log_p = (architectures * probs.log() + (1 - architectures) * (1 - probs).log()).sum(-1)
        used = self.used(architectures, len(architectures))
        sets, group = torch.unique(used, dim=0, return_inverse=True)
        mass = torch.zeros(len(sets), dtype=torch.float64).index_add_(0, group, log_p.exp())
        output = self.index[self.output_name]
        candidates = [i for i in range(len(sets)) if sets[i, output]] or list(range(len(sets)))
        best = max(candidates, key=lambda i: (float(mass[i]), -int(sets[i].sum())))
        members = (group == best).nonzero().squeeze(1)
        return architectures[members[log_p[members].argmax()]]

    def cheapest_architecture(self, cost: Callable[[Tensor], Tensor]) -> Tensor:
        """The architecture, (S,) {0,1}, whose used set reaches the output at the lowest
        ``cost`` (a map from (batch, num_nodes) used sets to (batch,) costs): the "smallest
        network" that training can keep in shape beside the sampled ones. Exact by
        enumeration (small graphs); ties go to the set with fewer nodes, then the first."""
        architectures = self.all_architectures()
        used = self.used(architectures, len(architectures))
        reaches = used[:, self.index[self.output_name]]
        if not reaches.any():
            raise GraphError("no architecture reaches the output")
        costs = cost(used).double()
        key = torch.where(reaches, costs, torch.inf)
        cheapest = key == key.min()
        sizes = torch.where(cheapest, used.sum(-1), used.shape[1] + 1)
        return architectures[int(sizes.argmin())]

    def architecture_of(self, on: Iterable[str]) -> Tensor:
        """The (S,) {0,1} architecture that switches on the nodes named in ``on`` (nodes
        that are not stochastic are on anyway) and every other stochastic node off.

        Raises :class:`GraphError` for a name the graph lacks or a set that reaches no
        output (it would compute nothing).
        """
        names = set(on)
        unknown = sorted(names - self.index.keys())
        if unknown:
            raise GraphError(f"no node named {unknown}; nodes: {', '.join(self.order)}")
        architecture = torch.tensor([float(name in names) for name in self.stochastic_names])
        if not self.used(architecture)[0, self.index[self.output_name]]:
            raise GraphError(f"the nodes {sorted(names)} reach no path to '{self.output_name}'")
        return architecture

    def used_names(self, used_row: Tensor) -> frozenset[str]:
        """Names of the used nodes of one architecture (a row of :meth:`used`)."""
        return frozenset(
            name for name, flag in zip(self.order, used_row.tolist(), strict=True) if flag
        )

    def forward(
        self,
        x: Tensor,
        architecture: Tensor | None = None,
        executor: Literal["masked", "skipping"] = "masked",
    ) -> SuperNetOutput:
        """Run the network for per-sample architectures (see :mod:`sanas.supernet.executors`)."""
        used = self.used(architecture, x.shape[0])
        run = run_masked if executor == "masked" else run_skipping
        return run(self, x, used)
