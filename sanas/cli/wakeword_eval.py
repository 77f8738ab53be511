"""``sanas wakeword eval``: a wake-word run on hours of test stream, beside PocketSphinx."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from sanas.cli.errors import check_writable, fail


def wakeword_eval(
    run: Path = typer.Argument(..., help="Wake-word run folder (from `sanas wakeword train`)."),
    positives: Path = typer.Option(
        ...,
        help="Folder of real recordings of the phrase (wav, flac, ogg; each with the phrase "
        "inside). Undecodable files are named in a warning and skipped.",
    ),
    out: Path = typer.Option(
        ..., help="Report folder: report.json, report.md, det.png, false_activations/, stream/."
    ),
    hours: float = typer.Option(1.0, min=0.001, help="Length of the test stream in hours."),
    peer: str = typer.Option(
        None,
        help="Also score this peer on the same stream: pocketsphinx "
        "(pip install 'sanas\\[bench]').",
    ),
    speech_commands: Path = typer.Option(
        None,
        envvar="SANAS_SPEECH_COMMANDS",
        help="Speech Commands folder: its testing-list words are the background speech, its "
        "_background_noise_/ part of the noise (default: $SANAS_SPEECH_COMMANDS).",
    ),
    phrase: str = typer.Option(
        None, help="The label to score (default: the wake phrase of a wake-word run)."
    ),
    seed: int = typer.Option(0, help="Seed of the test stream (same seed, same stream)."),
    exclude: Path = typer.Option(
        None,
        help="Leave out the recordings of --positives whose file name is in this folder "
        "(e.g. the real clips the run trained on).",
    ),
) -> None:
    """Score a wake-word run: miss rate at 0.1, 0.5 and 1 false alarms per hour.

    The test stream follows Picovoice's wake-word benchmark: the recordings of
    --positives spread through H hours of background speech (Speech Commands words of
    testing-list speakers, standing in for LibriSpeech) and noise (Speech Commands'
    _background_noise_ and generated noise, standing in for DEMAND), the phrase at 10 dB
    SNR. It is written to OUT/stream/ and reused by a second call with the same settings.
    The run (at its stored operating point) runs over it once with the streaming engine;
    its detection threshold is swept for the DET curve. Writes OUT/report.json,
    OUT/report.md, OUT/det.png and OUT/false_activations/ (the false alarms at threshold
    0.7 as 2 s clips, for `sanas wakeword train --negatives`).

    Example: `sanas wakeword eval runs/computer --positives recordings/computer
    --out reports/computer --hours 1 --peer pocketsphinx`
    """
    from sanas.kws.wakeword.report import evaluate_wake_word, names_in

    if speech_commands is None:
        raise fail("give --speech-commands DIR (or set SANAS_SPEECH_COMMANDS)")
    check_writable(out, "--out", folder=True)
    warnings = logging.StreamHandler()  # a skipped recording: one line on stderr
    warnings.setFormatter(logging.Formatter("warning: %(message)s"))
    library = logging.getLogger("sanas.kws.wakeword")
    library.addHandler(warnings)
    library.propagate = False
    try:
        report = evaluate_wake_word(
            run,
            positives,
            out,
            speech_commands,
            hours=hours,
            phrase=phrase,
            peer=peer,
            seed=seed,
            exclude=names_in(exclude),
        )
    except (ImportError, OSError, ValueError) as err:
        raise fail(str(err)) from None
    finally:
        library.removeHandler(warnings)
        library.propagate = True
    stream = report["stream"]
    typer.echo(
        f"{stream['positives']} phrases in {stream['hours']:.2f} h "
        f"({len(stream['positives_skipped'])} recordings skipped)"
    )
    for name in ("sanas", "pocketsphinx"):
        if name in report:
            entry = report[name]
            misses = "  ".join(
                f"{100 * miss:.1f}% @ {rate} FA/h" for rate, miss in entry["miss_rate"].items()
            )
            typer.echo(f"{name:<13} miss {misses}  {entry['cpu_ms_per_audio_s']:.1f} CPU ms/s")
    fraction = report["sanas"].get("non_speech_macs_fraction")
    if fraction is not None:
        typer.echo(f"sanas MACs per non-speech step: {100 * fraction:.1f}% of the full network")
    typer.echo(f"report written to {out}")


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the ``wakeword`` sub-command."""
    app.command("eval")(wakeword_eval)
