"""Keyword-spotting models by name, in the style of timm's ``@register_model``.

A builder registered with :func:`register_model` makes a :class:`KWSModel` from the
settings every model shares (keyword arguments: ``num_classes``, ``channels``,
``dropout``, ``options``, ``shared_convs``, ``cost_adds``); :func:`build_kws_model`
makes one by name, :func:`model_family` says how it chooses its architecture without
building it, and :func:`model_info` / :func:`list_models` describe them (family,
parameters, MACs). The built-in models (cnn-trad-fpool3's ``static``,
``static-shortcuts``, ``bsn``, ``sanas``, then each backbone's ``<backbone>``,
``<backbone>-bsn`` and ``<backbone>-sanas``) register in :mod:`sanas.kws.model.zoo`,
which the package ``sanas.kws.model`` imports first, so every lookup here sees them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, TypedDict

from sanas.supernet.costs import build_cost

if TYPE_CHECKING:
    from sanas.kws.model.kws_model import KWSModel
    from sanas.kws.model.options import SANASOptions

CostAdds = Literal["reference", "exact"]
INFO_CLASSES = 12  # Speech Commands' 10 keywords, silence and unknown
# How a model chooses its architecture (``KWSModel.family``); the last two search it.
FAMILIES = ("static", "bsn", "sanas")


class ModelBuilder(Protocol):
    """What :func:`register_model` registers: a function of the shared model settings."""

    def __call__(
        self,
        *,
        num_classes: int,
        channels: int,
        dropout: float,
        options: SANASOptions | None,
        shared_convs: bool,
        cost_adds: CostAdds,
    ) -> KWSModel: ...


@dataclass(frozen=True)
class RegisteredModel:
    """A registry entry: the builder under its name, with one line that says what it is
    and the family of the models it builds (one of :data:`FAMILIES`)."""

    name: str
    description: str
    family: str
    builder: ModelBuilder


class ModelInfo(TypedDict):
    """What :func:`model_info` reports of a model at ``channels`` and 12 classes.

    ``params`` / ``macs``: the super network with every node on (per step: one window of
    101 frames); ``params_cheapest`` / ``macs_cheapest``: the cheapest architecture the
    model can run: the whole network for a static model, the cheapest path that reaches
    the output for a searched one (BSN, SANAS). MACs use the model's own cost
    (:class:`~sanas.supernet.costs.MacsCost`, the papers' accounting); the controller or
    architecture distribution of a searched model is not counted in ``params``.
    """

    name: str
    description: str
    family: str
    channels: int
    num_classes: int
    params: int
    params_cheapest: int
    macs: int
    macs_cheapest: int


MODEL_REGISTRY: dict[str, RegisteredModel] = {}


def register_model(
    name: str, description: str, family: str
) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a builder of ``family`` models under ``name`` (a name is registered once: a
    second is an error, so that no model silently replaces another)."""
    if family not in FAMILIES:
        raise ValueError(f"model {name!r}: family must be one of {FAMILIES}, got {family!r}")

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in MODEL_REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        MODEL_REGISTRY[name] = RegisteredModel(name, description, family, builder)
        return builder

    return decorate


def model_names() -> tuple[str, ...]:
    """The registered model names, in registration order."""
    return tuple(MODEL_REGISTRY)


def registered_model(name: str) -> RegisteredModel:
    """The entry of ``name``; a ValueError that lists the valid names for any other."""
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[name]


def model_family(name: str) -> str:
    """How the registered model ``name`` chooses its architecture, ``static``, ``bsn`` or
    ``sanas``, read from the registry without building the model (so without touching the
    random state): a training config asks it whether a model searches its architecture."""
    return registered_model(name).family


def build_kws_model(
    name: str,
    num_classes: int = 12,
    channels: int = 64,
    dropout: float = 0.0,
    options: SANASOptions | None = None,
    shared_convs: bool = True,
    cost_adds: CostAdds = "reference",
) -> KWSModel:
    """Make the registered model ``name``, e.g. ``static`` (cnn-trad-fpool3),
    ``static-shortcuts``, ``bsn``, ``sanas`` or ``tc-resnet8-sanas`` (``options``: the
    reference's when None; ``channels``: 64 is each network's published width)."""
    entry = registered_model(name)
    model = entry.builder(
        num_classes=num_classes,
        channels=channels,
        dropout=dropout,
        options=options,
        shared_convs=shared_convs,
        cost_adds=cost_adds,
    )
    if model.family != entry.family:
        raise ValueError(
            f"model {name!r} is registered as {entry.family} but builds a {model.family} model"
        )
    return model


def model_info(name: str, channels: int = 64) -> ModelInfo:
    """Family, parameters and MACs of the model ``name`` (:class:`ModelInfo`)."""
    entry = registered_model(name)
    model = build_kws_model(name, num_classes=INFO_CLASSES, channels=channels)
    net = model.net
    params = build_cost("params", net)
    full = net.used(None, 1)
    cheapest = full if model.family == "static" else net.used(model.cheapest_architecture, 1)
    return ModelInfo(
        name=name,
        description=entry.description,
        family=model.family,
        channels=channels,
        num_classes=INFO_CLASSES,
        params=int(params(full)[0]),
        params_cheapest=int(params(cheapest)[0]),
        macs=int(model.cost(full)[0]),
        macs_cheapest=int(model.cost(cheapest)[0]),
    )


def list_models(channels: int = 64) -> list[ModelInfo]:
    """:func:`model_info` of every registered model, in registration order."""
    return [model_info(name, channels) for name in MODEL_REGISTRY]
