"""``sanas costs`` (and the help that points at other commands) through typer's CliRunner."""

from __future__ import annotations

import json
import re

import torch
from typer.testing import CliRunner

from sanas.cli import app
from sanas.kws.model.networks import MODELS
from sanas.kws.model.registry import build_kws_model, model_names
from sanas.supernet.costs import COSTS, cost_summary

runner = CliRunner()
FAST = ["--model", "cnn-trad-fpool3-shortcuts", "--channels", "2", "--repeats", "2"]


def test_the_custom_cost_is_refused_in_one_line_that_shows_the_library_call() -> None:
    result = runner.invoke(app, ["costs", "--cost", "custom"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("error: the custom cost needs a callable")
    assert 'build_cost("custom", net, fn=' in result.output


def test_latency_is_measured_here_and_never_printed_as_zeros() -> None:
    threads = torch.get_num_threads()
    result = runner.invoke(app, ["costs", "--cost", "latency", *FAST])
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == threads  # pinned to 1 while measuring, then restored
    assert "measured on this machine" in result.output and "1 thread" in result.output
    modules = re.findall(r"^  (?:conv|lin|shortcut)_\d +(\S+)$", result.output, re.M)
    totals = re.search(r"every node: (\S+) ms; cheapest .*: (\S+) ms", result.output)
    assert len(modules) == 8 and totals is not None
    assert all(float(ms) > 0 for ms in [*modules, *totals.groups()])


def test_latency_json_holds_the_measured_table() -> None:
    result = runner.invoke(app, ["costs", "--cost", "latency", "--json", *FAST])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["total_latency"] > 0 and summary["min_used_latency"] > 0
    assert summary["latency_table"]["device"] == "cpu"
    assert summary["measured_on"].startswith("this machine")


def test_an_unknown_cost_lists_the_registered_ones() -> None:
    result = runner.invoke(app, ["costs", "--cost", "flops"])
    assert result.exit_code == 2 and "unknown cost 'flops'" in result.output
    assert all(name in result.output for name in COSTS)


def test_an_unknown_model_lists_the_registered_models_and_graphs() -> None:
    result = runner.invoke(app, ["costs", "--model", "resnet"])
    assert result.exit_code == 2 and "unknown model 'resnet'" in result.output
    assert all(name in result.output for name in (*model_names(), *MODELS))


def test_the_help_lists_the_registered_costs() -> None:
    result = runner.invoke(app, ["costs", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert all(name in result.output for name in COSTS)


def test_a_registered_model_has_the_costs_of_its_network() -> None:
    result = runner.invoke(app, ["costs", "--model", "bsn", "--channels", "8", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    expected = cost_summary(build_kws_model("bsn", channels=8).net)
    assert summary == {"model": "bsn", **expected}


def test_static_with_shortcuts_is_the_static_shortcuts_model() -> None:
    result = runner.invoke(app, ["costs", "--model", "static", "--shortcuts", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["total_macs"] == 137_288_704  # the paper's figure


def test_the_imitate_help_names_evaluate_options_that_exist() -> None:
    imitate = runner.invoke(app, ["imitate", "--help"], terminal_width=200).output
    evaluate = runner.invoke(app, ["evaluate", "--help"], terminal_width=200).output
    example = re.split(r"\n\s*\n", imitate[imitate.index("sanas evaluate runs/") :])[0]
    recommended = set(re.findall(r"--[a-z-]+", example))
    assert "--hold-budget" in recommended
    assert recommended <= set(re.findall(r"--[a-z-]+", evaluate))
