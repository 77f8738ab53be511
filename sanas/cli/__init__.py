"""The ``sanas`` command line: a thin layer over the library API.

Every command imports what it needs lazily so that ``sanas --help`` stays instant.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperCommand, TyperOption

from sanas.cli.bench import bench_app
from sanas.cli.data import data_app
from sanas.cli.demo import register as register_demo
from sanas.cli.errors import ReportingGroup, fail
from sanas.cli.evaluate import register as register_evaluate
from sanas.cli.export import register as register_export
from sanas.cli.kws import register as register_kws
from sanas.cli.listen import register as register_listen
from sanas.cli.sweep import register as register_sweep
from sanas.cli.wakeword import wakeword_app

if TYPE_CHECKING:
    from sanas.supernet.graph import SuperNetwork

app = typer.Typer(
    cls=ReportingGroup,  # no traceback: a bad file is one line, a bug a traceback file
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
app.add_typer(wakeword_app, name="wakeword")
register_kws(app)
register_evaluate(app)
register_export(app)
register_demo(app)
register_listen(app)
register_sweep(app)
example_app = typer.Typer(help="Runnable examples of the general core.", no_args_is_help=True)
app.add_typer(example_app, name="example")


class _ListsRegistries(TyperCommand):
    """A command whose --model and --cost help list the registered names, read from the
    registries only when help is shown: importing them loads torch, which would slow
    every command (and ``sanas --help``) by a second."""

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        from sanas.kws.model.networks import MODELS
        from sanas.kws.model.registry import model_names
        from sanas.supernet.costs import COSTS

        helps = {
            "model": f"Registered model ({', '.join(model_names())}) "
            f"or graph ({', '.join(MODELS)}).",
            "cost": f"Registered cost: {', '.join(COSTS)}.",
        }
        for param in self.params:
            if isinstance(param, TyperOption) and param.name in helps:
                param.help = helps[param.name]
        super().format_help(ctx, formatter)


@app.command()
def models(
    channels: int = typer.Option(64, min=1, help="Conv width (64 is the paper)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the registered keyword-spotting models: family, parameters, MACs.

    MACs of one step (a window of 101 frames) at 12 classes, with every node
    on (full) and on the cheapest architecture the model can run (the whole
    network for a static model, the cheapest path to the output for BSN and
    SANAS). Train one with `sanas train --model NAME`; in Python,
    sanas.kws.model.registry.build_kws_model(NAME) builds it.

    Example: `sanas models --channels 8 --json`
    """
    from sanas.kws.model.registry import list_models

    infos = list_models(channels)
    if as_json:
        typer.echo(json.dumps(infos, indent=2))
        return
    typer.echo(
        f"{'name':<18} {'family':<7} {'params':>11} {'MACs full':>13} {'MACs cheapest':>13}  "
        "description"
    )
    for info in infos:
        typer.echo(
            f"{info['name']:<18} {info['family']:<7} {info['params']:>11,} {info['macs']:>13,} "
            f"{info['macs_cheapest']:>13,}  {info['description']}"
        )


