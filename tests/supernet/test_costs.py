"""Cost registry: the KWS cost table, MACs against PyTorch's FLOP counter, other costs."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sanas.kws.model.networks import build_model
from sanas.supernet.costs import (
    COSTS,
    LatencyTable,
    MacsCost,
    build_cost,
    cost_summary,
    latency_fit,
    measure_latency_table,
    module_macs,
    node_input_shape,
    parallel_rounds,
)
from sanas.supernet.graph import SuperNetwork
from sanas.supernet.nodes import Node
from tests.supernet.helpers import dense, diamond


def test_registry_holds_every_cost_kind() -> None:
    assert {"macs", "params", "activation_memory", "latency", "parallel", "custom"} <= set(COSTS)
    with pytest.raises(ValueError, match="unknown cost 'flops'"):
        build_cost("flops", diamond())


def test_cnn_trad_fpool3_cost_table_matches_the_paper() -> None:
    summary = cost_summary(build_model("cnn-trad-fpool3"))
    assert summary["total_macs"] == 124_593_664
    assert summary["params"] == 1_376_044
    assert summary["nodes"]["conv_0"] == 27_709_440
    assert summary["nodes"]["conv_1"] == 95_682_560


def test_shortcut_network_totals_tiers_and_cheapest_path() -> None:
    summary = cost_summary(build_model("cnn-trad-fpool3-shortcuts"))
    assert summary["total_macs"] == 137_288_704
    assert summary["min_used_macs"] == 519_168
    assert summary["nodes"]["shortcut_1"] == 7_389_184
    assert summary["nodes"]["features"] == 512
    assert 35_100_672 in summary["tiers"]  # in → conv_0 → shortcut_1 → features → classifier


def test_exact_accounting_charges_only_live_additions() -> None:
    net = build_model("cnn-trad-fpool3-shortcuts")
    cheapest = torch.zeros(1, net.num_nodes, dtype=torch.bool)
    for name in ("in", "shortcut_0", "features", "classifier"):
        cheapest[0, net.index[name]] = True
    assert MacsCost(net, adds="reference")(cheapest).item() == 519_168
    assert MacsCost(net, adds="exact")(cheapest).item() == 519_168 - 512
    everything = net.used(None, 1)
    assert MacsCost(net, adds="exact")(everything).item() == 137_288_704


def test_analytic_macs_equal_half_of_pytorch_flop_counter_per_node() -> None:
    net = build_model("cnn-trad-fpool3-shortcuts", channels=16)
    analytic = module_macs(net)
    for name, node in net.nodes.items():
        if node.module is None:
            continue
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            node.module(torch.zeros(1, *node_input_shape(net, name)))
        assert counter.get_total_flops() == 2 * analytic[name], name


def test_params_cost_counts_weights_or_bytes() -> None:
    net = diamond()
    everything = net.used(None, 1)
    count = build_cost("params", net)(everything).item()
    assert count == sum(p.numel() for p in net.parameters())
    assert build_cost("params", net, bytes_per_param=2)(everything).item() == 2 * count


def test_activation_memory_is_the_peak_of_a_topological_run_that_frees_early() -> None:
    nodes = [
        dense_node("a", "in", 4, 100),
        dense_node("b", "a", 100, 10),
        dense_node("c", "b", 10, 2),
    ]
    net = SuperNetwork("in", (4,), nodes, output="c")
    peak = build_cost("activation_memory", net)(net.used(None, 1)).item()
    # in (16 B) is kept; a (400 B) and b (40 B) coexist while b is computed; then a is freed
    assert peak == 16 + 400 + 40
    only_b_off = net.used(torch.tensor([1.0, 0.0, 1.0]))
    assert build_cost("activation_memory", net)(only_b_off).item() == 0


def dense_node(name: str, source: str, i: int, o: int) -> Node:
    return Node(name, [source], dense(i, o))


def test_parallel_rounds_follow_greedy_list_scheduling() -> None:
    net = diamond()
    everything = net.used_names(net.used(None, 1)[0])
    # a, b | c, d | e | out on two workers; one worker runs the six nodes one by one
    assert parallel_rounds(net, everything, workers=2) == 4
    assert parallel_rounds(net, everything, workers=1) == 6
    assert build_cost("parallel", net, workers=2)(net.used(None, 3)).tolist() == [4.0] * 3


def test_custom_black_box_cost_plugs_in_and_is_memoised() -> None:
    calls: list[frozenset[str]] = []

    def production_cost(used: frozenset[str]) -> float:
        calls.append(used)
        return 10.0 * ("d" in used) + len(used)

    net = diamond()
    cost = build_cost("custom", net, fn=production_cost)
    architectures = torch.tensor([[1.0, 1, 1, 1, 1, 1], [1.0, 1, 1, 1, 1, 1], [1.0, 1, 1, 0, 1, 1]])
    values = cost(net.used(architectures, 3)).tolist()
    assert values == [17.0, 17.0, 6.0]
    assert len(calls) == 2
    with pytest.raises(TypeError, match="needs a callable"):
        build_cost("custom", net, fn=42)


def test_latency_table_round_trips_and_predicts_positive_times(tmp_path) -> None:
    net = diamond()
    table = measure_latency_table(net, repeats=3, warmup=1, calibration_architectures=6)
    table.save(tmp_path / "latency.json")
    loaded = LatencyTable.load(tmp_path / "latency.json")
    assert loaded == table
    assert json.loads((tmp_path / "latency.json").read_text())["batch_size"] == 1
    cost = build_cost("latency", net, table=loaded)
    assert cost(net.used(None, 1)).item() > 0
    report = latency_fit(net, loaded, architectures=5, repeats=3)
    assert 0.0 <= report["within_10pct"] <= 1.0


def test_cost_of_an_architecture_is_the_cost_of_its_used_set() -> None:
    net = diamond()
    macs = build_cost("macs", net)
    on_but_cut_off = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # a and b off
    assert macs.of_architecture(net, on_but_cut_off).item() == 0


def test_linear_node_macs_count_leading_dimensions() -> None:
    net = SuperNetwork("in", (5, 4), [Node("a", ["in"], nn.Linear(4, 3))], output="a")
    assert module_macs(net)["a"] == 5 * 4 * 3


def test_layer_macs_follow_the_papers_conventions() -> None:
    """Depthwise convolutions count per group; a norm one MAC per output element (its
    folded scale and shift); average pooling one per element read; max pooling, biases and
    activations nothing. FlopCounterMode sees exactly the convolutions (matmul_only)."""
    depthwise = nn.Conv2d(6, 6, (3, 1), padding=(1, 0), groups=6, bias=True)
    layers = nn.Sequential(
        depthwise,  # 6 · 3 per position, 6 · 10 · 4 outputs of 1: 720
        nn.BatchNorm2d(6),  # 240
        nn.SiLU(),
        nn.MaxPool2d((1, 2)),  # 0: comparisons
        nn.AvgPool2d((2, 1)),  # reads 6 · 10 · 2 = 120
        nn.GroupNorm(3, 6),  # 6 · 5 · 2 = 60
        nn.AdaptiveAvgPool2d(1),  # reads 60
    )
    net = SuperNetwork("in", (6, 10, 4), [Node("a", ["in"], layers)], output="a")
    assert module_macs(net)["a"] == 720 + 240 + 120 + 60 + 60
    assert module_macs(net, matmul_only=True)["a"] == 720
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        layers.eval()(torch.zeros(1, 6, 10, 4))
    assert counter.get_total_flops() == 2 * 720
