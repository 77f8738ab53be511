"""Static, BSN and SANAS keyword-spotting models over feature sequences, and their loss."""

from __future__ import annotations

import pytest
import torch

from sanas.kws.data.sequences import IGNORE_INDEX
from sanas.kws.model.kws_model import KWSOutput
from sanas.kws.model.networks import KWS_TIERS
from sanas.kws.model.options import SANASOptions
from sanas.kws.model.registry import build_kws_model
from sanas.supernet.budgets import make_budget
from sanas.supernet.costs import MacsCost
from sanas.supernet.estimators import returns_to_go
from sanas.supernet.sequence import SequenceObjective

FRAMES = 181  # 5 steps of 101 frames every 20
STEPS = 5
KINDS = ("static", "static-shortcuts", "bsn", "sanas")


pytestmark = pytest.mark.usefixtures("one_thread")


def small(kind: str, **kw: object):
    return build_kws_model(kind, channels=2, **kw)  # type: ignore[arg-type]


def batch_mask(lengths: list[int]) -> torch.Tensor:
    return torch.arange(STEPS).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_costs_of_used_sets(kind: str) -> None:
    model = small(kind)
    out = model(torch.randn(3, FRAMES, 40))
    n = model.net.num_nodes
    assert out.logits.shape == (3, STEPS, 12)
    assert out.used.shape == (3, STEPS, n) and out.used.dtype == torch.bool
    assert out.cost.shape == (3, STEPS) and out.cost.dtype == torch.float64
    expected = MacsCost(model.net)(out.used.flatten(0, 1)).view(3, STEPS)
    assert torch.equal(out.cost, expected)
    if kind.startswith("static"):
        assert out.log_prob is None and out.probs is None and out.used.all()
    else:
        assert out.log_prob.shape == (3, STEPS)
        assert out.probs.shape == (3, STEPS, model.net.num_stochastic)


def test_paper_cost_totals_per_step() -> None:
    for kind, total in (("static", 124_593_664), ("static-shortcuts", 137_288_704)):
        model = build_kws_model(kind)  # type: ignore[arg-type]
        used = model.net.used(None, 1).view(1, 1, -1)
        assert model.step_costs(used).item() == total


@pytest.mark.parametrize("kind", ("bsn", "sanas"))
def test_evaluation_uses_the_deterministic_architecture(kind: str) -> None:
    model = small(kind)
    net = model.net
    off = net.stochastic_names.index("shortcut_0")
    with torch.no_grad():
        if kind == "bsn":
            model.distribution.logits[off] = -4.0
        else:
            model.controller.head.bias[off] = -4.0
    features = torch.randn(8, FRAMES, 40)
    model.eval()
    rng = torch.get_rng_state()
    first, second = model(features), model(features)
    assert torch.equal(torch.get_rng_state(), rng)  # nothing sampled
    assert torch.equal(first.logits, second.logits) and torch.equal(first.used, second.used)
    assert not first.used[..., net.index["shortcut_0"]].any()
    model.train()
    sampled = model(features)
    assert sampled.used[..., net.index["shortcut_0"]].any()  # p ≈ 0.38 at each of 32 steps
    assert not torch.equal(sampled.used, first.used)


@pytest.mark.parametrize("kind", KINDS)
def test_padded_steps_are_skipped_and_real_steps_unchanged(kind: str) -> None:
    model = small(kind).eval()
    features = torch.randn(3, FRAMES, 40)
    mask = batch_mask([5, 2, 4])
    full, skipped = model(features), model(features, mask)
    assert torch.allclose(skipped.logits[mask], full.logits[mask], atol=1e-6)
    assert torch.equal(skipped.used[mask], full.used[mask])
    assert not skipped.used[~mask].any() and (skipped.cost[~mask] == 0).all()
    assert (skipped.logits[~mask] == 0).all()


