"""``sanas train``: train a keyword-spotting model (static, BSN or SANAS) into a run folder;
``sanas imitate``: a SANAS controller that imitates a hindsight gate on a trained network.

Add it to an app with :func:`register`; the library imports happen inside the command so
that ``sanas --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sanas.cli.errors import fail


def train_command(
    data: Annotated[
        Path | None, typer.Option(help="Speech Commands folder (real, or `sanas data synth`).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="static, static-shortcuts, bsn or sanas. (default: sanas)")
    ] = None,
    lam: Annotated[
        float | None,
        typer.Option(
            "--lambda", help="λ on raw MACs per step; try 1e-10 … 1e-7 (log grid). (default: 0)"
        ),
    ] = None,
    budget: Annotated[
        float | None, typer.Option(help="MACs per step for --budget-mode hinge or constrained.")
    ] = None,
    budget_mode: Annotated[
        str | None,
        typer.Option(
            help="linear: λ·C (SANAS); hinge: λ·max(0, C − budget) (BSN); constrained: λ "
            "learned so that E[C] ≤ budget. (default: linear)"
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs. (default: 30)")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder; rerun the same command to resume it.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed. (default: 0)")] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML/JSON file with TrainConfig fields; flags given here win."),
    ] = None,
    channels: Annotated[
        int | None,
        typer.Option(help="Conv channels: 64 is the paper, 16 or 32 a CPU profile. (default: 64)"),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Sequences per batch. (default: 64)")
    ] = None,
    shared_convs: Annotated[
        bool | None,
        typer.Option(
            "--shared-convs/--no-shared-convs",
            help="Convolve each sequence once instead of each window. (default: shared)",
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto (CUDA when present), cpu, cuda, cuda:N.")
    ] = None,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Show progress bars.")
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Run folder whose best weights start this run (search a trained network)."
        ),
    ] = None,
) -> None:
    """Train a keyword-spotting model on streaming sequences.

    The run folder gets config.json, metrics.csv and metrics.jsonl
    (accuracy, MACs per step and per class, λ), TensorBoard events,
    checkpoint.pt (every epoch), pareto.json (the validation cost/accuracy
    front, a checkpoint per point) and best.pt. Interrupted? Run the same
    command again: it resumes and ends exactly as an uninterrupted run.

    Examples:

        sanas train --data sc --model static --epochs 30 --out runs/static

        sanas train --data sc --model sanas --lambda 1e-8 --channels 16
        --epochs 30 --out runs/sanas-1e-8

        sanas train --data sc --model bsn --budget-mode constrained
        --budget 30e6 --epochs 30 --out runs/bsn-30M

        sanas train --config sanas.yaml --lambda 1e-9 --out runs/sanas-1e-9

        sanas train --config search.yaml --init-from runs/static-shortcuts
        --budget-mode constrained --budget 4e6 --epochs 8 --out runs/search-4M

    A budgeted run's best.pt is its most accurate epoch within the budget.

    A config file (YAML or JSON) holds TrainConfig fields: data, out, model,
    lam, budget, budget_mode, epochs, batch_size, lr, arch_lr, lr_schedule
    (constant or cosine), lr_warmup_steps (a linear ramp of the learning
    rate: keeps conv_1 alive), warmup_epochs (network-only epochs before the
    search), train_full_network and train_cheapest_network (also train the
    all-on and the cheapest network each batch: the sandwich), distill_cheapest
    (that cheapest network learns the all-on one's posteriors), train_paths
    (architectures also trained each batch, each a list of the nodes it
    switches on, e.g. [[in, conv_0, shortcut_0, shortcut_1, features,
    classifier]]: the conv_0 tier), init_from (a run whose weights start
    this one), search_holdout (share of the
    training speakers the network never trains on; the search is rewarded
    on them), normalize_features, weight_decay, seed, channels, dropout,
    shared_convs, device, threads, workers, sequence (lengths_s, multi_word,
    max_words, background_probability, ...) and options (logit_relu,
    detach_features, log_prob_reduction, baseline (ema_reference, ema,
    ema_class, full_network: each step judged against the all-on network on
    the same window), gamma, search_bottlenecks,
    learned_initial_state). Flags given on the command line win. The recipe
    of the Table 1 experiment: sanas.lab.experiment.RECIPE.
    """
    from sanas.kws.config import TrainConfig, load_config
    from sanas.kws.data.audio import AudioError
    from sanas.kws.training.loop import train

    overrides: dict[str, Any] = {
        "data": str(data) if data is not None else None,
        "out": str(out) if out is not None else None,
        "model": model,
        "lam": lam,
        "budget": budget,
        "budget_mode": budget_mode,
        "epochs": epochs,
        "seed": seed,
        "channels": channels,
        "batch_size": batch_size,
        "shared_convs": shared_convs,
        "device": device,
        "progress": progress,
        "init_from": str(init_from) if init_from is not None else None,
    }
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        run_config = load_config(config, **given) if config else TrainConfig.from_dict(given)
        result = train(run_config)
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
    --budget there.

    Example:

        sanas data stream --data sc --split training --minutes 120 --seed 1
        --out streams/train

        sanas imitate runs/static-shortcuts --stream streams/train
        --out runs/sanas-imitation

        sanas evaluate runs/sanas-imitation --stream-wav streams/val/stream.wav
        --stream-labels streams/val/labels.txt --arch-threshold 0.1 --budget 3.36e6
    """
    from sanas.kws.data.audio import AudioError
    from sanas.lab.imitation import GATE_KINDS, imitation_run
    from sanas.lab.oracle import HINDSIGHT_COUNTS

    if gate not in GATE_KINDS:
        raise fail(ValueError(f"--gate must be one of {GATE_KINDS}, got {gate!r}"))
    if count not in HINDSIGHT_COUNTS:
        raise fail(ValueError(f"--count must be one of {HINDSIGHT_COUNTS}, got {count!r}"))
    for folder in stream:
        for name in ("stream.wav", "labels.txt"):
            if not (folder / name).is_file():
                raise fail(FileNotFoundError(f"--stream {folder}: no {name} there"))
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


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``imitate`` to ``app`` (the ``sanas`` command line)."""
    app.command("train")(train_command)
    app.command("imitate")(imitate_command)
