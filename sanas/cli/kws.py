"""``sanas train``: train a keyword-spotting model (static, BSN or SANAS) into a run folder;
``sanas imitate``: a SANAS controller that imitates a hindsight gate on a trained network.

Add it to an app with :func:`register`; the library imports happen inside the command so
that ``sanas --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sanas.cli.errors import check_writable, fail

# The --data option of the commands that train: a Speech Commands folder.
DataOption = Annotated[
    Path | None,
    typer.Option(
        help="Speech Commands folder (real, or `sanas data synth`).",
        envvar="SANAS_SPEECH_COMMANDS",
    ),
]

# Flags of `sanas train` and the config fields they set.
FLAG_FIELDS = {
    "model": "model",
    "lam": "search.lam",
    "budget": "search.budget",
    "budget_mode": "search.budget_mode",
    "epochs": "epochs",
    "seed": "seed",
    "channels": "channels",
    "batch_size": "batch_size",
    "shared_convs": "shared_convs",
    "device": "device",
    "init_from": "init_from",
}


def train_command(
    recipe: Annotated[
        str | None,
        typer.Option(help="A named recipe (see `sanas recipes`): its settings and stages."),
    ] = None,
    data: DataOption = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder; rerun the same command to resume it.")
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="key=value over the recipe or config, dotted for sections: "
            "--set search.budget=3e6 --set options.logit_relu=false (repeatable).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML/JSON file with TrainConfig fields (instead of a recipe)."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="A registered model (`sanas models`).")] = None,
    lam: Annotated[
        float | None, typer.Option("--lambda", help="search.lam: λ on raw MACs per step.")
    ] = None,
    budget: Annotated[
        float | None, typer.Option(help="search.budget: MACs per step (hinge, constrained).")
    ] = None,
    budget_mode: Annotated[
        str | None, typer.Option(help="search.budget_mode: linear, hinge or constrained.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    channels: Annotated[
        int | None, typer.Option(help="Conv channels: 64 is the paper, 16 a CPU profile.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Sequences per batch.")] = None,
    shared_convs: Annotated[
        bool | None,
        typer.Option(
            "--shared-convs/--no-shared-convs",
            help="Convolve each sequence once instead of each window (same result).",
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto (CUDA when present), cpu, cuda, cuda:N.")
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars.")
    ] = True,
    init_from: Annotated[
        Path | None,
        typer.Option(help="Run folder whose best weights start this run."),
    ] = None,
) -> None:
    """Train a keyword-spotting model into a run folder, from a recipe or a config.

    A recipe runs every stage it names (pretraining the network, making a stream of
    training speakers, imitating a gate) into one run folder. The folder gets
    config.json, metrics.csv / metrics.jsonl (accuracy, MACs per step and per class),
    TensorBoard events, checkpoint.pt, pareto.json and best.pt. Interrupted? Run the
    same command again: it resumes, from any working directory.

    Examples (`sanas data synth --out synth` makes a data folder in a minute):

        sanas train --recipe fpool3-shortcuts --data synth --out runs/shortcuts

        sanas train --recipe fpool3-sanas-improved --data synth --out runs/sanas
        --set search.lam=1e-8 --set epochs=10

        sanas train --recipe fpool3-sanas --data synth --out runs/imitation
        --set pretrain.epochs=10 --set imitate.epochs=5

        sanas train --data synth --model bsn --budget-mode constrained
        --budget 30e6 --epochs 30 --out runs/bsn-30M

    Flags name config fields (--lambda is search.lam, --budget search.budget);
    `sanas recipes NAME` shows a recipe's file and docs/recipes.md every field.
    """
    from sanas.kws.config import TrainConfig, apply_settings, read_config_file
    from sanas.kws.data.audio import AudioError
    from sanas.kws.training.loop import train
    from sanas.kws.training.recipes import train_recipe

    flags = {"model": model, "lam": lam, "budget": budget, "budget_mode": budget_mode,
             "epochs": epochs, "seed": seed, "channels": channels, "batch_size": batch_size,
             "shared_convs": shared_convs, "device": device,
             "init_from": None if init_from is None else str(init_from.resolve())}  # fmt: skip
    given = [f"{FLAG_FIELDS[k]}={v}" for k, v in flags.items() if v is not None]
    given += list(settings or [])
    if out is not None:
        check_writable(out, "--out", folder=True)
    try:
        if recipe is not None and config is not None:
            raise ValueError("give --recipe or --config, not both")
        if recipe is not None:
            if data is None or out is None:
                raise ValueError("--recipe needs --data (a Speech Commands folder) and --out")
            result = train_recipe(recipe, data, out, given, progress)
        else:
            values = read_config_file(config) if config else {}
            paths = {"data": data, "out": out}
            values.update({k: str(v.resolve()) for k, v in paths.items() if v is not None})
            values["progress"] = progress
            result = train(TrainConfig.from_dict(apply_settings(values, given)))
    except (ValueError, OSError, AudioError) as error:
        raise fail(error) from None
    typer.echo(
        f"{result.run_dir}: best epoch {result.best_epoch}, validation accuracy "
        f"{result.best_accuracy:.3f} at {result.best_macs_per_step:,.0f} MACs per step; "
        f"{len(result.front)} point(s) on the cost/accuracy front (pareto.json)"
    )


def imitate_command(
    source: Annotated[
        Path, typer.Argument(help="Trained run whose network the controller drives.")
    ],
    stream: Annotated[
        list[Path],
        typer.Option(
            help="Folder with stream.wav and labels.txt from training speakers "
            "(`sanas data stream --split training`); repeat for more."
        ),
    ],
    out: Annotated[Path, typer.Option(help="The new SANAS run folder.")],
    gate: Annotated[
        str,
        typer.Option(
            help="aligned: full network on the steps best aligned with each word; "
            "hindsight: on the fewest that make the detector fire on it."
        ),
    ] = "aligned",
    min_overlap_ms: Annotated[
        float, typer.Option(help="aligned: a step's window overlaps a word by more than this.")
    ] = 800.0,
    reuse_steps: Annotated[
        int, typer.Option(help="Cheap steps that repeat a recent full step's output.")
    ] = 2,
    budget: Annotated[
        float | None,
        typer.Option(help="hindsight: MACs per step it may spend (default: unbounded)."),
    ] = None,
    count: Annotated[
        str, typer.Option(help="hindsight: maximise words detected 'correct'ly or 'matched'.")
    ] = "correct",
    epochs: Annotated[int, typer.Option(help="Passes over the streams.")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars.")
    ] = True,
) -> None:
    """Train a SANAS controller by imitating a gate that knew the answer.

    On each stream, the source run's network runs its full and its cheapest
    path; a gate that knows the ground truth runs the full one on the steps
    best aligned with each word (--gate aligned: two per word at the default
    --min-overlap-ms 800), or on the fewest that make the detector fire on
    it (--gate hindsight). Cheap steps within --reuse-steps after a full one
    repeat its output, so one or two full steps fill the detector's window.
    The controller of a new SANAS run learns to predict the gate's choices
    from the previous step's features. The network is not changed. The run
    folder loads like any other (`sanas evaluate`, `sanas stream`): choose
    its operating point with --arch-threshold and hold a budget with
    --hold-budget there.

    Example:

        sanas data stream --data sc --split training --minutes 120 --seed 1
        --out streams/train

        sanas imitate runs/static-shortcuts --stream streams/train
        --out runs/sanas-imitation

        sanas evaluate runs/sanas-imitation --stream-wav streams/val/stream.wav
        --stream-labels streams/val/labels.txt --arch-threshold 0.1
        --hold-budget 3.36e6
    """
    from sanas.kws.data.audio import AudioError
    from sanas.kws.training.gates import HINDSIGHT_COUNTS
    from sanas.kws.training.imitation import GATE_KINDS, imitation_run

    if gate not in GATE_KINDS:
        raise fail(ValueError(f"--gate must be one of {GATE_KINDS}, got {gate!r}"))
    if count not in HINDSIGHT_COUNTS:
        raise fail(ValueError(f"--count must be one of {HINDSIGHT_COUNTS}, got {count!r}"))
    for folder in stream:
        for name in ("stream.wav", "labels.txt"):
            if not (folder / name).is_file():
                raise fail(FileNotFoundError(f"--stream {folder}: no {name} there"))
    check_writable(out, "--out", folder=True)
    try:
        run_dir = imitation_run(
            source,
            stream,
            out,
            gate=gate,  # type: ignore[arg-type]
            reuse_steps=reuse_steps,
            min_overlap_ms=min_overlap_ms,
            budget_per_step=budget,
            count=count,  # type: ignore[arg-type]
            epochs=epochs,
            seed=seed,
            progress=progress,
        )
    except (ValueError, OSError, AudioError) as error:
        raise fail(error) from None
    typer.echo(f"{run_dir}: SANAS run imitating the {gate} gate (imitation.json)")


def recipes_command(
    name: Annotated[str | None, typer.Argument(help="A recipe to show in full.")] = None,
) -> None:
    """List the named training recipes, or show one: its file, with the reason for each
    value, and the stages it runs.

    Examples: `sanas recipes`, `sanas recipes fpool3-sanas`; then
    `sanas train --recipe fpool3-sanas --data DIR --out RUN`.
    """
    from sanas.kws.config import RECIPES_DIR, ConfigError, load_recipe, recipe_names

    try:
        if name is None:
            recipes = [load_recipe(recipe) for recipe in recipe_names()]
            width = max(len(recipe.name) for recipe in recipes)
            for recipe in recipes:
                typer.echo(f"{recipe.name:<{width}}  {recipe.description}")
            return
        recipe = load_recipe(name)
    except ConfigError as error:
        raise fail(error) from None
    stages = [f"pretrain {recipe.pretrain}"] if recipe.pretrain else []
    stages.append("imitate a gate" if recipe.imitate else "train")
    typer.echo(f"# stages: {' -> '.join(stages)}")
    typer.echo((RECIPES_DIR / f"{name}.yaml").read_text().rstrip())


def register(app: typer.Typer) -> None:
    """Add ``train``, ``recipes`` and ``imitate`` to ``app`` (the ``sanas`` command line)."""
    app.command("train")(train_command)
    app.command("recipes")(recipes_command)
    app.command("imitate")(imitate_command)
