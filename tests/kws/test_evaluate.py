"""Evaluating trained runs on a streaming file, and the experiment that builds Table 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sanas.cli import app
from sanas.kws.config import merge_fields
from sanas.kws.data.speech_commands import kws_task
from sanas.kws.data.stream_file import generate_streaming_test
from sanas.kws.evaluation.evaluate import evaluate_model_on_stream
from sanas.kws.evaluation.metrics import DetectionConfig
from sanas.kws.model.networks import KWS_TIERS
from sanas.kws.runs import load_run
from sanas.lab.experiment import format_table, imitation_streams, run_experiment, target_verdict
from sanas.lab.experiment_specs import RunSpec, default_specs, reference_names


def test_experiment_trains_evaluates_and_writes_table_and_figures(
    tone_data: Path, tmp_path: Path
) -> None:
    searched = {"lam": 1e-7, "train_full_network": True, "train_cheapest_network": True}
    specs = [  # SANAS searches the trained static network: it must wait for that run
        RunSpec("SANAS", "sanas", {"model": "sanas", "search": searched}, "static"),
        RunSpec("static", "static", {"model": "static-shortcuts"}),
    ]
    rows = run_experiment(
        tone_data,
        tmp_path,
        specs,
        epochs=1,
        channels=2,
        minutes=0.5,
        jobs=1,
        base_fields={"batch_size": 8, "workers": 0},
        architecture_thresholds=(0.5, 0.05),
    )
    # a SANAS run gives a row per operating point of its controller
    assert sorted(r["model"] for r in rows) == ["SANAS", "SANAS τ=0.05", "static"]
    rows.sort(key=lambda r: r["model"] != "static")  # static first, then SANAS at 0.5
    config = json.loads(Path(rows[1]["run"], "config.json").read_text())
    assert config["init_from"] == rows[0]["run"]
    assert rows[1]["run"] == rows[2]["run"]
    saved = ("valstream_eval.json",) * 2 + ("valstream_eval_t0.05.json",)
    for row, scores in zip(rows, saved, strict=True):
        assert 0 <= row["correct"] <= row["matched"] <= 100
        assert 0 <= row["val_correct"] <= row["val_matched"] <= 100
        assert json.loads(Path(row["run"], scores).read_text())["steps"] > 0
        assert row["executed_macs_per_step"] <= row["macs_per_step"]
    assert rows[0]["macs_per_step"] > 0
    figures = ("cost_accuracy.png", "cost_per_class.png", "fa_fr_curve.png")
    for name in ("table.csv", "table.json", "table.txt", *figures):
        assert (tmp_path / name).stat().st_size > 0
    assert "Matched" in format_table(rows)
    scored = Path(rows[1]["run"], "stream_eval.json").stat().st_mtime_ns
    again = run_experiment(  # finished runs: nothing is trained or scored again
        tone_data, tmp_path, specs, epochs=1, channels=2, minutes=0.5, jobs=1,
        base_fields={"batch_size": 8, "workers": 0}, architecture_thresholds=(0.5, 0.05),
    )  # fmt: skip
    assert sorted(again, key=lambda r: r["model"]) == sorted(rows, key=lambda r: r["model"])
    held = run_experiment(  # the same runs, each SANAS point holding 0.6M MACs per step
        tone_data, tmp_path, specs, epochs=1, channels=2, minutes=0.5, jobs=1,
        base_fields={"batch_size": 8, "workers": 0}, held_budget=6e5,
    )  # fmt: skip
    assert sorted(r["model"] for r in held) == ["SANAS, held 0.6M", "static"]
    sanas = next(r for r in held if r["family"] == "sanas")
    assert sanas["macs_per_step"] <= 6e5
    assert Path(sanas["run"], "stream_eval_held600000.json").is_file()
    assert Path(rows[1]["run"], "stream_eval.json").stat().st_mtime_ns == scored

    run = rows[1]["run"]
    stream = tmp_path / "stream"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            run,
            "--stream-wav",
            str(stream / "stream.wav"),
            "--stream-labels",
            str(stream / "labels.txt"),
            "--json",
            str(tmp_path / "eval.json"),
            "--plots",
            str(tmp_path / "plots"),
        ],
    )
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "eval.json").read_text())
    required = {
        "matched",
        "correct",
        "wrong",
        "false_alarm",
        "macs_per_step",
        "steps",
        "fa_per_hour",
    }
    assert required <= set(scores)
    assert scores["steps"] == 5 * 30 - 4  # 30 s of audio, a step every 200 ms, 1 s windows
    assert scores["macs_per_step"] == rows[1]["macs_per_step"]
    assert (tmp_path / "plots" / "stream_timeline.png").is_file()
    assert (tmp_path / "plots" / "fa_fr_curve.png").is_file()

    printed = CliRunner().invoke(app, ["stream", run, "--wav", str(stream / "stream.wav")])
    assert printed.exit_code == 0, printed.output
    assert "MACs per step" in printed.output

    wav = ["--wav", str(stream / "stream.wav")]
    operating_point = ["--arch-threshold", "0.05", "--hold-budget", "6e5"]
    lower = CliRunner().invoke(app, ["stream", run, *wav, *operating_point])
    assert lower.exit_code == 0, lower.output
    too_low = CliRunner().invoke(app, ["stream", run, *wav, "--hold-budget", "1e5"])
    assert too_low.exit_code == 2
    assert "more than the budget" in too_low.output
    static = CliRunner().invoke(app, ["stream", rows[0]["run"], *wav, "--arch-threshold", "0.05"])
    assert static.exit_code == 2
    assert "threshold or a held budget needs a sanas model; this run is 'static-shortcuts'" in (
        static.output
    )


def test_evaluate_names_a_missing_run_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["evaluate", str(tmp_path), "--stream-wav", "x.wav", "--stream-labels", "y.txt"]
    )
    assert result.exit_code == 2
    assert "not a training run folder" in result.output


def _refuse_nan(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


@pytest.mark.usefixtures("one_thread")
def test_a_stream_without_words_is_scored_by_its_false_alarms_and_compute(
    tiny_run: Path, tone_data: Path, tmp_path: Path
) -> None:
    noise = generate_streaming_test(tone_data, tmp_path / "noise", minutes=0.25, noise_only=True)
    files = ["--stream-wav", str(noise.wav_path), "--stream-labels", str(noise.labels_path)]
    saved = ["--json", str(tmp_path / "noise.json"), "--plots", str(tmp_path / "plots")]
    result = CliRunner().invoke(app, ["evaluate", str(tiny_run), *files, *saved])
    assert result.exit_code == 0, result.output
    assert "labels.txt: no labelled word: scored as background noise alone" in result.stderr
    table, compute = result.stdout.splitlines()[:2]
    assert table.startswith("matched –  correct –  wrong –  false alarm –  (")
    assert "MACs per step" in compute and "nan" not in table + compute
    scores = json.loads((tmp_path / "noise.json").read_text(), parse_constant=_refuse_nan)
    assert scores["ground_truth_words"] == 0 and scores["stream_seconds"] == 15
    assert [scores[k] for k in ("matched", "correct", "wrong", "false_alarm")] == [None] * 4
    counts = scores["counts"]
    assert counts["matched"] == counts["correct"] == counts["wrong"] == 0
    assert counts["matched_pct"] is None and counts["false_alarm_pct"] is None
    assert f"({counts['false_alarm']} in all, {scores['fa_per_hour']:.1f}/h)" in result.stdout
    assert scores["fa_per_hour"] == pytest.approx(counts["false_alarm"] * 3600 / 15)
    assert 0 < scores["executed_macs_per_step"] <= scores["macs_per_step"]
    assert {p["false_reject_rate"] for p in scores["fa_fr_curve"]} == {None}
    assert "no FA/FR curve (false rejects are undefined)" in result.stdout
    assert (tmp_path / "plots" / "stream_timeline.png").is_file()
    assert not (tmp_path / "plots" / "fa_fr_curve.png").exists()


@pytest.mark.usefixtures("one_thread")
def test_every_detection_on_a_stream_without_words_is_a_false_alarm(
    tiny_run: Path, tone_data: Path, tmp_path: Path
) -> None:
    noise = generate_streaming_test(tone_data, tmp_path, minutes=0.25, seed=1, noise_only=True)
    model, config = load_run(tiny_run)
    labels = tuple(kws_task(config.task).labels)
    eager = DetectionConfig(detection_threshold=0.0)  # the top label fires, whatever its score
    evaluation = evaluate_model_on_stream(model, labels, noise.wav_path, noise.labels_path, eager)
    assert evaluation.detections
    assert evaluation.score.false_alarm == len(evaluation.detections)
    assert evaluation.reference_score.false_alarm == len(evaluation.detections)


def _row(model: str, family: str, test: tuple[float, float], val: tuple[float, float], macs: float):
    return {
        "model": model,
        "family": family,
        "matched": test[0],
        "correct": test[1],
        "val_matched": val[0],
        "val_correct": val[1],
        "macs_per_step": macs,
        "val_macs_per_step": macs,
    }


def test_the_target_point_is_chosen_on_validation_and_judged_on_test() -> None:
    base = _row("+ shortcuts", "static", (30, 20), (30, 20), 100.0)
    best_on_test = _row("SANAS a", "sanas", (40, 30), (10, 5), 10.0)
    best_on_val = _row("SANAS b", "sanas", (29, 21), (31, 25), 20.0)
    too_costly = _row("SANAS c", "sanas", (50, 40), (50, 40), 21.0)
    verdict = target_verdict([base, best_on_test, best_on_val, too_costly])
    assert verdict is not None
    assert verdict.startswith("target missed: SANAS b")  # 29 < 30 Matched on test
    assert "0.200 of the MACs" in verdict
    best_on_val["matched"] = 30
    assert target_verdict([base, best_on_test, best_on_val]).startswith("target met: SANAS b")
    assert target_verdict([base, too_costly]) is None
    assert target_verdict([best_on_val]) is None
    # trained longer, the baseline is better on validation: it becomes the reference
    longer = _row("+ shortcuts, 25 epochs", "static", (35, 25), (40, 30), 100.0)
    verdict = target_verdict([base, longer, best_on_val], references=reference_names((25,)))
    assert verdict is not None and verdict.startswith("target missed: SANAS b")
    assert verdict.endswith("+ shortcuts, 25 epochs (35.0/25.0)")


def test_default_specs_add_longer_trained_baselines() -> None:
    specs = default_specs(lams=(), sanas_budgets=(), baseline_epochs=(25, 40))
    longer = [s for s in specs if s.name in reference_names((25, 40))[1:]]
    assert [(s.name, s.fields["epochs"]) for s in longer] == [
        ("+ shortcuts, 25 epochs", 25),
        ("+ shortcuts, 40 epochs", 40),
    ]


def test_a_run_cannot_start_from_a_run_the_experiment_lacks(tmp_path: Path) -> None:
    specs = [RunSpec("SANAS", "sanas", {"model": "sanas"}, start_from="+ shortcuts")]
    with pytest.raises(ValueError, match="starts from '\\+ shortcuts', which is not a run"):
        run_experiment(tmp_path / "data", tmp_path / "out", specs)


def test_searched_runs_start_from_a_static_network_that_never_saw_their_reward_speakers() -> None:
    specs = {s.name: s for s in default_specs(lams=(), sanas_budgets=(), search_budgets=(4e6,))}
    searched, split = specs["SANAS ≤4M searched"], specs["+ shortcuts, search split"]
    assert searched.start_from == split.name
    assert searched.fields["search"]["holdout"] == split.fields["search"]["holdout"] > 0
    assert searched.fields["options"]["baseline"] == "full_network"
    assert searched.fields["search"]["train_full_network"]
    assert searched.fields["search"]["train_cheapest_network"]
    assert "+ shortcuts, search split" not in {s.name for s in default_specs()}


def _searches(**variant: tuple[float, ...]) -> dict[str, RunSpec]:
    """The specs of a plain ≤4M search and of ``variant``'s, by name."""
    specs = default_specs(lams=(), sanas_budgets=(), search_budgets=(4e6,), **variant)
    return {spec.name: spec for spec in specs}