@pytest.mark.parametrize("kind", ("static-shortcuts", "sanas"))
def test_shared_convolutions_match_the_plain_path(kind: str) -> None:
    torch.manual_seed(3)
    shared = small(kind, shared_convs=True).eval()
    plain = small(kind, shared_convs=False).eval()
    plain.load_state_dict(shared.state_dict())
    features, mask = torch.randn(2, FRAMES, 40), batch_mask([5, 3])
    a, b = shared(features, mask), plain(features, mask)
    assert torch.allclose(a.logits, b.logits, atol=1e-5) and torch.equal(a.used, b.used)


def test_gradients_reach_every_trained_part() -> None:
    model = small("sanas", options=SANASOptions(learned_initial_state=True))
    out = model(torch.randn(2, FRAMES, 40), batch_mask([5, 3]))
    labels = torch.randint(0, 12, (2, STEPS)).masked_fill(~batch_mask([5, 3]), IGNORE_INDEX)
    loss, _ = model.options.objective(make_budget("linear", 1e-7))(out, labels, batch_mask([5, 3]))
    loss.backward()
    groups = {"net": model.network_parameters(), "arch": model.architecture_parameters()}
    assert any(p is model.controller.initial for p in groups["arch"])
    for name, params in groups.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), name


# ------------------------------------------------------------------------ options
def test_logit_relu_option() -> None:
    torch.manual_seed(0)
    features = torch.randn(2, FRAMES, 40)
    relu = small("static", options=SANASOptions(logit_relu=True)).eval()
    plain = small("static", options=SANASOptions(logit_relu=False)).eval()
    plain.load_state_dict(relu.state_dict())
    raw = plain(features).logits
    assert (raw < 0).any()
    assert torch.equal(relu(features).logits, raw.clamp_min(0))


@pytest.mark.parametrize("detach", (False, True))
def test_detach_features_option(detach: bool) -> None:
    """Reference (False): REINFORCE reaches the CNN through the GRU's input."""
    torch.manual_seed(0)
    model = small("sanas", options=SANASOptions(detach_features=detach))
    out = model(torch.randn(2, FRAMES, 40))
    out.log_prob.sum().backward()  # only the architecture term
    conv = model.net.nodes["conv_0"].module[0].weight
    reached = conv.grad is not None and conv.grad.abs().sum() > 0
    assert reached is not detach


def test_log_prob_reduction_option() -> None:
    features = torch.randn(2, FRAMES, 40)
    outputs = {}
    for reduction in ("mean", "sum"):
        model = small("bsn", options=SANASOptions(log_prob_reduction=reduction)).eval()
        outputs[reduction] = model(features).log_prob
    assert torch.allclose(outputs["mean"] * 11, outputs["sum"])


def fake_output(costs: torch.Tensor) -> tuple[KWSOutput, torch.Tensor]:
    batch, steps = costs.shape
    log_prob = torch.zeros(batch, steps, requires_grad=True)
    logits = torch.zeros(batch, steps, 3)
    logits[..., 0] = 5.0  # confident and right: Δ ≈ 0
    used = torch.ones(batch, steps, 4, dtype=torch.bool)
    return KWSOutput(logits, used, log_prob, costs.double(), None), log_prob


def test_baseline_options() -> None:
    costs = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    labels = torch.zeros(2, 3, dtype=torch.long).masked_fill(~mask, IGNORE_INDEX)
    reference = SequenceObjective(make_budget("linear", 1.0), baseline="ema_reference")
    improved = SequenceObjective(make_budget("linear", 1.0), baseline="ema")
    out, _ = fake_output(costs)
    _, ref_stats = reference(out, labels, mask)
    _, ema_stats = improved(out, labels, mask)
    assert ref_stats.baseline == pytest.approx(210 / 6, abs=0.05)  # padded steps counted
    assert ema_stats.baseline == 0.0  # past batches only: none yet
    _, ema_stats = improved(out, labels, mask)
    assert ema_stats.baseline == pytest.approx(10 / 4, abs=0.05)  # real steps only


