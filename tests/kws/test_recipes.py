"""Recipes: named training setups as YAML files, one command from data to a trained model."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sanas.cli import app
from sanas.kws.config import (
    RECIPES_DIR,
    ConfigError,
    TrainConfig,
    load_recipe,
    merge_fields,
    parse_setting,
    recipe_config,
    recipe_names,
)
from sanas.kws.runs import load_run, read_operating_point, run_config
from sanas.lab.experiment import shared_fields
from sanas.lab.experiment_specs import default_specs

NAMED = ("fpool3-sanas-reference", "fpool3-sanas-improved", "fpool3-static", "fpool3-shortcuts",
         "fpool3-bsn", "fpool3-search", "fpool3-sanas")  # fmt: skip
TINY = ["epochs=1", "channels=2", "batch_size=8", "workers=0", "threads=1"]


def _leaves(values: dict, prefix: str = "") -> dict[str, object]:
    leaves: dict[str, object] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            leaves.update(_leaves(value, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = value
    return leaves


def test_the_named_setups_are_packaged() -> None:
    assert set(NAMED) <= set(recipe_names())


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_is_a_valid_config(name: str) -> None:
    recipe = load_recipe(name)
    config = recipe_config(recipe, data="d", out="o")
    assert isinstance(config, TrainConfig)
    assert recipe.description and "\n" not in recipe.description
    if recipe.pretrain is not None:
        load_recipe(recipe.pretrain)


@pytest.mark.parametrize("name", recipe_names())
def test_every_value_that_differs_from_the_default_says_why(name: str) -> None:
    """A value line needs a comment, on its line or on its section's line, unless it
    restates a default (an override of the recipe it extends)."""
    defaults = _leaves(TrainConfig(data="d", out="o").to_dict())
    section_comment = ""
    for line in (RECIPES_DIR / f"{name}.yaml").read_text().splitlines():
        header = re.match(r"^(\w+):\s*(#.*)?$", line)
        if header:
            section_comment = header.group(2) or ""
            continue
        leaf = re.match(r"^(\s*)(\w+):\s*([^#\s][^#]*?)\s*(#.*)?$", line)
        if leaf is None:
            continue
        indent, key, value, comment = leaf.groups()
        if not indent:
            section_comment = ""
        if key in ("description", "extends", "pretrain", "model"):  # what the recipe is
            continue
        known = [str(v).lower() for k, v in defaults.items() if k.split(".")[-1] == key]
        if known and value.lower() in known:
            continue
        assert comment or section_comment, f"{name}: {line.strip()!r} says no why"


def test_extends_merges_sections_key_by_key() -> None:
    search = recipe_config(load_recipe("fpool3-search"), data="d", out="o")
    assert search.lr == 3e-4  # from fpool3-shortcuts, two levels up
    assert search.options.baseline == "full_network"  # its own
    assert search.options.detach_features  # from fpool3-sanas-improved
    assert search.search.budget_mode == "constrained" and search.search.budget == 4e6


def test_settings_override_nested_fields_and_errors_name_them() -> None:
    recipe = load_recipe("fpool3-sanas-improved")
    config = recipe_config(
        recipe, ["search.lam=1e-9", "options.logit_relu=true"], data="d", out="o"
    )
    assert config.search.lam == 1e-9 and config.options.logit_relu
    assert config.options.detach_features  # the rest of the section stays
    with pytest.raises(ConfigError, match=r"'search\.lamda'"):
        recipe_config(recipe, ["search.lamda=1"], data="d", out="o")
    with pytest.raises(ConfigError, match="key=value"):
        recipe_config(recipe, ["search.lam"], data="d", out="o")
    with pytest.raises(ConfigError, match=r"recipes: .*fpool3-shortcuts"):
        load_recipe("fpool3-shortcut")


def test_flat_search_fields_of_older_run_folders_are_read_into_the_section() -> None:
    old = {"data": "d", "out": "o", "lam": 3e-8, "search_holdout": 0.1, "reuse_steps": 2}
    config = TrainConfig.from_dict(old, legacy=True)
    assert config.search.lam == 3e-8 and config.search.holdout == 0.1
    with pytest.raises(ConfigError, match=r"'lam' is now 'search\.lam'"):
        TrainConfig.from_dict(old)  # a new config names the field's new place


def test_the_recipes_command_lists_and_shows() -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["recipes"])
    assert listed.exit_code == 0
    assert all(name in listed.output for name in NAMED)
    shown = runner.invoke(app, ["recipes", "fpool3-sanas"])
    assert "# stages: pretrain fpool3-shortcuts -> imitate a gate" in shown.output
    missing = runner.invoke(app, ["recipes", "nope"])
    assert missing.exit_code == 2 and "fpool3-bsn, fpool3-sanas" in missing.output


def test_train_with_a_recipe_and_settings(tone_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--recipe", "fpool3-shortcuts", "--data", str(tone_data), "--out", str(out),
            "--no-progress", *(a for s in TINY for a in ("--set", s))]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    config = run_config(out)
    assert config.model == "static-shortcuts" and config.lr == 3e-4 and config.channels == 2
    assert Path(config.data).is_absolute() and Path(config.out).is_absolute()
    bad = CliRunner().invoke(app, [*args[:-2], "--set", "epochs=zero"])
    assert bad.exit_code == 2 and "'epochs' must be an integer" in bad.output


def test_an_imitation_recipe_runs_every_stage_into_one_folder_and_resumes(
    tone_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sanas.kws.training import recipes

    out = tmp_path / "run"
    settings = [*TINY, "imitate.epochs=1", "imitate.stream_minutes=1"]
    recipes.train_recipe("fpool3-sanas", tone_data, out, settings, progress=False)
    assert (out / "pretrain" / "best.pt").is_file()
    assert (out / "trainstream" / "labels.txt").is_file()
    record = json.loads((out / "imitation.json").read_text())
    assert record["gate"] == "aligned" and record["epochs"] == 1
    assert read_operating_point(out).reuse_steps == 2
    model, config = load_run(out)
    assert config.model == "sanas" and config.channels == 2 and model.reuse_steps == 2

    def never(*_: object, **__: object) -> None:
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(recipes, "imitation_run", never)
    monkeypatch.setattr(recipes, "generate_streaming_test", never)
    again = recipes.train_recipe("fpool3-sanas", tone_data, out, settings, progress=False)
    assert again.run_dir == out


def test_a_stage_setting_needs_the_stage(tone_data: Path, tmp_path: Path) -> None:
    from sanas.kws.training.recipes import train_recipe

    with pytest.raises(ConfigError, match="no 'operating_point' section"):
        train_recipe("fpool3-shortcuts", tone_data, tmp_path, ["operating_point.reuse_steps=1"])
    with pytest.raises(ConfigError, match="no 'pretrain' stage"):
        train_recipe("fpool3-shortcuts", tone_data, tmp_path, ["pretrain.epochs=1"])


def test_numbers_in_settings_are_numbers() -> None:
    assert parse_setting("operating_point.hold_budget=3.36e6") == (
        "operating_point.hold_budget",
        3.36e6,
    )
    assert parse_setting("search.budget=3e6")[1] == 3e6
    assert parse_setting("model=sanas")[1] == "sanas"


def test_the_improved_recipe_is_sanas_options_improved() -> None:
    from sanas.kws.model.options import SANASOptions

    config = recipe_config(load_recipe("fpool3-sanas-improved"), data="d", out="o")
    assert asdict(config.options) == asdict(SANASOptions.improved())


def _computed(config: TrainConfig) -> dict[str, object]:
    """What a static run computes: a static model reads only the logit ReLU of the options
    and the speaker holdout of the search (the rest of both only matter to a search)."""
    values = config.to_dict()
    for ignored in ("data", "out", "progress"):
        values.pop(ignored)
    values["options"] = {"logit_relu": values["options"]["logit_relu"]}
    values["search"] = {"holdout": values["search"]["holdout"]}
    return values


def test_the_baseline_recipe_computes_the_experiments_baseline() -> None:
    """`sanas train --recipe fpool3-shortcuts` trains what the experiment's "+ shortcuts, 35
    epochs" run trained (the baseline of docs/results/real-subset-ch16-imitation)."""
    specs = {s.name: s for s in default_specs(lams=(), sanas_budgets=(), baseline_epochs=(35,))}
    fields = merge_fields(shared_fields("d", 25, 16, 0, {}), specs["+ shortcuts, 35 epochs"].fields)
    experiment = TrainConfig.from_dict({**fields, "out": "o"})
    recipe = recipe_config(load_recipe("fpool3-shortcuts"), data="d", out="o")
    assert _computed(recipe) == _computed(experiment)
    assert recipe.options == experiment.options  # a SANAS model made from it reads them all


