"""Run folders that are safe to share and hard to break: weights read as data only, a
manifest that names a damaged file, a lock against two writers, absolute paths, and
archives that cannot write outside their folder."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sanas.cli import app
from sanas.kws import run_files
from sanas.kws.config import TrainConfig
from sanas.kws.data import download
from sanas.kws.data.download import DownloadError, download_speech_commands
from sanas.kws.run_files import RunFileError, load_weights, run_lock, save_weights
from sanas.kws.runs import load_run, save_run
from sanas.kws.training.loop import train

REPO = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this runs code: it writes ``marker`` (what a shared best.pt could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('the payload ran')",)


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def _plant(run: Path, name: str, obj: object) -> None:
    """Replace ``run/name`` by ``obj`` and record it in the manifest, as an attacker who
    controls the whole folder would: the digest check cannot be what stops it."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    (run / name).unlink()
    (run / name).write_bytes(buffer.getvalue())
    run_files._record(run, {name: [run_files._entry(buffer.getvalue())]})


def test_a_planted_pickle_payload_is_refused_and_never_runs(
    tiny_run: Path, tiny_stream: Path, tmp_path: Path
) -> None:
    run = _copy(tiny_run, tmp_path)
    marker = tmp_path / "marker.txt"
    _plant(run, "best.pt", {"model": Payload(marker)})
    wav, labels = str(tiny_stream / "stream.wav"), str(tiny_stream / "labels.txt")
    runner = CliRunner()
    for args in (
        ["stream", str(run), "--wav", wav],
        ["evaluate", str(run), "--stream-wav", wav, "--stream-labels", labels],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert (
            f"{run / 'best.pt'}: refused" in result.output
            and "(unsupported global exec)" in result.output
        )
        assert "Traceback" not in result.output
    with pytest.raises(RunFileError, match=r"best\.pt: refused: it holds Python objects"):
        load_run(run)
    assert not marker.exists()
    # The payload is live: the unsafe load sanas used to do runs it.
    torch.load(run / "best.pt", weights_only=False)
    assert marker.read_text() == "the payload ran"


def test_a_planted_checkpoint_is_refused_on_resume(tiny_run: Path, tmp_path: Path) -> None:
    run = _copy(tiny_run, tmp_path)
    marker = tmp_path / "marker.txt"
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    _plant(run, "checkpoint.pt", {**checkpoint, "rng": Payload(marker)})
    config = {**json.loads((run / "config.json").read_text()), "out": str(run), "epochs": 2}
    with pytest.raises(RunFileError, match=r"delete it to train .* again from epoch 1"):
        train(TrainConfig.from_dict(config))
    assert not marker.exists()


def test_what_sanas_saves_loads_as_data(tiny_run: Path) -> None:
    for name in ("best.pt", "checkpoint.pt", "front/epoch-0001.pt"):
        assert "model" in torch.load(tiny_run / name, weights_only=True)
    manifest = json.loads((tiny_run / "manifest.json").read_text())["files"]
    assert sorted(manifest) == ["best.pt", "checkpoint.pt", "front/epoch-0001.pt"]
    assert manifest["best.pt"] == manifest["front/epoch-0001.pt"]  # a hard link
    assert not (tiny_run / ".lock").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[: len(data) // 2], "damaged: .* bytes, manifest.json records"),
        (
            lambda data: data[:100] + bytes([data[100] ^ 1]) + data[101:],
            "damaged: its SHA-256 differs",
        ),
        (lambda data: b"", r"empty \(0 bytes\)"),
    ],
)
def test_a_damaged_weights_file_is_named(
    tiny_run: Path, tmp_path: Path, damage: object, message: str
) -> None:
    run = _copy(tiny_run, tmp_path)
    for name in ("best.pt", "checkpoint.pt"):
        data = (run / name).read_bytes()
        (run / name).unlink()
        (run / name).write_bytes(damage(data))  # type: ignore[operator]
        with pytest.raises(RunFileError, match=f"{name}: {message}"):
            load_weights(run, name, "advice")


