"""``sanas data ...``: dataset download, streaming test files, synthetic keywords."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from sanas.cli.errors import fail

data_app = typer.Typer(help="Get and make keyword-spotting data.", no_args_is_help=True)

T = TypeVar("T")


def _run(action: Callable[[], T], *errors: type[Exception]) -> T:
    """Run ``action``; a bad input or file error becomes one line on stderr and exit code 2.

    Library errors derive from ValueError (bad data, bad arguments) or OSError (files,
    network); ``errors`` adds others (the synthesiser's).
    """
    try:
        return action()
    except (ValueError, OSError, *errors) as error:
        raise fail(error) from None


@data_app.command("download")
def download(
    root: Annotated[Path, typer.Option(help="Folder to download and extract into.")],
    version: Annotated[str, typer.Option(help="Dataset version: v0.01 or v0.02.")] = "v0.02",
    test_set: Annotated[
        bool, typer.Option(help="Also fetch the canonical test set archive.")
    ] = True,
    base_url: Annotated[
        str | None, typer.Option(help="Mirror to fetch from instead of the official bucket.")
    ] = None,
    keep_archives: Annotated[
        bool, typer.Option(help="Keep the .tar.gz files after extraction.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Download, verify and extract Speech Commands (2.4 GB for v0.02).

    The full set lands in ROOT/speech_commands_<version>/ and the canonical
    test set in ROOT/speech_commands_test_set_<version>/. Run the same command
    again to resume an interrupted download. Known archives are checked by
    size and sha256, others by a full gzip read; extraction refuses paths
    that would escape ROOT.

    Examples:

        sanas data download --root ~/data

        sanas data download --version v0.01 --root ~/data --no-test-set
    """
    from sanas.kws.data.download import BASE_URL, download_speech_commands

    result = _run(
        lambda: download_speech_commands(
            version,
            root,
            base_url=base_url or BASE_URL,
            test_set=test_set,
            keep_archives=keep_archives,
            progress=progress,
        )
    )
    typer.echo(f"dataset: {result.dataset_dir}")
    if result.test_set_dir is not None:
        typer.echo(f"canonical test set: {result.test_set_dir}")


@data_app.command("stream")
def stream(
    data: Annotated[Path, typer.Option(help="A Speech Commands folder (real or synthetic).")],
    out: Annotated[Path, typer.Option(help="Folder for stream.wav and labels.txt.")],
    minutes: Annotated[float, typer.Option(help="Length of the stream in minutes.")] = 10.0,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same files.")] = 0,
    split: Annotated[str, typer.Option(help="training, validation or testing.")] = "testing",
    words: Annotated[
        str | None,
        typer.Option(help="Comma-separated wanted words (default: the ten standard ones)."),
    ] = None,
    unknown_percentage: Annotated[
        float, typer.Option(help="Share of words drawn from the other words, labelled _unknown_.")
    ] = 30.0,
    background_volume: Annotated[
        float, typer.Option(help="Background noise gain is drawn from U(0, this).")
    ] = 0.1,
    noise_only: Annotated[
        bool,
        typer.Option(
            help="No words: the same background alone and an empty labels.txt, to count "
            "false alarms and compute where nobody speaks."
        ),
    ] = False,
) -> None:
    """Make a streaming test file: one long wav plus 'word, time_ms' labels.

    As TensorFlow's generate_streaming_test_wav: a word every 3 s at a random
    offset in its slot, 30% of them other words (labelled _unknown_), over
    background noise x U(0, 0.1). Only clips of the chosen split are used.
    With --noise-only: the background alone (the word stream of the same seed
    minus its words) and an empty labels.txt, which sanas evaluate scores by
    its false alarms and MACs per step.

    Examples:

        sanas data stream --data ~/data/speech_commands_v0.02 --minutes 60 \\
            --out stream60

        sanas data stream --data synth --words yes,no --minutes 2 --out s2

        sanas data stream --data synth --noise-only --minutes 10 --out noise
    """
    from sanas.kws.data.stream_file import generate_streaming_test

    wanted = [w for w in words.split(",") if w] if words else None
    summary = _run(
        lambda: generate_streaming_test(
            data,
            out,
            minutes=minutes,
            seed=seed,
            split=split,
            wanted_words=wanted,
            unknown_percentage=unknown_percentage,
            background_volume=background_volume,
            noise_only=noise_only,
        )
    )
    counts = ", ".join(f"{word} {n}" for word, n in summary.label_counts.items())
    typer.echo(f"wrote {summary.wav_path} ({summary.duration_s:g} s) and {summary.labels_path}")
    if summary.words:
        typer.echo(f"{summary.words} words ({summary.unknown_fraction:.0%} unknown): {counts}")
    else:
        typer.echo("0 words, background noise only")


@data_app.command("synth")
def synth(
    out: Annotated[Path, typer.Option(help="New (or empty) folder for the dataset.")],
    words: Annotated[
        str, typer.Option(help="Comma-separated keywords.")
    ] = "yes,no,up,down,left,right,on,off,stop,go",
    per_word: Annotated[int, typer.Option(help="Clips (speakers) per keyword.")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same files.")] = 0,
    unknown_words: Annotated[
        str | None,
        typer.Option(help="Comma-separated filler words for _unknown_ ('' for none)."),
    ] = None,
    unknown_per_word: Annotated[
        int | None, typer.Option(help="Clips per filler word (default: half of --per-word).")
    ] = None,
    jobs: Annotated[
        int | None, typer.Option(help="Parallel synthesiser processes (default: CPUs).")
    ] = None,
) -> None:
    """Synthesise keywords with espeak-ng (and flite) in the Speech Commands layout.

    Writes OUT/<word>/<speaker>_nohash_<k>.wav (1 s, 16 kHz, 16-bit), filler
    words for the unknown class, white/pink/brown noise in
    OUT/_background_noise_/ and speaker-disjoint validation_list.txt and
    testing_list.txt: anything that reads Speech Commands reads it.
    Needs espeak-ng (sudo apt-get install espeak-ng).

    Examples:

        sanas data synth --out synth --per-word 50

        sanas data synth --out synth_yn --words yes,no --per-word 10 --seed 3
    """
    from sanas.kws.data.synth import DEFAULT_UNKNOWN_WORDS, SynthError, synthesize_keywords

    fillers = DEFAULT_UNKNOWN_WORDS if unknown_words is None else unknown_words.split(",")
    summary = _run(
        lambda: synthesize_keywords(
            out,
            [w for w in words.split(",") if w],
            per_word,
            seed=seed,
            unknown_words=[w for w in fillers if w],
            unknown_per_word=unknown_per_word,
            jobs=jobs,
            progress=True,
        ),
        SynthError,
    )
    splits = ", ".join(f"{split} {n}" for split, n in summary.speakers_per_split.items())
    typer.echo(
        f"wrote {summary.clips} clips of {len(summary.clips_per_word)} words to {summary.root} "
        f"in {summary.seconds:.1f} s with {', '.join(summary.engines)}"
    )
    typer.echo(f"speakers per split: {splits}")