def test_class_baseline_compares_each_step_with_its_own_class() -> None:
    costs = torch.tensor([[0.1, 0.1, 3.0], [0.1, 3.0, 3.0]])  # silence easy, keyword hard
    labels = torch.tensor([[0, 0, 1], [0, 1, 1]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    objective = SequenceObjective(make_budget("linear", 1.0), baseline="ema_class", num_classes=2)
    out, log_prob = fake_output(costs)
    objective(out, labels, mask)  # first batch: the baseline learns each class's cost
    out, log_prob = fake_output(costs)
    loss, _ = objective(out, labels, mask)
    loss.backward()
    # Same costs as usual for each class: no advantage, so no push on the architecture.
    assert log_prob.grad is not None and log_prob.grad.abs().max() < 1e-6


@pytest.mark.parametrize("gamma", (0.0, 0.5))
def test_gamma_credits_later_steps(gamma: float) -> None:
    costs = torch.tensor([[1.0, 2.0, 4.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    objective = SequenceObjective(make_budget("linear", 1.0), gamma=gamma)
    out, log_prob = fake_output(costs)
    loss, stats = objective(out, torch.zeros(1, 3, dtype=torch.long), mask)
    loss.backward()
    step_cost = costs + torch.log1p(2 * torch.exp(torch.tensor(-5.0)))  # + Δ of each step
    expected = returns_to_go(step_cost - stats.baseline, gamma) / 3
    assert torch.allclose(log_prob.grad, expected, atol=1e-5)


def test_static_objective_is_the_task_loss_and_budget_state_round_trips() -> None:
    model = small("static")
    out = model(torch.randn(2, FRAMES, 40))
    labels = torch.randint(0, 12, (2, STEPS))
    objective = SequenceObjective(make_budget("constrained", budget=1e3))
    loss, stats = objective(out, labels, torch.ones(2, STEPS, dtype=torch.bool))
    assert loss.item() == pytest.approx(
        torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), labels.flatten()).item()
    )
    assert stats.arch_loss == 0.0
    sanas = small("sanas")
    objective = SequenceObjective(make_budget("constrained", budget=1e3))
    out = sanas(torch.randn(2, FRAMES, 40))
    objective(out, labels, torch.ones(2, STEPS, dtype=torch.bool))
    assert objective.budget.lam > 0  # cost far over budget: λ grows
    restored = SequenceObjective(make_budget("constrained", budget=1e3))
    restored.load_state_dict(objective.state_dict())
    assert restored.budget.lam == objective.budget.lam
    assert restored.baseline.value == objective.baseline.value


def test_invalid_options_are_named() -> None:
    with pytest.raises(ValueError, match="log_prob_reduction"):
        SANASOptions(log_prob_reduction="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="baseline"):
        SANASOptions(baseline="batch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown model"):
        build_kws_model("resnet")  # type: ignore[arg-type]


def test_improved_options_turn_every_quirk_off() -> None:
    reference, improved = SANASOptions(), SANASOptions.improved()
    assert reference.logit_relu and not improved.logit_relu
    assert not reference.detach_features and improved.detach_features
    assert (reference.log_prob_reduction, improved.log_prob_reduction) == ("mean", "sum")
    assert (reference.baseline, improved.baseline) == ("ema_reference", "ema_class")
    assert not reference.learned_initial_state and improved.learned_initial_state
    assert reference.search_bottlenecks and not improved.search_bottlenecks
    searched = small("sanas", options=improved).net
    assert small("sanas").net.num_stochastic == 11  # the reference: every node
    assert set(searched.stochastic_names).isdisjoint({"in", "features", "classifier"})
    assert searched.num_stochastic == 8


@pytest.mark.parametrize("kind", KINDS)
def test_input_normalisation_is_applied_before_the_network(kind: str) -> None:
    model = small(kind).eval()
    features = torch.randn(2, FRAMES, 40)
    expected = model(features).logits  # unfitted: the identity
    model.input_norm.mean.fill_(3.0)
    model.input_norm.std.fill_(2.0)
    assert torch.allclose(model(2 * features + 3).logits, expected, atol=1e-6)
    assert not torch.allclose(model(features).logits, expected, atol=1e-3)


def test_bsn_evaluates_its_most_probable_used_set_not_a_per_node_threshold() -> None:
    model = small("bsn")
    with torch.no_grad():
        model.distribution.logits.fill_(1.386)  # p = 0.8 > 0.5 everywhere: threshold = all on
    out = model.eval()(torch.randn(1, FRAMES, 40))
    expected = model.net.used(model.net.most_probable_architecture(torch.full((11,), 0.8))[None])
    assert (out.used == expected).all()
    assert out.used[0, 0].sum() < model.net.num_nodes


def test_warm_up_trains_the_network_but_not_the_architecture_or_lambda() -> None:
    model = small("sanas")
    budget = make_budget("constrained", 1e-8, budget=1e3)
    objective = SANASOptions.improved().objective(budget)
    features, labels = torch.randn(2, FRAMES, 40), torch.zeros(2, STEPS, dtype=torch.long)
    mask = torch.ones(2, STEPS, dtype=torch.bool)
    loss, _ = objective(model.train()(features, mask), labels, mask, search=False)
    loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.architecture_parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.network_parameters())
    assert budget.lam == 1e-8
    model.zero_grad()
    loss, _ = objective(model(features, mask), labels, mask, search=True)
    loss.backward()
    assert any(p.grad is not None and p.grad.any() for p in model.architecture_parameters())
    assert budget.lam != 1e-8  # far over its budget: λ rises


@pytest.mark.parametrize("kind", ("bsn", "sanas"))
def test_full_network_logits_ignore_the_architecture_distribution(kind: str) -> None:
    model = small(kind).eval()
    features = torch.randn(2, FRAMES, 40)
    head = model.distribution.logits if kind == "bsn" else model.controller.head.bias
    with torch.no_grad():
        head.fill_(20.0)  # every node on
        all_on = model(features).logits
        head.fill_(-2.0)  # the distribution now picks small networks
        assert not torch.allclose(model(features).logits, all_on, atol=1e-3)
        output = model(features, full_network=True)
        assert torch.allclose(output.full_logits, all_on, atol=1e-6)
        assert not torch.allclose(output.logits, all_on, atol=1e-3)
        assert model(features).full_logits is None


def test_the_full_network_pass_shares_the_convolutions_and_their_gradients() -> None:
    model = small("sanas").eval()
    features = torch.randn(2, FRAMES, 40)
    mask = torch.ones(2, STEPS, dtype=torch.bool)
    mask[1, -2:] = False

    def conv_gradients(loss: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.net.nodes["conv_0"].module.parameters()]

    shared = model(features, mask, full_network=True)
    together = conv_gradients(shared.logits.sum() + shared.full_logits.sum())
    normalized = model.input_norm(features)
    separate_full = model.run_windows(normalized, model.all_on(features), mask)
    separate = conv_gradients(model(features, mask).logits.sum() + separate_full.sum())
    assert torch.allclose(shared.full_logits, separate_full, atol=1e-6)
    for a, b in zip(together, separate, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_cheapest_network_logits_are_those_of_the_cheapest_path() -> None:
    model = small("sanas").eval()
    features = torch.randn(2, FRAMES, 40)
    output = model(features, cheapest_network=True)
    cheap = model.cheapest(features)
    assert model.net.used_names(cheap[0, 0]) == {"in", "shortcut_0", "features", "classifier"}
    assert float(model.step_costs(cheap)[0, 0]) == 519_168  # the paper's, at any width
    expected = model.run_windows(model.input_norm(features), cheap)
    assert torch.allclose(output.cheapest_logits, expected, atol=1e-6)
    assert model(features).cheapest_logits is None


def test_path_logits_are_those_of_each_fixed_architecture() -> None:
    model = small("sanas").eval()
    features = torch.randn(2, FRAMES, 40)
    tiers = [KWS_TIERS["conv_0"], KWS_TIERS["full"]]
    paths = torch.stack([model.net.architecture_of(tier) for tier in tiers])
    output = model(features, paths=paths)
    assert output.path_logits.shape == (2, *output.logits.shape)
    for logits, tier, path in zip(output.path_logits, tiers, paths, strict=True):
        used = model.net.used(path)[0]
        assert model.net.used_names(used) == tier
        expected = model.run_windows(
            model.input_norm(features), used.expand(*output.logits.shape[:2], -1)
        )
        assert torch.allclose(logits, expected, atol=1e-6)
    assert model(features).path_logits is None


def test_full_network_baseline_judges_each_step_against_the_full_network_there() -> None:
    # Step 0 is hard for every network (full: Δ ≈ 4.5), step 1 easy; the sampled
    # architecture matches the full network on step 0 and is worse on step 1.
    labels = torch.zeros(1, 2, dtype=torch.long)
    mask = torch.ones(1, 2, dtype=torch.bool)
    full = torch.tensor([[[-2.0, 2.5, 0.0], [5.0, 0.0, 0.0]]])
    sampled = torch.tensor([[[-2.0, 2.5, 0.0], [0.0, 0.0, 0.0]]])
    objective = SequenceObjective(
        make_budget("linear", 0.0), baseline="full_network", num_classes=3
    )
    log_prob = torch.zeros(1, 2, requires_grad=True)
    used = torch.ones(1, 2, 4, dtype=torch.bool)
    output = KWSOutput(sampled, used, log_prob, torch.zeros(1, 2).double(), None, full)
    objective(output, labels, mask).__getitem__(0).backward()
    # No moving average yet: the advantage is exactly the loss above the full network's.
    gap = torch.nn.functional.cross_entropy(sampled[0], labels[0], reduction="none")
    gap -= torch.nn.functional.cross_entropy(full[0], labels[0], reduction="none")
    assert torch.allclose(log_prob.grad[0], gap / 2, atol=1e-6)
    assert abs(float(log_prob.grad[0, 0])) < 1e-6 < float(log_prob.grad[0, 1])
    output.full_logits = None
    with pytest.raises(ValueError, match="full_network=True"):
        objective(output, labels, mask)


def test_a_batch_can_teach_the_network_alone_or_the_architecture_alone() -> None:
    model = small("sanas", options=SANASOptions.improved())
    objective = SANASOptions.improved().objective(make_budget("constrained", budget=1e5))
    features, labels = torch.randn(2, FRAMES, 40), torch.randint(0, 12, (2, STEPS))
    mask = torch.ones(2, STEPS, dtype=torch.bool)

    def taught(teaches: str) -> tuple[bool, bool]:
        model.zero_grad()
        loss, _ = objective(model.train()(features, mask), labels, mask, teaches=teaches)
        loss.backward()

        def moved(params: list[torch.nn.Parameter]) -> bool:
            return any(p.grad is not None and p.grad.any() for p in params)

        return moved(model.network_parameters()), moved(model.architecture_parameters())

    assert taught("network") == (True, False)
    assert objective.budget.lam == 0.0 and objective.baseline.values(labels).abs().sum() == 0
    assert taught("architecture") == (False, True)  # features detached: the net is untouched
    assert objective.budget.lam > 0  # the architecture's batch moves the budget
    assert taught("both") == (True, True)
    static = small("static-shortcuts")
    loss, stats = objective(static(features, mask), labels, mask, teaches="architecture")
    assert loss.item() == 0.0 and not loss.requires_grad and stats.task_loss > 0