def test_a_kill_while_weights_are_replaced_leaves_a_folder_that_verifies(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _copy(tiny_run, tmp_path)
    new = {"model": {"w": torch.ones(3)}}
    write = run_files.atomic_write

    def killed_before_the_file(path: Path, data: bytes) -> None:
        if path.suffix == ".pt":
            raise KeyboardInterrupt
        write(path, data)

    monkeypatch.setattr(run_files, "atomic_write", killed_before_the_file)
    with pytest.raises(KeyboardInterrupt):
        save_weights(run, "best.pt", new)
    assert "model" in load_weights(run, "best.pt", "")  # the old file, still recorded
    records = []
    record = run_files._record

    def killed_before_the_commit(run_dir: Path, changes: dict) -> None:
        records.append(changes)
        if len(records) == 2:  # the file is written, its digest not yet the only one
            raise KeyboardInterrupt
        record(run_dir, changes)

    monkeypatch.setattr(run_files, "atomic_write", write)
    monkeypatch.setattr(run_files, "_record", killed_before_the_commit)
    with pytest.raises(KeyboardInterrupt):
        save_weights(run, "best.pt", new)
    monkeypatch.undo()
    assert torch.equal(load_weights(run, "best.pt", "")["model"]["w"], torch.ones(3))


def _train_args(run: Path) -> list[str]:
    return ["train", "--config", str(run / "config.json"), "--out", str(run), "--no-progress"]


def test_a_second_process_is_refused_and_a_crashed_ones_lock_is_taken_over(
    tiny_run: Path, tmp_path: Path
) -> None:
    run = _copy(tiny_run, tmp_path)
    hold = (
        "import sys\nfrom pathlib import Path\nfrom sanas.kws.run_files import run_lock\n"
        "with run_lock(Path(sys.argv[1])):\n    print('locked', flush=True)\n    sys.stdin.read()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        result = CliRunner().invoke(app, _train_args(run))
        assert result.exit_code == 2
        assert f"{run} is in use by another sanas process (PID {holder.pid}" in result.output
    finally:
        holder.kill()  # SIGKILL: a crash, which leaves its lock file behind
        holder.wait()
    assert (run / ".lock").read_text().strip() == str(holder.pid)
    result = CliRunner().invoke(app, _train_args(run))  # the run is finished: nothing to do
    assert result.exit_code == 0, result.output
    assert not (run / ".lock").exists()  # released on exit


def test_without_fcntl_a_lock_file_of_a_dead_process_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_files, "fcntl", None)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (tmp_path / ".lock").write_text(f"{dead}\n")
    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
        busy = f"in use by another sanas process .PID {os.getpid()}"
        with pytest.raises(RunFileError, match=busy), run_lock(tmp_path):
            pass
    assert not (tmp_path / ".lock").exists()


def test_paths_are_stored_absolute_so_a_rerun_elsewhere_resumes(
    tone_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    values = {"data": os.path.relpath(tone_data), "out": "run", "model": "static", "epochs": 1,
              "batch_size": 8, "channels": 2, "workers": 0, "progress": False}  # fmt: skip
    train(TrainConfig.from_dict(values))
    stored = json.loads((tmp_path / "a" / "run" / "config.json").read_text())
    assert stored["out"] == str((tmp_path / "a" / "run").resolve())
    assert stored["data"] == str(tone_data.resolve())
    monkeypatch.chdir(tmp_path / "b")
    result = CliRunner().invoke(
        app, ["train", "--config", "../a/run/config.json", "--set", "epochs=2", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "best epoch" in result.output and not list((tmp_path / "b").iterdir())
    rows = (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in rows] == [1, 2]
    model, config = load_run(tmp_path / "a" / "run")  # a run saved outside the loop too
    save_run(model, replace(config, out="saved", data="data"))
    stored = json.loads((tmp_path / "b" / "saved" / "config.json").read_text())
    assert stored["out"] == str(tmp_path / "b" / "saved") and Path(stored["data"]).is_absolute()


def _tar(members: list[tuple[str, str | bytes]]) -> bytes:
    """A .tar.gz of (name, content) files and (name, "-> target") symbolic links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content.removeprefix("-> ")
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@pytest.mark.parametrize("data_filter", [True, False])
def test_a_chained_symlink_archive_is_refused_with_or_without_the_data_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_filter: bool
) -> None:
    if not data_filter:  # as on Pythons before PEP 706: tarfile itself guards nothing
        trusted = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
        monkeypatch.setattr(download, "EXTRACT_OPTIONS", trusted)
    root = tmp_path / "deep" / "root"
    root.mkdir(parents=True)
    name = "speech_commands_v0.02.tar.gz"
    # Each member passes a lexical check: d/e/.. is d, d/e/x is under d.
    (root / name).write_bytes(
        _tar([("d", "-> ."), ("d/e", "-> .."), ("d/e/x", b"written outside")])
    )
    with pytest.raises(DownloadError, match=r"refusing link 'd/e' -> '\.\.' \(points outside\)"):
        download_speech_commands("v0.02", root, test_set=False, known={}, progress=False)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "root"]
    assert not (root / name).exists()  # a refused archive is not left in --root
