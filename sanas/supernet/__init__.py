"""The general budgeted super-network core. Knows nothing about audio."""

from sanas.supernet.bsn import BudgetedSuperNetwork
from sanas.supernet.budgets import ConstrainedBudget, HingePenalty, LinearPenalty, make_budget
from sanas.supernet.costs import COSTS, Cost, LatencyTable, build_cost, register_cost
from sanas.supernet.distributions import ArchitectureDistribution, StaticArchitecture
from sanas.supernet.estimators import (
    MovingAverageBaseline,
    batch_mean_baseline,
    reinforce_loss,
    returns_to_go,
)
from sanas.supernet.executors import run_masked, run_skipping
from sanas.supernet.graph import SuperNetwork
from sanas.supernet.nodes import GraphError, Node, SuperNetOutput

__all__ = [
    "COSTS",
    "ArchitectureDistribution",
    "BudgetedSuperNetwork",
    "ConstrainedBudget",
    "Cost",
    "GraphError",
    "HingePenalty",
    "LatencyTable",
    "LinearPenalty",
    "MovingAverageBaseline",
    "Node",
    "StaticArchitecture",
    "SuperNetOutput",
    "SuperNetwork",
    "batch_mean_baseline",
    "build_cost",
    "make_budget",
    "register_cost",
    "reinforce_loss",
    "returns_to_go",
    "run_masked",
    "run_skipping",
]
