"""The super network graph: validation at construction and the used set."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sanas.supernet.graph import SuperNetwork
from sanas.supernet.nodes import GraphError, Node
from tests.supernet.helpers import dense, diamond


def chain(*names: str) -> list[Node]:
    """in → names[0] → names[1] → … with 4-wide linear layers."""
    previous, nodes = "in", []
    for name in names:
        nodes.append(Node(name, [previous], nn.Linear(4, 4)))
        previous = name
    return nodes


def test_nodes_are_ordered_topologically_and_shapes_found_by_dry_run() -> None:
    net = diamond()
    assert (
        net.order.index("a") < net.order.index("c") < net.order.index("e") < net.order.index("out")
    )
    assert net.output_shapes["d"] == (8,)
    assert net.output_shapes["out"] == (3,)
    assert net.stochastic_names == ("a", "b", "c", "d", "e", "out")


def test_cycle_is_rejected_naming_the_nodes() -> None:
    nodes = [Node("a", ["in", "b"], nn.Linear(4, 4)), Node("b", ["a"], nn.Linear(4, 4))]
    with pytest.raises(GraphError, match=r"cycle through node '(a|b)'.*a -> b|b -> a"):
        SuperNetwork("in", (4,), nodes, output="b")


def test_unknown_input_is_rejected_naming_the_node() -> None:
    with pytest.raises(GraphError, match="node 'a' takes input from unknown node 'ghost'"):
        SuperNetwork("in", (4,), [Node("a", ["ghost"], nn.Linear(4, 4))], output="a")


def test_node_that_does_not_lead_to_the_output_is_dangling() -> None:
    nodes = [*chain("a", "b"), Node("orphan", ["a"], nn.Linear(4, 4))]
    with pytest.raises(
        GraphError, match=r"node 'orphan' is dangling: it does not lead to the output"
    ):
        SuperNetwork("in", (4,), nodes, output="b")


def test_nodes_feeding_each_other_away_from_the_input_are_a_cycle() -> None:
    nodes = [
        Node("island", ["island_src"], nn.Linear(4, 4)),
        Node("island_src", ["island"], nn.Linear(4, 4)),
    ]
    with pytest.raises(GraphError, match=r"cycle through node 'island"):
        SuperNetwork("in", (4,), [*chain("a"), *nodes], output="a")


def test_shape_mismatch_found_by_dry_run_names_the_node() -> None:
    nodes = [Node("a", ["in"], nn.Linear(4, 8)), Node("b", ["a"], nn.Linear(4, 2))]
    with pytest.raises(GraphError, match="node 'b' fails on input of shape \\(8,\\)"):
        SuperNetwork("in", (4,), nodes, output="b")


def test_sum_of_mismatched_inputs_names_the_node() -> None:
    nodes = [
        Node("a", ["in"], nn.Linear(4, 8)),
        Node("b", ["in"], nn.Linear(4, 5)),
        Node("c", ["a", "b"], None),
    ]
    with pytest.raises(GraphError, match="node 'c' cannot sum its inputs"):
        SuperNetwork("in", (4,), nodes, output="c")


def test_duplicate_names_and_missing_output_are_rejected() -> None:
    with pytest.raises(GraphError, match="declared twice"):
        SuperNetwork("in", (4,), [*chain("a"), *chain("a")], output="a")
    with pytest.raises(GraphError, match="output node 'zzz' is not declared"):
        SuperNetwork("in", (4,), chain("a"), output="zzz")


def test_node_that_is_on_without_a_live_input_is_not_used() -> None:
    net = SuperNetwork("in", (4,), chain("a", "b", "c"), output="c")
    used = net.used(torch.tensor([0.0, 1.0, 1.0]))  # a off: b and c are on but have no input
    assert used.tolist() == [[False, False, False, False]]  # nothing reaches the output


def test_node_whose_successors_are_off_is_not_used() -> None:
    net = SuperNetwork("in", (4,), chain("a", "b", "c"), output="c")
    used = net.used(torch.tensor([1.0, 1.0, 0.0]))  # c off: nothing useful downstream
    assert used.tolist() == [[False, False, False, False]]


def test_used_set_is_vectorised_over_a_batch_of_architectures() -> None:
    net = diamond()
    architectures = net.all_architectures()
    batched = net.used(architectures, len(architectures))
    for row, arch in zip(batched, architectures, strict=True):
        assert torch.equal(row, net.used(arch)[0])
    # a used node always has a used predecessor, and the input is used whenever anything is
    output = net.index["out"]
    assert batched[batched[:, output]][:, 0].all()


def test_architecture_of_wrong_width_is_rejected_with_the_node_names() -> None:
    with pytest.raises(ValueError, match="one entry per stochastic node: a, b, c, d, e, out"):
        diamond().used(torch.ones(2, 3), 2)


def test_architecture_of_switches_on_exactly_the_named_nodes() -> None:
    net = diamond()
    architecture = net.architecture_of(["in", "a", "c", "e", "out"])
    assert architecture.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]  # a b c d e out
    assert net.used_names(net.used(architecture)[0]) == {"in", "a", "c", "e", "out"}


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["in", "a", "ghost", "out"], r"no node named \['ghost'\]"),
        (["in", "a", "c", "out"], "reach no path to 'out'"),
    ],
)
def test_architecture_of_refuses_unknown_names_and_dead_ends(
    names: list[str], message: str
) -> None:
    with pytest.raises(GraphError, match=message):
        diamond().architecture_of(names)


def test_fixed_nodes_are_always_on() -> None:
    nodes = [Node("a", ["in"], dense(4, 4)), Node("out", ["a"], nn.Linear(4, 2), stochastic=False)]
    net = SuperNetwork("in", (4,), nodes, output="out")
    assert net.stochastic_names == ("a",)
    assert net.used(torch.tensor([1.0]))[0].tolist() == [True, True, True]


def test_most_probable_architecture_is_the_most_frequent_working_used_set() -> None:
    net = diamond()
    torch.manual_seed(0)
    probs = torch.rand(net.num_stochastic) * 0.5 + 0.45  # near 0.5: threshold and mode differ
    samples = torch.bernoulli(probs.expand(200_000, -1))
    sets, counts = torch.unique(net.used(samples, len(samples)), dim=0, return_counts=True)
    working = sets[:, net.index[net.output_name]]  # the empty set predicts nothing
    most_frequent = sets[working][counts[working].argmax()]
    chosen = net.most_probable_architecture(probs)
    assert torch.equal(net.used(chosen.unsqueeze(0))[0], most_frequent)


def test_most_probable_used_set_can_be_smaller_than_thresholding_each_node() -> None:
    from sanas.kws.model.networks import cnn_trad_fpool3

    net = cnn_trad_fpool3(shortcuts=True, channels=2)
    probs = torch.full((net.num_stochastic,), 0.8)  # every node p > 0.5: threshold = all on
    used = net.used(net.most_probable_architecture(probs).unsqueeze(0))[0]
    assert used[net.index["classifier"]]
    assert used.sum() < net.num_nodes


def test_cheapest_architecture_is_the_cheapest_used_set_that_reaches_the_output() -> None:
    net = diamond()
    charged = {"a": 5.0, "b": 2.0, "d": 100.0}  # every other node free

    def cost(used: torch.Tensor) -> torch.Tensor:
        table = torch.tensor([charged.get(name, 0.0) for name in net.order], dtype=torch.float64)
        return used.double() @ table

    names = net.used_names(net.used(net.cheapest_architecture(cost))[0])
    assert names == {"in", "b", "c", "e", "out"}  # b, not a; c, not the costly d


def test_bottlenecks_are_the_nodes_every_path_crosses_and_can_be_fixed_on() -> None:
    net = diamond()
    assert net.bottleneck_names() == ("in", "e", "out")
    nodes = [net.nodes[name] for name in net.order if name != "in"]
    fixed = SuperNetwork("in", (6,), nodes, output="out", fixed_bottlenecks=True)
    assert fixed.stochastic_names == ("a", "b", "c", "d")
    assert net.stochastic_names == ("a", "b", "c", "d", "e", "out")  # the nodes are not changed
    everything_off = torch.zeros(1, 4)
    assert fixed.used_names(fixed.used(everything_off)[0]) == set()  # on, but nothing reaches
