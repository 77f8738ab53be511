"""The built-in keyword-spotting models, registered by name (``sanas models`` lists them):
cnn-trad-fpool3 with and without shortcuts as static networks, and the shortcuts super
network searched as a BSN or driven by a SANAS controller; then each modern backbone
(TC-ResNet8/14, BC-ResNet-1/2/3/8, res8/res15) as ``<backbone>`` (static: the published
network, every node at every step), ``<backbone>-bsn`` and ``<backbone>-sanas`` (its
skippable blocks and early exits searched, :mod:`sanas.kws.model.backbone`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from sanas.kws.model.backbone import PAPER_CHANNELS
from sanas.kws.model.bc_resnet import bc_resnet
from sanas.kws.model.kws_model import BSNKWS, SANASKWS, KWSModel, StaticKWS
from sanas.kws.model.networks import cnn_trad_fpool3
from sanas.kws.model.options import SANASOptions
from sanas.kws.model.registry import CostAdds, ModelBuilder, model_names, register_model
from sanas.kws.model.res_kws import res_kws
from sanas.kws.model.tc_resnet import tc_resnet
from sanas.supernet.graph import SuperNetwork

# ------------------------------------------------------------------- cnn-trad-fpool3
# (name, family, model class, shortcuts, description) of the four cnn-trad-fpool3 models
FPOOL3_MODELS: tuple[tuple[str, str, type[KWSModel], bool, str], ...] = (
    ("static", "static", StaticKWS, False,
     "cnn-trad-fpool3 (Sainath & Parada 2015), every node at every step"),
    ("static-shortcuts", "static", StaticKWS, True,
     "cnn-trad-fpool3 + four shortcuts, every node at every step"),
    ("bsn", "bsn", BSNKWS, True,
     "Budgeted Super Network: one learned architecture for every step"),
    ("sanas", "sanas", SANASKWS, True,
     "SANAS: a recurrent controller picks each step's architecture"),
)  # fmt: skip


def _builder(
    model_class: type[KWSModel],
    network: Callable[[int, int, float, SANASOptions], SuperNetwork],
) -> ModelBuilder:
    """A registered builder: ``network(num_classes, channels, dropout, options)`` makes the
    super network, ``model_class`` drives it."""

    def build(
        *,
        num_classes: int,
        channels: int,
        dropout: float,
        options: SANASOptions | None,
        shared_convs: bool,
        cost_adds: CostAdds,
    ) -> KWSModel:
        options = options or SANASOptions()
        net = network(num_classes, channels, dropout, options)
        return model_class(net, options, shared_convs, cost_adds)

    return build


def _fpool3_builder(model_class: type[KWSModel], shortcuts: bool) -> ModelBuilder:
    """cnn-trad-fpool3 (with or without its shortcuts) as a ``model_class`` model; a
    searched one keeps its bottleneck nodes always on unless its options search them."""
    searched = model_class is not StaticKWS

    def network(
        num_classes: int, channels: int, dropout: float, options: SANASOptions
    ) -> SuperNetwork:
        return cnn_trad_fpool3(
            num_classes=num_classes,
            shortcuts=shortcuts,
            dropout=dropout,
            channels=channels,
            fixed_bottlenecks=searched and not options.search_bottlenecks,
        )

    return _builder(model_class, network)


def _register_fpool3() -> None:
    """Register the four cnn-trad-fpool3 models."""
    for name, family, model_class, shortcuts, description in FPOOL3_MODELS:
        register_model(name, description, family)(_fpool3_builder(model_class, shortcuts))


_register_fpool3()


# ----------------------------------------------------------------- modern backbones
@dataclass(frozen=True)
class Backbone:
    """A published network: ``graph(num_classes=, width=, dropout=, exits=)`` makes its
    super network at ``width`` times its published channels, with or without early exits."""

    name: str
    paper: str
    graph: Callable[..., SuperNetwork]


BACKBONES = (
    Backbone("tc-resnet8", "TC-ResNet8 (Choi et al. 2019)", partial(tc_resnet, 8)),
    Backbone("tc-resnet14", "TC-ResNet14 (Choi et al. 2019)", partial(tc_resnet, 14)),
    *(
        Backbone(f"bc-resnet-{tau}", f"BC-ResNet-{tau} (Kim et al. 2021)", partial(bc_resnet, tau))
        for tau in (1, 2, 3, 8)
    ),
    Backbone("res8", "res8 (Tang & Lin 2018)", partial(res_kws, 8)),
    Backbone("res15", "res15 (Tang & Lin 2018)", partial(res_kws, 15)),
)
# (family, model class, name suffix, description suffix) of the three models of a backbone
BACKBONE_MODELS: tuple[tuple[str, type[KWSModel], str, str], ...] = (
    ("static", StaticKWS, "", ", every node at every step"),
    ("bsn", BSNKWS, "-bsn", " + exits, BSN: one learned architecture for every step"),
    ("sanas", SANASKWS, "-sanas", " + exits, SANAS: a controller picks each step's blocks"),
)


def _backbone_builder(backbone: Backbone, model_class: type[KWSModel]) -> ModelBuilder:
    """``backbone`` as a ``model_class`` model: the published network for a static model,
    with early exits for a searched one."""
    exits = model_class is not StaticKWS

    def network(
        num_classes: int, channels: int, dropout: float, options: SANASOptions
    ) -> SuperNetwork:
        width = channels / PAPER_CHANNELS
        return backbone.graph(num_classes=num_classes, width=width, dropout=dropout, exits=exits)

    return _builder(model_class, network)


def _register_backbones() -> None:
    """Register ``<backbone>``, ``<backbone>-bsn`` and ``<backbone>-sanas`` of each backbone."""
    for backbone in BACKBONES:
        for family, model_class, suffix, what in BACKBONE_MODELS:
            register_model(backbone.name + suffix, backbone.paper + what, family)(
                _backbone_builder(backbone, model_class)
            )


_register_backbones()


def counterpart(name: str, family: str) -> str:
    """The model of ``family`` on the network of the registered model ``name``: for a
    backbone ``<backbone>`` (static), ``<backbone>-bsn`` or ``<backbone>-sanas``; for
    cnn-trad-fpool3 ``static-shortcuts``, ``bsn`` or ``sanas`` (a searched graph has the
    shortcuts). What a recipe's stages train when ``--set model=`` picks another backbone."""
    suffixes = {f: suffix for f, _, suffix, _ in BACKBONE_MODELS}
    if family not in suffixes:
        raise ValueError(f"family must be one of {tuple(suffixes)}, got {family!r}")
    for backbone in BACKBONES:
        if name in {backbone.name + suffix for suffix in suffixes.values()}:
            return backbone.name + suffixes[family]
    fpool3 = {model: model_family for model, model_family, _, _, _ in FPOOL3_MODELS}
    if name not in fpool3:
        raise ValueError(f"no {family} counterpart is known for the model {name!r}")
    if fpool3[name] == family:
        return name
    with_shortcuts = {f: model for model, f, _, shortcuts, _ in FPOOL3_MODELS if shortcuts}
    return with_shortcuts[family]


def sanas_counterpart(name: str) -> str:
    """The SANAS model on the super network of the registered model ``name``: ``sanas``
    for cnn-trad-fpool3's, ``<backbone>-sanas`` for a backbone's (whose graph, with early
    exits, is ``<backbone>-bsn``'s, not the static ``<backbone>``'s)."""
    return counterpart(name, "sanas")


# The built-in names, what a run's config may name; models registered later are in
# :func:`~sanas.kws.model.registry.model_names`.
MODEL_KINDS: tuple[str, ...] = model_names()
