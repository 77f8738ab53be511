"""The training loop: run folder artefacts, config files, resume after SIGKILL, CLI errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import typer
import yaml
from typer.testing import CliRunner

from sanas.cli.kws import register
from sanas.kws.config import ConfigError, SearchConfig, TrainConfig, load_config
from sanas.kws.data.sequences import SequenceBatch, collate_sequences
from sanas.kws.model.kws_model import SANASKWS, KWSOutput
from sanas.kws.model.networks import KWS_TIERS
from sanas.kws.runs import best_epoch, load_run
from sanas.kws.training.loop import _datasets, _sandwich_loss, lr_factor, train

SAMPLE_RATE = 16000
REPO = Path(__file__).resolve().parents[2]
# A `sanas`-like app with only the train command, as the CLI registers it.
DRIVER = (
    "import typer\n"
    "from sanas.cli.kws import register\n"
    "app = typer.Typer()\n"
    "app.callback()(lambda: None)\n"
    "register(app)\n"
    "app()\n"
)


def tiny(data: Path, out: Path, **overrides: object) -> TrainConfig:
    values = {
        "data": str(data),
        "out": str(out),
        "model": "sanas",
        "epochs": 2,
        "batch_size": 8,
        "channels": 2,
        "threads": 1,
        "workers": 0,
        "progress": False,
        **overrides,
        "search": {"lam": 1e-7, **overrides.get("search", {})},  # type: ignore[dict-item]
    }
    return TrainConfig.from_dict(values)


def test_run_folder_has_every_artefact(tone_data: Path, tmp_path: Path) -> None:
    result = train(tiny(tone_data, tmp_path / "run"))
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["model"] == "sanas"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] == [r["epoch"] for r in result.history]
    for key in ("train_loss", "val_accuracy", "val_macs_per_step", "lam", "node_probability"):
        assert key in rows[-1]
    per_class = rows[-1]["val_macs_per_class"]
    assert per_class["yes"] > 0 and per_class["up"] is None  # no "up" clips in this data
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val_macs_per_class/yes" in header and len(header) == len(set(header))
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert set(checkpoint) == {"model", "optimizer", "objective", "rng", "state"}
    assert checkpoint["state"]["epoch"] == 2
    assert set(checkpoint["rng"]) >= {"torch", "numpy", "python"}
    pareto = json.loads((run / "pareto.json").read_text())
    assert pareto["points"] == result.front and result.front
    for point in pareto["points"]:
        assert (run / point["checkpoint"]).is_file()
    assert len(list((run / "front").glob("*.pt"))) == len(result.front)
    assert result.best_epoch in [p["epoch"] for p in result.front]
    model, config = load_run(run)
    assert isinstance(model, SANASKWS) and not model.training and config.channels == 2
    best = torch.load(run / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())


def test_config_file_round_trip(tmp_path: Path) -> None:
    config = TrainConfig.from_dict(
        {
            "data": "d",
            "out": "o",
            "model": "bsn",
            "search": {"budget_mode": "hinge", "budget": 3e7},
            "sequence": {"lengths_s": [1.0, 2.0], "multi_word": True},
            "options": {"baseline": "ema", "log_prob_reduction": "sum"},
        }
    )
    for suffix, dump in ((".yaml", yaml.safe_dump), (".json", json.dumps)):
        path = tmp_path / f"config{suffix}"
        path.write_text(dump(config.to_dict()))
        assert load_config(path) == config
    assert config.sequence.lengths_s == (1.0, 2.0) and config.options.baseline == "ema"
    assert load_config(path, epochs=3, lam=None).epochs == 3  # overrides; None = not given


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epoch": 3}, "unknown config field(s) 'epoch'"),
        ({"options": {"gama": 0.5}}, "'options.gama'"),
        ({"epochs": "ten"}, "'epochs' must be an integer"),
        ({"shared_convs": "yes"}, "'shared_convs' must be true/false"),
        ({"model": "resnet"}, "'model' must be one of"),
        ({"search": {"budget_mode": "hinge"}}, "'search.budget' must be > 0 with budget_mode"),
        ({"model": "bsn", "options": {"gamma": 0.5}}, "'options.gamma'"),
        ({"options": {"baseline": "batch"}}, "'options.baseline' must be one of"),
        ({"options": {"baseline": "full_network"}}, "'full_network' needs search.train_full"),
        (
            {"model": "static", "search": {"train_cheapest_network": True}},
            "'search.train_cheapest_network' needs",
        ),
        (
            {"search": {"distill_cheapest": True, "train_cheapest_network": True}},
            "'search.distill_cheapest' needs",
        ),
        ({"search": {"lamda": 1e-8}}, "unknown config field(s) 'search.lamda'"),
        ({"sequence": {"lengths_s": []}}, "'sequence.lengths_s' must be a non-empty list"),
        ({"train_paths": [[]]}, "'train_paths' must be a non-empty list"),
        ({"data": ""}, "'data' is required"),
        ({"limit_train": 0}, "'limit_train' must be >= 1"),
    ],
)
def test_bad_fields_are_named(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig.from_dict({"data": "d", "out": "o", **values})


def test_resuming_another_configuration_is_refused(tone_data: Path, tmp_path: Path) -> None:
    train(tiny(tone_data, tmp_path / "run", epochs=1, model="static"))
    with pytest.raises(ConfigError, match="channels: 2 -> 3"):
        train(tiny(tone_data, tmp_path / "run", epochs=2, model="static", channels=3))
    with pytest.raises(ConfigError, match="logit_relu"):
        train(tiny(tone_data, tmp_path / "run", model="static", options={"logit_relu": False}))
    # A static model ignores the search's fields: changing them resumes the same run.
    search = {"search": {"lam": 3.0, "warmup_epochs": 1}, "options": {"baseline": "ema_class"}}
    assert len(train(tiny(tone_data, tmp_path / "run", model="static", **search)).history) == 2
    # A run folder moved elsewhere resumes there (its saved ``out`` is the old path), and
    # the data folder may be spelled relative to the working directory.
    shutil.move(tmp_path / "run", tmp_path / "moved")
    relative = os.path.relpath(tone_data)
    moved = train(tiny(Path(relative), tmp_path / "moved", epochs=3, model="static", **search))
    assert [row["epoch"] for row in moved.history] == [1, 2, 3]


def _command(config: Path) -> list[str]:
    return [sys.executable, "-c", DRIVER, "train", "--config", str(config)]


def _outputs(run: Path) -> tuple[list[dict], dict, dict[str, torch.Tensor], dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("seconds")
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    best = torch.load(run / "best.pt", weights_only=True)["model"]
    return rows, json.loads((run / "pareto.json").read_text()), best, checkpoint


def test_sigkill_then_rerun_ends_exactly_as_an_uninterrupted_run(
    tone_data: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = {}
    for name in ("straight", "killed"):
        config = tiny(tone_data, tmp_path / name, epochs=4, dropout=0.1).to_dict()
        runs[name] = tmp_path / f"{name}.yaml"
        runs[name].write_text(yaml.safe_dump(config))
    train(load_config(runs["straight"]))  # in this process: the same code path as the CLI's

    metrics = tmp_path / "killed" / "metrics.jsonl"
    process = subprocess.Popen(_command(runs["killed"]), env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (metrics.is_file() and metrics.read_text().strip()):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert len(metrics.read_text().splitlines()) < 4  # killed mid-run
    subprocess.run(_command(runs["killed"]), env=env, check=True, capture_output=True)

    rows_a, pareto_a, best_a, last_a = _outputs(tmp_path / "straight")
    rows_b, pareto_b, best_b, last_b = _outputs(tmp_path / "killed")
    assert rows_a == rows_b and pareto_a == pareto_b
    assert all(torch.equal(v, best_b[k]) for k, v in best_a.items())
    assert all(torch.equal(v, last_b["model"][k]) for k, v in last_a["model"].items())
    assert last_a["objective"] == last_b["objective"]


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path: Path) -> None:
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--data", str(tmp_path), "--out", "r", "--model", "x"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "'model' must be one of" in result.output
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no such directory" in result.output


def test_trains_on_the_real_subset(speech_commands_root: Path, tmp_path: Path) -> None:
    config = tiny(
        speech_commands_root,
        tmp_path / "real",
        model="bsn",
        epochs=1,
        limit_train=16,
        limit_val=16,
    )
    result = train(config)
    row = result.history[0]
    assert 0.0 <= row["val_accuracy"] <= 1.0
    assert row["val_macs_per_step"] > 0
    assert set(row["val_macs_per_class"]) == {
        "_silence_", "_unknown_", "yes", "no", "up", "down",
        "left", "right", "on", "off", "stop", "go",
    }  # fmt: skip


def test_architecture_parameters_can_learn_at_their_own_rate() -> None:
    from sanas.kws.model.registry import build_kws_model
    from sanas.kws.training.loop import _optimizer

    model = build_kws_model("bsn", num_classes=3, channels=2)
    reference = _optimizer(model, TrainConfig(lr=1e-3))
    faster = _optimizer(model, TrainConfig(lr=1e-3, search=SearchConfig(arch_lr=1e-2)))
    assert [g["lr"] for g in reference.param_groups] == [1e-3, 1e-3]
    assert [g["lr"] for g in faster.param_groups] == [1e-3, 1e-2]


def test_input_normaliser_is_fitted_saved_and_used_by_the_streaming_engine(
    tone_data: Path, tmp_path: Path
) -> None:
    from sanas.kws.data.audio import read_wav
    from sanas.kws.data.features import MFCC
    from sanas.kws.streaming.engine import engine_for_model

    train(tiny(tone_data, tmp_path / "run", epochs=1))
    model, _ = load_run(tmp_path / "run")
    assert model.input_norm.mean[0] < -10  # MFCC coefficient 0 of quiet audio
    assert 0.5 < float(model.input_norm.std.median()) < 50
    audio = torch.cat([torch.from_numpy(read_wav(p)) for p in sorted(tone_data.glob("*/*.wav"))])
    audio = audio[: 3 * SAMPLE_RATE]
    run = engine_for_model(model).run(audio.numpy())
    with torch.no_grad():
        expected = torch.softmax(model(MFCC()(audio)[None]).logits[0], -1)
    steps = min(len(expected), len(run.posteriors))
    assert steps >= 10
    assert torch.allclose(torch.as_tensor(run.posteriors[:steps]), expected[:steps], atol=1e-5)


def test_cosine_schedule_sets_each_epochs_learning_rate(tone_data: Path, tmp_path: Path) -> None:
    config = tiny(
        tone_data,
        tmp_path / "run",
        lr_schedule="cosine",
        epochs=2,
        search={"warmup_epochs": 1, "train_full_network": True},
    )
    history = train(config).history
    assert [round(row["lr"], 9) for row in history] == [1e-3, 5e-4]
    assert history[0]["arch_loss"] == 0.0  # warm-up: the search has not started


def test_learning_rate_ramps_up_linearly_then_follows_the_epoch_schedule() -> None:
    config = TrainConfig(data="d", out="o", epochs=4, lr_schedule="cosine", lr_warmup_steps=10)
    assert lr_factor(config, 1, 0) == pytest.approx(0.1)
    assert lr_factor(config, 1, 4) == pytest.approx(0.5)
    assert lr_factor(config, 1, 10) == 1.0
    assert lr_factor(config, 3, 9) == pytest.approx(0.5)  # cosine at epoch 3 of 4, warmed up
    assert lr_factor(config, 3, 4) == pytest.approx(0.25)  # a ramp longer than an epoch
    with pytest.raises(ConfigError, match="lr_warmup_steps"):
        TrainConfig(data="d", out="o", lr_warmup_steps=-1).validate()


def _conv_1_alive(run: Path, root: Path) -> float:
    """Share of conv_1's outputs above 0 over the windows of a few validation clips."""
    from sanas.kws.data.audio import read_wav
    from sanas.kws.data.features import MFCC

    model, _ = load_run(run, which="last")
    outputs: list[torch.Tensor] = []
    hook = model.net.nodes["conv_1"].module.register_forward_hook(
        lambda module, inputs, output: outputs.append(output)
    )
    clips = [root / line for line in (root / "validation_list.txt").read_text().split()[:16]]
    features = torch.stack([MFCC()(torch.from_numpy(read_wav(clip))) for clip in clips])
    with torch.no_grad():
        model(features)
    hook.remove()
    return float(torch.cat([o.flatten() for o in outputs]).gt(0).float().mean())


