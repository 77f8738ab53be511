"""``sanas sweep``: a family of runs on Ray Tune; ``sanas pareto``: their cost/accuracy front.

Add them to an app with :func:`register`; the library imports happen inside the commands so
that ``sanas --help`` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sanas.cli.errors import check_writable, fail
from sanas.cli.kws import DataOption

if TYPE_CHECKING:
    from sanas.kws.sweeps.pareto import RunPoint


def sweep_command(
    recipe: Annotated[str, typer.Option(help="The recipe every trial trains (`sanas recipes`).")],
    out: Annotated[
        Path, typer.Option(help="Sweep folder: a run folder per trial, sweep.json, streams.")
    ],
    data: DataOption = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(
            help="key=v1,v2: a recipe setting and its values (repeatable; trials are every "
            "combination × --seeds). With --trials: two numbers are a range to sample, "
            "more values a choice."
        ),
    ] = None,
    seeds: Annotated[
        str, typer.Option(help="Comma-separated seeds; each grid point per seed.")
    ] = "0",
    trials: Annotated[
        int | None,
        typer.Option(
            min=1, help="Instead of the grid: N settings sampled by Optuna towards --objectives."
        ),
    ] = None,
    objectives: Annotated[
        str,
        typer.Option(
            help="What a search optimises, on validation: correct, matched (the validation "
            "stream), accuracy (validation sequences), macs (MACs per step, minimised)."
        ),
    ] = "correct,macs",
    cpus_per_trial: Annotated[
        int, typer.Option(min=1, help="CPUs (and torch threads) of each trial.")
    ] = 1,
    address: Annotated[
        str | None,
        typer.Option(
            help="A running Ray cluster (e.g. ray://HEAD:10001 or auto); default: "
            "a local Ray instance on this machine's CPUs."
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="key=value for every trial (as `sanas train --set`)."),
    ] = None,
    stream_minutes: Annotated[
        float,
        typer.Option(
            min=0,
            help="Length of the validation and test streams each run is scored on "
            "(0: none; then use --objectives accuracy,macs).",
        ),
    ] = 10.0,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show a progress bar of trials.")
    ] = True,
) -> None:
    """Train a family of runs of one recipe as Ray Tune trials, and print their front.

    Each trial is an ordinary run folder OUT/<settings> (`sanas train --recipe` with the
    trial's --set values), scored on a validation and a test stream made once in OUT.
    OUT/sweep.json holds each trial's status, settings, error and metrics;
    OUT/tensorboard the HParams of the finished ones. Interrupted, or a trial failed?
    Run the same command again: finished trials are skipped, the others resume.

    Examples (`sanas data synth --out synth` makes a data folder in a minute):

        sanas sweep --recipe fpool3-shortcuts --data synth --out sweeps/lr
        --grid lr=3e-4,1e-3 --seeds 0,1 --set epochs=2 --set channels=4

        sanas sweep --recipe fpool3-sanas-improved --data synth --out sweeps/lambda
        --grid search.lam=1e-9,1e-7 --trials 8 --objectives correct,macs

    Then `sanas pareto sweeps/lr --plot front.png`. docs/sweeps.md has more.
    """
    from sanas.kws.sweeps.sweep import parse_grid, run_sweep

    if data is None:
        raise fail("--data is required (or set SANAS_SPEECH_COMMANDS)")
    check_writable(out, "--out", folder=True)
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise fail(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    try:
        records = run_sweep(
            recipe,
            data,
            out,
            parse_grid(grid or []),
            seed_list,
            trials,
            [o.strip() for o in objectives.split(",") if o.strip()],
            cpus_per_trial,
            address,
            settings or [],
            stream_minutes or None,
            progress,
        )
    except ValueError as error:
        raise fail(error) from None
    for record in records:
        shown = ", ".join(
            f"{k} {v:.4g}" for k, v in (record["metrics"] or {}).items() if v is not None
        )
        typer.echo(f"{record['status']:<8} {record['name']}  {shown or record['error'] or ''}")
    done = [record["run"] for record in records if record["status"] == "done"]
    if done:
        _print_front(done, "auto")
    failed = sum(record["status"] != "done" for record in records)
    if failed:
        raise fail(
            f"{failed} of {len(records)} trials did not finish (errors in {out / 'sweep.json'}); "
            "run the same command again to retry them"
        )


def pareto_command(
    runs: Annotated[
        list[Path],
        typer.Argument(help="Run folders, or folders of runs (a sweep, an experiment's runs/)."),
    ],
    plot: Annotated[
        Path | None, typer.Option(help="Write the figure here (every run, the front).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    metric: Annotated[
        str,
        typer.Option(
            help="correct (the validation stream), accuracy (the validation sequences) or "
            "auto: correct when every run was scored on a validation stream."
        ),
    ] = "auto",
) -> None:
    """The cost/accuracy front across runs: chosen on validation, test reported.

    Each run is one point: Correct on its validation stream (valstream_eval.json, from a
    sweep or the experiment) or its best epoch's validation accuracy, against MACs per
    step. A run is dominated when another costs no more and scores no less.

    Example: `sanas pareto sweeps/lr --plot front.png`
    """
    from sanas.kws.sweeps.pareto import find_runs, pareto_front
    from sanas.kws.sweeps.pareto import plot as plot_front

    if plot is not None:
        check_writable(plot, "--plot")
    try:
        front, dominated = pareto_front(find_runs(runs), metric)
    except ValueError as error:
        raise fail(error) from None
    if plot is not None:
        plot_front(front, dominated, plot)
    if as_json:
        payload: dict[str, Any] = {
            "front": [p.to_dict() for p in front],
            "dominated": [p.to_dict() for p in dominated],
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    _print_table(front, dominated)
    if plot is not None:
        typer.echo(f"figure: {plot}")


def _print_front(runs: list[str], metric: str) -> None:
    from sanas.kws.sweeps.pareto import pareto_front

    _print_table(*pareto_front(runs, metric))


def _print_table(front: list[RunPoint], dominated: list[RunPoint]) -> None:
    metric = (front or dominated)[0].metric
    typer.echo(f"{'':<10} {'run':<40} {'val ' + metric:>12} {'MACs/step':>12} {'test':>8}")
    for label, points in (("front", front), ("dominated", dominated)):
        for p in points:
            test = "" if p.test_value is None else f"{p.test_value:.4g}"
            typer.echo(
                f"{label:<10} {Path(p.run).name:<40} {p.value:>12.4g} "
                f"{p.macs_per_step:>12,.0f} {test:>8}"
            )


def register(app: typer.Typer) -> None:
    """Add ``sweep`` and ``pareto`` to ``app`` (the ``sanas`` command line)."""
    app.command("sweep")(sweep_command)
    app.command("pareto")(pareto_command)
