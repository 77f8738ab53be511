"""``sanas evaluate`` and ``sanas stream``: trained models on streaming audio."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sanas.cli.errors import check_writable, fail

if TYPE_CHECKING:
    from sanas.kws.evaluation.evaluate import StreamEvaluation
    from sanas.kws.model.operating_point import OperatingPoint
    from sanas.kws.streaming.engine import StreamRun

ARCH_THRESHOLD_HELP = (
    "SANAS runs: a node is on when the controller's probability exceeds this (default: the "
    "run's operating point, else 0.5, its mode). Lower spends more on the steps it leans "
    "towards; choose it on a validation stream."
)
HOLD_BUDGET_HELP = (
    "SANAS runs: hold this mean MACs per step on any audio (e.g. 3.3e6; default: the run's "
    "operating point). A token bucket saves unspent budget for up to 30 steps; a step it "
    "cannot pay for runs the cheapest path."
)
RUN_HELP = "Training run folder (from `sanas train`), or a .onnx file from `sanas export`."
THREADS_HELP = (
    "Threads per stream: torch's, or ONNX Runtime's intra-op threads (default 1: a step is "
    "a chain of small operations, which a second, busy core only delays)."
)
REUSE_STEPS_HELP = (
    "The cheap steps after a costlier one reuse its output (default: the run's operating "
    "point, e.g. 2 for imitation runs; 0: none)."
)


def evaluate(
    run: Path = typer.Argument(..., help=RUN_HELP),
    stream_wav: Path = typer.Option(None, help="Streaming test wav (16 kHz mono)."),
    stream_labels: Path = typer.Option(None, help="Its `word,time_ms` label file."),
    clips: str = typer.Option(
        None,
        help="Instead of a stream: 12-class accuracy of the full network on the 1 s clips of "
        "this split (validation or testing) of the run's data.",
    ),
    json_out: Path = typer.Option(None, "--json", help="Write the scores here as JSON."),
    plots: Path = typer.Option(
        None, help="Folder for the FA/h vs false-reject curve and the stream timeline."
    ),
    arch_threshold: float = typer.Option(None, help=ARCH_THRESHOLD_HELP),
    hold_budget: float = typer.Option(None, help=HOLD_BUDGET_HELP),
    reuse_steps: int = typer.Option(None, help=REUSE_STEPS_HELP),
    threads: int = typer.Option(1, min=1, help=THREADS_HELP),
) -> None:
    """Score a run on a streaming test file: Matched / Correct / Wrong / False alarm.

    Percentages are of ground-truth words, as in the paper's Table 1 (Matched counts each
    word once, as TensorFlow does; the reference convention is in the JSON too), with the
    mean MACs per 200 ms step of the architectures actually used, the MACs the cached
    engine really executed, false alarms per hour and a false-alarm / false-reject curve.
    An empty label file is a stream of background noise alone (`sanas data stream
    --noise-only`): the percentages are undefined (–), the false alarms and MACs remain.

    Example: `sanas evaluate runs/sanas --stream-wav stream/stream.wav
    --stream-labels stream/labels.txt --json runs/sanas/stream.json --plots runs/sanas`;
    the field's clip accuracy: `sanas evaluate runs/sanas --clips testing`; an exported
    model on ONNX Runtime: `sanas evaluate model.onnx --stream-wav stream/stream.wav
    --stream-labels stream/labels.txt`
    """
    from sanas.kws.evaluation.evaluate import evaluate_run

    if json_out is not None:  # before the scoring, which may take minutes
        check_writable(json_out, "--json")
    if clips is not None:
        if run.suffix == ".onnx":
            raise fail("--clips needs a training run folder, not an exported model")
        return _clip_accuracy(run, clips, json_out)
    if stream_wav is None or stream_labels is None:
        raise fail("give --stream-wav and --stream-labels (or --clips validation|testing)")
    if plots is not None:
        check_writable(plots, "--plots", folder=True)
    try:
        if run.suffix == ".onnx":
            from sanas.kws.export.runtime import evaluate_onnx

            _onnx_options(arch_threshold, hold_budget)
            _audio_notes(stream_wav)
            result = evaluate_onnx(
                run, stream_wav, stream_labels, json_out, threads=threads, reuse_steps=reuse_steps
            )
        else:
            point = _operating_point(run, arch_threshold, hold_budget, reuse_steps)
            _audio_notes(stream_wav)
            result = evaluate_run(run, stream_wav, stream_labels, json_out, point, threads)
    except (ImportError, OSError, ValueError) as err:
        raise fail(str(err)) from None
    scores = result.to_dict()
    if not scores["ground_truth_words"]:
        typer.echo(
            f"note: {stream_labels}: no labelled word: scored as background noise alone, "
            "every detection a false alarm",
            err=True,
        )
    typer.echo(
        f"matched {_percent(scores['matched'])}  correct {_percent(scores['correct'])}  "
        f"wrong {_percent(scores['wrong'])}  false alarm {_percent(scores['false_alarm'])}  "
        f"({scores['counts']['false_alarm']} in all, {scores['fa_per_hour']:.1f}/h)"
    )
    typer.echo(
        f"{scores['steps']} steps, {scores['macs_per_step'] / 1e6:.2f}M MACs per step "
        f"(executed with caches: {scores['executed_macs_per_step'] / 1e6:.2f}M), "
        f"real-time factor {scores['real_time_factor']:.3f}"
    )
    if plots is not None:
        _plots(result, stream_wav, stream_labels, plots)


def _percent(value: float | None) -> str:
    """A percentage of the words, or a dash where there is no word to count."""
    return "–" if value is None else f"{value:.1f}%"


def _clip_accuracy(run: Path, split: str, json_out: Path | None) -> None:
    """Print (and write to ``json_out``) a run's clip accuracy on ``split``."""
    from sanas.kws.evaluation.clips import run_clip_accuracy

    try:
        result = run_clip_accuracy(run, split)
    except (OSError, ValueError) as err:
        raise fail(str(err)) from None
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    typer.echo(
        f"{split} clip accuracy {100 * result.accuracy:.1f}% "
        f"({result.correct}/{result.total} clips, full network)"
    )


