"""Where a trained model runs on its cost/accuracy curve: chosen after training, not learned.

One trained SANAS controller traces a whole curve: the threshold above which it switches a
node on, a budget per step held on any stream, and how many cheap steps reuse a recent
costlier step's output each move it. An :class:`OperatingPoint` names such a point, is
stored in a run folder (``operating_point.json``, what evaluation and streaming use by
default) and is given as one object to evaluation, streaming and export.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sanas.kws.model.kws_model import SANASKWS, KWSModel


@dataclass(frozen=True)
class OperatingPoint:
    """``architecture_threshold``: a SANAS node is on when the controller's probability
    exceeds it (None: 0.5, its mode). ``hold_budget``: mean MACs per step held on any
    stream by a token bucket (SANAS only; None: no bucket). ``reuse_steps``: a step that
    runs a cheaper architecture repeats the output of the most recent of that many steps
    before it that ran a costlier one (0: none)."""

    architecture_threshold: float | None = None
    hold_budget: float | None = None
    reuse_steps: int = 0

    def __post_init__(self) -> None:
        threshold, budget = self.architecture_threshold, self.hold_budget
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError(f"operating point 'architecture_threshold' must be in (0, 1), "
                             f"got {threshold!r}")  # fmt: skip
        if budget is not None and not budget > 0:
            raise ValueError(f"operating point 'hold_budget' must be > 0, got {budget!r}")
        if not isinstance(self.reuse_steps, int) or self.reuse_steps < 0:
            raise ValueError(
                f"operating point 'reuse_steps' must be an integer >= 0, got {self.reuse_steps!r}"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> OperatingPoint:
        """From ``operating_point.json`` or a recipe, naming unknown fields."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown operating point field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    def replaced(self, **changes: Any) -> OperatingPoint:
        """This point with the given fields changed (``None`` values leave a field as is)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def apply(self, model: KWSModel) -> KWSModel:
        """Set the model's own parts of the point (threshold, reuse); the held budget is
        the streaming engine's (:meth:`KWSModel.streaming_policy`)."""
        adaptive = isinstance(model, SANASKWS)
        if not adaptive and (self.architecture_threshold is not None or self.hold_budget):
            raise ValueError("an architecture threshold or a held budget needs a sanas model")
        if adaptive and self.architecture_threshold is not None:
            model.architecture_threshold = self.architecture_threshold
        model.reuse_steps = self.reuse_steps
        return model