@pytest.mark.parametrize(("warmup", "alive"), [(0, False), (300, True)])
def test_lr_warm_up_keeps_conv_1_alive_where_full_rate_adam_kills_it(
    speech_commands_root: Path, tmp_path: Path, warmup: int, alive: bool
) -> None:
    config = TrainConfig(
        data=str(speech_commands_root),
        out=str(tmp_path / "run"),
        model="static-shortcuts",
        channels=16,
        epochs=1,
        batch_size=32,
        limit_train=12 * 32,  # 12 steps
        limit_val=32,
        lr_warmup_steps=warmup,
        progress=False,
        workers=0,
    )
    train(config)
    share = _conv_1_alive(tmp_path / "run", speech_commands_root)
    assert (share > 0.3) if alive else (share < 0.05)


def test_init_from_starts_a_search_from_a_trained_network(tone_data: Path, tmp_path: Path) -> None:
    train(tiny(tone_data, tmp_path / "static", model="static-shortcuts", epochs=1))
    source, _ = load_run(tmp_path / "static")
    searched = tiny(
        tone_data,
        tmp_path / "sanas",
        epochs=1,
        lr=1e-12,  # the weights barely move: what the run holds is what it started from
        init_from=str(tmp_path / "static"),
        search={"train_full_network": True, "train_cheapest_network": True},
        options={"baseline": "full_network"},
    )
    train(searched)
    model, _ = load_run(tmp_path / "sanas", which="last")
    for name, weight in source.net.state_dict().items():
        assert torch.allclose(model.net.state_dict()[name], weight, atol=1e-6), name
    assert torch.equal(model.input_norm.mean, source.input_norm.mean)
    with pytest.raises(ConfigError, match=r"'init_from'.*another super network"):
        train(tiny(tone_data, tmp_path / "wide", channels=3, init_from=str(tmp_path / "static")))
    with pytest.raises(ConfigError, match=r"'init_from'.*no config\.json"):
        train(tiny(tone_data, tmp_path / "lost", init_from=str(tmp_path / "nowhere")))


