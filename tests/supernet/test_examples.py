"""The general examples: a BSN on digits trades accuracy for cost as the budget moves."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from sanas.cli import app
from sanas.examples.digits import train_bsn


def test_budget_sweep_on_digits_trades_accuracy_for_cost() -> None:
    tight = train_bsn(3000, mode="constrained", lam=0.0, epochs=15)
    loose = train_bsn(30000, mode="constrained", lam=0.0, epochs=15)
    assert tight.expected_cost <= 3000 * 1.1
    assert tight.expected_cost < loose.expected_cost <= 30000 * 1.1
    assert loose.accuracy >= tight.accuracy - 0.01
    assert tight.accuracy > 0.8  # a cheap network still classifies digits


def test_costs_command_prints_the_paper_totals_as_json() -> None:
    runner = CliRunner()
    plain = json.loads(runner.invoke(app, ["costs", "--model", "cnn-trad-fpool3", "--json"]).output)
    assert (plain["total_macs"], plain["params"]) == (124_593_664, 1_376_044)
    assert set(plain["nodes"]) >= {"conv_0", "conv_1", "lin_0", "lin_1", "classifier"}
    result = runner.invoke(app, ["costs", "--model", "cnn-trad-fpool3", "--shortcuts", "--json"])
    shortcuts = json.loads(result.output)
    assert (shortcuts["total_macs"], shortcuts["min_used_macs"]) == (137_288_704, 519_168)


def test_costs_command_rejects_an_unknown_model_in_one_line() -> None:
    result = CliRunner().invoke(app, ["costs", "--model", "resnet"])
    assert result.exit_code == 2
    assert "unknown model 'resnet'" in result.output