def _plots(result: StreamEvaluation, wav: Path, labels: Path, folder: Path) -> None:
    """FA/h vs false-reject curve (none on a stream without keywords: false rejects are
    undefined there), and the first minute of the stream as a timeline."""
    import math

    import torch

    from sanas.kws.data.audio import read_wav
    from sanas.kws.data.features import LogMel
    from sanas.kws.data.stream_file import read_stream_labels
    from sanas.kws.evaluation.metrics import plot_fa_fr_curve
    from sanas.kws.evaluation.plots import plot_stream_timeline

    if all(math.isnan(point.false_reject_rate) for point in result.curve):
        typer.echo("no keyword in the labels: no FA/FR curve (false rejects are undefined)")
    else:
        plot_fa_fr_curve({"model": result.curve}, folder / "fa_fr_curve.png")
    audio = read_wav(wav)[: 16000 * 60]  # the first minute is readable on one page
    end_ms = len(audio) / 16
    log_mel = LogMel()(torch.from_numpy(audio)).numpy()
    run = result.run
    shown = run.times_ms + 1000 <= end_ms
    plot_stream_timeline(
        log_mel,
        run.times_ms[shown],
        run.macs_window[shown],
        result.computed[shown],
        result.node_names,
        [(d.label, d.time_ms) for d in result.detections if d.time_ms < end_ms],
        [(w, t) for w, t in read_stream_labels(labels) if t < end_ms],
        folder / "stream_timeline.png",
    )
    typer.echo(f"plots written to {folder}")


