"""One streaming step of a trained model as a traceable torch module, what
:mod:`sanas.kws.export.onnx_export` turns into an ONNX graph.

:class:`StreamingStep` takes one step's new raw feature frames (20 × 40, before the model's
input normalisation) and the stream's state, and returns the logits, the posteriors, the
step's architecture, its MACs (the paper's per-window count of the used set, as the
engine's ``macs_window``), the MACs it executed, the feature tap, the used set and the new
state. The state, every part of it an input and an output of the graph:

- ``context``: the 81 raw frames before the new ones, so that the window is context + new;
- the **row caches**, as the streaming engine's (:mod:`sanas.kws.streaming.engine`): each
  node of the time-convolutional trunk (:func:`~sanas.kws.model.window_forward.trunk_layout`:
  stride 1, no padding and no pooling in time, fed by the input or the trunk; conv_0 and
  conv_1 of cnn-trad-fpool3) keeps its last window output, ``rows_NODE`` (1, C, R, W),
  with a flag ``fresh_NODE``: the cache is the previous step's window. A fresh node
  computes only its 20 new rows from the last 20 + k − 1 rows of its input and appends
  them to its cache shifted by 20 rows; a stale one (the stream's first step, or the node
  was off at the previous step) computes its whole window, as the engine does after more
  than four steps off (the engine also reuses part of a cache one to four steps old);
- an adaptive (SANAS) model's controller: ``first`` (no previous step yet), the GRU state,
  the previous step's feature tap and the token bucket's balance.

The used set of an architecture is looked up in a table over its 2^S codes (exact, as
:meth:`SuperNetwork.used`), each used set stored as the bits of one integer (the node
flags of BC-ResNet-1's 8,192 architectures as booleans took 237 KB); its MACs are the sum
of its used nodes' (the MAC table is additive, float64 as the engine's); the governor's
cost, which need not be additive, is a table over the codes, in the graph only when the
step holds a budget. Each node runs under
``torch.cond`` on its used flag, and each cached node under a second one on its fresh
flag, which the exporter writes as ONNX ``If`` nodes: an unused node is not computed by
the runtime and gives zeros as the engine's unused nodes do, and leaves its cache stale. A
fixed architecture (static, BSN) needs no condition on use: only its used nodes are in the
graph. The controller's choice follows
:class:`~sanas.supernet.policies.ControllerPolicy` and the bucket
:class:`~sanas.supernet.governor.BudgetGovernor` (float64, as there).

``cached=False`` gives the step without state but the controller's: the whole window of
101 raw frames in (``frames``), recomputed at every step (the benchmark's plain anchor).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from sanas.kws.model.kws_model import SANASKWS, KWSModel
from sanas.kws.model.window_forward import STEP_FRAMES, trunk_layout
from sanas.supernet.costs import MacsCost
from sanas.supernet.graph import SuperNetwork
from sanas.supernet.nodes import combine_inputs

OUTPUTS = ("logits", "posteriors", "architecture", "macs", "features", "used", "macs_executed")
CONTROLLER_STATE = ("first", "hidden", "previous", "balance")


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


def _cached_runner(net: SuperNetwork, name: str, shrink: int) -> Callable[..., Tensor]:
    """A cached trunk node's computation on ``(source, cache, fresh)``: its source's window
    (its single input) and its cache in, its window out; when ``fresh``, only the step's
    new rows are computed (their input: the source's last 20 + ``shrink`` rows)."""
    module = net.nodes[name].module
    assert module is not None  # a trunk node slides in time: it has a module
    source_shape = (1, *net.output_shapes[net.nodes[name].inputs_tuple[0]])
    shape = (1, *net.output_shapes[name])
    first_input_row = source_shape[2] - STEP_FRAMES - shrink

    def shifted(source: Tensor, cache: Tensor) -> Tensor:
        new = module(source.reshape(source_shape)[:, :, first_input_row:])
        return torch.cat([cache.reshape(shape)[:, :, STEP_FRAMES:], new], dim=2).reshape(-1)

    def whole(source: Tensor, cache: Tensor) -> Tensor:
        return module(source.reshape(source_shape)).reshape(-1)

    def run(source: Tensor, cache: Tensor, fresh: Tensor) -> Tensor:
        if torch.compiler.is_compiling():  # exporting: an ONNX If
            return torch.cond(fresh, shifted, whole, (source, cache))
        return (shifted if fresh else whole)(source, cache)

    return run


def _zeros(shape: tuple[int, ...]) -> Callable[..., Tensor]:
    """The output of an unused node: zeros of its shape (like its first input)."""

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
        cached: row caches and the feature context as state (False: the whole window
            recomputed at every step).
    """

    def __init__(
        self,
        model: KWSModel,
        architecture: Tensor | None = None,
        budget: float | None = None,
        burst: float | None = None,
        cached: bool = True,
    ) -> None:
        super().__init__()
        self.net = net = model.net
        self.model = model
        self.adaptive = isinstance(model, SANASKWS) and architecture is None
        codes = net.all_architectures()  # every architecture code, bit s = stochastic node s
        used = net.used(codes, len(codes))
        macs = MacsCost(net)
        flags = torch.int32 if net.num_nodes < 31 else torch.int64
        self.register_buffer("node_bits", 2 ** torch.arange(net.num_nodes, dtype=flags))
        self.register_buffer("used_codes", (used.to(flags) * self.node_bits).sum(1, dtype=flags))
        self.register_buffer("node_macs", macs.table)
        governed = model.cost(used).double() if budget is not None else None
        self.register_buffer("cost_table", governed)
        self.register_buffer("powers", 2 ** torch.arange(net.num_stochastic))
        if architecture is None:
            architecture = torch.ones(net.num_stochastic)
        self.register_buffer("fixed", architecture.float().unsqueeze(0))
        code = int((architecture.round().long() * self.powers).sum())
        self.fixed_names = net.used_names(used[code])
        self.register_buffer("fixed_macs", macs(used[code : code + 1]).double())
        self.register_buffer("fixed_used", used[code].unsqueeze(0))
        self.budget = budget
        self.burst = burst if burst is not None else 0.0
        if self.adaptive:
            assert isinstance(model, SANASKWS)
            threshold = model.architecture_threshold
            self.threshold_logit = math.log(threshold / (1.0 - threshold))
            self.register_buffer("fallback", model.cheapest_architecture.float().unsqueeze(0))
            self.fallback_cost = float(model.cost(net.used(self.fallback, 1))[0])
        self.cached = cached
        layout = trunk_layout(net)
        self.window = layout.window
        self.context_frames = layout.window - STEP_FRAMES
        # The trunk nodes the graph runs whose window is more than the new rows.
        self.cache_nodes = tuple(
            name
            for name in layout.nodes
            if cached
            and (self.adaptive or name in self.fixed_names)
            and layout.rows[name] > STEP_FRAMES
        )
        self.cache_runners = {
            name: _cached_runner(net, name, layout.shrink[name]) for name in self.cache_nodes
        }
        saved = [  # MACs of the rows a fresh cache holds
            macs.per_node[name] * (1 - STEP_FRAMES / layout.rows[name]) for name in self.cache_nodes
        ]
        self.register_buffer("saved_macs", torch.tensor(saved, dtype=torch.float64))
        self.register_buffer(
            "cache_columns", torch.tensor([net.index[n] for n in self.cache_nodes])
        )

    # ---------------------------------------------------------------- the graph's signature
    def input_names(self) -> list[str]:
        """The graph's inputs, in the order :meth:`forward` takes them."""
        names = ["frames"]
        if self.cached:
            names += ["context", *self._cache_names()]
        return names + (list(CONTROLLER_STATE) if self.adaptive else [])

    def output_names(self) -> list[str]:
        """The graph's outputs, in the order :meth:`forward` returns them: :data:`OUTPUTS`,
        then the new state as ``NAME_out`` (the controller's ``previous`` is ``features``)."""
        state = self.input_names()[1:]
        fed_back = [name for name in state if name not in ("first", "previous")]
        return list(OUTPUTS) + [f"{name}_out" for name in fed_back]

    def _cache_names(self) -> list[str]:
        """The cached nodes' inputs: their rows, then their fresh flags."""
        return [f"rows_{n}" for n in self.cache_nodes] + [f"fresh_{n}" for n in self.cache_nodes]

    def cache_shapes(self) -> dict[str, list[int]]:
        """Each cached node's rows, (C, R, W): the runtime's ``rows_NODE`` is (1, C, R, W)."""
        return {name: list(self.net.output_shapes[name]) for name in self.cache_nodes}

    def initial_inputs(self) -> tuple[Tensor, ...]:
        """The inputs of a stream's first step (zero frames, every cache stale), as the
        exporter traces them."""
        n_features = self.net.input_shape[2]
        if not self.cached:
            inputs: list[Tensor] = [torch.zeros(self.window, n_features)]
        else:
            inputs = [
                torch.zeros(STEP_FRAMES, n_features),
                torch.zeros(self.context_frames, n_features),
            ]
            inputs += [torch.zeros(1, *shape) for shape in self.cache_shapes().values()]
            inputs += [torch.tensor(False) for _ in self.cache_nodes]
        if self.adaptive:
            controller = self.model.controller  # type: ignore[union-attr]
            inputs += [
                torch.tensor(True),
                torch.zeros(1, controller.hidden),
                torch.zeros(1, controller.feature_dim),
                torch.zeros(1, dtype=torch.float64),
            ]
        return tuple(inputs)

    def tier_macs(self) -> dict[str, float]:
        """MACs per window of the cheapest and of the full architecture the step can run (a
        fixed architecture: its own, both). Not every tier: BC-ResNet-1's 8,192 architectures
        listed node by node were 386 KB of metadata, 40 % of its file; the graph outputs each
        step's MACs."""
        if not self.adaptive:
            return dict.fromkeys(("cheapest", "full"), float(self.fixed_macs[0]))
        full = torch.ones_like(self.fallback)
        return {
            "cheapest": float(self._lookup(self.fallback)[1][0]),
            "full": float(self._lookup(full)[1][0]),
        }

    # --------------------------------------------------------------------------- the step
    def _code(self, architecture: Tensor) -> Tensor:
        """The (1,) code of a (1, S) architecture: bit s is stochastic node s."""
        return (architecture.round().long() * self.powers).sum(dim=1)

    def _lookup(self, architecture: Tensor) -> tuple[Tensor, Tensor]:
        """Used set (N,) bool and MACs (1,) of a (1, S) architecture."""
        used = (self.used_codes[self._code(architecture)] // self.node_bits) % 2 > 0
        return used, (used.to(self.node_macs.dtype) * self.node_macs).sum().reshape(1)

    def _network(
        self, window: Tensor, used: Tensor | None, caches: dict[str, tuple[Tensor, Tensor]]
    ) -> list[Tensor | None]:
        """Every node's value on one window (None: not in the graph): each node under a
        condition on ``used`` (N,) bool, or, when None, only the fixed architecture's
        used nodes; the cached nodes from ``caches`` (name → rows, fresh)."""
        net = self.net
        values: list[Tensor | None] = [window]
        for i, name in enumerate(net.order[1:], start=1):
            shape = net.output_shapes[name]
            inputs = [
                window.new_zeros((1, *net.output_shapes[p])) if values[j] is None else values[j]
                for j, p in zip(net.predecessors[i], net.nodes[name].inputs_tuple, strict=True)
            ]
            if name in caches:  # its source's window, its rows and its fresh flag
                run, inputs = self.cache_runners[name], [*inputs, *caches[name]]
            else:
                run = _node_runner(net, name)
            if used is None:
                flat = run(*inputs) if name in self.fixed_names else None
            elif torch.compiler.is_compiling():  # exporting: an ONNX If
                flat = torch.cond(used[i], run, _zeros(shape), tuple(inputs))
            else:  # eager (eager torch.cond would compile every node)
                flat = (run if used[i] else _zeros(shape))(*inputs)
            values.append(None if flat is None else flat.reshape(1, *shape))
        return values

    def _value(self, name: str, values: list[Tensor | None], like: Tensor) -> Tensor:
        value = values[self.net.index[name]]
        return like.new_zeros((1, *self.net.output_shapes[name])) if value is None else value

    def forward(self, frames: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        """The inputs of :meth:`input_names` → the outputs of :meth:`output_names`."""
        caches: dict[str, tuple[Tensor, Tensor]] = {}
        context_out: list[Tensor] = []
        window = frames
        if self.cached:
            count = len(self.cache_nodes)
            context, rows, fresh = state[0], state[1 : 1 + count], state[1 + count : 1 + 2 * count]
            state = state[1 + 2 * count :]
            window = torch.cat([context, frames])
            context_out = [window[STEP_FRAMES:]]
            caches = {n: (r, f) for n, r, f in zip(self.cache_nodes, rows, fresh, strict=True)}
        controller_out: list[Tensor] = []
        if self.adaptive:
            architecture, controller_out = self._choose(*state)
            used, macs = self._lookup(architecture)
        else:
            architecture, used, macs = self.fixed, None, self.fixed_macs
        normalised = self.model.input_norm(window).unsqueeze(0).unsqueeze(0)
        values = self._network(normalised, used, caches)
        net = self.net
        logits = self._value(net.output_name, values, normalised)
        posteriors = torch.softmax(self.model.logits(logits), dim=1)
        tap = self._value(net.feature_outputs[0], values, normalised)
        used_row = self.fixed_used if used is None else used.unsqueeze(0)
        executed = macs
        rows_out, fresh_out = [], []
        if caches:
            run = used_row[0, self.cache_columns]
            fresh = torch.stack([f for _, f in caches.values()])
            executed = macs - (self.saved_macs * (run & fresh)).sum()
            rows_out = [self._value(name, values, normalised) for name in self.cache_nodes]
            fresh_out = list(run.unbind())
        outputs = (logits, posteriors, architecture, macs, tap, used_row, executed.reshape(1))
        return (*outputs, *context_out, *rows_out, *fresh_out, *controller_out)

    def _choose(
        self, first: Tensor, hidden: Tensor, previous: Tensor, balance: Tensor
    ) -> tuple[Tensor, list[Tensor]]:
        """The controller's architecture (1, S) for this step and its new state."""
        controller = self.model.controller  # type: ignore[union-attr]
        start = controller.initial_state(1)
        hidden = torch.where(first, start, controller.gru(previous, hidden))
        chosen = (controller.head(hidden) > self.threshold_logit).float()
        architecture = chosen
        if self.budget is not None:
            available = balance + self.budget
            assert self.cost_table is not None  # a budget's step keeps the cost table
            wanted = self.cost_table[self._code(chosen)]
            affordable = wanted <= available
            architecture = torch.where(affordable.unsqueeze(1), chosen, self.fallback)
            spent = torch.where(affordable, wanted, torch.full_like(wanted, self.fallback_cost))
            balance = torch.clamp(available - spent, max=self.burst)
        return architecture, [hidden, balance]
