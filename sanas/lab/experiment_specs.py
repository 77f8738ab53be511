r"""The runs of the Table-1 experiment: static baselines, a BSN, SANAS at several λ and
budgets, searches of a trained network and imitation runs, as :class:`RunSpec`\ s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sanas.kws.config import merge_fields
from sanas.kws.model.networks import KWS_TIERS
from sanas.kws.model.options import SANASOptions
from sanas.kws.training.imitation import (
    GATE_KINDS,
)


@dataclass(frozen=True)
class RunSpec:
    """One model to train: a name, its family and the TrainConfig fields that differ.

    ``start_from``: the name of another spec of the experiment whose trained weights
    start this run (``TrainConfig.init_from``); this run waits for that one to end.
    ``imitation``: instead of training, the run's controller imitates a gate on that
    network (:func:`~sanas.kws.training.imitation.imitation_run` with these arguments) on the
    experiment's streams of training speakers (:func:`imitation_streams`; how many: the
    entry ``streams``, default 1).
    """

    name: str
    family: str
    fields: dict[str, Any] = field(default_factory=dict)
    start_from: str | None = None
    imitation: dict[str, Any] | None = None


def default_specs(
    lams: tuple[float, ...] = (1e-8, 3e-8),
    bsn_budget: float = 3e6,
    arch_lr: float | None = None,
    sanas_budgets: tuple[float, ...] = (3e6,),
    controller_lr: float | None = None,
    full_network_budgets: tuple[float, ...] = (),
    search_budgets: tuple[float, ...] = (),
    search_epochs: int = 8,
    search_holdout: float = 0.1,
    baseline_epochs: tuple[int, ...] = (),
    distilled_search_budgets: tuple[float, ...] = (),
    conv_0_search_budgets: tuple[float, ...] = (),
    imitation_gates: tuple[str, ...] = (),
    reuse_steps: int = 2,
    imitation_overlap_ms: float = 800.0,
    imitation_stream_count: int = 1,
) -> list[RunSpec]:
    """Static baselines, one constrained BSN, SANAS at several λ (linear penalty) and
    SANAS under constrained budgets, in the order they should start (slowest first).

    ``full_network_budgets``: constrained SANAS runs that also train the full network
    each batch (``train_full_network``). ``search_budgets``: SANAS runs that search a
    trained static + shortcuts network for ``search_epochs`` (``start_from``): the
    sandwich of full and cheapest networks keeps both ends trained, each step's
    architecture is judged against the full network on the same window (baseline
    ``full_network``), and the judging uses only the ``search_holdout`` share of the
    training speakers, which that network (a static run of its own, "+ shortcuts, search
    split") never trained on. ``distilled_search_budgets``: the same searches with
    ``distill_cheapest`` (the cheapest network learns the full one's posteriors).
    ``conv_0_search_budgets``: the same searches with the conv_0 tier trained as a path
    of its own (``train_paths``), in the search and in its pretraining ("+ shortcuts,
    search split, conv_0 path").
    ``arch_lr``: learning rate of the BSN logits;
    ``controller_lr``: of the SANAS controller (None: as the network's, the reference).
    They differ in kind: a BSN logit is one parameter, while a controller's logit moves
    with every weight of its head. ``baseline_epochs``: static + shortcuts also trained for
    these numbers of epochs ("+ shortcuts, 25 epochs"; see :func:`reference_names`), so
    that the target is judged against a baseline trained as long as it keeps improving.
    ``imitation_gates``: SANAS runs on the network of the last static + shortcuts run
    (the longest trained), whose controller imitates each of these gates ("aligned":
    over ``imitation_overlap_ms``; "hindsight") and which reuse a full step's output on
    the ``reuse_steps`` cheap steps after it (:mod:`sanas.kws.training.imitation`), learning
    from ``imitation_stream_count`` streams of the training list.
    """
    search = {} if arch_lr is None else {"arch_lr": arch_lr}
    controller = {} if controller_lr is None else {"arch_lr": controller_lr}

    def constrained(model: str, budget: float, *parts: dict[str, Any]) -> dict[str, Any]:
        within = {"search": {"budget_mode": "constrained", "budget": budget}}
        return merge_fields({"model": model}, within, *parts)

    sanas = [
        RunSpec(
            f"SANAS λ={lam:g}", "sanas", {"model": "sanas", "search": {"lam": lam, **controller}}
        )
        for lam in lams
    ]
    sanas += [
        RunSpec(
            f"SANAS ≤{budget / 1e6:g}M",
            "sanas",
            constrained("sanas", budget, {"search": controller}),
        )
        for budget in sanas_budgets
    ]
    sanas += [
        RunSpec(
            f"SANAS ≤{budget / 1e6:g}M +full",
            "sanas",
            constrained("sanas", budget, {"search": {"train_full_network": True, **controller}}),
        )
        for budget in full_network_budgets
    ]
    # The network is trained already: no network-only epochs, and a short learning-rate
    # ramp (50 steps, for Adam's fresh moments) instead of the 300 steps that keep a new
    # conv_1 alive, which would hold the controller's rate down for half of the search.
    searched = {
        "options": {**asdict(SANASOptions.improved()), "baseline": "full_network"},
        "epochs": search_epochs,
        "lr_warmup_steps": 50,
        "search": {
            "train_full_network": True,
            "train_cheapest_network": True,
            "warmup_epochs": 0,
            "holdout": search_holdout,
            **controller,
        },
    }
    split, conv_0_split = "+ shortcuts, search split", "+ shortcuts, search split, conv_0 path"
    conv_0_path = {"train_paths": [sorted(KWS_TIERS["conv_0"])]}
    variants = (
        (search_budgets, "", {}, split),
        (distilled_search_budgets, ", distilled", {"search": {"distill_cheapest": True}}, split),
        (conv_0_search_budgets, ", conv_0 path", conv_0_path, conv_0_split),
    )
    sanas += [
        RunSpec(
            f"SANAS ≤{budget / 1e6:g}M searched{suffix}",
            "sanas",
            constrained("sanas", budget, searched, extra),
            start_from=start,
        )
        for budgets, suffix, extra, start in variants
        for budget in budgets
    ]

    unknown = [gate for gate in imitation_gates if gate not in GATE_KINDS]
    if unknown:
        raise ValueError(f"imitation gates must be among {GATE_KINDS}, got {unknown}")
    if imitation_stream_count < 1:
        raise ValueError(f"imitation needs at least one stream, got {imitation_stream_count}")
    imitated_from = reference_names(baseline_epochs)[-1]
    several = f", {imitation_stream_count} streams" if imitation_stream_count > 1 else ""
    sanas += [
        RunSpec(
            f"SANAS imitating the {gate} gate, reuse {reuse_steps}{several}",
            "sanas",
            start_from=imitated_from,
            imitation={
                "gate": gate,
                "reuse_steps": reuse_steps,
                "min_overlap_ms": imitation_overlap_ms,
                "streams": imitation_stream_count,
            },
        )
        for gate in imitation_gates
    ]
    static_split = {"model": "static-shortcuts", "search": {"holdout": search_holdout}}
    searched_from = {start for budgets, _, _, start in variants if budgets}
    pretrained = [
        RunSpec(start, "static", merge_fields(static_split, extra))
        for start, extra in ((split, {}), (conv_0_split, conv_0_path))
        if start in searched_from
    ]
    return [
        *pretrained,
        *sanas[:1],
        RunSpec("+ shortcuts", "static", {"model": "static-shortcuts"}),
        *(
            RunSpec(name, "static", {"model": "static-shortcuts", "epochs": epochs})
            for name, epochs in zip(
                reference_names(baseline_epochs)[1:], baseline_epochs, strict=True
            )
        ),
        *sanas[1:],
        RunSpec(
            f"BSN ≤{bsn_budget / 1e6:g}M", "bsn", constrained("bsn", bsn_budget, {"search": search})
        ),
        RunSpec("cnn-trad-fpool3", "static", {"model": "static"}),
    ]


def reference_names(baseline_epochs: Sequence[int] = ()) -> tuple[str, ...]:
    """Names of the static + shortcuts runs of :func:`default_specs`: the experiment's
    epochs, then each of ``baseline_epochs``."""
    return ("+ shortcuts", *(f"+ shortcuts, {epochs} epochs" for epochs in baseline_epochs))