def test_a_frozen_backbone_trains_its_exits_and_nothing_else(
    tone_data: Path, tmp_path: Path
) -> None:
    train(tiny(tone_data, tmp_path / "static", model="tc-resnet8", epochs=1))
    exits = {
        "model": "tc-resnet8-bsn",
        "epochs": 1,
        "lr": 1e-2,
        "search": {
            "warmup_epochs": 1000,
            "train_full_network": True,
            "train_cheapest_network": True,
            "distill_cheapest": True,
            "frozen_backbone": True,
        },
    }
    train(tiny(tone_data, tmp_path / "exits", init_from=str(tmp_path / "static"), **exits))
    source, _ = load_run(tmp_path / "static")
    model, _ = load_run(tmp_path / "exits", which="last")
    ours, theirs = model.net.state_dict(), source.net.state_dict()
    # weights and batch-norm statistics alike (at lr 1e-2 both would move): the backbone
    # is the static network (test_frozen_backbone.py: the exits learn)
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
    with pytest.raises(ConfigError, match=r"frozen_backbone.*init_from"):
        train(tiny(tone_data, tmp_path / "alone", **exits))


def test_init_from_starts_a_network_with_exits_from_its_static_backbone(
    tone_data: Path, tmp_path: Path
) -> None:
    train(tiny(tone_data, tmp_path / "static", model="tc-resnet8", epochs=1))
    source, _ = load_run(tmp_path / "static")
    train_exits = tiny(
        tone_data,
        tmp_path / "exits",
        model="tc-resnet8-bsn",
        epochs=1,
        lr=1e-12,  # the weights barely move: what the run holds is what it started from
        init_from=str(tmp_path / "static"),
        search={"warmup_epochs": 1000, "train_full_network": True},
    )
    train(train_exits)
    model, _ = load_run(tmp_path / "exits", which="last")
    ours = model.net.state_dict()
    # every block's and the classifier's weights (batch norm statistics move in training)
    for name, weight in source.net.named_parameters():
        assert torch.allclose(ours[name], weight, atol=1e-6), name
    new = {name for name in ours if name not in source.net.state_dict()}
    assert new and {name.split(".")[1] for name in new} == {"exit_0", "exit_1", "exit_2"}
    assert torch.equal(model.input_norm.mean, source.input_norm.mean)
    # the other way round the static network lacks the exits; another depth, other blocks
    with pytest.raises(ConfigError, match=r"'init_from'.*another super network.*exit_0"):
        train(
            tiny(
                tone_data, tmp_path / "back", model="tc-resnet8", init_from=str(tmp_path / "exits")
            )
        )
    with pytest.raises(ConfigError, match=r"'init_from'.*another super network.*shortcut_2"):
        train(
            tiny(
                tone_data,
                tmp_path / "deep",
                model="tc-resnet14",
                init_from=str(tmp_path / "static"),
            )
        )
    with pytest.raises(ConfigError, match=r"'init_from'.*another super network.*running_mean"):
        train(
            tiny(
                tone_data,
                tmp_path / "wide",
                model="tc-resnet8-bsn",
                channels=3,
                init_from=str(tmp_path / "static"),
            )
        )


