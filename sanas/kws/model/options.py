"""The SANAS reference's choices, deliberate or not, each a named switch
(:class:`SANASOptions`), and our recommended settings (:meth:`SANASOptions.improved`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sanas.supernet.budgets import BudgetObjective
from sanas.supernet.sequence import BASELINES, SequenceObjective


@dataclass
class SANASOptions:
    """The reference's deliberate-or-not choices, each switchable (defaults: the reference).

    - ``logit_relu``: ReLU on the classifier's logits (reference: True). The reference's
      classifier block ended in a ReLU, so a class can never score below 0; False gives
      plain logits.
    - ``detach_features``: cut the gradient between the features and the controller's GRU
      (reference: False, so REINFORCE also trains the CNN through the features).
    - ``log_prob_reduction``: ``"mean"`` averages log P(H_t) over nodes, as the reference,
      which scales the REINFORCE gradient by 1/N; ``"sum"`` is the true log-probability.
    - ``baseline``: ``"ema_reference"``: an exponential average weighting the newest batch
      0.9, over every step including padded ones, updated before use on the current batch
      (:class:`MovingAverageBaseline` with decay 0.1 and no mask; the reference had no
      bias correction, which only differs at the second and third batch by 1% and 0.1%).
      ``"ema"``: :class:`MovingAverageBaseline` with decay 0.9, blind to padded steps, and
      built from past batches only (so it does not depend on the current sample).
      ``"ema_class"``: the same per class label of the step
      (:class:`GroupedMovingAverageBaseline`): the advantage compares an architecture with
      the usual loss on that class, not with a mix of easy silence and hard keywords.
      ``"full_network"``: each step is compared with the full network on *the same
      window* (the all-on logits that ``train_full_network`` computes anyway), plus a
      per-class moving average of the rest: the advantage becomes "how much worse than
      the whole network was this architecture here, and was that worth its cost", free
      of how hard the window itself is. Still unbiased: the all-on network's loss does
      not depend on the sampled architecture (the self-critical baseline of Rennie et
      al., 2017, with the full network as the critic). Needs ``train_full_network``.
    - ``learned_initial_state``: learn the controller's z_0 (reference: fixed at 0).
    - ``search_bottlenecks``: the distribution also switches in, features and classifier,
      the nodes every path crosses (reference: True, all 11 nodes stochastic). With one
      of them off the step predicts nothing; early in a budgeted search, when λ is high,
      their probabilities sink (measured on the real subset: 0.88 × 0.75 × 0.81, so
      about half the sampled steps had no network at all), which starves the network of
      training and drowns every other node's REINFORCE signal in that noise. False: they
      are always on, and the search chooses among the 8 nodes that make real trade-offs.
    """

    logit_relu: bool = True
    detach_features: bool = False
    log_prob_reduction: Literal["mean", "sum"] = "mean"
    baseline: Literal["ema_reference", "ema", "ema_class", "full_network"] = "ema_reference"
    learned_initial_state: bool = False
    search_bottlenecks: bool = True

    def __post_init__(self) -> None:
        if self.log_prob_reduction not in ("mean", "sum"):
            raise ValueError(
                f"log_prob_reduction must be 'mean' or 'sum', got {self.log_prob_reduction!r}"
            )
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")

    def objective(
        self, budget: BudgetObjective, num_classes: int = 12, label_smoothing: float = 0.0
    ) -> SequenceObjective:
        """The training objective these options ask for (its baseline) under ``budget``."""
        return SequenceObjective(
            budget, self.baseline, num_classes=num_classes, label_smoothing=label_smoothing
        )

    @classmethod
    def improved(cls) -> SANASOptions:
        """Our recommended settings: every quirk off."""
        return cls(
            logit_relu=False,
            detach_features=True,
            log_prob_reduction="sum",
            baseline="ema_class",
            learned_initial_state=True,
            search_bottlenecks=False,
        )
