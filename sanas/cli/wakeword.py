"""``sanas wakeword``: custom wake words; ``train`` here, ``eval`` in
:mod:`sanas.cli.wakeword_eval`. The library is imported inside the commands so that
``sanas --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sanas.cli.errors import check_writable, fail
from sanas.cli.wakeword_eval import register as register_eval

wakeword_app = typer.Typer(
    help="Custom wake words: train a detector from synthetic speech, score it on real clips.",
    no_args_is_help=True,
)


@wakeword_app.command("train")
def wakeword_train(
    phrase: Annotated[
        str, typer.Option(help="The wake phrase, e.g. 'computer' or 'smart mirror'.")
    ],
    out: Annotated[Path, typer.Option(help="Run folder; rerun the same command to resume it.")],
    positives: Annotated[
        Path | None,
        typer.Option(
            help="Your own recordings of the phrase (any length; its loudest second is used)."
        ),
    ] = None,
    negatives: Annotated[
        Path | None,
        typer.Option(help="False activations to retrain on (e.g. from `sanas wakeword eval`)."),
    ] = None,
    speech_commands: Annotated[
        Path | None,
        typer.Option(
            envvar="SANAS_SPEECH_COMMANDS",
            help="Speech Commands folder: its training speakers' words are negatives, its "
            "noise joins the background (default: $SANAS_SPEECH_COMMANDS; without it, "
            "only synthetic negatives and generated noise).",
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="key=value: corpus.<field> for the corpus (corpus.positives=800), anything "
            "else for the wakeword recipe (pretrain.pretrain.epochs=20, imitate.epochs=10).",
        ),
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars.")
    ] = True,
) -> None:
    """Train a detector for your own wake phrase, from synthetic speech, in minutes.

    The corpus (RUN/corpus) is synthesised offline: the phrase said by hundreds
    of espeak-ng voices, speeds and pitches, in synthetic rooms with noise. The
    negatives: parts of the phrase ('compu', 'puter') and other words said by
    the same voices, and words of the Speech Commands training speakers. The
    `wakeword` recipe then trains TC-ResNet8, its early exits and a SANAS
    controller that runs the cheapest path on silence and noise. RUN is an
    ordinary run folder (`sanas stream`, `sanas evaluate`, `sanas export`).
    Interrupted? Run the same command again: it resumes.

    Example (DIR: a Speech Commands folder; `sanas data synth --out DIR` makes
    a synthetic one):

        sanas wakeword train --phrase computer --out runs/computer
        --speech-commands DIR

        sanas stream runs/computer --wav talk.wav

    docs/wakeword.md says what the corpus holds and which --set keys exist.
    """
    from sanas.kws.data.audio import AudioError
    from sanas.kws.wakeword.train import train_wakeword

    check_writable(out, "--out", folder=True)
    try:
        result = train_wakeword(
            phrase,
            out,
            speech_commands=speech_commands,
            positives=positives,
            negatives=negatives,
            settings=list(settings or []),
            progress=progress,
        )
    except (ValueError, OSError, AudioError) as error:
        raise fail(error) from None
    typer.echo(
        f"{result.run_dir}: a detector of {phrase!r}; try `sanas stream {result.run_dir} "
        "--wav FILE`, or score it with `sanas wakeword eval`"
    )


register_eval(wakeword_app)