def stream(
    run: Path = typer.Argument(..., help=RUN_HELP),
    wav: Path = typer.Option(..., help="Audio to listen to (16 kHz mono wav; resampled if not)."),
    as_json: bool = typer.Option(False, "--json", help="Print detections as JSON lines."),
    arch_threshold: float = typer.Option(None, help=ARCH_THRESHOLD_HELP),
    hold_budget: float = typer.Option(None, help=HOLD_BUDGET_HELP),
    reuse_steps: int = typer.Option(None, help=REUSE_STEPS_HELP),
    threads: int = typer.Option(1, min=1, help=THREADS_HELP),
) -> None:
    """Run a trained model over a recording and print its detections as they would fire.

    Each line: the time of the detected word, its label and score, then the compute
    spent. Example: `sanas stream runs/sanas --wav stream/stream.wav`; a SANAS run at an
    operating point chosen on validation, never above 3.3M MACs per step:
    `sanas stream runs/sanas --wav stream/stream.wav --arch-threshold 0.05 --hold-budget 3.3e6`;
    an exported model on ONNX Runtime: `sanas stream model.onnx --wav stream/stream.wav`
    """
    from sanas.kws.data.audio import read_wav
    from sanas.kws.data.speech_commands import kws_task
    from sanas.kws.evaluation.evaluate import run_model_on_audio
    from sanas.kws.runs import load_run

    if run.suffix == ".onnx":
        return _stream_onnx(run, wav, as_json, (arch_threshold, hold_budget), reuse_steps, threads)
    try:
        point = _operating_point(run, arch_threshold, hold_budget, reuse_steps)
        model, config = load_run(run, point=point)
        _audio_notes(wav)
        audio = read_wav(wav)
    except (OSError, ValueError) as err:
        raise fail(str(err)) from None
    labels = tuple(kws_task(config.task).labels)
    try:
        result = run_model_on_audio(model, audio, threads=threads, budget=point.hold_budget)
    except ValueError as err:
        raise fail(f"{wav}: {err}") from None
    _print_detections(result, labels, as_json, len(audio))


def _stream_onnx(
    path: Path,
    wav: Path,
    as_json: bool,
    fixed_options: tuple[float | None, float | None],
    reuse_steps: int | None,
    threads: int,
) -> None:
    """``sanas stream`` on an exported model, run by ONNX Runtime (``fixed_options``: the
    --arch-threshold and --hold-budget given, which it refuses)."""
    from sanas.kws.data.audio import read_wav

    try:
        from sanas.kws.export.runtime import OnnxStreamingModel

        _onnx_options(*fixed_options)
        model = OnnxStreamingModel(path, threads=threads, reuse_steps=reuse_steps)
        _audio_notes(wav)
        audio = read_wav(wav)
    except (ImportError, OSError, ValueError) as err:  # their messages name the file
        raise fail(str(err)) from None
    try:
        result = model.run(audio)
    except ValueError as err:
        raise fail(f"{wav}: {err}") from None
    _print_detections(result, model.labels, as_json, len(audio))


def _onnx_options(threshold: float | None, budget: float | None) -> None:
    """Refuse the operating-point options that an exported graph holds fixed."""
    if threshold is not None or budget is not None:
        raise ValueError(
            "--arch-threshold and --hold-budget are fixed in an exported model; "
            "export it again with them (sanas export RUN --out model.onnx --hold-budget B)"
        )


def _print_detections(
    result: StreamRun, labels: tuple[str, ...], as_json: bool, samples: int
) -> None:
    """Print a run's detections as they would fire, then its compute."""
    from sanas.kws.evaluation.metrics import detect

    for detection in detect(result.times_ms, result.posteriors, labels):
        if as_json:
            typer.echo(json.dumps(detection.__dict__))
        else:
            typer.echo(
                f"{detection.time_ms / 1000:9.2f} s  {detection.label:<10} {detection.score:.2f}"
            )
    typer.echo(
        f"{len(result.times_ms)} steps over {samples / 16000:.1f} s: "
        f"{result.macs_window.mean() / 1e6:.2f}M MACs per step by the paper's count, "
        f"{result.macs_executed.mean() / 1e6:.2f}M executed with caches"
    )


def _audio_notes(path: Path) -> None:
    """Say on stderr how a recording is converted as it is read (channels mixed to mono,
    resampled to 16 kHz), so that such a file is never scored unnoticed."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (RuntimeError, TypeError, OSError):
        return  # reading it names the problem
    if info.channels > 1:
        typer.echo(f"note: {path}: {info.channels} channels, mixed down to mono", err=True)
    if info.samplerate != 16000:
        typer.echo(f"note: {path}: {info.samplerate} Hz, resampled to 16000 Hz", err=True)


def _operating_point(
    run: Path, threshold: float | None, budget: float | None, reuse_steps: int | None
) -> OperatingPoint:
    """The run's stored operating point with the options given on the command line."""
    from sanas.kws.runs import read_operating_point

    return read_operating_point(run).replaced(
        architecture_threshold=threshold, hold_budget=budget, reuse_steps=reuse_steps
    )


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` and ``stream`` to the main command."""
    app.command()(evaluate)
    app.command()(stream)
