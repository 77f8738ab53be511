"""A held budget: the token bucket bounds the cost of any sequence of architectures."""

from __future__ import annotations

import pytest
import torch

from sanas.supernet.governor import BudgetGovernor

NODE_COSTS = torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64)


def _cost(architecture: torch.Tensor) -> torch.Tensor:
    return architecture.to(torch.float64) @ NODE_COSTS


def _governor(budget: float = 20.0, burst: float = 200.0) -> BudgetGovernor:
    return BudgetGovernor(budget, burst, torch.tensor([1.0, 0.0, 0.0]), _cost)


def test_no_prefix_of_any_stream_spends_more_than_its_budget() -> None:
    governor = _governor()
    torch.manual_seed(0)
    balance = governor.initial_balance(4)
    spent = torch.zeros(4, dtype=torch.float64)
    full_steps = 0
    for t in range(1, 301):
        wanted = (torch.rand(4, 3) < 0.5).float()
        architecture, balance = governor.enforce(wanted, balance)
        spent += _cost(architecture)
        full_steps += int((architecture[:, 2] == 1).sum())
        assert (spent <= t * governor.budget + 1e-9).all()
    assert full_steps > 0  # savings do pay for the expensive node now and then
    assert (spent > 300 * governor.budget * 0.9).all()  # and the budget is used, not hoarded


def test_what_the_balance_pays_for_runs_unchanged_and_the_rest_falls_back() -> None:
    governor = _governor(budget=20.0, burst=100.0)
    wanted = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    architecture, balance = governor.enforce(wanted, torch.tensor([100.0, 50.0]))
    assert architecture.tolist() == [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    assert balance.tolist() == [100.0 + 20.0 - 111.0, 50.0 + 20.0 - 1.0]


def test_savings_stop_at_the_burst() -> None:
    governor = _governor(budget=20.0, burst=30.0)
    cheap = torch.tensor([[1.0, 0.0, 0.0]])
    balance = governor.initial_balance(1)
    assert balance.item() == 0.0  # a fresh stream has saved nothing
    for _ in range(10):
        _, balance = governor.enforce(cheap, balance)
    assert balance.item() == 30.0


@pytest.mark.parametrize(
    ("budget", "burst", "message"),
    [
        (0.0, 10.0, "budget must be > 0"),
        (20.0, -1.0, "burst must be >= 0"),
        (0.5, 10.0, "the fallback architecture costs 1, more than the budget 0.5"),
    ],
)
def test_an_unholdable_budget_is_refused(budget: float, burst: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _governor(budget, burst)
