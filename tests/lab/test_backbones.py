"""The modern-backbone experiment (sanas.lab.backbones) on a tiny TC-ResNet8 family: its
static run and SANAS by imitation, scored on tiny streams, chosen on validation."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from sanas.lab import backbones
from sanas.lab.backbones import (
    Family,
    Row,
    cache_name,
    choose_point,
    operating_points,
    run_backbone_experiment,
)

TINY = ["epochs=1", "channels=2", "batch_size=8", "workers=0", "threads=1",
        "pretrain.epochs=1", "pretrain.pretrain.epochs=1",
        "imitate.epochs=1", "imitate.stream_minutes=1", "imitate.noise_minutes=1"]  # fmt: skip


@pytest.fixture(scope="module")
def family(tone_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Family:
    from sanas.kws.training.recipes import train_recipe

    out = tmp_path_factory.mktemp("family") / "tc-resnet8-sanas"
    train_recipe("kws-efficient-sanas", tone_data, out, TINY, progress=False)
    return Family("TC-ResNet8", static=out / "pretrain" / "pretrain", adaptive=out)


def _row(correct: float, macs: float, alarms: float = 0.0, adaptive: bool = True) -> Row:
    score = {"correct": correct, "matched": correct, "macs_per_step": macs, "fa_per_hour": alarms}
    return Row("f", "m", "r", "τ", adaptive, 1, 1, 0.0, 0.0, {"validation": score})


def test_the_chosen_point_is_the_most_correct_within_a_third_of_the_cost_and_one_alarm() -> None:
    static = _row(50.0, 3e6, alarms=1.0, adaptive=False)
    cheap, better = _row(40.0, 0.2e6), _row(45.0, 1e6, alarms=2.0)
    too_costly, too_alarming = _row(60.0, 1.1e6), _row(60.0, 0.5e6, alarms=3.0)
    assert choose_point(static, [cheap, better, too_costly, too_alarming]) is better
    assert choose_point(static, [too_costly, too_alarming]) is None


def test_the_operating_points_are_the_stored_one_then_each_threshold_and_reuse(
    family: Family,
) -> None:
    points = operating_points(family.adaptive, (0.1, 0.3), (1, 0))
    assert list(points) == ["stored", "τ 0.1, reuse 0", "τ 0.3, reuse 1", "τ 0.3, reuse 0"]
    assert points["stored"].architecture_threshold == 0.1  # the recipe's
    assert points["stored"].reuse_steps == 1


def test_every_family_is_scored_on_every_stream_into_one_table_and_figure(
    family: Family, tiny_stream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    streams = {"validation": tiny_stream, "test": tiny_stream}
    rows = run_backbone_experiment([family], streams, tmp_path, thresholds=(0.5, 0.1))
    # the static run, then the SANAS run at its stored point (τ 0.1) and at τ 0.5
    assert [(r.model, r.point) for r in rows] == [
        ("tc-resnet8", ""),
        ("tc-resnet8-sanas", "τ 0.1, reuse 1 (stored)"),
        ("tc-resnet8-sanas", "τ 0.5, reuse 1"),
    ]
    static, *adaptive = rows
    assert sum(r.chosen for r in rows) <= 1 and not static.chosen
    assert all(r.scores["test"]["macs_per_step"] <= r.clip_macs for r in adaptive)
    assert adaptive[0].clip_macs > static.clip_macs  # the exits' heads
    assert static.scores["test"]["macs_per_step"] == static.clip_macs  # every node, every step
    # the SANAS recipe's minutes count its static and exits stages and the imitation
    assert adaptive[0].training_minutes > static.training_minutes > 0
    table = (tmp_path / "table.md").read_text().splitlines()
    assert len(table) == 2 + len(rows) and "tc-resnet8-sanas" in table[-1]
    with (tmp_path / "table.csv").open() as handle:
        assert [r["point"] for r in csv.DictReader(handle)] == [r.point for r in rows]
    assert (tmp_path / "cost_accuracy.png").stat().st_size > 10_000
    assert (tmp_path / "fa_fr_curve.png").stat().st_size > 10_000

    def never(*_: object, **__: object) -> None:
        raise AssertionError("a cached score was computed again")

    monkeypatch.setattr(backbones, "evaluate_run", never)
    monkeypatch.setattr(backbones, "run_clip_accuracy", never)
    again = run_backbone_experiment([family], streams, tmp_path, thresholds=(0.5, 0.1))
    assert [r.scores for r in again] == [r.scores for r in rows]


def test_an_unknown_stream_name_is_refused(family: Family, tiny_stream: Path) -> None:
    with pytest.raises(ValueError, match="streams must be among"):
        run_backbone_experiment([family], {"val": tiny_stream}, "unused")


def test_stages_of_different_runs_cache_their_scores_apart(tmp_path: Path) -> None:
    """Every static stage is a folder named ``pretrain``: the cache must not mix them."""
    first, second = tmp_path / "a" / "pretrain", tmp_path / "b" / "pretrain"
    assert cache_name(first) != cache_name(second)
    assert "/" not in cache_name(first) and cache_name(first).endswith("pretrain")
