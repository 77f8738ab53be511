"""The ``sanas`` command line: a thin layer over the library API.

Every command imports what it needs lazily so that ``sanas --help`` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sanas.cli.bench import bench_app
from sanas.cli.data import data_app
from sanas.cli.errors import fail
from sanas.cli.evaluate import register as register_evaluate
from sanas.cli.kws import register as register_kws

app = typer.Typer(
    name="sanas",
    help=(
        "Budgeted, input-adaptive neural architecture search.\n\n"
        "Start with `sanas demo` (keyword spotting on synthetic speech), "
        "`sanas costs --model cnn-trad-fpool3 --shortcuts` (the cost table), "
        "or `sanas example digits` (a Budgeted Super Network on a non-audio task)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
register_kws(app)
register_evaluate(app)
example_app = typer.Typer(help="Runnable examples of the general core.", no_args_is_help=True)
app.add_typer(example_app, name="example")


@app.command()
def demo(
    out: Path = typer.Option(Path("out/demo"), help="Folder for the data, runs, table and plots."),
    per_word: int = typer.Option(40, help="Synthetic clips (speakers) per keyword."),
    epochs: int = typer.Option(6, help="Training epochs per model."),
    channels: int = typer.Option(8, help="Conv width (64 is the paper; small is quick)."),
    minutes: float = typer.Option(3.0, help="Length of the streaming test file."),
    jobs: int = typer.Option(2, help="Models trained in parallel."),
) -> None:
    """Keyword spotting end to end on the embedded default: synthetic speech, no download.

    Renders the ten keywords and filler words with espeak-ng, trains static
    cnn-trad-fpool3 + shortcuts and SANAS at two λ, scores all on a synthetic validation
    stream and a test stream, and prints the paper's Table 1 with the cost/accuracy,
    cost-per-class and false-alarm/false-reject plots.
    A few minutes on 2 cores. Example: `sanas demo --out out/demo --epochs 4`
    """
    from sanas.kws.data.synth import SynthError, synthesize_keywords
    from sanas.lab.experiment import RunSpec, format_table, run_experiment, target_verdict

    data = out / "synthetic_speech_commands"
    if not (data / "testing_list.txt").is_file():
        typer.echo(f"synthesising keywords into {data} ...")
        try:
            synthesize_keywords(data, per_word=per_word, seed=0)
        except SynthError as err:
            raise fail(str(err)) from None
    specs = [
        RunSpec("+ shortcuts", "static", {"model": "static-shortcuts"}),
        RunSpec("SANAS λ=3e-8", "sanas", {"model": "sanas", "lam": 3e-8}),
        RunSpec("SANAS λ=3e-7", "sanas", {"model": "sanas", "lam": 3e-7}),
    ]
    typer.echo(f"training {len(specs)} models ({epochs} epochs, {channels} channels) ...")
    # A few hundred steps in all: the real-data recipe's 300-step warm-up to lr 3e-4 would
    # barely start, so the demo trains at Adam's 1e-3 from the first step.
    rows = run_experiment(
        data,
        out,
        specs,
        epochs=epochs,
        channels=channels,
        minutes=minutes,
        jobs=jobs,
        base_fields={"lr": 1e-3, "lr_warmup_steps": 0},
    )
    typer.echo(format_table(rows))
    typer.echo(target_verdict(rows) or "no SANAS point within 1/5 of the MACs of + shortcuts")
    typer.echo(f"table.csv, cost_accuracy.png, cost_per_class.png, fa_fr_curve.png: {out}")


@app.command()
def costs(
    model: str = typer.Option(
        "cnn-trad-fpool3", help="Model name (see sanas.kws.model.networks.MODELS)."
    ),
    shortcuts: bool = typer.Option(False, help="Add the four shortcuts (cnn-trad-fpool3 only)."),
    cost: str = typer.Option(
        "macs", help="Registered cost: macs, params, activation_memory, parallel."
    ),
    exact_adds: bool = typer.Option(
        False, help="Charge sum nodes only for live inputs (default: the papers' fixed charge)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print a model's cost table: total, per node, and the cheapest useful architecture.

    Example: `sanas costs --model cnn-trad-fpool3 --shortcuts --json`
    """
    from sanas.kws.model.networks import build_model
    from sanas.supernet.costs import build_cost, cost_summary

    name = f"{model}-shortcuts" if shortcuts and not model.endswith("-shortcuts") else model
    try:
        net = build_model(name)
        options = {"adds": "exact" if exact_adds else "reference"} if cost == "macs" else {}
        summary = cost_summary(net, build_cost(cost, net, **options))
    except ValueError as err:
        raise fail(str(err)) from None
    summary = {"model": name, **summary}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    unit = summary["cost"]
    typer.echo(f"{name}: total {unit} {summary[f'total_{unit}']:,}, params {summary['params']:,}")
    for node, value in summary["nodes"].items():  # type: ignore[union-attr]
        typer.echo(f"  {node:<12} {value:>14,}")
    if f"min_used_{unit}" in summary:
        typer.echo(f"cheapest architecture reaching the output: {summary[f'min_used_{unit}']:,}")


