"""Keyword-spotting models over feature sequences: static, BSN and SANAS, one interface.

Every model takes a padded (batch, frames, 40) feature sequence, runs its super network
(cnn-trad-fpool3, or a backbone of :mod:`sanas.kws.model.zoo`) on each window of 101 frames
every 20 frames (a *step*), and returns a :class:`KWSOutput`: per-step logits, used sets,
log-probabilities of the sampled architectures and per-step costs (multiply-accumulates,
:class:`MacsCost`).

- :class:`StaticKWS`: every node on (e.g. cnn-trad-fpool3, with or without shortcuts).
- :class:`BSNKWS`: one learned Bernoulli per node (:class:`StaticArchitecture`), the same
  distribution for every step; evaluation uses its mode.
- :class:`SANASKWS`: a :class:`RecurrentController` chooses each step's architecture from
  the features of the previous steps; evaluation uses the mode of each step.

:class:`SequenceObjective` turns an output into the training loss: cross-entropy per step
plus REINFORCE on the per-step cost Δ_t + penalty(C_t) (method.md §3), with the reference's
quirks available as named :class:`SANASOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sanas.kws.data.features import FeatureNormalizer
from sanas.kws.model.backbone import backbone_nodes
from sanas.kws.model.options import SANASOptions
from sanas.kws.model.registry import CostAdds
from sanas.kws.model.window_forward import (
    STEP_FRAMES,
    WINDOW_FRAMES,
    SharedTrunk,
    cut_windows,
    precompute_trunk,
    trunk_layout,
)
from sanas.supernet.controller import RecurrentController
from sanas.supernet.costs import MacsCost
from sanas.supernet.distributions import ArchitectureDistribution, StaticArchitecture
from sanas.supernet.executors import run_masked, run_skipping
from sanas.supernet.governor import BudgetGovernor
from sanas.supernet.graph import SuperNetwork
from sanas.supernet.nodes import SuperNetOutput
from sanas.supernet.policies import (
    BURST_STEPS,
    ArchitecturePolicy,
    ControllerPolicy,
    FixedPolicy,
    GovernedPolicy,
)
from sanas.supernet.reuse import reuse_costlier_outputs

FEATURE_TAP = "features"


def has_batch_statistics(net: SuperNetwork) -> bool:
    """Whether a layer of ``net`` normalises with statistics of the batch in training."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


@dataclass
class KWSOutput:
    """Per-step results over a batch of sequences with T steps and N graph nodes.

    ``logits`` (B, T, C); ``used`` (B, T, N) booleans; ``log_prob`` (B, T) log P(H_t)
    reduced over nodes per :class:`SANASOptions` (``None`` for static models); ``cost``
    (B, T) float64 MACs of each step's used set; ``probs`` (B, T, S) the node probabilities
    the architectures were drawn from (``None`` for static models); ``full_logits``
    (B, T, C) the logits with every node on, when asked for (``full_network=True``);
    ``cheapest_logits`` (B, T, C) those of the cheapest architecture
    (``cheapest_network=True``); ``path_logits`` (K, B, T, C) those of K architectures
    fixed in advance (``paths``).
    """

    logits: Tensor
    used: Tensor
    log_prob: Tensor | None
    cost: Tensor
    probs: Tensor | None
    full_logits: Tensor | None = None
    cheapest_logits: Tensor | None = None
    path_logits: Tensor | None = None


def frames_for(steps: int) -> int:
    """Frames that hold ``steps`` windows."""
    return WINDOW_FRAMES + STEP_FRAMES * (steps - 1)


def length_groups(mask: Tensor | None, features: Tensor) -> list[tuple[Tensor, int]]:
    """Rows of a batch grouped by number of real steps, longest first: [(rows, steps)].

    ``mask`` (B, T) marks real steps as a prefix of each row; ``None``: every window of
    ``features`` (B, frames, coeffs) is real.
    """
    if mask is None:
        steps = cut_windows(features).shape[1]
        return [(torch.arange(features.shape[0], device=features.device), steps)]
    lengths = mask.sum(dim=1).cpu()
    return [
        ((lengths == n).nonzero().squeeze(1).to(mask.device), n)
        for n in sorted(set(lengths.tolist()), reverse=True)
        if n > 0
    ]


