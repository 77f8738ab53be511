"""The harness of the bad-input tests (tests/test_bad_inputs*.py): a case is a command
line, the exit code it must give and what its output must say; :func:`check` runs it.

Each case builds its inputs in ``inputs/`` (copies: the shared fixtures stay as they are),
may write only into ``out/`` (which must not exist after a refusal unless it existed
before), runs from an empty working directory with an empty temporary folder (a bug
would leave its traceback file there) and must leave every input unchanged.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import tarfile
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from sanas.cli import app
from sanas.kws.data.download import KNOWN_ARCHIVES
from sanas.kws.run_files import run_lock

REPO = Path(__file__).resolve().parents[1]
# Real recordings, some of which do not decode (upstream's FLAC files, copied unchanged).
WAKE_WORDS = Path(
    os.environ.get("SANAS_WAKE_WORD_BENCHMARK", REPO.parent / "shared/data/wake_word_benchmark")
)
UNDECODABLE = ("alexa/126.flac", "alexa/127.flac")  # libsndfile: "flac decoder lost sync"
RATE = 16000


@dataclass
class Case:
    """A command line, the exit code it must give and what its output must say."""

    args: list[str]
    code: int = 2
    says: tuple[str, ...] = ()
    gone: tuple[Path, ...] = ()  # files the command must delete
    hold: Path | None = None  # a run folder locked by "another process" meanwhile


@dataclass
class World:
    """The folders of one case: inputs (copied fixtures), out, an empty working folder."""

    root: Path
    tiny_run: Path
    tiny_stream: Path
    tone_data: Path
    monkeypatch: pytest.MonkeyPatch
    _copies: dict[str, Path] = field(default_factory=dict)

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def out(self) -> Path:
        return self.root / "out"

    def copy(self, source: Path, name: str) -> Path:
        if name not in self._copies:
            copy = shutil.copytree if source.is_dir() else shutil.copy
            self._copies[name] = Path(copy(source, self.inputs / name))
        return self._copies[name]

    @property
    def run(self) -> Path:
        return self.copy(self.tiny_run, "run")

    @property
    def wav(self) -> Path:
        return self.copy(self.tiny_stream / "stream.wav", "stream.wav")

    @property
    def labels(self) -> Path:
        return self.copy(self.tiny_stream / "labels.txt", "labels.txt")

    @property
    def data(self) -> Path:
        return self.copy(self.tone_data, "data")

    def file(self, name: str, content: bytes | str) -> Path:
        path = self.inputs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
        return path

    def audio(
        self, name: str, samples: np.ndarray, rate: int = RATE, subtype: str = "FLOAT"
    ) -> Path:
        path = self.inputs / name
        sf.write(path, samples, rate, subtype=subtype)
        return path

    def stream(self, wav: Path | None = None, *extra: str) -> list[str]:
        return ["stream", str(self.run), "--wav", str(wav or self.wav), *extra]

    def evaluate(
        self, wav: Path | None = None, labels: Path | None = None, *extra: str
    ) -> list[str]:
        files = [
            "--stream-wav",
            str(wav or self.wav),
            "--stream-labels",
            str(labels or self.labels),
        ]
        return ["evaluate", str(self.run), *files, *extra]

    def train(self, *extra: str, data: Path | None = None) -> list[str]:
        base = ["train", "--data", str(data or self.data), "--out", str(self.out), "--no-progress"]
        return [*base, "--model", "static", "--channels", "2", "--epochs", "1", *extra]

    def resume(self) -> list[str]:
        return ["train", "--config", str(self.run / "config.json"), "--out", str(self.run)]


class Cases(dict[str, Callable[[World], Case]]):
    """A module's cases by name; ``@cases("name")`` registers the function that builds one."""

    def __call__(self, name: str) -> Callable[[Callable[[World], Case]], Callable[[World], Case]]:
        def register(build: Callable[[World], Case]) -> Callable[[World], Case]:
            self[name] = build
            return build

        return register


def tone(seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return np.stack([tone] * channels, axis=1) if channels > 1 else tone


def sparse_wav(path: Path, hours: float) -> Path:
    """A valid 16-bit wav of ``hours`` of silence that takes no disk (a sparse file)."""
    frames = int(hours * 3600 * RATE)
    header = b"RIFF" + struct.pack("<I", 36 + 2 * frames) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, RATE, 2 * RATE, 2, 16)
    header += b"data" + struct.pack("<I", 2 * frames)
    with path.open("wb") as f:
        f.write(header)
        f.truncate(len(header) + 2 * frames)
    return path


def tar(members: list[tuple[str, bytes | str]]) -> bytes:
    """A .tar.gz of files (bytes), symbolic links ("-> target") and a FIFO ("fifo")."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if content == "fifo":
                info.type = tarfile.FIFOTYPE
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content.removeprefix("-> ")
            else:
                info.size = len(content)
            archive.addfile(info, io.BytesIO(content) if isinstance(content, bytes) else None)
    return buffer.getvalue()


def download(w: World, members: list[tuple[str, bytes | str]]) -> Case:
    """``sanas data download`` finding ``members`` as the archive already in --root."""
    name = "speech_commands_v0.02.tar.gz"
    w.monkeypatch.delitem(KNOWN_ARCHIVES, name)  # no digest: the archive is extracted
    w.out.mkdir()
    archive = w.out / name
    archive.write_bytes(tar([("yes/a_nohash_0.wav", b"ok"), *members]))
    args = ["data", "download", "--root", str(w.out), "--no-test-set", "--no-progress"]
    return Case(args, says=(str(archive), "refusing"), gone=(archive,))


def snapshot(*folders: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file and folder below ``folders`` but ``skip``."""
    seen = {}
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            if skip is not None and (path == skip or skip in path.parents):
                continue
            stat = path.lstat()
            seen[str(path)] = (stat.st_size, stat.st_mtime_ns if not path.is_dir() else 0)
    return seen


def check(world: World, case: Case) -> None:
    """Run ``case`` in ``world``: its exit code and message, no traceback, its inputs and
    the shared fixtures untouched, nothing made on a refusal, no traceback file."""
    shared = (world.tiny_run, world.tiny_stream, world.tone_data)
    existed = world.out.exists()
    before = snapshot(world.root, *shared, skip=world.out)
    with run_lock(case.hold) if case.hold else nullcontext():
        result = CliRunner().invoke(app, case.args)
        if case.hold:
            (case.hold / ".lock").unlink()  # the other process's lock, not a change
    output = " ".join(result.output.split())  # as a reader sees it, line breaks aside
    assert result.exit_code == case.code, result.output
    assert isinstance(result.exception, SystemExit | None), result.exception
    assert "Traceback" not in result.output
    for fragment in case.says:
        assert fragment in output, result.output
    if case.code:
        assert result.output.startswith("error: ") or "\nerror: " in result.output
    assert snapshot(world.root, *shared, skip=world.out) == before  # inputs untouched
    assert not world.out.exists() or existed or case.code == 0  # nothing made on refusal
    assert all(not path.exists() for path in case.gone)
    assert not list((world.root / "tmp").iterdir())  # no traceback file: no internal error
