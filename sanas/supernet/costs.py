"""Costs of architectures: a registry in which every entry can be the budgeted cost.

A cost maps the used set of a batch of architectures, (batch, num_nodes) booleans from
:meth:`SuperNetwork.used`, to one float64 number per sample. Nothing here needs to be
differentiable: budgets are learned by REINFORCE, so a black-box production cost model
plugs in exactly like the analytic multiply-accumulate count.

Registered names: ``macs``, ``params``, ``activation_memory``, ``latency``, ``parallel``,
``custom``; :func:`build_cost` makes one by name.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from sanas.supernet.executors import run_skipping
from sanas.supernet.graph import SuperNetwork
from sanas.supernet.layer_macs import module_macs, node_input_shape

CostFactory = Callable[..., "Cost"]
COSTS: dict[str, CostFactory] = {}


def register_cost(name: str) -> Callable[[CostFactory], CostFactory]:
    """Register a cost factory ``factory(net, **options) -> Cost`` under ``name``."""

    def decorate(factory: CostFactory) -> CostFactory:
        COSTS[name] = factory
        return factory

    return decorate


def build_cost(name: str, net: SuperNetwork, **options: object) -> Cost:
    """Make the registered cost ``name`` for ``net``."""
    if name not in COSTS:
        raise ValueError(f"unknown cost {name!r}; registered costs: {', '.join(sorted(COSTS))}")
    return COSTS[name](net, **options)


class Cost:
    """Base class: ``cost(used) -> (batch,) float64``."""

    name = "cost"
    unit = ""

    def __call__(self, used: Tensor) -> Tensor:
        raise NotImplementedError

    def of_architecture(self, net: SuperNetwork, architecture: Tensor | None) -> Tensor:
        """Cost of (a batch of) architectures over the stochastic nodes."""
        batch = 1 if architecture is None or architecture.dim() == 1 else architecture.shape[0]
        return self(net.used(architecture, batch))


class AdditiveCost(Cost):
    """offset + Σ_n c_n · used_n for a fixed per-node table."""

    def __init__(
        self,
        net: SuperNetwork,
        per_node: dict[str, float],
        name: str,
        unit: str = "",
        offset: float = 0.0,
    ):
        self.net = net
        self.offset = offset
        self.name = name
        self.unit = unit
        self.per_node = {n: float(per_node.get(n, 0.0)) for n in net.order}
        self.table = torch.tensor([self.per_node[n] for n in net.order], dtype=torch.float64)

    def __call__(self, used: Tensor) -> Tensor:
        return self.offset + used.to(torch.float64) @ self.table.to(used.device)


# ------------------------------------------------------------------------- MACs
def aggregation_adds(net: SuperNetwork, name: str) -> int:
    """Element-wise additions of a sum node with all its inputs live ((k−1) · size)."""
    node = net.nodes[name]
    if node.combine != "sum" or len(node.inputs_tuple) < 2:
        return 0
    return (len(node.inputs_tuple) - 1) * math.prod(node_input_shape(net, name))


class MacsCost(AdditiveCost):
    """Multiply-accumulates of the used sub-network (method.md §4 conventions; each layer
    as :mod:`sanas.supernet.layer_macs` counts it).

    ``adds="reference"`` charges a used sum node for all its declared inputs (the papers'
    accounting, e.g. 512 for the KWS features node); ``adds="exact"`` charges only the
    additions between its live inputs.
    """

    def __init__(self, net: SuperNetwork, adds: Literal["reference", "exact"] = "reference"):
        if adds not in ("reference", "exact"):
            raise ValueError(f"adds must be 'reference' or 'exact', got {adds!r}")
        per_module = module_macs(net)
        self.adds = adds
        self.add_cost = {name: aggregation_adds(net, name) for name in net.order}
        per_node = {n: per_module[n] + self.add_cost[n] for n in net.order}
        super().__init__(net, per_node, name="macs", unit="MACs")
        self.module_table = torch.tensor([per_module[n] for n in net.order], dtype=torch.float64)

    def __call__(self, used: Tensor) -> Tensor:
        if self.adds == "reference":
            return super().__call__(used)
        total = used.to(torch.float64) @ self.module_table.to(used.device)
        for i, name in enumerate(self.net.order):
            if self.add_cost[name] == 0:
                continue
            live = used[:, list(self.net.predecessors[i])].sum(dim=1)
            per_input = self.add_cost[name] / (len(self.net.predecessors[i]) - 1)
            total += used[:, i] * (live - 1).clamp_min(0).to(torch.float64) * per_input
        return total


@register_cost("macs")
def macs_cost(net: SuperNetwork, adds: Literal["reference", "exact"] = "reference") -> Cost:
    """Multiply-accumulates (papers' "FLOPs")."""
    return MacsCost(net, adds=adds)


@register_cost("params")
def params_cost(net: SuperNetwork, bytes_per_param: int | None = None) -> Cost:
    """Weights of the used nodes: a count, or bytes when ``bytes_per_param`` is given."""
    per_node = {
        name: float(sum(p.numel() for p in node.module.parameters()))
        for name, node in net.nodes.items()
        if node.module is not None
    }
    if bytes_per_param is None:
        return AdditiveCost(net, per_node, name="params", unit="parameters")
    scaled = {n: v * bytes_per_param for n, v in per_node.items()}
    return AdditiveCost(net, scaled, name="params", unit="bytes")


# ---------------------------------------------------------- activation memory
class ActivationMemoryCost(Cost):
    """Peak bytes of live activations when the used sub-graph runs in topological order.

    Each used node's output is allocated when computed and freed after its last used
    consumer; the input, the output and feature taps stay alive to the end.
    """

    name = "activation_memory"
    unit = "bytes"

    def __init__(self, net: SuperNetwork, bytes_per_element: int = 4):
        self.net = net
        self.size = torch.tensor(
            [math.prod(net.output_shapes[n]) * bytes_per_element for n in net.order],
            dtype=torch.float64,
        )
        self.kept = {net.index[n] for n in (net.output_name, *net.feature_outputs)} | {0}

    def __call__(self, used: Tensor) -> Tensor:
        net, size = self.net, self.size.to(used.device)
        order_index = torch.arange(net.num_nodes, device=used.device)
        last_use = torch.full_like(used, -1, dtype=torch.long)
        for p in range(net.num_nodes):
            succ = list(net.successors[p])
            if succ and p not in self.kept:
                last_use[:, p] = (
                    (used[:, succ] * order_index[succ])
                    .amax(dim=1)
                    .where(used[:, succ].any(dim=1), torch.full_like(last_use[:, p], -1))
                )
        live = torch.zeros(used.shape[0], dtype=torch.float64, device=used.device)
        peak = live.clone()
        for i in range(net.num_nodes):
            live = live + used[:, i] * size[i]
            peak = torch.maximum(peak, live)
            freed = (last_use == i) & used
            live = live - (freed.to(torch.float64) * size).sum(dim=1)
        return peak


@register_cost("activation_memory")
def activation_memory_cost(net: SuperNetwork, bytes_per_element: int = 4) -> Cost:
    """Peak activation bytes of the used sub-graph."""
    return ActivationMemoryCost(net, bytes_per_element)


def cost_summary(net: SuperNetwork, cost: Cost | None = None) -> dict[str, object]:
    """Totals, per-node table and the cheapest architecture that reaches the output.

    ``cost`` defaults to MACs with the reference accounting. The cheapest useful cost is
    found by enumerating every architecture (small graphs only). Counts (MACs, parameters,
    bytes, rounds) come as ints, other costs (seconds) as floats.
    """
    cost = cost or MacsCost(net)
    everything = net.used(None, 1)
    summary: dict[str, object] = {
        "cost": cost.name,
        f"total_{cost.name}": _number(cost(everything)[0]),
        "params": int(params_cost(net)(everything)[0]),
        "nodes": {
            name: _number(
                cost(torch.nn.functional.one_hot(torch.tensor([i]), net.num_nodes).bool())[0]
            )
            for i, name in enumerate(net.order)
        },
    }
    if net.num_stochastic <= 16:
        architectures = net.all_architectures()
        used = net.used(architectures, len(architectures))
        reaches = used[:, net.index[net.output_name]]
        values = cost(used)
        summary[f"min_used_{cost.name}"] = _number(values[reaches].min())
        summary["tiers"] = sorted({_number(v) for v in values[reaches].tolist()})
    return summary


def _number(value: float | Tensor) -> int | float:
    """A cost as a plain number: an int when it is a whole count, else a float."""
    number = float(value)
    return int(number) if number.is_integer() else number


# -------------------------------------------------------------- row-wise costs
class RowwiseCost(Cost):
    """A cost computed one architecture at a time, memoised on the used set."""

    def __init__(self, net: SuperNetwork, fn: Callable[[frozenset[str]], float], name: str):
        self.net = net
        self.fn = fn
        self.name = name
        self._memo: dict[frozenset[str], float] = {}

    def __call__(self, used: Tensor) -> Tensor:
        values = []
        for row in used.cpu():
            key = self.net.used_names(row)
            if key not in self._memo:
                self._memo[key] = float(self.fn(key))
            values.append(self._memo[key])
        return torch.tensor(values, dtype=torch.float64, device=used.device)


def parallel_rounds(net: SuperNetwork, used_nodes: frozenset[str], workers: int) -> int:
    """Sequential rounds for ``workers`` to run the used graph (unit-time greedy list scheduling).

    Every round, up to ``workers`` ready nodes run, those with the longest remaining path
    to the output first (critical-path priority, as in BSN). The input node is free.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    nodes = [n for n in net.order if n in used_nodes and n != net.input_name]
    if not nodes:
        return 0
    preds = {
        n: [p for p in net.nodes[n].inputs_tuple if p in used_nodes and p != net.input_name]
        for n in nodes
    }
    height: dict[str, int] = {}
    for n in reversed(nodes):
        succ = [net.order[s] for s in net.successors[net.index[n]] if net.order[s] in used_nodes]
        height[n] = 1 + max((height[s] for s in succ), default=0)
    done: set[str] = set()
    rounds = 0
    while len(done) < len(nodes):
        ready = [
            (-height[n], net.index[n], n)
            for n in nodes
            if n not in done and all(p in done for p in preds[n])
        ]
        chosen = [n for _, _, n in heapq.nsmallest(workers, ready)]
        done.update(chosen)
        rounds += 1
    return rounds


@register_cost("parallel")
def parallel_cost(net: SuperNetwork, workers: int = 2) -> Cost:
    """Rounds needed on ``workers`` parallel workers (BSN's parallelisation cost)."""
    return RowwiseCost(net, lambda used: parallel_rounds(net, used, workers), name="parallel")


@register_cost("custom")
def custom_cost(
    net: SuperNetwork, fn: Callable[[frozenset[str]], float], name: str = "custom"
) -> Cost:
    """Any black-box callable from the set of used node names to a number."""
    if not callable(fn):
        raise TypeError(
            f"custom cost needs a callable from used node names to a number, got {fn!r}"
        )
    return RowwiseCost(net, fn, name=name)


# ---------------------------------------------------------------------- latency
@dataclass
class LatencyTable:
    """Measured seconds per node on one device and batch size, plus calibrated overheads.

    predicted(arch) = base_s + Σ_used (scale · per_node_s[n] + overhead_s)

    ``scale`` absorbs what in-context module timings systematically miss of a whole pass
    (allocation, cache effects), ``overhead_s`` the executor's bookkeeping per used node.
    """

    per_node_s: dict[str, float]
    base_s: float
    overhead_s: float
    device: str
    batch_size: int
    scale: float = 1.0

    def predict(self, net: SuperNetwork, used: Tensor) -> Tensor:
        """Predicted seconds for each used set."""
        return latency_cost(net, table=self)(used)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the table as JSON, atomically."""
        path = Path(path)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
            json.dump(asdict(self), f, indent=2)
        os.replace(f.name, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LatencyTable:
        return cls(**json.loads(Path(path).read_text()))


def _median_time(
    fn: Callable[[], object], device: torch.device, repeats: int, warmup: int
) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def time_architecture(
    net: SuperNetwork, used: Tensor, x: Tensor, repeats: int = 20, warmup: int = 3
) -> float:
    """Median seconds of one skipping forward pass for a fixed used set."""
    return _median_time(lambda: run_skipping(net, x, used), x.device, repeats, warmup)


@torch.no_grad()
def measure_latency_table(
    net: SuperNetwork,
    batch_size: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    calibration_architectures: int = 16,
    seed: int = 0,
) -> LatencyTable:
    """Time each node's module in context, then calibrate fixed overheads.

    Modules are timed inside real forward passes of the full network (through the skipping
    executor's call hook), so caches and threads are as they will be when predicting. The
    executor's own bookkeeping lies outside every module: ``base_s``, ``scale`` and
    ``overhead_s`` (per used node) are fitted by least squares on
    ``calibration_architectures`` random sub-networks.
    """
    net.eval()
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    samples: dict[str, list[float]] = {name: [] for name in net.order}

    def timed_call(name: str, module: nn.Module, x: Tensor) -> Tensor:
        sync()
        start = time.perf_counter()
        out = module(x)
        sync()
        samples[name].append(time.perf_counter() - start)
        return out

    x = torch.randn(batch_size, *net.input_shape, device=device)
    everything = net.used(None, batch_size)
    for _ in range(warmup):
        run_skipping(net, x, everything)
    for _ in range(repeats):
        run_skipping(net, x, everything, call=timed_call)
    per_node = {name: statistics.median(t) if t else 0.0 for name, t in samples.items()}
    table = LatencyTable(per_node, 0.0, 0.0, str(device), batch_size)
    used = random_used_sets(net, calibration_architectures, seed)
    measured = torch.tensor(
        [
            time_architecture(net, row.unsqueeze(0).expand(batch_size, -1), x, repeats, warmup)
            for row in used
        ],
        dtype=torch.float64,
    )
    module_sum = table.predict(net, used)
    design = torch.stack(
        [torch.ones_like(module_sum), module_sum, used.sum(dim=1).to(torch.float64)], dim=1
    )
    weight = 1.0 / measured.unsqueeze(1)  # least *relative* error: cheap networks count too
    solution = torch.linalg.lstsq(design * weight, measured.unsqueeze(1) * weight).solution
    solution = solution.squeeze(1).tolist()
    table.base_s, table.scale, table.overhead_s = solution
    return table


def random_used_sets(net: SuperNetwork, count: int, seed: int) -> Tensor:
    """Distinct used sets that reach the output, from random architectures (p_on in 0.2…0.95)."""
    generator = torch.Generator().manual_seed(seed)
    seen: dict[tuple[bool, ...], Tensor] = {}
    for _ in range(count * 50):
        p = 0.2 + 0.75 * torch.rand(1, generator=generator).item()
        arch = torch.rand(net.num_stochastic, generator=generator) < p
        row = net.used(arch, 1)[0]
        if row[net.index[net.output_name]]:
            seen.setdefault(tuple(row.tolist()), row)
        if len(seen) == count:
            break
    return torch.stack(list(seen.values()))


def latency_fit(
    net: SuperNetwork,
    table: LatencyTable,
    architectures: int = 30,
    seed: int = 1,
    repeats: int = 20,
) -> dict[str, float]:
    """How well per-node sums predict measured end-to-end times of random sub-architectures.

    Returns the share of architectures predicted within ±10% and the median relative error.
    """
    used = random_used_sets(net, architectures, seed)
    device = torch.device(table.device)
    x = torch.randn(table.batch_size, *net.input_shape, device=device)
    measured = torch.tensor(
        [
            time_architecture(net, row.unsqueeze(0).expand(table.batch_size, -1), x, repeats)
            for row in used
        ],
        dtype=torch.float64,
    )
    relative = (table.predict(net, used) - measured).abs() / measured
    return {
        "architectures": float(len(used)),
        "within_10pct": float((relative <= 0.10).double().mean()),
        "median_relative_error": float(relative.median()),
    }


@register_cost("latency")
def latency_cost(
    net: SuperNetwork, table: LatencyTable | None = None, **measure_options: object
) -> Cost:
    """Predicted seconds from a measured per-node table (measured now when none is given)."""
    table = table or measure_latency_table(net, **measure_options)  # type: ignore[arg-type]
    per_node = {n: table.scale * t + table.overhead_s for n, t in table.per_node_s.items()}
    return AdditiveCost(net, per_node, name="latency", unit="s", offset=table.base_s)
