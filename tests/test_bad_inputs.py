"""Bad input to ``sanas stream`` and ``sanas evaluate``: recordings, label files, run
folders and output paths. Each case exits with a one-line message naming the file or
field, never a traceback, and writes nothing outside its output folder (the harness and
its rules: tests/bad_inputs.py; the other commands: test_bad_inputs_commands.py).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sanas.cli import app
from sanas.kws.data import audio
from sanas.kws.model.registry import build_kws_model
from sanas.kws.run_files import save_weights
from tests.bad_inputs import (
    UNDECODABLE,
    WAKE_WORDS,
    Case,
    Cases,
    World,
    check,
    sparse_wav,
    tone,
)

case = Cases()


# ------------------------------------------------------------------------------ audio
@case("wav missing")
def _(w: World) -> Case:
    return Case(w.stream(w.inputs / "none.wav"), says=("none.wav: no such file",))


@case("wav is a folder")
def _(w: World) -> Case:
    return Case(w.stream(w.inputs), says=(f"{w.inputs}: no such file",))


@case("wav empty")
def _(w: World) -> Case:
    return Case(w.stream(w.file("empty.wav", b"")), says=("empty.wav: empty file",))


@case("text as audio")
def _(w: World) -> Case:
    path = w.file("notes.wav", "yes, 1000\nno, 4000\n")
    return Case(w.stream(path), says=("notes.wav: cannot decode",))


@case("random bytes as audio")
def _(w: World) -> Case:
    path = w.file("noise.wav", np.random.default_rng(0).bytes(4000))
    return Case(w.evaluate(path), says=("noise.wav: cannot decode",))


@case("truncated wav header")
def _(w: World) -> Case:
    path = w.file("cut.wav", w.wav.read_bytes()[:30])
    return Case(w.stream(path), says=("cut.wav: cannot decode",))


@case("wav without samples")
def _(w: World) -> Case:
    path = w.audio("silent.wav", np.zeros(0, dtype=np.float32))
    return Case(w.stream(path), says=("silent.wav: no samples",))


@case("NaN samples")
def _(w: World) -> Case:
    samples = tone(2.0)
    samples[100] = np.nan
    return Case(w.stream(w.audio("nan.wav", samples)), says=("nan.wav: NaN or infinite",))


@case("Inf samples")
def _(w: World) -> Case:
    samples = tone(2.0)
    samples[-1] = np.inf
    return Case(w.evaluate(w.audio("inf.wav", samples)), says=("inf.wav: NaN or infinite",))


@case("stereo (mixed down, said)")
def _(w: World) -> Case:
    path = w.audio("stereo.wav", tone(3.0, channels=2))
    return Case(w.stream(path), code=0, says=("stereo.wav: 2 channels, mixed down to mono",))


@case("wrong rate (resampled, said)")
def _(w: World) -> Case:
    path = w.audio("8k.wav", tone(3.0)[::2], rate=8000)
    return Case(w.stream(path), code=0, says=("8k.wav: 8000 Hz, resampled to 16000 Hz",))


@case("shorter than one window")
def _(w: World) -> Case:
    path = w.audio("short.wav", tone(0.1))
    return Case(w.stream(path), says=("short.wav: 1600 samples: shorter than one window",))


@case("very long audio (more than memory)")
def _(w: World) -> Case:
    w.monkeypatch.setattr(audio, "_available_memory", lambda: 10**9)
    path = sparse_wav(w.inputs / "ten_hours.wav", hours=10)
    return Case(w.stream(path), says=("ten_hours.wav: 10.0 h of audio needs about",))


def _undecodable(w: World, name: str) -> Path:
    path = WAKE_WORDS / name
    if not path.is_file():
        pytest.skip(f"{path} absent (set SANAS_WAKE_WORD_BENCHMARK): a real undecodable file")
    return path


@case("real undecodable flac")
def _(w: World) -> Case:
    path = _undecodable(w, UNDECODABLE[0])
    return Case(w.stream(path), says=(f"{path}: cannot decode",))


@case("real undecodable flac, evaluated")
def _(w: World) -> Case:
    path = _undecodable(w, UNDECODABLE[1])
    return Case(w.evaluate(path), says=(f"{path}: cannot decode",))


# ----------------------------------------------------------------------------- labels
@case("labels missing")
def _(w: World) -> Case:
    labels = w.inputs / "none.txt"
    return Case(w.evaluate(labels=labels), says=("none.txt: cannot read label file",))


@case("labels empty: a noise-only stream, said so (no nan%)")
def _(w: World) -> Case:
    path = w.file("empty.txt", "")
    return Case(w.evaluate(labels=path), code=0, says=("empty.txt: no labelled word", "matched –"))


@case("labels blank lines only: a noise-only stream, said so")
def _(w: World) -> Case:
    path = w.file("blank.txt", "\n  \n\n")
    return Case(w.evaluate(labels=path), code=0, says=("blank.txt: no labelled word", "matched –"))


@case("labels binary")
def _(w: World) -> Case:
    path = w.file("labels.bin", b"\xff\xfe\x00\x81" * 50)
    return Case(w.evaluate(labels=path), says=("labels.bin: cannot read label file",))


@case("labels line without comma")
def _(w: World) -> Case:
    path = w.file("bad.txt", "yes, 100\nno 2000\n")
    return Case(w.evaluate(labels=path), says=("bad.txt:2: expected 'word,time_ms'",))


@case("labels negative time")
def _(w: World) -> Case:
    path = w.file("bad.txt", "yes, -5\n")
    return Case(w.evaluate(labels=path), says=("bad.txt:1: expected 'word,time_ms'",))


@case("labels NaN time")
def _(w: World) -> Case:
    path = w.file("bad.txt", "yes, 100\nno, nan\n")
    return Case(w.evaluate(labels=path), says=("bad.txt:2: expected 'word,time_ms'",))


@case("labels unknown word")
def _(w: World) -> Case:
    path = w.file("dog.txt", "yes, 100\ndog, 2000\n")
    return Case(w.evaluate(labels=path), says=("dog.txt:2: word 'dog' is not a label",))


@case("labels past the end of the audio")
def _(w: World) -> Case:
    path = w.file("late.txt", "yes, 100\nno, 16000\n")
    return Case(w.evaluate(labels=path), says=("late.txt:2: 'no' at 16.000 s starts past the end",))


@case("3 s wav with a 120 s stream's labels")
def _(w: World) -> Case:
    labels = w.file("long.txt", "".join(f"yes, {t}\n" for t in range(500, 120_000, 3000)))
    wav = w.audio("3s.wav", tone(3.0))
    return Case(
        w.evaluate(wav, labels), says=("long.txt:2:", "past the end of the audio (3.000 s)")
    )


# -------------------------------------------------------------------------- run folders
@case("run folder missing")
def _(w: World) -> Case:
    missing = w.inputs / "nowhere"
    return Case(["stream", str(missing), "--wav", str(w.wav)], says=(f"{missing}: no config.json",))


@case("run folder empty")
def _(w: World) -> Case:
    (w.inputs / "empty").mkdir()
    args = ["stream", str(w.inputs / "empty"), "--wav", str(w.wav)]
    return Case(args, says=("empty: no config.json; not a training run folder",))


@case("config.json not JSON")
def _(w: World) -> Case:
    (w.run / "config.json").write_text("{ broken")
    return Case(w.stream(), says=("config.json: not the config.json of a sanas run",))


@case("config.json of another tool")
def _(w: World) -> Case:
    (w.run / "config.json").write_text('{"learning_rate": 0.1, "layers": [3, 4]}')
    return Case(w.evaluate(), says=("config.json: not the config.json", "'layers'"))


@case("best.pt missing")
def _(w: World) -> Case:
    (w.run / "best.pt").unlink()
    return Case(w.stream(), says=("best.pt: missing; has the run finished an epoch?",))


@case("best.pt empty")
def _(w: World) -> Case:
    (w.run / "best.pt").write_bytes(b"")
    return Case(w.stream(), says=("best.pt: empty (0 bytes)",))


@case("best.pt truncated")
def _(w: World) -> Case:
    data = (w.run / "best.pt").read_bytes()
    (w.run / "best.pt").unlink()
    (w.run / "best.pt").write_bytes(data[:5000])
    return Case(w.evaluate(), says=("best.pt: damaged: 5000 bytes, manifest.json records",))


@case("best.pt corrupt, same size")
def _(w: World) -> Case:
    data = bytearray((w.run / "best.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (w.run / "best.pt").unlink()
    (w.run / "best.pt").write_bytes(bytes(data))
    return Case(w.stream(), says=("best.pt: damaged: its SHA-256 differs",))


@case("best.pt truncated, no manifest (an older run)")
def _(w: World) -> Case:
    data = (w.run / "best.pt").read_bytes()
    (w.run / "best.pt").unlink()
    (w.run / "best.pt").write_bytes(data[:5000])
    (w.run / "manifest.json").unlink()
    return Case(w.stream(), says=("best.pt: damaged or not a PyTorch file",))


@case("best.pt a pickle that runs code")
def _(w: World) -> Case:
    buffer = io.BytesIO()
    torch.save({"model": _Payload()}, buffer)
    (w.run / "best.pt").unlink()
    (w.run / "best.pt").write_bytes(buffer.getvalue())
    (w.run / "manifest.json").unlink()
    return Case(w.stream(), says=("best.pt: refused", "unsupported global", "system"))


@case("best.pt of another network")
def _(w: World) -> Case:
    other = build_kws_model("static-shortcuts", num_classes=12, channels=3)
    (w.run / "best.pt").unlink()
    save_weights(w.run, "best.pt", {"model": other.state_dict()})
    return Case(w.stream(), says=("best.pt: holds the weights of another network",))


@case("manifest.json damaged")
def _(w: World) -> Case:
    (w.run / "manifest.json").write_text("[1, 2")
    return Case(w.stream(), says=("manifest.json: damaged",))


@case("operating_point.json out of range")
def _(w: World) -> Case:
    (w.run / "operating_point.json").write_text('{"architecture_threshold": 5}')
    return Case(w.stream(), says=("operating_point.json: ", "'architecture_threshold'"))


@case("resume: checkpoint.pt empty")
def _(w: World) -> Case:
    (w.run / "checkpoint.pt").write_bytes(b"")
    return Case(w.resume(), says=("checkpoint.pt: empty (0 bytes)", "delete it to train"))


@case("resume: checkpoint.pt truncated")
def _(w: World) -> Case:
    data = (w.run / "checkpoint.pt").read_bytes()
    (w.run / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    return Case(w.resume(), says=("checkpoint.pt: damaged", "delete it to train"))


@case("resume: checkpoint.pt of an older sanas")
def _(w: World) -> Case:
    checkpoint = torch.load(w.run / "checkpoint.pt", weights_only=True)
    checkpoint["rng"]["numpy"] = np.random.get_state()  # numpy arrays: not plain data
    (w.run / "checkpoint.pt").unlink()
    save_weights(w.run, "checkpoint.pt", checkpoint)
    return Case(w.resume(), says=("checkpoint.pt: refused", "numpy"))


@case("resume: run in use by another process")
def _(w: World) -> Case:
    return Case(w.resume(), says=(f"{w.run} is in use by another sanas process",), hold=w.run)


@case("resume: another configuration")
def _(w: World) -> Case:
    args = [*w.resume(), "--set", "channels=3"]
    return Case(args, says=(f"{w.run} holds a run with a different configuration", "channels"))


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, ("echo payload ran > /dev/null",)


# --------------------------------------------------------------------- evaluation outputs
@case("evaluate: --json under a file")
def _(w: World) -> Case:
    blocker = w.file("blocker", "")
    return Case(w.evaluate(None, None, "--json", str(blocker / "s.json")), says=("--json",))


@case("evaluate: --json is a folder")
def _(w: World) -> Case:
    w.out.mkdir()
    return Case(
        w.evaluate(None, None, "--json", str(w.out)), says=(f"--json {w.out}: is a folder",)
    )


@case("evaluate: --plots under a file (before scoring)")
def _(w: World) -> Case:
    blocker = w.file("blocker", "")
    args = w.evaluate(None, None, "--plots", str(blocker / "plots"))
    return Case(args, says=(f"{blocker} is a file, not a folder",))


@case("evaluate: --arch-threshold out of range")
def _(w: World) -> Case:
    args = w.evaluate(None, None, "--arch-threshold", "2")
    return Case(args, says=("'architecture_threshold' must be in (0, 1)",))


@case("stream: --hold-budget negative")
def _(w: World) -> Case:
    return Case(w.stream(None, "--hold-budget", "-1"), says=("'hold_budget' must be > 0",))


# ------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", list(case))
def test_bad_input_is_one_line_naming_it(world: World, name: str) -> None:
    check(world, case[name](world))


def test_there_are_at_least_forty_cases() -> None:
    assert len(case) >= 40


def test_an_internal_error_is_a_short_line_and_a_traceback_file(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("something inside broke")

    monkeypatch.setattr("sanas.kws.evaluation.evaluate.evaluate_run", broken)
    result = CliRunner().invoke(app, world.evaluate())
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "internal error (RuntimeError: something inside broke)" in result.output
    (written,) = (world.root / "tmp").iterdir()
    assert f"the full traceback is in {written}" in result.output
    assert "Traceback" in written.read_text() and "something inside broke" in written.read_text()