def test_a_budgeted_search_is_judged_by_its_best_epoch_within_the_budget() -> None:
    history = [
        {"epoch": 1, "val_accuracy": 0.9, "val_macs_per_step": 9e6},  # still over the budget
        {"epoch": 2, "val_accuracy": 0.7, "val_macs_per_step": 3e6},
        {"epoch": 3, "val_accuracy": 0.8, "val_macs_per_step": 4e6},
        {"epoch": 4, "val_accuracy": 0.8, "val_macs_per_step": 3.5e6},
    ]
    assert best_epoch(history) == 1
    assert best_epoch(history, budget=4e6) == 4  # as accurate as 3, and cheaper
    assert best_epoch(history, budget=3.2e6) == 2
    assert best_epoch(history, budget=1e6) == 2  # none holds it: the cheapest


def test_a_search_rewarded_on_held_out_speakers(tone_data: Path, tmp_path: Path) -> None:
    held = {"search": {"holdout": 0.3}, "epochs": 1}
    train(tiny(tone_data, tmp_path / "static", model="static-shortcuts", **held))
    result = train(tiny(tone_data, tmp_path / "sanas", init_from=str(tmp_path / "static"), **held))
    assert result.history[-1]["arch_loss"] != 0.0  # the held-out batches taught the controller
    with pytest.raises(ConfigError, match="must not have trained on the speakers"):
        train(tiny(tone_data, tmp_path / "leak", init_from=str(tmp_path / "static")))
    with pytest.raises(ConfigError, match=r"'search\.holdout' must be in"):
        tiny(tone_data, tmp_path / "bad", search={"holdout": 1.0})


