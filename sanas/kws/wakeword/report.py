"""``sanas wakeword eval``: a wake-word run (and a peer) on one test stream, as a report.

Writes ``REPORT/stream/`` (the test stream, :mod:`sanas.kws.wakeword.eval_stream`, reused
on a second call with the same settings), ``REPORT/report.json`` (per system: the miss
rate keyed by false alarms per hour, CPU ms per second of audio, the DET points; for
sanas the MACs per step on speech and non-speech), ``REPORT/det.png`` (the DET curves),
``REPORT/report.md`` (a table) and ``REPORT/false_activations/`` (2 s clips around each
false alarm of the run at its default threshold, to retrain on with ``--negatives``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from sanas.kws.data.audio import SAMPLE_RATE, read_wav
from sanas.kws.data.speech_commands import WAKE_TASK_PREFIX, kws_task
from sanas.kws.evaluation.metrics import plot_fa_fr_curve
from sanas.kws.runs import load_run, read_operating_point
from sanas.kws.wakeword.eval_stream import (
    AUDIO_SUFFIXES,
    StreamSettings,
    WakeStreamError,
    build_test_stream,
)
from sanas.kws.wakeword.peer import (
    DEFAULT_POCKETSPHINX_THRESHOLD,
    PeerError,
    cached_pocketsphinx_detections,
)
from sanas.kws.wakeword.scoring import (
    FALSE_ALARM_RATES,
    SystemScore,
    det_curve,
    false_alarm_times,
    score_sanas,
)

PEERS = ("pocketsphinx",)
FALSE_ACTIVATIONS_DIR = "false_activations"
CLIP_BEFORE_MS = 500.0  # a false activation's clip: from before its window to after it
CLIP_AFTER_MS = 1500.0
MAX_FALSE_ACTIVATION_CLIPS = 500
PEER_CACHE = "pocketsphinx.json"  # in the stream's folder: its detections, decoded once


def names_in(folder: str | os.PathLike[str] | None) -> tuple[str, ...]:
    """The file names of the recordings under ``folder`` (e.g. the clips a run trained
    on, to leave out of its evaluation); none for None."""
    if folder is None:
        return ()
    root = Path(folder)
    if not root.is_dir():
        raise WakeStreamError(f"{root}: no such folder (expected recordings to exclude)")
    return tuple(sorted(p.name for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES))


def run_phrase(labels: tuple[str, ...], task: str, phrase: str | None) -> str:
    """The label to score: ``phrase`` when given (one of ``labels``), else the wake phrase
    of a ``wake:<label>`` task."""
    if phrase is None:
        if not task.startswith(WAKE_TASK_PREFIX):
            raise ValueError(
                f"the run's task is {task!r}, not a wake word: name the label to score "
                f"with --phrase (one of {', '.join(labels)})"
            )
        phrase = labels[-1]
    if phrase not in labels:
        raise ValueError(f"--phrase {phrase!r} is not a label of the run ({', '.join(labels)})")
    return phrase


def evaluate_wake_word(
    run_dir: str | os.PathLike[str],
    positives: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    speech_commands: str | os.PathLike[str],
    hours: float = 1.0,
    phrase: str | None = None,
    peer: str | None = None,
    seed: int = 0,
    exclude: Collection[str] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Score the run ``run_dir`` (at its stored operating point) and, when ``peer`` is
    given, the peer on one test stream; write the report into ``out_dir``; return
    ``report.json``'s content."""
    if peer is not None and peer not in PEERS:
        raise PeerError(f"unknown peer {peer!r}; known: {', '.join(PEERS)}")
    point = read_operating_point(run_dir)
    model, config = load_run(run_dir, point=point)
    labels = tuple(kws_task(config.task).labels)
    phrase = run_phrase(labels, config.task, phrase)
    out = Path(out_dir)
    settings = StreamSettings(
        phrase=phrase,
        positives=str(Path(positives).resolve()),
        speech_commands=str(Path(speech_commands).resolve()),
        hours=hours,
        seed=seed,
        exclude=tuple(sorted(exclude)),
    )
    stream = build_test_stream(settings, out / "stream", progress)
    audio = read_wav(stream.wav_path)
    truth = stream.ground_truth
    systems = [
        score_sanas(model, labels, phrase, audio, truth, stream.speech_steps, point.hold_budget)
    ]
    if peer is not None:
        wav = stream.wav_path.stat()
        detections, cpu = cached_pocketsphinx_detections(
            audio, phrase, stream.folder / PEER_CACHE, f"{wav.st_size} {wav.st_mtime_ns}", progress
        )
        default = detections[DEFAULT_POCKETSPHINX_THRESHOLD]
        systems.append(
            SystemScore(
                name=peer,
                curve=det_curve(detections, truth, stream.duration_ms),
                cpu_seconds=cpu,
                audio_seconds=stream.duration_ms / 1000.0,
                default_threshold=DEFAULT_POCKETSPHINX_THRESHOLD,
                false_activations_ms=false_alarm_times(default, truth),
            )
        )
    written = write_false_activations(audio, systems[0].false_activations_ms, out)
    report = {
        "run": str(run_dir),
        "phrase": phrase,
        "operating_point": point.to_dict(),
        "stream": {
            "folder": str(stream.folder),
            "hours": stream.duration_ms / 3_600_000.0,
            "positives": len(stream.phrase_times_ms),
            "positives_skipped": list(stream.positives_skipped),
            "excluded": len(settings.exclude),
            "snr_db": settings.snr_db,
            "seed": seed,
        },
        **{system.name: system.to_dict() for system in systems},
        "false_activation_clips": written,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    curves = {system.name: system.curve for system in systems}
    plot_fa_fr_curve(curves, out / "det.png", y_label="miss rate (% of phrases)")
    (out / "report.md").write_text(report_table(report))
    return report


def write_false_activations(audio: np.ndarray, times_ms: list[float], out: Path) -> int:
    """Write a clip of ``audio`` around each false activation (at most
    :data:`MAX_FALSE_ACTIVATION_CLIPS`) into ``out/false_activations/``; return how many."""
    folder = out / FALSE_ACTIVATIONS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.wav"):  # a rerun replaces the clips of the last one
        old.unlink()
    for time_ms in times_ms[:MAX_FALSE_ACTIVATION_CLIPS]:
        begin = max(0, round((time_ms - CLIP_BEFORE_MS) * SAMPLE_RATE / 1000))
        end = round((time_ms + CLIP_AFTER_MS) * SAMPLE_RATE / 1000)
        name = f"false_activation_{time_ms / 1000:09.2f}s.wav"
        sf.write(folder / name, audio[begin:end], SAMPLE_RATE, subtype="PCM_16")
    return min(len(times_ms), MAX_FALSE_ACTIVATION_CLIPS)


def report_table(report: Mapping[str, Any]) -> str:
    """``report.md``: one row per system, the miss rate at each false-alarm rate and the
    costs."""
    stream = report["stream"]
    rates = [f"{rate:g}" for rate in FALSE_ALARM_RATES]
    lines = [
        f"# Wake word {report['phrase']!r}",
        "",
        f"{stream['positives']} real recordings of the phrase in {stream['hours']:.2f} h of "
        f"test stream (seed {stream['seed']}, {stream['snr_db']:g} dB SNR).",
        "",
        "| system | "
        + " | ".join(f"miss @ {rate} FA/h" for rate in rates)
        + " | CPU ms / audio s | non-speech MACs / full |",
        "|---|" + "---:|" * (len(rates) + 2),
    ]
    for name in ("sanas", *PEERS):
        if name not in report:
            continue
        entry = report[name]
        fraction = entry.get("non_speech_macs_fraction")
        shown = "–" if fraction is None or math.isnan(fraction) else f"{100 * fraction:.1f} %"
        misses = " | ".join(f"{100 * entry['miss_rate'][rate]:.1f} %" for rate in rates)
        lines.append(f"| {name} | {misses} | {entry['cpu_ms_per_audio_s']:.2f} | {shown} |")
    return "\n".join(lines) + "\n"
