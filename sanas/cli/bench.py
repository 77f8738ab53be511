"""``sanas bench ...``: measurements on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sanas.cli.errors import fail

bench_app = typer.Typer(no_args_is_help=True)


@bench_app.callback()
def bench() -> None:
    """Benchmarks on this machine."""


@bench_app.command("streaming")
def streaming(
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the results here as JSON.")
    ] = None,
    model_run: Annotated[
        Path | None,
        typer.Option(help="Training run folder: its model's own choices give the mix row."),
    ] = None,
    mix: Annotated[
        str | None,
        typer.Option(
            help="Tier fractions of the mix row without a run, e.g. 0.52M=0.5,35M=0.4,full=0.1"
            " (the default)."
        ),
    ] = None,
    audio: Annotated[
        Path | None, typer.Option(help="A 16 kHz wav to stream (default: seeded noise).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="Torch threads at batch 1 (default: 1 or 2, measured).")
    ] = None,
    seconds: Annotated[float, typer.Option(help="Length of the default noise stream.")] = 40.0,
    rounds: Annotated[int, typer.Option(help="Timed rounds of 10 steps per row.")] = 12,
    train_batch: Annotated[int, typer.Option(help="3 s sequences per training batch.")] = 16,
    train_rounds: Annotated[int, typer.Option(help="Timed training batches.")] = 4,
    backend: Annotated[
        str,
        typer.Option(
            help="Backends, comma-separated: torch (always), onnx (ONNX Runtime, fp32), "
            "onnx-int8 (sanas export --int8); the same rows on each, in the same run."
        ),
    ] = "torch",
    streams: Annotated[
        str, typer.Option(help="Stream counts of the many-streams rows, e.g. 1,8,64.")
    ] = "1,8,64",
) -> None:
    """Time streaming inference and training: static window by window vs cached, SANAS
    cost tiers and a mix, real-time factor, training windows per second.

    Everything runs side by side in one process at batch size 1, features included; the
    table goes to the screen, the numbers to --json. The mix row uses a trained run's own
    per-step architectures when --model-run is given (pass real speech with --audio), else
    a random schedule with the --mix fractions.

    Example: `sanas bench streaming --json bench_streaming.json`; every backend, with a
    trained run's own choices on a real stream: `sanas bench streaming --backend
    torch,onnx,onnx-int8 --model-run runs/sanas --audio stream/stream.wav --threads 1`;
    a quick check that it all runs: `sanas bench streaming --backend torch,onnx-int8
    --threads 1 --seconds 6 --rounds 1 --streams 1,2 --train-batch 1 --train-rounds 1`
    """
    from sanas.kws.data.audio import read_wav
    from sanas.lab.bench_onnx import parse_backends, parse_streams
    from sanas.lab.bench_streaming import parse_mix, run_streaming_benchmark

    try:
        result = run_streaming_benchmark(
            backends=parse_backends(backend),
            streams=parse_streams(streams),
            audio=None if audio is None else read_wav(audio),
            model_run=model_run,
            mix=None if mix is None else parse_mix(mix),
            threads=threads,
            seconds=seconds,
            rounds=rounds,
            train_batch=train_batch,
            train_rounds=train_rounds,
            echo=typer.echo,
        )
    except (ImportError, OSError, ValueError) as err:
        raise fail(err) from None
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2))
        typer.echo(f"wrote {json_out}")