def test_a_static_model_never_trains_on_the_held_out_speakers(
    tone_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def drawn(*_: object) -> None:
        raise AssertionError("a static model drew held-out batches")

    monkeypatch.setattr("sanas.kws.training.loop._held_out_batches", drawn)
    train(tiny(tone_data, tmp_path / "static", model="static-shortcuts", search={"holdout": 0.3}))


def test_distilled_cheapest_network_learns_the_full_networks_posteriors() -> None:
    full = torch.tensor([[[3.0, 0.0, -1.0], [0.5, 2.0, 0.0]]], requires_grad=True)
    cheapest = full.detach().clone().requires_grad_(True)  # already agrees with the teacher
    out = KWSOutput(
        logits=full,
        used=torch.ones(1, 2, 1),
        log_prob=None,
        cost=torch.zeros(1, 2),
        probs=None,
        full_logits=full,
        cheapest_logits=cheapest,
    )
    batch = SequenceBatch(
        features=torch.zeros(1, 2, 1),
        labels=torch.tensor([[2, 2]]),  # labels that neither network predicts
        mask=torch.ones(1, 2, dtype=torch.bool),
        n_frames=torch.tensor([2]),
    )
    _sandwich_loss(out, batch, distill=True).backward()
    assert cheapest.grad.abs().max() < 1e-6  # nothing left to learn from the teacher
    teacher_grad = full.grad.clone()
    full.grad, cheapest.grad = None, None
    _sandwich_loss(out, batch, distill=False).backward()
    assert cheapest.grad.abs().max() > 0.1  # the labels disagree
    assert torch.allclose(full.grad, teacher_grad)  # the teacher only ever learns the labels


def test_trained_paths_learn_the_labels_beside_the_model(tone_data: Path, tmp_path: Path) -> None:
    conv_0 = sorted(KWS_TIERS["conv_0"])
    run = {"model": "static-shortcuts", "epochs": 2, "lr": 3e-3}
    train(tiny(tone_data, tmp_path / "plain", **run))
    train(tiny(tone_data, tmp_path / "paths", train_paths=[conv_0], **run))
    val = _datasets(tiny(tone_data, tmp_path / "plain", **run)).val
    batch = collate_sequences([val[i] for i in range(len(val))])
    losses = {}
    for name in ("plain", "paths"):
        model, _ = load_run(tmp_path / name, which="last")
        path = model.net.architecture_of(conv_0).unsqueeze(0)
        with torch.no_grad():
            logits = model(batch.features, batch.mask, paths=path).path_logits[0]
        losses[name] = float(F.cross_entropy(logits[batch.mask], batch.labels[batch.mask]))
    assert losses["paths"] < 0.7 * losses["plain"]  # the conv_0 tier became a classifier
    with pytest.raises(ConfigError, match=r"'train_paths': no node named \['conv_9'\]"):
        train(tiny(tone_data, tmp_path / "bad", train_paths=[["in", "conv_9", "classifier"]]))


def test_a_distilled_search_trains(tone_data: Path, tmp_path: Path) -> None:
    search = {"train_full_network": True, "train_cheapest_network": True, "distill_cheapest": True}
    result = train(tiny(tone_data, tmp_path / "run", epochs=1, search=search))
    assert result.history[-1]["train_loss"] > 0


@pytest.mark.parametrize("model", ["tc-resnet8-sanas", "bc-resnet-1-bsn"])
def test_a_modern_backbone_searches_its_architecture(
    tone_data: Path, tmp_path: Path, model: str
) -> None:
    config = tiny(tone_data, tmp_path / model, model=model, epochs=1, channels=8)
    assert config.searches_architecture
    result = train(config)
    assert result.history[-1]["arch_loss"] != 0.0  # REINFORCE taught the architecture
    trained, _ = load_run(tmp_path / model)
    assert trained.net.num_stochastic > 0
