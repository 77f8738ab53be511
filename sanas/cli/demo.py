"""``sanas demo``: static against SANAS on synthetic speech, end to end, no download."""

from __future__ import annotations

from pathlib import Path

import typer

from sanas.cli.errors import fail


def demo(
    out: Path = typer.Option(Path("out/demo"), help="Folder for the data, runs, table, figures."),
    per_word: int = typer.Option(60, help="Synthetic speakers (clips) per keyword; at least 3."),
    epochs: int = typer.Option(20, help="Training epochs of the static baseline."),
    channels: int = typer.Option(16, help="Conv width (64 is the paper's; 16 is quick)."),
    minutes: float = typer.Option(
        10.0, help="Length of the validation and test streams (a word every 3 s)."
    ),
    seed: int = typer.Option(0, help="Random seed of the data, streams and training."),
) -> None:
    """What SANAS is for, on synthetic speech: silence cheap, words expensive.

    Renders ten keywords and ten other words with espeak-ng (no
    download), trains the static cnn-trad-fpool3 + shortcuts network,
    and derives a SANAS model from it: its controller learns to run the
    full network on words and the cheapest path on silence. The
    controller's threshold is chosen on a validation stream; both models
    are then scored on a test stream of other speakers. Prints word
    counts with 95 % intervals, MACs per step on silence and on words,
    and a verdict; writes table.txt, demo.json, stream_timeline.png and
    macs_per_class.png (fa_fr_curve.png too when there are enough false
    alarms to draw a curve). About 3 minutes on 2 cores (2 min 42 s and
    3 min 23 s measured on a shared machine); a rerun with the same
    options reuses what is done.

    Examples:

        sanas demo

        sanas demo --out out/demo-seed1 --seed 1

    (other speakers: how much the numbers move between draws)

        sanas demo --out out/demo-quick --epochs 12 --minutes 5

    (about 1.5 minutes, a weaker baseline and wider intervals)
    """
    from sanas.kws.data.synth import SynthError
    from sanas.lab.demo import run_demo
    from sanas.lab.demo_report import format_validation

    for name, value, least in (
        ("--per-word", per_word, 3),
        ("--epochs", epochs, 1),
        ("--channels", channels, 1),
    ):
        if value < least:
            raise fail(f"{name} must be at least {least}, got {value}")
    if not minutes > 0:
        raise fail(f"--minutes must be positive, got {minutes}")
    try:
        result = run_demo(out, per_word, epochs, channels, minutes, seed, progress=typer.echo)
    except (SynthError, OSError, ValueError) as err:
        raise fail(err) from None
    typer.echo("")
    typer.echo(result.table)
    typer.echo("")
    typer.echo(format_validation(result))
    typer.echo("")
    typer.echo(result.verdict)
    typer.echo("")
    typer.echo(f"figures: {', '.join(str(path) for path in result.figures)}")
    for note in result.notes:
        typer.echo(f"({note})")
    typer.echo(f"table.txt and demo.json in {out}; {result.seconds:.0f} s in all")


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the main command."""
    app.command()(demo)
