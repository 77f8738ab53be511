"""``sanas data download | stream | synth`` through typer's CliRunner."""

from __future__ import annotations

import functools
import io
import shutil
import socket
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import soundfile as sf
from typer.testing import CliRunner

from sanas.cli import app
from sanas.kws.data.download import KNOWN_ARCHIVES, archive_names

runner = CliRunner()


@pytest.mark.parametrize("command", ["download", "stream", "synth"])
def test_help_teaches_with_examples(command: str) -> None:
    result = runner.invoke(app, ["data", command, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and f"sanas data {command} --" in result.output


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local HTTP server holding tiny v0.02 archives (the real digests switched off)."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    for name in archive_names("v0.02"):
        monkeypatch.delitem(KNOWN_ARCHIVES, name, raising=False)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            info = tarfile.TarInfo("yes/0a1b2c3d_nohash_0.wav")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"RIFF"))
        (folder / name).write_bytes(buffer.getvalue())
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download(mirror: str, tmp_path: Path) -> None:
    root = tmp_path / "data"
    args = ["data", "download", "--root", str(root), "--base-url", mirror, "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (root / "speech_commands_v0.02" / "yes" / "0a1b2c3d_nohash_0.wav").is_file()
    assert (root / "speech_commands_test_set_v0.02" / "yes").is_dir()
    assert "canonical test set:" in result.output


def test_download_offline_is_one_clean_line(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    result = runner.invoke(app, ["data", "download", "--root", str(tmp_path), "--base-url", url])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: cannot download {url}/")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_stream(speech_commands_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "stream"
    args = ["data", "stream", "--data", str(speech_commands_root), "--minutes", "0.5"]
    result = runner.invoke(app, [*args, "--seed", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "stream.wav").is_file() and (out / "labels.txt").is_file()
    assert "10 words" in result.output


def test_noise_only_stream(tone_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "noise"
    args = ["data", "stream", "--data", str(tone_data), "--minutes", "0.25", "--noise-only"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "0 words, background noise only" in result.output
    assert (out / "labels.txt").read_text() == ""
    assert sf.info(out / "stream.wav").frames == 15 * 16000
    with_words = runner.invoke(app, [*args, "--words", "yes", "--out", str(tmp_path / "w")])
    assert with_words.exit_code == 2
    assert with_words.output == "error: a noise-only stream has no words: give no wanted words\n"


def test_stream_bad_data_is_one_clean_line(tmp_path: Path) -> None:
    args = ["data", "stream", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "Traceback" not in result.output


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_synth(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    args = ["data", "synth", "--out", str(out), "--words", "yes,no", "--per-word", "3"]
    result = runner.invoke(app, [*args, "--unknown-words", "", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert len(list((out / "yes").glob("*.wav"))) == 3
    assert "wrote 6 clips of 2 words" in result.output
    again = runner.invoke(app, args)  # the folder is no longer empty
    assert again.exit_code == 2
    assert again.output.startswith("error: ") and "not empty" in again.output
