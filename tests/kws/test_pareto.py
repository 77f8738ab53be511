"""The cost/accuracy front across runs, on hand-made run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sanas.cli import app
from sanas.kws.sweeps.pareto import ParetoError, find_runs, pareto_front, write_hparams


def _run(folder: Path, val: tuple[float, float] | None, test: float | None = None,
         history: list[tuple[float, float]] = ()) -> Path:  # fmt: skip
    """A run folder: config.json, its validation stream scores (Correct, MACs per step),
    its test Correct, and its epochs' (validation accuracy, MACs per step)."""
    folder.mkdir(parents=True)
    config = {"data": "d", "out": str(folder), "model": "static-shortcuts"}
    (folder / "config.json").write_text(json.dumps(config))
    if val is not None:
        (folder / "valstream_eval.json").write_text(
            json.dumps({"correct": val[0], "macs_per_step": val[1]})
        )
    if test is not None:
        (folder / "stream_eval.json").write_text(json.dumps({"correct": test, "macs_per_step": 1}))
    rows = [{"epoch": e + 1, "val_accuracy": a, "val_macs_per_step": m}
            for e, (a, m) in enumerate(history)]  # fmt: skip
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_a_run_is_dominated_when_another_costs_no_more_and_scores_no_less(tmp_path: Path) -> None:
    runs = {
        "cheap": _run(tmp_path / "cheap", (40.0, 1e6), test=38.0),
        "good": _run(tmp_path / "good", (60.0, 4e6), test=55.0),
        "worse": _run(tmp_path / "worse", (50.0, 5e6)),  # costlier and worse than good
        "tie": _run(tmp_path / "tie", (60.0, 4e6)),  # equal to good: neither dominates
        "same_cost": _run(tmp_path / "same_cost", (39.0, 1e6)),  # cheap scores more
    }
    front, dominated = pareto_front(list(runs.values()))
    assert [Path(p.run).name for p in front] == ["cheap", "good", "tie"]
    assert [Path(p.run).name for p in dominated] == ["same_cost", "worse"]
    assert front[0].metric == "correct" and front[0].value == 40.0
    assert (front[0].test_value, front[2].test_value) == (38.0, None)  # test: reported only


def test_without_stream_scores_the_best_epoch_on_validation_accuracy_is_the_point(
    tmp_path: Path,
) -> None:
    a = _run(tmp_path / "a", None, history=[(0.5, 2e6), (0.7, 3e6), (0.6, 1e6)])
    b = _run(tmp_path / "b", (90.0, 1e5), history=[(0.65, 2e6)])
    front, dominated = pareto_front([a, b])  # b has stream scores, a not: accuracy for both
    assert [(p.value, p.macs_per_step) for p in front] == [(0.65, 2e6), (0.7, 3e6)]
    assert not dominated and front[0].metric == "accuracy"
    with pytest.raises(ParetoError, match="not scored on a validation stream"):
        pareto_front([a, b], metric="correct")


def test_a_sweep_folder_stands_for_its_runs_and_the_cli_plots_the_front(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _run(sweep / "x", (40.0, 1e6))
    _run(sweep / "y", (30.0, 2e6))
    (sweep / "valstream").mkdir()  # not a run
    assert [p.name for p in find_runs([sweep])] == ["x", "y"]
    result = CliRunner().invoke(app, ["pareto", str(sweep), "--plot", str(tmp_path / "f.png")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split()[:2] == ["front", "x"]
    assert result.output.splitlines()[2].split()[:2] == ["dominated", "y"]
    assert (tmp_path / "f.png").stat().st_size > 0
    empty = CliRunner().invoke(app, ["pareto", str(sweep / "valstream")])
    assert empty.exit_code == 2 and "neither a run folder nor a folder of finished runs" in (
        empty.output
    )


def test_hparams_give_each_trial_a_child_log(tmp_path: Path) -> None:
    trials = [{"name": f"lr={lr}_seed=0", "settings": {"lr": lr, "seed": 0},
               "metrics": {"correct": 50.0, "macs": 1e6, "accuracy": None}, "test": {}}
              for lr in (1e-3, 3e-3)]  # fmt: skip
    write_hparams(tmp_path, trials)
    write_hparams(tmp_path, trials)  # rewritten, not doubled
    for trial in trials:
        events = list((tmp_path / trial["name"]).glob("events.out.tfevents.*"))
        assert len(events) == 1
