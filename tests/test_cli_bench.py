"""``sanas bench streaming`` on a tiny configuration: the table, the JSON, the errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sanas.cli.bench import bench_app

TINY = ["--threads", "1", "--seconds", "6", "--rounds", "1"]
TINY += ["--train-batch", "1", "--train-rounds", "1"]


def test_streaming_writes_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(bench_app, ["streaming", "--json", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert "static, cached" in result.output and "SANAS tier 35M" in result.output
    data = json.loads(out.read_text())
    for key in ("static_window_ms", "static_cached_ms", "features_ms", "rtf", "targets"):
        assert key in data
    assert set(data["tiers"]) == {"0.52M", "35M", "full"}
    assert abs(data["tiers"]["0.52M"]["macs"] - 519_168) < 1
    assert data["tiers"]["full"]["macs"] == 137_288_704
    assert set(data["train_windows_per_s"]) >= {"plain", "shared"}
    assert "random schedule" in data["mix"]["source"]


def test_bad_mix_is_one_line_error() -> None:
    result = CliRunner().invoke(bench_app, ["streaming", "--mix", "tiny=1", *TINY])
    assert result.exit_code == 2
    assert "TIER=FRACTION" in result.output
