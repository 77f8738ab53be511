"""``sanas bench streaming`` on a tiny configuration: the table, the JSON, the errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sanas.cli.bench import bench_app

TINY = ["--threads", "1", "--seconds", "6", "--rounds", "1", "--streams", "1,2"]
TINY += ["--train-batch", "1", "--train-rounds", "1"]


def test_streaming_writes_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    backends = ["--backend", "torch,onnx-int8"]
    result = CliRunner().invoke(bench_app, ["streaming", "--json", str(out), *backends, *TINY])
    assert result.exit_code == 0, result.output
    assert "static, cached" in result.output and "SANAS tier 35M" in result.output
    assert "| configuration | torch | onnx-int8 |" in result.output
    assert "| network | 1 stream(s) | 2 stream(s) | 2 vs 1 |" in result.output
    data = json.loads(out.read_text())
    for key in ("static_window_ms", "static_cached_ms", "features_ms", "rtf", "targets"):
        assert key in data
    assert set(data["tiers"]) == {"0.52M", "35M", "full"}
    assert abs(data["tiers"]["0.52M"]["macs"] - 519_168) < 1
    assert data["tiers"]["full"]["macs"] == 137_288_704
    assert set(data["train_windows_per_s"]) >= {"plain", "shared"}
    assert "random schedule" in data["mix"]["source"]
    many = data["multi_stream"]
    assert many["streams"] == [1, 2]
    assert set(many["rows"]) == {"static", "tier 0.52M", "tier 35M", "tier full"}
    assert set(many["rows"]["static"]) == {"1", "2"}
    assert set(data["backends"]) == {"torch", "onnx-int8"}
    int8 = data["backends"]["onnx-int8"]
    assert set(int8["tiers"]) == {"0.52M", "35M", "full"}
    assert int8["static_cached"] > 0 and int8["static_window"] > 0  # both exports timed
    assert int8["tiers"]["35M"]["executed_mac_ratio"] < 1 == int8["tiers"]["full"]["time_ratio"]
    files = {"static_window", "static_cached", "tier 0.52M", "tier 35M", "tier full"}
    assert set(int8["file_mb"]) == files
    assert {"static_window", "static_cached"} <= set(int8["rtf"])
    assert "onnx-int8_tier_35M_time_within_1.1x_of_mac_ratio" in data["targets"]


def test_bad_backend_or_streams_is_one_line_error() -> None:
    for option in (["--backend", "torch,tflite"], ["--streams", "1,x"]):
        result = CliRunner().invoke(bench_app, ["streaming", *TINY, *option])  # the last wins
        assert result.exit_code == 2
        assert len(result.output.strip().splitlines()) == 1


def test_bad_mix_is_one_line_error() -> None:
    result = CliRunner().invoke(bench_app, ["streaming", "--mix", "tiny=1", *TINY])
    assert result.exit_code == 2
    assert "TIER=FRACTION" in result.output
