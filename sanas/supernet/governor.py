"""A budget that holds at run time: a token bucket over the architectures a policy picks.

Training under a budget (:mod:`sanas.supernet.budgets`) makes the *expected* cost meet it
on training-like inputs. A deployed adaptive network meets other inputs: more speech,
other speakers, other noise, and its spending moves with them. :class:`BudgetGovernor`
bounds it on any input. Every step earns ``budget``; a step may spend what the bucket
holds plus that step's earnings, else it runs the ``fallback`` architecture (the cheapest
one). Unspent budget is saved up to ``burst``, so that a policy may spend in bursts (a
spoken word) as long as it saves in between (silence).

Guarantee (when the fallback costs at most ``budget``): the bucket starts empty, so after
any T steps the total cost is at most T · budget. Every prefix of a stream holds the
budget, not only its mean.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class BudgetGovernor:
    """Token bucket: replaces any architecture the balance cannot pay for by ``fallback``.

    Args:
        budget: mean cost per step to hold (e.g. MACs).
        burst: most cost saved for later steps.
        fallback: (S,) {0,1} architecture run when the balance is short; it must cost no
            more than ``budget``.
        cost: maps (batch, S) architectures to their (batch,) costs.
    """

    def __init__(
        self,
        budget: float,
        burst: float,
        fallback: Tensor,
        cost: Callable[[Tensor], Tensor],
    ) -> None:
        if budget <= 0:
            raise ValueError(f"budget must be > 0, got {budget}")
        if burst < 0:
            raise ValueError(f"burst must be >= 0, got {burst}")
        fallback_cost = float(cost(fallback.unsqueeze(0))[0])
        if fallback_cost > budget:
            raise ValueError(
                f"the fallback architecture costs {fallback_cost:.4g}, more than the budget "
                f"{budget:.4g}: no policy could hold it"
            )
        self.budget = float(budget)
        self.burst = float(burst)
        self.fallback = fallback
        self.fallback_cost = fallback_cost
        self.cost = cost

    def initial_balance(self, batch: int) -> Tensor:
        """The balance of ``batch`` fresh streams: an empty bucket, (batch,) float64."""
        return torch.zeros(batch, dtype=torch.float64)

    def enforce(self, architecture: Tensor, balance: Tensor) -> tuple[Tensor, Tensor]:
        """The architectures to run, (batch, S), and the balances after paying for them."""
        available = balance + self.budget
        wanted = self.cost(architecture).to(torch.float64)
        affordable = wanted <= available
        architecture = torch.where(
            affordable.unsqueeze(1), architecture, self.fallback.to(architecture)
        )
        spent = torch.where(affordable, wanted, self.fallback_cost)
        return architecture, torch.clamp(available - spent, max=self.burst)
