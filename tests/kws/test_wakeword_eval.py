"""``sanas wakeword eval``: the test stream, the DET scoring, the PocketSphinx peer and the
report, on tiny generated fixtures."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from sanas.cli import app
from sanas.kws.data.audio import SAMPLE_RATE, AudioError, read_wav
from sanas.kws.data.stream_file import read_stream_labels
from sanas.kws.evaluation.metrics import CurvePoint, Detection
from sanas.kws.wakeword.eval_stream import (
    GUARD_S,
    PEAK,
    StreamSettings,
    WakeStreamError,
    build_test_stream,
    mix_at_snr,
    read_positives,
)
from sanas.kws.wakeword.peer import PeerError, pocketsphinx_detections
from sanas.kws.wakeword.scoring import det_curve, false_alarm_times, fire_phrase, miss_rate_at

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
WAKE_WORDS = Path(
    os.environ.get("SANAS_WAKE_WORD_BENCHMARK", REPO.parent / "shared/data/wake_word_benchmark")
)


def _tone_clip(seconds: float, pitch: float, rng: np.random.Generator) -> np.ndarray:
    """A clip of quiet room noise with a 0.5 s tone (the 'phrase') in its middle."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * pitch * t) * (np.abs(t - seconds / 2) < 0.25)
    return (tone + 0.001 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def positives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six recordings of the 'phrase' (the tone of tone_data's "yes"), 1.5 to 3 s long."""
    folder = tmp_path_factory.mktemp("positives")
    rng = np.random.default_rng(1)
    for k in range(6):
        clip = _tone_clip(1.5 + 0.3 * k, 300.0, rng)
        sf.write(folder / f"clip{k}.wav", clip, SAMPLE_RATE, subtype="PCM_16")
    return folder


def _settings(positives: Path, data: Path, **changes: object) -> StreamSettings:
    values: dict = {"phrase": "yes", "positives": str(positives), "speech_commands": str(data),
                    "hours": 60 / 3600, "seed": 3, "seconds_per_positive": 10.0,
                    "speech_fraction": 0.3}  # fmt: skip
    return StreamSettings(**{**values, **changes})


def test_mixing_puts_the_voiced_part_at_the_snr_over_the_noise_under_it() -> None:
    rng = np.random.default_rng(0)
    bed = (0.02 * rng.standard_normal(5 * SAMPLE_RATE)).astype(np.float32)
    track = bed.copy()
    clip = _tone_clip(2.0, 500.0, rng)
    onset, given = mix_at_snr(track, bed, clip, SAMPLE_RATE, 10.0)
    assert abs(onset - 0.75 * SAMPLE_RATE) < 0.03 * SAMPLE_RATE  # the tone starts at 0.75 s
    assert given == pytest.approx(10.0)
    voiced = slice(SAMPLE_RATE + onset, SAMPLE_RATE + onset + SAMPLE_RATE // 2)
    phrase = track[voiced] - bed[voiced]
    snr = 10 * np.log10(np.mean(phrase.astype(np.float64) ** 2) / np.mean(bed[voiced] ** 2))
    assert snr == pytest.approx(10.0, abs=0.3)
    assert np.array_equal(track[:SAMPLE_RATE], bed[:SAMPLE_RATE])  # nothing before it
    loud = bed.copy()  # a recording whose peak would pass PEAK at 40 dB is mixed in softer
    _, softer = mix_at_snr(loud, bed, clip, SAMPLE_RATE, 40.0)
    assert np.max(np.abs(loud - bed)) == pytest.approx(PEAK, rel=1e-3) and softer < 40.0


def test_the_stream_spreads_the_phrases_labels_them_and_records_speech(
    tone_data: Path, positives: Path, tmp_path: Path
) -> None:
    settings = _settings(positives, tone_data)
    stream = build_test_stream(settings, tmp_path, progress=False)
    audio = read_wav(stream.wav_path)
    assert len(audio) == 60 * SAMPLE_RATE
    assert len(stream.phrase_times_ms) == 6  # one per 10 s slot
    assert read_stream_labels(stream.labels_path) == [("yes", t) for t in stream.phrase_times_ms]
    slots = np.array(stream.phrase_times_ms) // 10_000
    assert list(slots) == list(range(6))
    spans = stream.speech_spans_ms
    assert np.all(spans[1:, 0] >= spans[:-1, 1])  # sorted and disjoint
    words = [s for s in spans if not any(s[0] <= t <= s[1] for t in stream.phrase_times_ms)]
    assert len(words) == len(spans) - 6 > 0  # background words besides the phrases
    for start, end in words:  # no background word within the guard of a phrase
        assert all(abs(t - start) >= GUARD_S * 1000 - 1 or t > end for t in stream.phrase_times_ms)
    # each phrase stands out of the noise just before its recording by about 10 dB
    # (plus the noise itself; the noise level may change by up to 6 dB between segments)
    for t in stream.phrase_times_ms:
        at = round(t * SAMPLE_RATE / 1000)
        phrase = np.mean(audio[at : at + SAMPLE_RATE // 2] ** 2)
        before = np.mean(audio[at - round(0.9 * SAMPLE_RATE) : at - round(0.4 * SAMPLE_RATE)] ** 2)
        assert 4.0 < 10 * np.log10(phrase / before) < 17.0
    # steps: speech when the window overlaps a span, silence otherwise
    first_word_start, first_word_end = words[0]
    times = np.array([first_word_start - 1001, first_word_start - 999, first_word_end - 1])
    assert list(stream.speech_steps(times)) == [False, True, True]


def test_the_same_settings_reuse_the_stream_and_new_ones_rebuild_it(
    tone_data: Path, positives: Path, tmp_path: Path
) -> None:
    first = build_test_stream(_settings(positives, tone_data), tmp_path, progress=False)
    written = first.wav_path.stat().st_mtime_ns
    again = build_test_stream(_settings(positives, tone_data), tmp_path, progress=False)
    assert again.phrase_times_ms == first.phrase_times_ms
    assert again.wav_path.stat().st_mtime_ns == written
    other = build_test_stream(_settings(positives, tone_data, seed=4), tmp_path, progress=False)
    assert other.phrase_times_ms != first.phrase_times_ms
    with pytest.raises(WakeStreamError, match="speech_fraction"):
        build_test_stream(_settings(positives, tone_data, speech_fraction=1.5), tmp_path)


def _undecodable_benchmark_file() -> Path | None:
    """A real recording of the benchmark that does not decode, found by trying."""
    folder = WAKE_WORDS / "alexa"
    for path in sorted(folder.glob("*.flac")) if folder.is_dir() else ():
        try:
            read_wav(path)
        except AudioError:
            return path
    return None


def test_undecodable_positives_are_named_and_skipped(
    positives: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "positives"
    shutil.copytree(positives, folder)
    (folder / "garbage.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(64))
    real = _undecodable_benchmark_file()
    if real is not None:
        shutil.copy(real, folder / real.name)
    with caplog.at_level(logging.WARNING):
        clips, skipped = read_positives(folder, exclude={"clip0.wav"})
    assert [name for name, _ in clips] == [f"clip{k}.wav" for k in range(1, 6)]
    bad = ["garbage.wav"] + ([real.name] if real is not None else [])
    assert len(skipped) == len(bad)
    for name in bad:
        assert any(name in line for line in skipped)
        assert name in caplog.text


def test_miss_rate_at_a_false_alarm_rate_is_the_best_threshold_within_it() -> None:
    truth = [("yes", 10_000.0), ("yes", 20_000.0), ("yes", 30_000.0), ("yes", 40_000.0)]
    hit = [Detection("yes", t + 300, 0.9) for _, t in truth]
    false = [Detection("yes", 1000.0 + 50_000 * k, 0.5) for k in range(4)]
    detections = {  # over 2 hours: 2 false alarms are 1 per hour
        0.2: hit + false,  # no miss, 2 FA/h
        0.5: hit[:3] + false[:2],  # 1 miss in 4, 1 FA/h
        0.8: hit[:2] + false[:1],  # 2 misses, 0.5 FA/h
        0.9: hit[:1],  # 3 misses, none
    }
    curve = det_curve(detections, truth, duration_ms=2 * 3_600_000.0)
    assert [(p.false_alarms_per_hour, p.false_reject_rate) for p in curve] == [
        (2.0, 0.0), (1.0, 0.25), (0.5, 0.5), (0.0, 0.75)
    ]  # fmt: skip
    assert false_alarm_times(detections[0.2], truth) == [d.time_ms for d in false]
    assert miss_rate_at(curve, 1.0) == 0.25
    assert miss_rate_at(curve, 0.5) == 0.5
    assert miss_rate_at(curve, 0.1) == 0.75
    assert miss_rate_at([CurvePoint(0.5, 3.0, 0.0)], 1.0) == 1.0  # none that quiet


def test_a_detection_near_an_already_found_phrase_is_no_false_alarm_but_far_ones_are() -> None:
    truth = [("yes", 10_000.0)]
    twice = {0.5: [Detection("yes", 10_200.0, 0.9), Detection("yes", 11_000.0, 0.9)]}
    far = {0.5: [Detection("yes", 10_200.0, 0.9), Detection("yes", 12_000.0, 0.9)]}
    assert det_curve(twice, truth, 3_600_000.0)[0] == CurvePoint(0.5, 0.0, 0.0)
    assert det_curve(far, truth, 3_600_000.0)[0] == CurvePoint(0.5, 1.0, 0.0)


def test_the_det_curve_of_a_threshold_sweep_is_monotone() -> None:
    rng = np.random.default_rng(0)
    times = np.arange(0, 600_000, 200.0)
    score = rng.uniform(0, 0.6, len(times)) ** 2  # background: mostly low, some high
    truth = [("yes", t) for t in np.arange(20_000, 580_000, 20_000.0)]
    for k, (_, t) in enumerate(truth):  # phrases peak at a height of their own
        score[(times >= t) & (times < t + 600)] = 0.3 + 0.7 * k / len(truth)
    reliable = np.ones(len(times), dtype=bool)
    sweep = {
        th: fire_phrase(times, score, reliable, "yes", th, 1500.0)
        for th in np.linspace(0.05, 0.95, 19)
    }
    curve = det_curve(sweep, truth, 600_000.0)
    false_alarms = [p.false_alarms_per_hour for p in curve]
    misses = [p.false_reject_rate for p in curve]
    assert false_alarms == sorted(false_alarms, reverse=True) and false_alarms[0] > 0
    assert misses == sorted(misses) and misses[0] == 0.0 and misses[-1] > 0.5


def test_pocketsphinx_spots_on_a_stream_and_names_what_it_cannot_run(
    tone_data: Path, positives: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = build_test_stream(
        _settings(positives, tone_data, hours=20 / 3600), tmp_path, progress=False
    )
    audio = read_wav(stream.wav_path)
    thresholds = (1e-40, 1e-20, 1e-5)
    detections, cpu = pocketsphinx_detections(audio, "yes", thresholds, progress=False)
    assert set(detections) == set(thresholds) and cpu > 0
    counts = [len(detections[t]) for t in thresholds]
    assert counts == sorted(counts, reverse=True)  # a stricter threshold spots no more
    assert all(0 <= d.time_ms <= 20_000 for found in detections.values() for d in found)
    with pytest.raises(PeerError, match="no word 'qzxv'"):
        pocketsphinx_detections(audio[:SAMPLE_RATE], "hey_qzxv", thresholds, progress=False)
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    with pytest.raises(PeerError, match=r"pip install 'sanas\[bench\]'"):
        pocketsphinx_detections(audio[:SAMPLE_RATE], "yes", thresholds, progress=False)


def test_eval_writes_the_report_det_curve_and_false_activations(
    tiny_run: Path,
    tone_data: Path,
    positives: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "positives"
    shutil.copytree(positives, folder)
    (folder / "garbage.wav").write_bytes(b"not audio at all")
    trained_on = tmp_path / "trained_on"  # the clips a run trained on are not scored
    trained_on.mkdir()
    shutil.copy(folder / "clip0.wav", trained_on)
    out = tmp_path / "report"
    args = ["wakeword", "eval", str(tiny_run), "--positives", str(folder), "--out", str(out),
            "--hours", str(40 / 3600), "--speech-commands", str(tone_data), "--exclude",
            str(trained_on), "--phrase", "yes", "--peer", "pocketsphinx"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "garbage.wav" in result.output  # warned, skipped
    report = json.loads((out / "report.json").read_text())
    for name in ("sanas", "pocketsphinx"):
        assert set(report[name]["miss_rate"]) == {"0.1", "0.5", "1"}
        assert all(0.0 <= m <= 1.0 for m in report[name]["miss_rate"].values())
        assert report[name]["cpu_ms_per_audio_s"] > 0
        assert len(report[name]["det"]) > 3
    sanas = report["sanas"]
    assert sanas["non_speech_macs_fraction"] == pytest.approx(1.0)  # a static network
    assert sanas["speech_steps"] > 0 and sanas["non_speech_steps"] > 0
    assert report["stream"]["positives"] == 2 and len(report["stream"]["positives_skipped"]) == 1
    used = json.loads((out / "stream" / "stream.json").read_text())["positives_used"]
    assert report["stream"]["excluded"] == 1 and "clip0.wav" not in used
    assert (out / "det.png").stat().st_size > 0
    assert "| sanas |" in (out / "report.md").read_text()
    clips = sorted((out / "false_activations").glob("*.wav"))
    assert len(clips) == report["false_activation_clips"]
    for clip in clips:
        assert len(read_wav(clip)) <= 2 * SAMPLE_RATE
    # the stream and the peer's decode of it are kept: a second run is scored without them
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert json.loads((out / "report.json").read_text())["pocketsphinx"] == report["pocketsphinx"]
    no_phrase = CliRunner().invoke(app, [*args[:-4], "--peer", "pocketsphinx"])
    assert no_phrase.exit_code == 2
    assert "--phrase" in no_phrase.output and "Traceback" not in no_phrase.output