class KWSModel(nn.Module):
    """Base class: a super network run on every window of a feature sequence.

    Subclasses choose the architectures; here live the window execution (plain, or with
    the time-convolutional trunk computed once per sequence: ``shared_convs``, which
    changes nothing for a network without such a trunk, e.g. the backbones, whose
    convolutions pad in time), the optional logit ReLU, the per-step costs and the two
    parameter groups (network, architecture).

    Windows run through :func:`~sanas.supernet.executors.run_masked`, or, when a layer
    normalises with batch statistics, through
    :func:`~sanas.supernet.executors.run_skipping`: a node then sees only the windows that
    use it, so that the zeros of the others' unused inputs never enter its statistics.

    ``reuse_steps``: in evaluation a step repeats the logits of the most recent of the
    ``reuse_steps`` steps before it that ran a costlier architecture
    (:func:`~sanas.supernet.reuse.reuse_costlier_outputs`; 0, the default: none). Like an
    architecture threshold it is an operating choice, not a weight; a model whose steps
    all cost the same (static, BSN) is unchanged by it.

    ``family``: how the architecture is chosen, ``static``, ``bsn`` or ``sanas`` (what
    :func:`~sanas.kws.model.registry.model_info` reports of a registered model).
    """

    family: ClassVar[str]

    def __init__(
        self,
        net: SuperNetwork,
        options: SANASOptions | None = None,
        shared_convs: bool = True,
        cost_adds: CostAdds = "reference",
    ) -> None:
        super().__init__()
        self.net = net
        self.options = options or SANASOptions()
        self.shared_convs = shared_convs and bool(trunk_layout(net).nodes)
        self.execute = run_skipping if has_batch_statistics(net) else run_masked
        self.cost = MacsCost(net, adds=cost_adds)
        self.num_classes = net.output_shapes[net.output_name][0]
        self.input_norm = FeatureNormalizer(net.input_shape[2])
        self.register_buffer(
            "cheapest_architecture", net.cheapest_architecture(self.cost), persistent=False
        )
        self.register_buffer("full_tier", torch.ones(net.num_stochastic), persistent=False)
        self.frozen_nodes: tuple[str, ...] = ()
        self.reuse_steps = 0

    def freeze_backbone(self) -> None:
        """Keep the backbone's weights and batch-norm statistics as they are, in training
        too, so that only its early exits learn, and make the backbone alone (every exit
        off) the full network: with a pretrained backbone, the full network is then the
        pretrained static network exactly, whatever the exits learn."""
        backbone = backbone_nodes(self.net)
        self.frozen_nodes = tuple(n for n in backbone if n in self.net.modules_by_node)
        for name in self.frozen_nodes:
            self.net.modules_by_node[name].requires_grad_(False)
        self.full_tier = self.net.architecture_of(backbone).to(self.full_tier)
        self.train(self.training)

    def train(self, mode: bool = True) -> KWSModel:
        """``nn.Module.train``, the frozen nodes staying in evaluation mode."""
        super().train(mode)
        for name in self.frozen_nodes:
            self.net.modules_by_node[name].eval()
        return self

    def network_parameters(self) -> list[nn.Parameter]:
        """Weights of the super network (trained by backprop, with weight decay), but for
        a frozen backbone's."""
        return [p for p in self.net.parameters() if p.requires_grad]

    def architecture_parameters(self) -> list[nn.Parameter]:
        """Parameters of the architecture distribution (trained by REINFORCE)."""
        return []

    def step_costs(self, used: Tensor) -> Tensor:
        """(B, T, N) used sets → (B, T) float64 MACs."""
        return self.cost(used.flatten(0, 1)).view(used.shape[:2])

    def logits(self, output: Tensor) -> Tensor:
        """The classifier's output, through a ReLU when ``logit_relu`` (the reference)."""
        return F.relu(output) if self.options.logit_relu else output

    def shared_trunks(self, features: Tensor, mask: Tensor | None) -> list[SharedTrunk] | None:
        """The convolutions of each group of :func:`length_groups`, computed once per
        sequence (``None`` without ``shared_convs``); passes over the same batch share them."""
        if not self.shared_convs:
            return None
        return [
            precompute_trunk(self.net, features[rows, : frames_for(n)])
            for rows, n in length_groups(mask, features)
        ]

    def run_windows(
        self,
        features: Tensor,
        used: Tensor,
        mask: Tensor | None = None,
        trunks: list[SharedTrunk] | None = None,
    ) -> Tensor:
        """Logits of every window for architectures fixed in advance, (B, T, N) ``used``.

        Windows where ``mask`` (B, T) is false are padding: they are not computed and their
        logits are 0. Sequences run in groups of equal length, each cut to its real frames,
        so that padded frames are not convolved either. ``trunks``
        (:meth:`shared_trunks`) gives the convolutions of each group, computed once per
        sequence instead of once per window.
        """
        batch, steps = used.shape[:2]
        logits = features.new_zeros(batch, steps, self.num_classes)
        for g, (rows, n) in enumerate(length_groups(mask, features)):
            sequences = features[rows, : frames_for(n)]
            precomputed = trunks[g].windows() if trunks else None
            windows = cut_windows(sequences).flatten(0, 1)
            output = self.run(windows, used[rows, :n].flatten(0, 1), precomputed)
            logits[rows, :n] = output.output.view(len(rows), n, -1)
        return self.logits(logits)

    def run(
        self, windows: Tensor, used: Tensor, precomputed: dict[str, Tensor] | None = None
    ) -> SuperNetOutput:
        """The network on a batch of windows for their used sets (see :attr:`execute`)."""
        return self.execute(self.net, windows, used, precomputed=precomputed)

    def all_on(self, features: Tensor) -> Tensor:
        """(B, T, N) used sets of the full network (every node on; with a frozen backbone,
        every node but the exits) for each window of ``features``."""
        return self._everywhere(features, self.full_tier)

    def cheapest(self, features: Tensor) -> Tensor:
        """(B, T, N) used sets of the cheapest architecture that reaches the output (in →
        shortcut_0 → features → classifier for cnn-trad-fpool3 + shortcuts)."""
        return self._everywhere(features, self.cheapest_architecture)

    def _everywhere(self, features: Tensor, architecture: Tensor | None) -> Tensor:
        batch, steps = features.shape[0], cut_windows(features).shape[1]
        used = self.net.used(architecture, batch * steps)
        return used.to(features.device).view(batch, steps, -1)

    def _fixed(
        self,
        features: Tensor,
        used: Tensor,
        mask: Tensor | None,
        trunks: list[SharedTrunk] | None,
        log_prob: Tensor | None = None,
        probs: Tensor | None = None,
    ) -> KWSOutput:
        if mask is not None:
            used = used & mask.unsqueeze(-1)
            log_prob = None if log_prob is None else log_prob * mask
            probs = None if probs is None else probs * mask.unsqueeze(-1)
        logits = self.run_windows(features, used, mask, trunks)
        return KWSOutput(logits, used, log_prob, self.step_costs(used), probs)

    def _reduce(self, distribution: ArchitectureDistribution, architecture: Tensor) -> Tensor:
        log_prob = distribution.log_prob(architecture)
        if self.options.log_prob_reduction == "mean":
            log_prob = log_prob / architecture.shape[-1]
        return log_prob

    def forward(
        self,
        features: Tensor,
        mask: Tensor | None = None,
        full_network: bool = False,
        cheapest_network: bool = False,
        paths: Tensor | None = None,
    ) -> KWSOutput:
        """Run every window of (B, frames, 40) raw ``features`` (normalised here by
        ``input_norm``).

        ``mask`` (B, T) marks real steps (a prefix of each row, as batches are padded at
        the end); padded steps are then skipped: no compute, logits 0, nothing used, cost
        0. Without it every window runs, padding included, as in the reference.
        ``full_network``: also return the logits with every node on, whatever the
        architecture distribution (what training the full network alongside the search
        uses); both passes share the convolutions, computed once. ``cheapest_network``:
        likewise the logits of the cheapest architecture (the other end of the sandwich).
        ``paths`` (K, S): likewise the logits of each of these architectures (what training
        chosen paths beside the sampled ones uses, e.g. a cost tier between the two ends).
        """
        features = self.input_norm(features)
        trunks = self.shared_trunks(features, mask)
        output = self.run_normalized(features, mask, trunks)
        if self.reuse_steps and not self.training:
            output.logits = reuse_costlier_outputs(output.logits, output.cost, self.reuse_steps)
        if full_network:
            output.full_logits = self.run_windows(features, self.all_on(features), mask, trunks)
        if cheapest_network:
            output.cheapest_logits = self.run_windows(
                features, self.cheapest(features), mask, trunks
            )
        if paths is not None:
            output.path_logits = torch.stack(
                [
                    self.run_windows(features, self._everywhere(features, p), mask, trunks)
                    for p in paths
                ]
            )
        return output

    def run_normalized(
        self, features: Tensor, mask: Tensor | None, trunks: list[SharedTrunk] | None
    ) -> KWSOutput:
        """:meth:`forward` on features already normalised, with the convolutions of
        :meth:`shared_trunks`: what subclasses implement."""
        raise NotImplementedError

    def streaming_policy(self, budget: float | None = None) -> ArchitecturePolicy | None:
        """How the streaming engine picks this model's architecture at each step, as in
        evaluation (None: every node on). ``budget``: a mean of MACs per step to hold on
        any stream, which only a per-step controller can (SANAS)."""
        if budget is not None:
            raise ValueError(f"a budget to hold needs a sanas model, not {type(self).__name__}")
        return None


