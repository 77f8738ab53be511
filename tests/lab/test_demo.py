"""``sanas demo`` end to end on a tiny setting, its statistics, and its option checks."""

from __future__ import annotations

import inspect
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sanas.cli import app
from sanas.cli.demo import demo
from sanas.kws.data.stream_file import read_stream_labels
from sanas.lab.demo import run_demo, step_classes
from sanas.lab.demo_report import difference_interval, wilson_interval

runner = CliRunner()
needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not installed (make system-deps)"
)
TINY = ["--per-word", "6", "--epochs", "1", "--channels", "4", "--minutes", "0.5"]
ROWS = ("Matched", "Correct", "Wrong")


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The demo's folder and printed output at 6 speakers, 1 epoch, 4 channels, 30 s."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    return out, result.output


@needs_espeak
def test_writes_the_table_the_record_and_the_figures(tiny_demo: tuple[Path, str]) -> None:
    out, output = tiny_demo
    for name in ("table.txt", "demo.json", "stream_timeline.png", "macs_per_class.png"):
        assert (out / name).is_file(), name
    record = json.loads((out / "demo.json").read_text())
    assert [Path(p).name for p in record["figures"]][:2] == [
        "stream_timeline.png",
        "macs_per_class.png",
    ]
    drawn = len(record["figures"]) == 3
    assert (out / "fa_fr_curve.png").is_file() == drawn
    assert drawn or "fa_fr_curve.png not drawn" in output
    assert (out / "table.txt").read_text().strip() in output


@needs_espeak
def test_the_table_counts_the_test_stream_words(tiny_demo: tuple[Path, str]) -> None:
    out, output = tiny_demo
    words = len(read_stream_labels(out / "stream" / "labels.txt"))
    record = json.loads((out / "demo.json").read_text())
    lines = {line[:20].strip(): line for line in output.splitlines()}  # the row's name
    for row in ROWS:
        counts = re.findall(rf"(\d+)/{words}\s+\d+ % \(\d+–\d+ %\)", lines[row])
        expected = [record[model][row.lower()] for model in ("baseline", "sanas")]
        assert [int(c) for c in counts] == expected, lines[row]
    assert lines["False alarms"].count("/h)") == 2
    for row in ("MACs/step, mean", "on silence"):
        assert len(re.findall(r"\d+\.\d\dM", lines[row])) == 2, lines[row]
    assert record["baseline"]["words"] == record["sanas"]["words"] == words


@needs_espeak
def test_the_verdict_gives_counts_and_intervals(tiny_demo: tuple[Path, str]) -> None:
    out, output = tiny_demo
    record = json.loads((out / "demo.json").read_text())
    verdict = record["verdict"]
    assert verdict in output and "target met" not in verdict
    words = record["baseline"]["words"]
    correct = f"Correct {record['sanas']['correct']}/{words} vs {record['baseline']['correct']}/"
    assert correct in verdict and "95 % interval" in verdict
    chosen = record["sanas"]["threshold"]
    assert chosen in [point["threshold"] for point in record["validation"]]


@needs_espeak
def test_other_settings_in_the_same_folder_are_refused(tiny_demo: tuple[Path, str]) -> None:
    out, _ = tiny_demo
    result = runner.invoke(app, ["demo", "--out", str(out), *TINY[:-1], "1"])
    assert result.exit_code == 2
    assert "other settings (minutes)" in result.output


@pytest.mark.parametrize(
    ("option", "value"),
    [("--epochs", "0"), ("--channels", "0"), ("--per-word", "0"), ("--minutes", "0")],
)
def test_bad_options_give_one_line(option: str, value: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), option, value])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and option in result.output
    assert not (tmp_path / "d").exists()


def test_help_has_a_working_example() -> None:
    result = runner.invoke(app, ["demo", "--help"])
    assert result.exit_code == 0 and "sanas demo --out" in result.output


def test_wilson_interval() -> None:
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(45, 60)
    assert low < 0.75 < high and high - low == pytest.approx(0.215, abs=0.005)
    assert all(np.isnan(wilson_interval(0, 0)))


def test_difference_interval_holds_zero_for_equal_counts() -> None:
    low, high = difference_interval(45, 45, 60)
    assert low < 0 < high and low == pytest.approx(-high)
    low, _ = difference_interval(55, 20, 60)
    assert low > 0


def test_step_classes_follow_the_word_filling_the_window() -> None:
    times = np.arange(0, 4000, 200.0)  # window starts
    classes = step_classes(times, [("yes", 1000.0), ("_unknown_", 3000.0)])
    assert list(classes[times == 1000.0]) == ["keywords"]
    assert list(classes[times == 3200.0]) == ["unknown"]
    assert list(classes[times == 0.0]) == ["silence"]
    assert list(classes[times == 400.0]) == ["silence"]  # the word fills 400 ms of it
    assert list(classes[times == 600.0]) == ["keywords"]


def test_the_command_defaults_are_the_demos() -> None:
    library = inspect.signature(run_demo).parameters
    for name, parameter in inspect.signature(demo).parameters.items():
        if name in library and name != "out":
            assert parameter.default.default == library[name].default, name
