"""``sanas listen``: a trained model or an exported one on the live microphone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from sanas.cli.errors import fail
from sanas.cli.evaluate import RUN_HELP, THREADS_HELP

if TYPE_CHECKING:
    from sanas.kws.evaluation.metrics import DetectionConfig
    from sanas.kws.evaluation.online import OnlineDetector
    from sanas.kws.streaming.live import BlockReport

CLEAR_LINE = "\r" + " " * 79 + "\r"


def listen(
    run: Path = typer.Argument(None, help=RUN_HELP),
    device: int = typer.Option(None, help="Input device number (see --list-devices)."),
    list_devices: bool = typer.Option(
        False, "--list-devices", help="List the input devices and exit."
    ),
    threads: int = typer.Option(1, min=1, help=THREADS_HELP),
) -> None:
    """Listen to the microphone and print each detected word as it fires.

    A live line shows the compute per step and the CPU load; Ctrl-C stops.

    The audio is recorded at 16 kHz mono (the sound system converts the device's rate; a
    device that cannot is refused, naming its rate). Needs the live extra and the PortAudio
    library: `pip install 'sanas\\[live]'` and, on Debian/Ubuntu, `sudo apt-get install
    libportaudio2`.

    Example: `sanas listen runs/sanas`; an exported model on ONNX Runtime, from input
    device 2: `sanas listen model.onnx --device 2` (`sanas listen --list-devices` lists them)
    """
    from sanas.kws.evaluation.online import OnlineDetector
    from sanas.kws.streaming.live import (
        LiveAudio,
        MicrophoneError,
        list_input_devices,
        load_sounddevice,
        open_microphone,
    )
    from sanas.kws.streaming.live import listen as listen_blocks

    try:
        if list_devices:
            for line in list_input_devices():
                typer.echo(line)
            return
        if run is None:
            raise fail("give a run folder or a model.onnx (or --list-devices)")
        load_sounddevice()  # before loading the model: a missing library fails at once
        model, labels, detection = _load(run, threads)
        audio = LiveAudio()
        microphone = open_microphone(audio, device)
    except (ImportError, OSError, MicrophoneError, ValueError) as err:
        raise fail(str(err)) from None
    detections = OnlineDetector(labels, detection)
    typer.echo(f"listening ({', '.join(labels)}); Ctrl-C stops", err=True)
    report = _printer(detections)
    try:
        with microphone:
            listen_blocks(model, audio.blocks(), report)
    except KeyboardInterrupt:
        pass
    finally:
        typer.echo("", err=True)
    if audio.overflows:
        typer.echo(f"note: {audio.overflows} blocks of audio were dropped (too slow)", err=True)


def _load(run: Path, threads: int) -> tuple[Any, tuple[str, ...], DetectionConfig]:
    """The streaming model of a run folder (torch engine) or a model.onnx (ONNX Runtime),
    its labels and detection settings."""
    if run.suffix == ".onnx":
        from sanas.kws.export.runtime import OnnxStreamingModel

        onnx_model = OnnxStreamingModel(run, threads=threads)
        return onnx_model, onnx_model.labels, onnx_model.detection
    import torch

    from sanas.kws.data.speech_commands import kws_task
    from sanas.kws.evaluation.metrics import DetectionConfig
    from sanas.kws.runs import load_run, read_operating_point
    from sanas.kws.streaming.engine import engine_for_model

    torch.set_num_threads(threads)
    point = read_operating_point(run)
    model, config = load_run(run, point=point)
    engine = engine_for_model(model, budget=point.hold_budget)
    return engine, tuple(kws_task(config.task).labels), DetectionConfig()


def _printer(detections: OnlineDetector) -> Callable[[BlockReport], None]:
    """A report callback: detections on stdout, one status line rewritten on stderr."""

    def report(block: BlockReport) -> None:
        for step in block.steps:
            for detection in detections.add(step.time_ms, step.posteriors.numpy()):
                typer.echo(CLEAR_LINE, err=True, nl=False)  # the status line, on a terminal
                typer.echo(
                    f"{detection.time_ms / 1000:9.2f} s  {detection.label:<10} "
                    f"{detection.score:.2f}"
                )
        if block.steps:
            step = block.steps[-1]
            typer.echo(
                f"\r{step.time_ms / 1000:8.1f} s  {1e3 * block.seconds / len(block.steps):6.2f} "
                f"ms/step  {step.macs_executed / 1e6:6.2f}M MACs  CPU {100 * block.cpu_load:3.0f}%",
                err=True,
                nl=False,
            )

    return report


def register(app: typer.Typer) -> None:
    """Add ``listen`` to the main command."""
    app.command()(listen)