def test_the_imitation_recipe_is_the_experiments_imitation() -> None:
    specs = default_specs(
        lams=(), sanas_budgets=(), baseline_epochs=(35,), imitation_gates=("aligned",)
    )
    spec = next(s for s in specs if s.imitation is not None)
    recipe = load_recipe("fpool3-sanas")
    assert spec.start_from == "+ shortcuts, 35 epochs" and recipe.pretrain == "fpool3-shortcuts"
    experiment_minutes = 60.0  # the experiment's streams; imitation's is twice as long
    expected = {k: v for k, v in spec.imitation.items() if k != "streams"}
    expected |= {"epochs": 20, "stream_minutes": 2 * experiment_minutes}  # imitation_run's epochs
    assert recipe.imitate == expected
    # the operating point chosen on validation in docs/results/real-subset-ch16-imitation
    assert recipe.operating_point == {
        "architecture_threshold": 0.05,
        "hold_budget": 0.2 * 16_777_216,  # 1/5 of + shortcuts' MACs per step
        "reuse_steps": spec.imitation["reuse_steps"],
    }


def test_kws_efficient_sanas_imitates_on_a_backbone_with_exits(
    tone_data: Path, tmp_path: Path
) -> None:
    from sanas.kws.training import recipes
    from sanas.kws.training.gates import gate_tiers

    out = tmp_path / "run"
    settings = [*TINY, "imitate.epochs=1", "imitate.stream_minutes=1", "imitate.noise_minutes=1",
                "pretrain.epochs=1",
                "pretrain.pretrain.epochs=1"]  # fmt: skip
    recipes.train_recipe("kws-efficient-sanas", tone_data, out, settings, progress=False)
    static = run_config(out / "pretrain" / "pretrain")  # the static backbone first
    assert static.model == "tc-resnet8" and static.epochs == 1 and static.channels == 2
    assert static.sequence.lengths_s == (1.0,)  # on 1 s clips
    pretrained = run_config(out / "pretrain")  # then its exits, started from it
    assert pretrained.model == "tc-resnet8-bsn" and pretrained.search.train_cheapest_network
    assert pretrained.init_from == str(out / "pretrain" / "pretrain") and pretrained.epochs == 1
    assert max(pretrained.sequence.lengths_s) == 3.0  # on sequences, as the controller reads it
    model, config = load_run(out)
    assert config.model == "tc-resnet8-sanas" and model.reuse_steps == 1
    stored = load_recipe("kws-efficient-sanas").operating_point
    assert read_operating_point(out).architecture_threshold == stored["architecture_threshold"]
    assert gate_tiers(model)["cheap"] == {"in", "exit_0", "features", "classifier"}
    record = json.loads((out / "imitation.json").read_text())
    assert record["gate"] == "aligned" and 0 < record["gate_share"][0] < 1


