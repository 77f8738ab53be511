"""One streaming step of a trained model as a traceable torch module, what
:mod:`sanas.kws.export.onnx_export` turns into an ONNX graph.

:class:`StreamingStep` takes one step's window of raw feature frames (101 × 40, before the
model's input normalisation) and, for an adaptive (SANAS) model, the controller's state:
``first`` (no previous step yet), the GRU state, the previous step's feature tap and the
token bucket's balance. It returns the logits, the posteriors, the step's architecture,
its MACs (the paper's per-window count of the used set, as the engine's
``macs_window``) and the new state.

The used set, the MACs and the governor's cost of an architecture are looked up in tables
over its 2^S codes (exact, as :meth:`SuperNetwork.used`). Each node runs under
``torch.cond`` on its used flag, which the exporter writes as an ONNX ``If``: an unused
node is not computed by the runtime, and gives zeros as the engine's unused nodes do. A
fixed architecture (static, BSN) needs no condition: only its used nodes are in the graph.
The controller's choice follows :class:`~sanas.supernet.policies.ControllerPolicy` and the
bucket :class:`~sanas.supernet.governor.BudgetGovernor` (float64, as there).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from sanas.kws.model.kws_model import SANASKWS, KWSModel
from sanas.supernet.costs import MacsCost
from sanas.supernet.graph import SuperNetwork
from sanas.supernet.nodes import combine_inputs


def architecture_tables(model: KWSModel) -> tuple[Tensor, Tensor, Tensor]:
    """Over every architecture code (bit s = stochastic node s): the used sets (2^S, N)
    bool, the engine's MACs per window (2^S,) float64 and the governor's costs (2^S,)."""
    net = model.net
    architectures = net.all_architectures()
    used = net.used(architectures, len(architectures))
    return used, MacsCost(net)(used).double(), model.cost(used).double()


def _node_runner(net: SuperNetwork, name: str) -> Callable[..., Tensor]:
    """A node's computation: merge its inputs (reshaped to their declared shapes, which
    ``torch.cond`` then sees as static) and apply its module."""
    node = net.nodes[name]

    shapes = [(1, *net.output_shapes[p]) for p in node.inputs_tuple]

    def run(*inputs: Tensor) -> Tensor:
        reshaped = [x.reshape(s) for x, s in zip(inputs, shapes, strict=True)]
        merged = combine_inputs(node.combine, reshaped)
        out = merged if node.module is None else node.module(merged)
        return out.reshape(-1)  # flat: torch.cond compares the branches' strides

    return run


def _zeros(shape: tuple[int, ...]) -> Callable[..., Tensor]:
    """The output of an unused node: zeros of its shape."""

    size = math.prod(shape)

    def zeros(*inputs: Tensor) -> Tensor:
        return inputs[0].new_zeros(size)

    return zeros


class StreamingStep(nn.Module):
    """A trained model's streaming step (see the module docstring).

    Args:
        model: the trained model, in eval mode.
        architecture: a fixed (S,) architecture (None for a SANAS model: its controller
            chooses; None for another model: every node on).
        budget: a SANAS model's mean MACs per step held by a token bucket (None: none).
        burst: the bucket's capacity in MACs (e.g. budget × 30).
    """

    def __init__(
        self,
        model: KWSModel,
        architecture: Tensor | None = None,
        budget: float | None = None,
        burst: float | None = None,
    ) -> None:
        super().__init__()
        self.net = model.net
        self.model = model
        self.adaptive = isinstance(model, SANASKWS) and architecture is None
        used, macs, governed = architecture_tables(model)
        self.register_buffer("used_table", used)
        self.register_buffer("macs_table", macs)
        self.register_buffer("cost_table", governed)
        self.register_buffer("powers", 2 ** torch.arange(self.net.num_stochastic))
        if architecture is None:
            architecture = torch.ones(self.net.num_stochastic)
        self.register_buffer("fixed", architecture.float().unsqueeze(0))
        code = int((architecture.round().long() * self.powers).sum())
        self.fixed_names = self.net.used_names(used[code])
        self.register_buffer("fixed_macs", macs[code].reshape(1))
        self.register_buffer("fixed_used", used[code].unsqueeze(0))
        self.budget = budget
        self.burst = burst if burst is not None else 0.0
        if self.adaptive:
            assert isinstance(model, SANASKWS)
            threshold = model.architecture_threshold
            self.threshold_logit = math.log(threshold / (1.0 - threshold))
            self.register_buffer("fallback", model.cheapest_architecture.float().unsqueeze(0))
            self.fallback_cost = float(self._lookup(self.fallback)[2])

    def _lookup(self, architecture: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Used set (N,), MACs (1,) and governor cost (1,) of a (1, S) architecture."""
        code = (architecture.round().long() * self.powers).sum(dim=1)
        return self.used_table[code][0], self.macs_table[code], self.cost_table[code]

    def _network(self, window: Tensor, used: Tensor | None) -> tuple[Tensor, Tensor]:
        """The network's output and feature tap on one window: each node under a condition
        on ``used`` (N,) bool, or, when None, only the fixed architecture's used nodes."""
        net = self.net
        values: list[Tensor | None] = [window]
        for i, name in enumerate(net.order[1:], start=1):
            shape = net.output_shapes[name]
            inputs = [
                window.new_zeros((1, *net.output_shapes[p])) if values[j] is None else values[j]
                for j, p in zip(net.predecessors[i], net.nodes[name].inputs_tuple, strict=True)
            ]
            if used is None:
                run = name in self.fixed_names
                flat = _node_runner(net, name)(*inputs) if run else None
            elif torch.compiler.is_compiling():  # exporting: an ONNX If
                flat = torch.cond(used[i], _node_runner(net, name), _zeros(shape), tuple(inputs))
            else:  # eager (eager torch.cond would compile every node)
                flat = (_node_runner(net, name) if used[i] else _zeros(shape))(*inputs)
            values.append(None if flat is None else flat.reshape(1, *shape))
        output, tap = net.output_name, net.feature_outputs[0]
        return self._value(output, values, window), self._value(tap, values, window)

    def _value(self, name: str, values: list[Tensor | None], like: Tensor) -> Tensor:
        value = values[self.net.index[name]]
        return like.new_zeros((1, *self.net.output_shapes[name])) if value is None else value

    def _outputs(self, frames: Tensor, used: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Logits, posteriors and feature tap of (101, 40) raw frames."""
        window = self.model.input_norm(frames).unsqueeze(0).unsqueeze(0)
        logits, tap = self._network(window, used)
        posteriors = torch.softmax(self.model.logits(logits), dim=1)
        return logits, posteriors, tap

    def forward(self, frames: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        """A fixed architecture: ``(frames)`` → (logits, posteriors, architecture, macs,
        features, used). Adaptive: ``(frames, first, hidden, previous, balance)`` → the
        same and (hidden, balance)."""
        if not self.adaptive:
            logits, posteriors, tap = self._outputs(frames, None)
            return logits, posteriors, self.fixed, self.fixed_macs, tap, self.fixed_used
        first, hidden, previous, balance = state
        controller = self.model.controller  # type: ignore[union-attr]
        start = controller.initial_state(1)
        hidden = torch.where(first, start, controller.gru(previous, hidden))
        chosen = (controller.head(hidden) > self.threshold_logit).float()
        architecture = chosen
        if self.budget is not None:
            available = balance + self.budget
            wanted = self._lookup(chosen)[2]
            affordable = wanted <= available
            architecture = torch.where(affordable.unsqueeze(1), chosen, self.fallback)
            spent = torch.where(affordable, wanted, torch.full_like(wanted, self.fallback_cost))
            balance = torch.clamp(available - spent, max=self.burst)
        used, macs, _ = self._lookup(architecture)
        logits, posteriors, tap = self._outputs(frames, used)
        return logits, posteriors, architecture, macs, tap, used.unsqueeze(0), hidden, balance