def test_a_conv_0_path_search_starts_from_a_network_that_trained_that_path_too() -> None:
    specs = _searches(conv_0_search_budgets=(4e6,))
    plain, conv_0 = specs["SANAS ≤4M searched"], specs["SANAS ≤4M searched, conv_0 path"]
    path = [sorted(KWS_TIERS["conv_0"])]
    assert {**plain.fields, "train_paths": path} == conv_0.fields
    source, plain_source = specs[conv_0.start_from], specs[plain.start_from]
    assert {**plain_source.fields, "train_paths": path} == source.fields
    only_conv_0 = {s.name for s in default_specs(lams=(), conv_0_search_budgets=(4e6,))}
    assert "+ shortcuts, search split" not in only_conv_0


def test_a_distilled_search_differs_from_its_plain_twin_only_by_distillation() -> None:
    specs = _searches(distilled_search_budgets=(4e6,))
    plain, distilled = specs["SANAS ≤4M searched"], specs["SANAS ≤4M searched, distilled"]
    assert distilled.start_from == plain.start_from == "+ shortcuts, search split"
    assert merge_fields(plain.fields, {"search": {"distill_cheapest": True}}) == distilled.fields
    only_distilled = default_specs(lams=(), sanas_budgets=(), distilled_search_budgets=(4e6,))
    assert "+ shortcuts, search split" in {s.name for s in only_distilled}