class StaticKWS(KWSModel):
    """Every node on at every step: cnn-trad-fpool3, with or without its shortcuts."""

    family = "static"

    def run_normalized(
        self, features: Tensor, mask: Tensor | None, trunks: list[SharedTrunk] | None
    ) -> KWSOutput:
        return self._fixed(features, self.all_on(features), mask, trunks)


class BSNKWS(KWSModel):
    """A Budgeted Super Network on each window: one Bernoulli per node, shared by all steps.

    Training samples an architecture per (sequence, step); evaluation uses one
    architecture everywhere: :meth:`deterministic_architecture`.
    """

    family = "bsn"

    def __init__(self, net: SuperNetwork, *args: object, init_logit: float = 3.0, **kw: object):
        super().__init__(net, *args, **kw)  # type: ignore[arg-type]
        self.distribution = StaticArchitecture(net.num_stochastic, init_logit)

    def architecture_parameters(self) -> list[nn.Parameter]:
        return list(self.distribution.parameters())

    def deterministic_architecture(self) -> Tensor:
        """The evaluation architecture: that of the most probable used set
        (:meth:`SuperNetwork.most_probable_architecture`), not the per-node threshold
        1[p_n > 0.5], which can be a network training rarely sampled and that costs more."""
        return self.net.most_probable_architecture(self.distribution(1).probs[0])

    def streaming_policy(self, budget: float | None = None) -> ArchitecturePolicy | None:
        """The deterministic architecture at every step."""
        super().streaming_policy(budget)  # refuses a budget
        return FixedPolicy(self.deterministic_architecture())

    def run_normalized(
        self, features: Tensor, mask: Tensor | None, trunks: list[SharedTrunk] | None
    ) -> KWSOutput:
        batch, steps = features.shape[0], cut_windows(features).shape[1]
        distribution = self.distribution(batch * steps)
        if self.training:
            architecture = distribution.sample()
        else:
            architecture = self.deterministic_architecture().expand(batch * steps, -1)
        used = self.net.used(architecture, batch * steps).view(batch, steps, -1)
        log_prob = self._reduce(distribution, architecture).view(batch, steps)
        probs = distribution.probs.view(batch, steps, -1)
        return self._fixed(features, used, mask, trunks, log_prob, probs)


