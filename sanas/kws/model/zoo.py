"""The built-in keyword-spotting models, registered by name (``sanas models`` lists them):
cnn-trad-fpool3 with and without shortcuts as static networks, and the shortcuts super
network searched as a BSN or driven by a SANAS controller."""

from __future__ import annotations

from sanas.kws.model.kws_model import BSNKWS, SANASKWS, KWSModel, StaticKWS
from sanas.kws.model.networks import cnn_trad_fpool3
from sanas.kws.model.options import SANASOptions
from sanas.kws.model.registry import CostAdds, model_names, register_model
from sanas.supernet.graph import SuperNetwork


# ------------------------------------------------------------------- registered models
def _network(
    num_classes: int,
    channels: int,
    dropout: float,
    shortcuts: bool = True,
    fixed_bottlenecks: bool = False,
) -> SuperNetwork:
    return cnn_trad_fpool3(
        num_classes=num_classes,
        shortcuts=shortcuts,
        dropout=dropout,
        channels=channels,
        fixed_bottlenecks=fixed_bottlenecks,
    )


@register_model("static", "cnn-trad-fpool3 (Sainath & Parada 2015), every node at every step")
def static(
    *,
    num_classes: int,
    channels: int,
    dropout: float,
    options: SANASOptions | None,
    shared_convs: bool,
    cost_adds: CostAdds,
) -> KWSModel:
    net = _network(num_classes, channels, dropout, shortcuts=False)
    return StaticKWS(net, options, shared_convs, cost_adds)


@register_model("static-shortcuts", "cnn-trad-fpool3 + four shortcuts, every node at every step")
def static_shortcuts(
    *,
    num_classes: int,
    channels: int,
    dropout: float,
    options: SANASOptions | None,
    shared_convs: bool,
    cost_adds: CostAdds,
) -> KWSModel:
    net = _network(num_classes, channels, dropout)
    return StaticKWS(net, options, shared_convs, cost_adds)


@register_model("bsn", "Budgeted Super Network: one learned architecture for every step")
def bsn(
    *,
    num_classes: int,
    channels: int,
    dropout: float,
    options: SANASOptions | None,
    shared_convs: bool,
    cost_adds: CostAdds,
) -> KWSModel:
    options = options or SANASOptions()
    net = _network(num_classes, channels, dropout, fixed_bottlenecks=not options.search_bottlenecks)
    return BSNKWS(net, options, shared_convs, cost_adds)


@register_model("sanas", "SANAS: a recurrent controller picks each step's architecture")
def sanas(
    *,
    num_classes: int,
    channels: int,
    dropout: float,
    options: SANASOptions | None,
    shared_convs: bool,
    cost_adds: CostAdds,
) -> KWSModel:
    options = options or SANASOptions()
    net = _network(num_classes, channels, dropout, fixed_bottlenecks=not options.search_bottlenecks)
    return SANASKWS(net, options, shared_convs, cost_adds)


# The built-in names, what a run's config may name; models registered later are in
# :func:`~sanas.kws.model.registry.model_names`.
MODEL_KINDS: tuple[str, ...] = model_names()