@pytest.mark.parametrize(
    ("settings", "stage_models"),
    [
        (["model=res8-sanas"], ["res8", "res8-bsn"]),  # each stage trains the same backbone
        (["model=res8-sanas", "pretrain.pretrain.model=res15"], ["res15", "res8-bsn"]),
        ([], ["tc-resnet8", "tc-resnet8-bsn"]),  # the recipe's own
    ],
)
def test_setting_the_model_sets_each_stages_counterpart(
    tone_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings: list[str],
    stage_models: list[str],
) -> None:
    """``--set model=<backbone>-sanas`` on kws-efficient-sanas pretrains that backbone:
    static first, then its exits; an explicit stage setting still wins."""
    from sanas.kws.training import recipes

    trained: list[str] = []
    monkeypatch.setattr(recipes, "train", lambda config: trained.append(config.model))
    for stage in ("generate_streaming_test", "imitation_run", "imitation_result"):
        monkeypatch.setattr(recipes, stage, lambda *_, **__: None)
    recipes.train_recipe("kws-efficient-sanas", tone_data, tmp_path, settings)
    assert trained == stage_models


def test_a_model_of_no_known_family_has_no_counterpart() -> None:
    """A model registered by a user has no stage counterpart to guess: the recipe asks
    for the stage's model (tested on the lookup, the registry being global)."""
    from sanas.kws.model.zoo import counterpart

    assert counterpart("static", "static") == "static"
    assert counterpart("sanas", "static") == "static-shortcuts"
    with pytest.raises(ValueError, match="no bsn counterpart is known for the model 'my-net'"):
        counterpart("my-net", "bsn")


def test_imitation_can_also_learn_from_background_noise_alone(
    tone_data: Path, tmp_path: Path
) -> None:
    """With imitate.noise_minutes the controller also imitates on a stream without words,
    where the gate spends nothing: what keeps a recurrent controller from expecting a word
    every 3 s (the word streams' rhythm) on long silences."""
    from sanas.kws.training import recipes

    settings = [
        *TINY,
        "imitate.epochs=1",
        "imitate.stream_minutes=1",
        "imitate.noise_minutes=1",
    ]
    recipes.train_recipe("fpool3-sanas", tone_data, tmp_path, settings, progress=False)
    assert (tmp_path / "trainnoise" / "labels.txt").read_text() == ""
    record = json.loads((tmp_path / "imitation.json").read_text())
    assert record["streams"] == [str(tmp_path / "trainstream"), str(tmp_path / "trainnoise")]
    assert record["gate_share"][0] > 0 and record["gate_share"][1] == 0
    with pytest.raises(ConfigError, match=r"imitate\.noise_minutes must be >= 0, got -1"):
        recipes.train_recipe(
            "fpool3-sanas", tone_data, tmp_path / "bad", [*TINY, "imitate.noise_minutes=-1"]
        )