@example_app.command("digits")
def example_digits(
    budgets: str = typer.Option("2000,6000,20000", help="Comma-separated MAC budgets to sweep."),
    epochs: int = typer.Option(15, help="Training epochs per budget."),
    seed: int = typer.Option(0, help="Random seed."),
    compare_modes: bool = typer.Option(
        True, help="Also compare linear / hinge / constrained budget modes at one budget."
    ),
) -> None:
    """Budgeted Super Network on scikit-learn's bundled digits: budget vs accuracy.

    Runs in well under a minute on a CPU and needs no download. Example:
    `sanas example digits --budgets 2000,20000 --epochs 20`
    """
    from sanas.examples.digits import compare_budget_modes, sweep_budgets

    try:
        values = [float(b) for b in budgets.split(",") if b]
    except ValueError:
        raise fail(f"--budgets must be comma-separated numbers, got {budgets!r}") from None
    typer.echo(f"{'budget':>10} {'E[cost]':>10} {'det. cost':>10} {'accuracy':>9}")
    for row in sweep_budgets(values, epochs=epochs, seed=seed):
        typer.echo(
            f"{row.budget:>10,.0f} {row.expected_cost:>10,.0f} {row.deterministic_cost:>10,.0f} "
            f"{row.accuracy:>9.3f}"
        )
    if compare_modes:
        typer.echo("\nbudget modes at one budget (E[cost] at the end of training):")
        for row in compare_budget_modes(seed=seed, epochs=epochs):
            typer.echo(
                f"  {row.mode:<12} budget {row.budget:>8,.0f}  E[cost] {row.expected_cost:>8,.0f} "
                f"({row.expected_cost / row.budget - 1:+.1%})  accuracy {row.accuracy:.3f}"
            )


@example_app.command("budget-modes")
def example_budget_modes(
    budget: float = typer.Option(60.0, help="Budget on the expected cost (total cost is 255)."),
    lam: float = typer.Option(0.01, "--lambda", help="λ of the fixed linear and hinge modes."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Do budgets hold? Linear, hinge and constrained objectives on a controlled problem.

    Eight components cost 1…128 and each helps the loss; the constrained mode learns λ by
    dual ascent and ends on the budget, the fixed-λ modes end wherever λ balances the loss.
    Example: `sanas example budget-modes --budget 100 --lambda 0.003`
    """
    from sanas.examples.budget_modes import compare_modes

    typer.echo(f"{'mode':<12} {'λ':>8} {'budget':>8} {'E[cost]':>9} {'off budget':>10}")
    for row in compare_modes(budget, lam, seed):
        shown = "learned" if row.mode == "constrained" else f"{row.lam:g}"
        typer.echo(
            f"{row.mode:<12} {shown:>8} {row.budget:>8.1f} {row.expected_cost:>9.1f} "
            f"{row.expected_cost / row.budget - 1:>+10.1%}"
        )


def main() -> None:
    """Entry point of the ``sanas`` console script."""
    app()
