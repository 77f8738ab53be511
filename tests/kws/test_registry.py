"""The model registry: models made, listed and described by name, as timm's register_model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from sanas.cli import app
from sanas.kws.model import registry
from sanas.kws.model.kws_model import KWSModel, StaticKWS
from sanas.kws.model.networks import build_model, cnn_trad_fpool3
from sanas.kws.model.options import SANASOptions
from sanas.kws.model.registry import (
    CostAdds,
    build_kws_model,
    list_models,
    model_family,
    model_info,
    model_names,
    register_model,
)
from sanas.kws.model.zoo import BACKBONES, MODEL_KINDS
from sanas.supernet.costs import build_cost, cost_summary
from sanas.supernet.policies import ControllerPolicy, FixedPolicy

CNN_TRAD = ("static", "static-shortcuts", "bsn", "sanas")
BUILT_IN = (
    *CNN_TRAD,
    *(f"{backbone.name}{suffix}" for backbone in BACKBONES for suffix in ("", "-bsn", "-sanas")),
)
runner = CliRunner()


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish with it."""
    monkeypatch.setattr(registry, "MODEL_REGISTRY", dict(registry.MODEL_REGISTRY))


def test_the_built_in_models_are_registered_in_order() -> None:
    assert model_names() == BUILT_IN
    assert MODEL_KINDS == BUILT_IN


def test_a_fresh_interpreter_sees_every_model_from_the_registry_alone() -> None:
    code = "from sanas.kws.model.registry import model_names; print(','.join(model_names()))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == ",".join(BUILT_IN)


@pytest.mark.usefixtures("scratch_registry")
def test_a_registered_model_is_buildable_listed_and_described() -> None:
    @register_model("tiny-static", "cnn-trad-fpool3 at any width, for tests", "static")
    def tiny_static(
        *,
        num_classes: int,
        channels: int,
        dropout: float,
        options: SANASOptions | None,
        shared_convs: bool,
        cost_adds: CostAdds,
    ) -> KWSModel:
        net = cnn_trad_fpool3(num_classes=num_classes, channels=channels, dropout=dropout)
        return StaticKWS(net, options, shared_convs, cost_adds)

    model = build_kws_model("tiny-static", num_classes=3, channels=2)
    assert isinstance(model, StaticKWS) and model.num_classes == 3
    assert model_names() == (*BUILT_IN, "tiny-static")
    info = model_info("tiny-static", channels=2)
    assert info["description"] == "cnn-trad-fpool3 at any width, for tests"
    assert info["family"] == "static" and info["macs"] == info["macs_cheapest"] > 0
    assert [i["name"] for i in list_models(channels=2)] == [*BUILT_IN, "tiny-static"]


@pytest.mark.usefixtures("scratch_registry")
def test_a_name_is_registered_once() -> None:
    original = registry.MODEL_REGISTRY["sanas"]
    with pytest.raises(ValueError, match="'sanas' is already registered"):
        register_model("sanas", "another", "sanas")(lambda **settings: build_kws_model("static"))
    assert registry.MODEL_REGISTRY["sanas"] is original


def test_a_family_is_read_without_building_and_checked_when_building(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "MODEL_REGISTRY", dict(registry.MODEL_REGISTRY))
    expected = {"static": "static", "bsn": "bsn", "res8": "static", "bc-resnet-1-sanas": "sanas"}
    assert {name: model_family(name) for name in expected} == expected
    with pytest.raises(ValueError, match="family must be one of"):
        register_model("odd", "an unknown family", "oracle")
    register_model("liar", "claims sanas, builds static", "sanas")(
        lambda **settings: build_kws_model("static", channels=1)
    )
    with pytest.raises(ValueError, match="registered as sanas but builds a static model"):
        build_kws_model("liar", channels=1)


@pytest.mark.parametrize("lookup", [build_kws_model, model_info])
def test_an_unknown_name_is_an_error_that_lists_the_valid_ones(lookup: object) -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet'") as error:
        lookup("resnet")  # type: ignore[operator]
    assert all(name in str(error.value) for name in BUILT_IN)


@pytest.mark.parametrize(
    ("name", "policy"),
    [
        ("static", None),
        ("static-shortcuts", None),
        ("bsn", FixedPolicy),
        ("sanas", ControllerPolicy),
    ],
)
def test_a_model_built_by_name_streams_with_the_policy_of_its_family(
    name: str, policy: type | None
) -> None:
    model = build_kws_model(name, channels=2).eval()
    assert model.family == model_info(name, channels=2)["family"]
    chosen = model.streaming_policy()
    assert chosen is None if policy is None else isinstance(chosen, policy)


def test_build_kws_model_keeps_its_settings() -> None:
    options = SANASOptions.improved()
    model = build_kws_model("sanas", num_classes=5, channels=2, dropout=0.1, options=options)
    assert model.num_classes == 5 and model.options is options
    assert "in" not in model.net.stochastic_names  # improved options fix the bottlenecks
    exact = build_kws_model("bsn", channels=2, shared_convs=False, cost_adds="exact")
    assert not exact.shared_convs and exact.cost.adds == "exact"


def test_sanas_models_json_lists_the_costs_of_the_cost_registry() -> None:
    result = runner.invoke(app, ["models", "--json", "--channels", "8"])
    assert result.exit_code == 0, result.output
    listed = {info["name"]: info for info in json.loads(result.output)}
    assert tuple(listed) == BUILT_IN
    for name, graph in [("static", "cnn-trad-fpool3"), ("sanas", "cnn-trad-fpool3-shortcuts")]:
        net = build_model(graph, channels=8)
        summary = cost_summary(net, build_cost("macs", net))
        assert listed[name]["macs"] == summary["total_macs"]
        assert listed[name]["params"] == summary["params"]
    shortcuts = cost_summary(build_model("cnn-trad-fpool3-shortcuts", channels=8))
    for name in ("bsn", "sanas"):  # searched: down to the cheapest path
        assert listed[name]["macs_cheapest"] == shortcuts["min_used_macs"]
        cheapest = build_kws_model(name, channels=8).cheapest_architecture
        net = build_model("cnn-trad-fpool3-shortcuts", channels=8)
        params = build_cost("params", net)(net.used(cheapest, 1))
        assert listed[name]["params_cheapest"] == int(params[0]) < listed[name]["params"]
    for name in ("static", "static-shortcuts"):  # static: always the whole network
        assert listed[name]["macs_cheapest"] == listed[name]["macs"]
    assert listed["static-shortcuts"]["macs"] == shortcuts["total_macs"]


def test_sanas_models_prints_a_table_of_every_model() -> None:
    result = runner.invoke(app, ["models", "--channels", "2"])
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split()[:2] == ["name", "family"] and "MACs cheapest" in header
    assert [row.split()[0] for row in rows] == list(BUILT_IN)