def test_imitation_runs_drive_the_trained_baseline_and_are_scored_like_any_run(
    tone_data: Path, tmp_path: Path
) -> None:
    imitation = {"gate": "aligned", "reuse_steps": 2, "min_overlap_ms": 800.0, "streams": 2}
    specs = [
        RunSpec("static", "static", {"model": "static-shortcuts"}),
        RunSpec("SANAS imitating", "sanas", start_from="static", imitation=imitation),
    ]
    rows = run_experiment(
        tone_data,
        tmp_path,
        specs,
        epochs=1,
        channels=2,
        minutes=0.5,
        jobs=1,
        base_fields={"batch_size": 8, "workers": 0},
        architecture_thresholds=(0.5, 0.1),
    )
    assert sorted(r["model"] for r in rows) == [
        "SANAS imitating",
        "SANAS imitating τ=0.1",
        "static",
    ]
    streams = [str(tmp_path / "trainstream"), str(tmp_path / "trainstream_2")]
    run = Path(next(r["run"] for r in rows if r["family"] == "sanas"))
    record = json.loads((run / "imitation.json").read_text())
    assert record["gate"] == "aligned" and record["streams"] == streams
    assert all(0 < share < 1 for share in record["gate_share"])
    labels = [(Path(s) / "labels.txt").read_text() for s in streams]
    assert labels[0] != labels[1]  # two streams, not one twice
    config = json.loads((run / "config.json").read_text())
    point = json.loads((run / "operating_point.json").read_text())
    assert config["model"] == "sanas" and point["reuse_steps"] == 2
    for row in rows:
        assert 0 <= row["correct"] <= row["matched"] <= 100
    assert (tmp_path / "table.txt").stat().st_size > 0


def test_imitation_specs_start_from_the_longest_trained_baseline() -> None:
    specs = default_specs(
        lams=(), sanas_budgets=(), baseline_epochs=(25, 35), imitation_gates=("aligned",)
    )
    imitating = next(s for s in specs if s.imitation is not None)
    assert imitating.start_from == "+ shortcuts, 35 epochs"
    assert imitating.imitation == {
        "gate": "aligned",
        "reuse_steps": 2,
        "min_overlap_ms": 800.0,
        "streams": 1,
    }
    two = default_specs(imitation_gates=("aligned",), imitation_stream_count=2)
    assert [s.name for s in two if s.imitation] == [
        "SANAS imitating the aligned gate, reuse 2, 2 streams"
    ]
    assert imitation_streams(Path("out"), 2) == [Path("out/trainstream"), Path("out/trainstream_2")]
    with pytest.raises(ValueError, match="imitation gates must be among"):
        default_specs(imitation_gates=("psychic",))
    with pytest.raises(ValueError, match="at least one stream"):
        default_specs(imitation_gates=("aligned",), imitation_stream_count=0)