class SANASKWS(KWSModel):
    """SANAS: a recurrent controller picks each step's architecture from past features.

    Steps run one after the other (step t's architecture depends on step t−1's features);
    with ``shared_convs`` the convolutions of the whole sequence are computed once and
    each step takes its rows. The state starts from z_0 for every sequence. With a
    ``mask``, sequences are sorted by length so that the ones still running at step t
    are a prefix of the batch, and only those are computed.

    ``architecture_threshold``: in evaluation a node is on when the controller gives it a
    probability above this (0.5: the mode, as the paper). It is an operating point, not a
    weight: lowering it spends more on every step the controller leans towards spending
    on, so one trained controller traces a cost/accuracy curve (choose it on validation,
    as a detection threshold). It is not saved with the weights.
    """

    family = "sanas"

    def __init__(
        self,
        net: SuperNetwork,
        *args: object,
        hidden: int = 100,
        init_bias: float = 3.0,
        **kw: object,
    ) -> None:
        super().__init__(net, *args, **kw)  # type: ignore[arg-type]
        self._architecture_threshold = 0.5
        self.controller = RecurrentController(
            net.num_stochastic,
            feature_dim=net.output_shapes[FEATURE_TAP][0],
            hidden=hidden,
            init_bias=init_bias,
            learned_initial_state=self.options.learned_initial_state,
        )

    @property
    def architecture_threshold(self) -> float:
        return self._architecture_threshold

    @architecture_threshold.setter
    def architecture_threshold(self, value: float) -> None:
        if not 0.0 < value < 1.0:
            raise ValueError(f"architecture threshold must be in (0, 1), got {value}")
        self._architecture_threshold = float(value)

    def architecture_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.controller.parameters() if p.requires_grad]

    def streaming_policy(
        self, budget: float | None = None, burst_steps: float = BURST_STEPS
    ) -> ArchitecturePolicy | None:
        """The controller's choice at :attr:`architecture_threshold`; with a ``budget``,
        held on any stream (:class:`GovernedPolicy`): the bucket saves up to
        ``burst_steps`` steps of budget, and a step it cannot pay for runs the cheapest
        architecture."""
        policy: ArchitecturePolicy = ControllerPolicy(
            self.controller, threshold=self.architecture_threshold
        )
        if budget is None:
            return policy
        governor = BudgetGovernor(
            budget,
            budget * burst_steps,
            self.cheapest_architecture.float(),
            lambda architecture: self.cost.of_architecture(self.net, architecture),
        )
        return GovernedPolicy(policy, governor)

    def run_normalized(
        self, features: Tensor, mask: Tensor | None, trunks: list[SharedTrunk] | None
    ) -> KWSOutput:
        windows = cut_windows(features)
        batch, steps = windows.shape[:2]
        groups = length_groups(mask, features)  # longest first, as ``trunks``
        order = torch.cat([rows for rows, _ in groups])
        windows = windows[order]
        sizes = [len(rows) for rows, _ in groups]
        logits = features.new_zeros(batch, steps, self.num_classes)
        used = torch.zeros(
            batch, steps, self.net.num_nodes, dtype=torch.bool, device=features.device
        )
        log_prob = features.new_zeros(batch, steps)
        probs = features.new_zeros(batch, steps, self.net.num_stochastic)
        hidden: Tensor | None = None
        previous: Tensor | None = None
        for t in range(groups[0][1] if groups else 0):
            active = [g for g, (_, n) in enumerate(groups) if n > t]  # a prefix of the groups
            n = sum(sizes[g] for g in active)
            if hidden is not None and previous is not None:
                hidden, previous = hidden[:n], previous[:n]
            distribution, hidden = self.controller.step(previous, hidden, n)
            architecture = (
                distribution.sample()
                if self.training
                else distribution.mode(self.architecture_threshold)
            )
            used_t = self.net.used(architecture, n)
            precomputed = None
            if trunks:
                parts = [trunks[g].window(t) for g in active]
                precomputed = (
                    parts[0]
                    if len(parts) == 1
                    else {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
                )
            result = self.run(windows[:n, t], used_t, precomputed)
            previous = result.features[FEATURE_TAP]
            if self.options.detach_features:
                previous = previous.detach()
            logits[:n, t] = result.output
            used[:n, t] = used_t
            log_prob[:n, t] = self._reduce(distribution, architecture)
            probs[:n, t] = distribution.probs
        inverse = torch.argsort(order)
        return KWSOutput(
            self.logits(logits[inverse]),
            used[inverse],
            log_prob[inverse],
            self.step_costs(used[inverse]),
            probs[inverse],
        )
