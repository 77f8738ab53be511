"""Sweeps on Ray Tune: a grid of tiny runs, a trial that fails on purpose, a resume, the CLI."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sanas.cli import app
from sanas.kws.sweeps.sweep import (
    SweepError,
    grid_space,
    grid_trials,
    parse_grid,
    run_on_ray,
    run_sweep,
    trial_name,
)

TINY = ["epochs=1", "channels=2", "batch_size=8", "workers=0", "threads=1"]
GRID = {"lr": [1e-3, 3e-3, 0.0123456, -1.0]}  # lr=-1 fails on purpose: lr must be > 0


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """One local Ray instance for the module (a sweep reuses a running one, such as one an
    experiment of another test module started)."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _files(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


@pytest.mark.usefixtures("ray_session")
def test_a_grid_sweep_trains_scores_reports_a_failure_and_resumes(
    tone_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    sweep = {"recipe": "fpool3-shortcuts", "data": tone_data, "out": out, "grid": GRID,
             "settings": TINY, "stream_minutes": 0.25, "progress": False}  # fmt: skip
    records = run_sweep(**sweep)
    by_lr = {r["settings"]["lr"]: r for r in records}
    assert list(by_lr) == GRID["lr"]  # a grid's values are trained as given, never rounded
    assert [r["status"] for r in records] == ["done", "done", "done", "failed"]
    failed = by_lr[-1.0]
    assert "config field 'lr' must be > 0" in failed["error"] and failed["metrics"] is None
    for record in records[:3]:
        run = Path(record["run"])
        assert run.parent == out and run.name == f"lr={record['settings']['lr']}_seed=0"
        assert json.loads((run / "config.json").read_text())["lr"] == record["settings"]["lr"]
        metrics, test = record["metrics"], record["test"]
        assert 0 <= metrics["correct"] <= metrics["matched"] <= 100
        assert 0 <= test["correct"] <= 100 and metrics["macs"] > 0 and test["macs"] > 0
        assert 0 <= metrics["accuracy"] <= 1
        assert (
            json.loads((run / "valstream_eval.json").read_text())["correct"] == (metrics["correct"])
        )
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["trials"] == records and saved["recipe"] == "fpool3-shortcuts"
    logs = sorted(p.name for p in (out / "tensorboard").iterdir() if p.is_dir())
    assert logs == sorted(r["name"] for r in records[:3])  # HParams: a child log per trial
    assert (out / "ray").is_dir()  # Ray's own files stay in the sweep

    first, interrupted = Path(records[0]["run"]), Path(records[1]["run"])
    untouched = _files(first)
    trained = _files(interrupted)["checkpoint.pt"]
    (interrupted / "trial.json").unlink()  # as if killed while it was being scored
    again = run_sweep(**sweep)
    assert [r["status"] for r in again] == ["done", "done", "done", "failed"]
    assert _files(first) == untouched  # a finished trial is not started again
    assert _files(interrupted)["checkpoint.pt"] == trained  # resumed: no epoch trained again
    assert (interrupted / "trial.json").is_file()
    assert again[1]["metrics"] == records[1]["metrics"]


@pytest.mark.usefixtures("ray_session")
def test_the_cli_runs_an_optuna_search_that_a_rerun_extends(
    tone_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "search"
    settings = [arg for s in TINY for arg in ("--set", s)]
    command = ["sweep", "--recipe", "fpool3-shortcuts", "--data", str(tone_data), "--out",
               str(out), "--grid", "lr=1e-3,1e-2", "--objectives", "accuracy,macs",
               "--stream-minutes", "0", "--no-progress", *settings]  # fmt: skip
    result = CliRunner().invoke(app, [*command, "--trials", "2"])
    assert result.exit_code == 0, result.output
    assert "val accuracy" in result.output  # no streams: the front on validation accuracy
    first = json.loads((out / "sweep.json").read_text())["trials"]
    assert len(first) == 2 and all(1e-3 <= t["settings"]["lr"] <= 1e-2 for t in first)
    untouched = {t["name"]: _files(Path(t["run"])) for t in first}
    more = CliRunner().invoke(app, [*command, "--trials", "3"])  # told the 2, samples 1
    assert more.exit_code == 0, more.output
    trials = json.loads((out / "sweep.json").read_text())["trials"]
    assert [t["status"] for t in trials] == ["done"] * 3 and trials[:2] == first
    assert {t["name"]: _files(Path(t["run"])) for t in trials[:2]} == untouched
    printed = CliRunner().invoke(app, ["pareto", str(out), "--json"])
    assert printed.exit_code == 0, printed.output
    points = json.loads(printed.output)
    assert len(points["front"]) + len(points["dominated"]) == 3


@pytest.mark.usefixtures("ray_session")
def test_a_trial_killed_by_sigkill_fails_alone_with_a_one_line_error(tmp_path: Path) -> None:
    def trial(config: dict, context: dict) -> dict:
        if config["x"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return {"y": config["x"]}

    outcomes = run_on_ray(trial, {}, grid_space("x", [1, 2]), tmp_path, progress=False)
    by_x = {config["x"]: (metrics, error) for config, metrics, error in outcomes}
    assert by_x[1][0]["y"] == 1 and by_x[1][1] is None
    assert by_x[2][0] is None and "died" in by_x[2][1] and "\n" not in by_x[2][1]


def test_a_bad_sweep_is_refused_before_any_work(tone_data: Path, tmp_path: Path) -> None:
    common = [
        "--recipe",
        "fpool3-shortcuts",
        "--data",
        str(tone_data),
        "--out",
        str(tmp_path / "s"),
    ]
    cases = {
        ("--grid", "lr"): "--grid expects key=v1,v2",
        ("--grid", "lr=1", "--objectives", "speed"): "--objectives must be among",
        ("--grid", "lr=1", "--trials", "2", "--seeds", "0,1"): "one --seeds",
        ("--recipe", "nope"): "no recipe 'nope'",
    }
    for extra, message in cases.items():
        result = CliRunner().invoke(app, ["sweep", *common, *extra])
        assert result.exit_code == 2, result.output
        assert message in result.output
    assert not (tmp_path / "s" / "sweep.json").exists()


def test_grid_trials_are_every_combination_per_seed_named_from_their_settings() -> None:
    grid = parse_grid(["search.budget=1e6,3e6", "model=sanas"])
    assert grid == {"search.budget": [1e6, 3e6], "model": ["sanas"]}
    trials = grid_trials(grid, [0, 1])
    assert [trial_name(t) for t in trials] == [
        "search.budget=1000000.0_model=sanas_seed=0",
        "search.budget=1000000.0_model=sanas_seed=1",
        "search.budget=3000000.0_model=sanas_seed=0",
        "search.budget=3000000.0_model=sanas_seed=1",
    ]
    assert trial_name({"train_paths": [["a", "b"]]}) == "train_paths=---a----b---"
    with pytest.raises(SweepError, match="seeds go in --seeds"):
        parse_grid(["seed=0,1"])
