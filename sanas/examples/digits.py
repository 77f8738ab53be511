"""Proof that the core is general: a Budgeted Super Network on scikit-learn's digits.

The super network offers parallel paths of very different cost from the 8×8 image to
the classifier, which a learned Bernoulli distribution switches on and off under a MAC
budget. Nothing here is audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn

from sanas.supernet.bsn import BudgetedSuperNetwork
from sanas.supernet.budgets import BudgetMode, make_budget
from sanas.supernet.costs import MacsCost
from sanas.supernet.graph import SuperNetwork
from sanas.supernet.nodes import Node


def _dense(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, o), nn.ReLU())


BRANCH_WIDTHS = (4, 8, 16, 32, 64)


def digits_supernet() -> SuperNetwork:
    """in(64) → parallel bottleneck branches of widths 4…64 and a deep block → classifier.

    Each branch k is Linear(64→w_k) → Linear(w_k→64); the deep block is 64→128→128→64.
    Their outputs are summed, so more (and wider) branches mean more capacity and cost.
    """
    nodes: list[Node] = []
    branch_outputs = []
    for width in BRANCH_WIDTHS:
        nodes += [
            Node(f"branch_{width}", ["in"], _dense(64, width)),
            Node(f"branch_{width}_up", [f"branch_{width}"], _dense(width, 64)),
        ]
        branch_outputs.append(f"branch_{width}_up")
    nodes += [
        Node("deep_0", ["in"], _dense(64, 128)),
        Node("deep_1", ["deep_0"], _dense(128, 128)),
        Node("deep_up", ["deep_1"], _dense(128, 64)),
        Node("features", [*branch_outputs, "deep_up"], nn.ReLU(), stochastic=False),
        Node("classifier", ["features"], nn.Linear(64, 10), stochastic=False),
    ]
    return SuperNetwork("in", (64,), nodes, output="classifier")


def load_digits_tensors(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Train/test split of the bundled digits, pixels scaled to [0, 1]."""
    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data / 16.0, data.target, test_size=0.25, random_state=seed, stratify=data.target
    )
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.tensor(a, dtype=torch.long)  # noqa: E731
    return as_x(x_train), as_y(y_train), as_x(x_test), as_y(y_test)


@dataclass
class BudgetResult:
    """One trained BSN: its budget setting and what it ended at."""

    mode: str
    budget: float
    expected_cost: float
    deterministic_cost: float
    accuracy: float


def train_bsn(
    budget: float,
    mode: BudgetMode = "hinge",
    lam: float = 1e-4,
    epochs: int = 30,
    seed: int = 0,
    batch_size: int = 64,
) -> BudgetResult:
    """Train one BSN on digits under ``budget`` MACs and evaluate its deterministic architecture."""
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = load_digits_tensors(seed)
    model = BudgetedSuperNetwork(digits_supernet())
    cost = MacsCost(model.net)
    objective = make_budget(mode, lam=lam, budget=budget, dual_lr=0.02)
    optimizer = torch.optim.Adam(
        [
            {"params": model.net.parameters(), "lr": 3e-3},
            {"params": model.distribution.parameters(), "lr": 5e-2},
        ]
    )

    def loss_fn(output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target, reduction="none")

    model.train()
    for _ in range(epochs):
        permutation = torch.randperm(len(x_train))
        for start in range(0, len(x_train), batch_size):
            index = permutation[start : start + batch_size]
            loss, _ = model.training_step(x_train[index], y_train[index], loss_fn, cost, objective)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        prediction = model(x_test).output.argmax(dim=1)
        deterministic = float(cost(model.net.used(model.deterministic_architecture(), 1))[0])
    return BudgetResult(
        mode=mode,
        budget=budget,
        expected_cost=model.expected_cost(cost),
        deterministic_cost=deterministic,
        accuracy=float((prediction == y_test).float().mean()),
    )


def sweep_budgets(budgets: list[float], epochs: int = 30, seed: int = 0) -> list[BudgetResult]:
    """One constrained-mode BSN per budget: cost/accuracy trade-off."""
    return [train_bsn(b, mode="constrained", lam=0.0, epochs=epochs, seed=seed) for b in budgets]


def compare_budget_modes(
    budget: float = 4000.0, epochs: int = 30, seed: int = 0
) -> list[BudgetResult]:
    """Where each budget mode ends relative to the same budget.

    The fixed-λ modes use a λ that is neither tiny nor huge for this task (1e-5 per MAC);
    whether they land on the budget depends on that guess, which is the point.
    """
    return [
        train_bsn(budget, mode="linear", lam=1e-5, epochs=epochs, seed=seed),
        train_bsn(budget, mode="hinge", lam=1e-5, epochs=epochs, seed=seed),
        train_bsn(budget, mode="constrained", lam=0.0, epochs=epochs, seed=seed),
    ]
