"""Live input (issue 19): a wav file played through the very callback sounddevice calls
gives the steps and detections of the offline run; `sanas listen` prints them; without
PortAudio, or with a device that refuses 16 kHz, one line says what to do."""

from __future__ import annotations

import sys
import threading
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from typer.testing import CliRunner

from sanas.cli import app
from sanas.kws.data.audio import read_wav
from sanas.kws.evaluation.evaluate import run_model_on_audio
from sanas.kws.evaluation.metrics import DetectionConfig, detect
from sanas.kws.evaluation.online import OnlineDetector
from sanas.kws.export.onnx_export import export_run
from sanas.kws.runs import load_run
from sanas.kws.streaming.engine import StepResult, StreamRun, engine_for_model
from sanas.kws.streaming.live import BLOCK_SAMPLES, BlockReport, LiveAudio, listen

pytestmark = pytest.mark.usefixtures("one_thread")


class _Status:
    """sounddevice's CallbackFlags, as far as the callback reads them."""

    input_overflow = False

    def __bool__(self) -> bool:
        return False


def _play(audio: np.ndarray, callback: Any, finished: Any, channels: int = 1) -> None:
    """Call ``callback`` as PortAudio does: (frames, channels) float32 blocks (the last
    one short), then ``finished``."""
    for begin in range(0, len(audio), BLOCK_SAMPLES):
        block = audio[begin : begin + BLOCK_SAMPLES]
        indata = np.repeat(block[:, None], channels, axis=1).astype(np.float32)
        callback(indata, len(block), None, _Status())
    finished()


class _InputStream:
    """sounddevice.InputStream that plays a wav on its own thread while it is open."""

    audio: np.ndarray = np.zeros(0, dtype=np.float32)
    opened: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        _InputStream.opened.append(settings)
        self.thread = threading.Thread(
            target=_play,
            args=(self.audio, settings["callback"], settings["finished_callback"]),
        )

    def __enter__(self) -> _InputStream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join()


def _fake_sounddevice(audio: np.ndarray, refuses: bool = False) -> types.ModuleType:
    """A sounddevice module whose microphone plays ``audio`` (``refuses``: not at 16 kHz)."""
    module = types.ModuleType("sounddevice")
    stream = type("InputStream", (_InputStream,), {"audio": audio})

    class PortAudioError(Exception):
        pass

    def check_input_settings(**settings: Any) -> None:
        if refuses:
            raise PortAudioError("Error opening InputStream: Invalid sample rate [-9997]")

    def query_devices(device: Any = None, kind: Any = None) -> Any:
        info = {"name": "USB mic", "max_input_channels": 2, "default_samplerate": 44100.0}
        return info if kind else [info]

    module.PortAudioError = PortAudioError  # type: ignore[attr-defined]
    module.InputStream = stream  # type: ignore[attr-defined]
    module.check_input_settings = check_input_settings  # type: ignore[attr-defined]
    module.query_devices = query_devices  # type: ignore[attr-defined]
    return module


def test_the_callback_path_gives_the_offline_steps(tiny_run: Path, tiny_stream: Path) -> None:
    model, _ = load_run(tiny_run)
    audio = read_wav(tiny_stream / "stream.wav")
    live = LiveAudio()
    player = threading.Thread(target=_play, args=(audio, live.callback, live.close, 2))
    reports: list[BlockReport] = []
    player.start()
    listen(engine_for_model(model), live.blocks(), reports.append)
    player.join()
    steps: list[StepResult] = [step for report in reports for step in report.steps]
    heard = StreamRun.from_steps(steps)
    offline = run_model_on_audio(model, audio)
    np.testing.assert_array_equal(heard.times_ms, offline.times_ms)
    np.testing.assert_allclose(heard.posteriors, offline.posteriors, atol=1e-6)
    assert len(reports) == -(-len(audio) // BLOCK_SAMPLES) + 1  # each block, then the flush
    assert all(r.seconds >= 0 and r.cpu_load >= 0 for r in reports)


@pytest.mark.parametrize("source", ["run", "onnx"])
def test_sanas_listen_prints_what_sanas_stream_prints(
    tiny_run: Path, tiny_stream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    model = tiny_run if source == "run" else export_run(tiny_run, tmp_path / "model.onnx")
    wav = tiny_stream / "stream.wav"
    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice(read_wav(wav)))
    runner = CliRunner()
    heard = runner.invoke(app, ["listen", str(model), "--device", "3", "--threads", "1"])
    assert heard.exit_code == 0, heard.output
    offline = runner.invoke(app, ["stream", str(model), "--wav", str(wav)])
    detections = offline.stdout.splitlines()[:-1]  # the last line: the compute
    assert [line.strip() for line in heard.stdout.splitlines()] == [
        line.strip() for line in detections
    ]
    assert "ms/step" in heard.stderr and "CPU" in heard.stderr
    settings = _InputStream.opened[-1]
    assert (settings["samplerate"], settings["channels"], settings["device"]) == (16000, 1, 3)


def test_live_detections_fire_as_the_offline_rule() -> None:
    labels = ("_silence_", "_unknown_", "yes", "no")
    rng = np.random.default_rng(0)
    times = 200.0 * np.arange(300)
    posteriors = rng.dirichlet(np.full(len(labels), 0.3), size=len(times))
    for start, word in ((20, 2), (60, 3), (61, 2), (200, 3)):  # words, one suppressed
        posteriors[start : start + 6] = np.eye(len(labels))[word]
    expected = detect(times, posteriors, labels)
    live = OnlineDetector(labels, DetectionConfig())
    fired = [d for t, p in zip(times, posteriors, strict=True) for d in live.add(t, p)]
    assert [(d.label, d.time_ms) for d in fired] == [(d.label, d.time_ms) for d in expected]
    assert [d.score for d in fired] == pytest.approx([d.score for d in expected])
    assert len(expected) >= 3


def test_list_devices_names_each_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice(np.zeros(1)))
    result = CliRunner().invoke(app, ["listen", "--list-devices"])
    assert result.exit_code == 0
    assert result.stdout == "0: USB mic (2 channels, 44100 Hz)\n"


def test_a_device_that_refuses_16_khz_is_named(
    tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice(np.zeros(1), True))
    result = CliRunner().invoke(app, ["listen", str(tiny_run), "--device", "1"])
    assert result.exit_code == 2
    assert "input device 1 (USB mic)" in result.output and "44100 Hz" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_without_portaudio_one_line_names_the_package_and_the_extra(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What importing sounddevice does where the PortAudio library is missing.
    (tmp_path / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    for args in (["listen", str(tiny_run)], ["listen", "--list-devices"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2
        assert "libportaudio2" in result.output and "pip install 'sanas[live]'" in result.output
        assert len(result.output.strip().splitlines()) == 1