@app.command(cls=_ListsRegistries)
def costs(
    model: str = typer.Option("cnn-trad-fpool3", help="Registered model or graph."),
    shortcuts: bool = typer.Option(
        False, help="The variant with the four shortcuts (cnn-trad-fpool3, static)."
    ),
    cost: str = typer.Option("macs", help="Registered cost."),
    channels: int = typer.Option(64, min=1, help="Conv width (64 is the paper)."),
    exact_adds: bool = typer.Option(
        False, help="Charge sum nodes only for live inputs (default: the papers' fixed charge)."
    ),
    repeats: int = typer.Option(
        10, min=1, help="latency: timed passes per measurement (more is steadier and slower)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print a model's cost table: total, per node, cheapest useful architecture.

    The model is a registered one (`sanas models`) or a bare graph. --cost
    latency measures each node on this machine (one thread, batch 1) and fits
    a per-pass overhead: its milliseconds hold for this machine only.

    Examples:

        sanas costs --model cnn-trad-fpool3 --shortcuts --json

        sanas costs --model sanas --cost latency --repeats 5
    """
    from sanas.kws.model.networks import MODELS, build_model
    from sanas.kws.model.registry import build_kws_model, model_names
    from sanas.supernet.costs import COSTS, build_cost, cost_summary

    if cost not in COSTS:
        raise fail(f"unknown cost {cost!r}; registered costs: {', '.join(COSTS)}")
    if cost == "custom":
        raise fail(
            "the custom cost needs a callable, so it is for library use: "
            'build_cost("custom", net, fn=lambda used: ...), where fn maps the frozenset '
            "of used node names to a number"
        )
    name = f"{model}-shortcuts" if shortcuts and not model.endswith("-shortcuts") else model
    if name in model_names():
        net = build_kws_model(name, channels=channels).net
    elif name in MODELS:
        net = build_model(name, channels=channels)
    else:
        raise fail(
            f"unknown model {name!r}; registered models: {', '.join(model_names())}; "
            f"graphs: {', '.join(MODELS)} (--shortcuts adds '-shortcuts' to the name)"
        )
    if cost == "latency":
        _latency_costs(name, net, repeats, as_json)
        return
    options = {"adds": "exact" if exact_adds else "reference"} if cost == "macs" else {}
    summary: dict[str, Any] = {"model": name, **cost_summary(net, build_cost(cost, net, **options))}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    unit = summary["cost"]
    typer.echo(f"{name}: total {unit} {summary[f'total_{unit}']:,}, params {summary['params']:,}")
    for node, value in summary["nodes"].items():
        typer.echo(f"  {node:<12} {value:>14,}")
    if f"min_used_{unit}" in summary:
        typer.echo(f"cheapest architecture reaching the output: {summary[f'min_used_{unit}']:,}")


def _latency_costs(name: str, net: SuperNetwork, repeats: int, as_json: bool) -> None:
    """``sanas costs --cost latency``: measure a latency table of ``net`` on this machine,
    on one thread (as a streaming step runs), then print it with its fitted totals."""
    from dataclasses import asdict

    import torch

    from sanas.supernet.costs import build_cost, cost_summary, latency_fit, measure_latency_table

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table = measure_latency_table(net, repeats=repeats)
        fit = latency_fit(net, table, architectures=16, repeats=repeats)
    finally:
        torch.set_num_threads(threads)
    summary: dict[str, Any] = cost_summary(net, build_cost("latency", net, table=table))
    if summary["min_used_latency"] <= 0:
        raise fail(
            "the timings were too noisy to fit (the cheapest architecture would take "
            f"{summary['min_used_latency'] * 1e3:.3f} ms): rerun with more --repeats"
        )
    measured = f"{table.device}, batch {table.batch_size}, 1 thread, {repeats} repeats"
    if as_json:
        record = {"model": name, **summary, "latency_table": asdict(table), "fit": fit}
        typer.echo(json.dumps({**record, "measured_on": f"this machine ({measured})"}, indent=2))
        return
    typer.echo(f"{name}: latency measured on this machine ({measured}); it holds here only")
    typer.echo(f"  {'node':<12} {'module ms':>10}")
    for node, seconds in table.per_node_s.items():
        shown = f"{seconds * 1e3:>10.3f}" if net.nodes[node].module is not None else f"{'-':>10}"
        typer.echo(f"  {node:<12} {shown}")
    overhead = f"{'+' if table.overhead_s >= 0 else '-'} {abs(table.overhead_s) * 1e3:.3f}"
    typer.echo(
        f"a pass: {table.base_s * 1e3:.3f} ms + {table.scale:.2f} × Σ module ms "
        f"{overhead} ms per used node (fitted)"
    )
    typer.echo(
        f"every node: {summary['total_latency'] * 1e3:.3f} ms; cheapest architecture reaching "
        f"the output: {summary['min_used_latency'] * 1e3:.3f} ms"
    )
    typer.echo(
        f"{fit['architectures']:.0f} random sub-architectures: {fit['within_10pct']:.0%} "
        f"predicted within ±10%, median error {fit['median_relative_error']:.1%}"
    )


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
