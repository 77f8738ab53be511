"""Download, resume, verification and safe extraction, against a local HTTP server."""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sanas.kws.data.download import (
    COMPLETE_MARKER,
    PINNED_DIGESTS,
    ArchiveInfo,
    DownloadError,
    archive_names,
    download_speech_commands,
    fetch,
    read_pinned_digests,
)

FULL, TEST_SET = archive_names("v0.02")


@dataclass
class Server:
    """What the test server serves and what it saw."""

    files: dict[str, bytes]
    url: str = ""
    ranges: list[str | None] = field(default_factory=list)
    cut_after: int | None = None  # send only this many body bytes, then hang up


@pytest.fixture
def server() -> Iterator[Server]:
    """A threaded HTTP server on 127.0.0.1 that honours ``Range: bytes=N-``."""
    state = Server(files={})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = state.files.get(self.path.lstrip("/"))
            state.ranges.append(self.headers.get("Range"))
            if body is None:
                self.send_error(404)
                return
            start = 0
            if self.headers.get("Range"):
                start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            end = len(body) if state.cut_after is None else start + state.cut_after
            self.wfile.write(body[start:end])
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


def make_archive(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A .tar.gz holding ``members`` (name -> content) and symbolic ``links`` (name -> target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


# Incompressible content, so that the archive is about 16 kB and can be cut anywhere.
_RANDOM = random.Random(0)
CONTENT = {
    f"{word}/{i:08x}_nohash_0.wav": _RANDOM.randbytes(2048)
    for word in ("yes", "no")
    for i in range(4)
} | {"testing_list.txt": b"yes/00000000_nohash_0.wav\n"}


def test_download_and_extract(server: Server, tmp_path: Path) -> None:
    archive = make_archive(CONTENT)
    server.files = {FULL: archive, TEST_SET: make_archive({"yes/x_nohash_0.wav": b"x"})}
    known = {FULL: ArchiveInfo(len(archive), hashlib.sha256(archive).hexdigest())}
    result = download_speech_commands(
        "v0.02", tmp_path, base_url=server.url, known=known, progress=False
    )
    assert result.dataset_dir == tmp_path / "speech_commands_v0.02"
    for name, content in CONTENT.items():
        assert (result.dataset_dir / name).read_bytes() == content
    assert result.test_set_dir is not None
    assert (result.test_set_dir / "yes" / "x_nohash_0.wav").read_bytes() == b"x"
    assert (result.dataset_dir / COMPLETE_MARKER).is_file()
    assert not list(tmp_path.glob("*.tar.gz*"))  # archives removed after extraction
    # A second run finds both folders complete and fetches nothing.
    server.ranges.clear()
    download_speech_commands("v0.02", tmp_path, base_url=server.url, known={}, progress=False)
    assert server.ranges == []


def test_resume_from_partial_download(server: Server, tmp_path: Path) -> None:
    archive = make_archive(CONTENT)
    server.files = {FULL: archive}
    half = len(archive) // 2
    (tmp_path / f"{FULL}.part").write_bytes(archive[:half])
    known = {FULL: ArchiveInfo(len(archive), hashlib.sha256(archive).hexdigest())}
    result = download_speech_commands(
        "v0.02", tmp_path, base_url=server.url, test_set=False, known=known, progress=False
    )
    assert server.ranges == [f"bytes={half}-"]
    assert result.test_set_dir is None
    assert (result.dataset_dir / "no/00000003_nohash_0.wav").read_bytes() == CONTENT[
        "no/00000003_nohash_0.wav"
    ]


def test_interrupted_download_keeps_part_and_resumes(server: Server, tmp_path: Path) -> None:
    archive = make_archive(CONTENT)
    server.files = {FULL: archive}
    server.cut_after = 1000
    with pytest.raises(DownloadError, match=r"interrupted.*run again to resume"):
        fetch(f"{server.url}/{FULL}", tmp_path / FULL, progress=False)
    assert (tmp_path / f"{FULL}.part").stat().st_size == 1000
    server.cut_after = None
    fetch(f"{server.url}/{FULL}", tmp_path / FULL, progress=False)
    assert (tmp_path / FULL).read_bytes() == archive
    assert server.ranges[-1] == "bytes=1000-"


def test_complete_part_file_is_not_refetched(server: Server, tmp_path: Path) -> None:
    archive = make_archive(CONTENT)
    server.files = {FULL: archive}
    (tmp_path / f"{FULL}.part").write_bytes(archive)
    fetch(f"{server.url}/{FULL}", tmp_path / FULL, progress=False)  # the server answers 416
    assert (tmp_path / FULL).read_bytes() == archive


def corrupt(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]


def test_corrupt_archive_fails_checksum_and_is_deleted(server: Server, tmp_path: Path) -> None:
    archive = make_archive(CONTENT)
    server.files = {FULL: corrupt(archive)}
    known = {FULL: ArchiveInfo(len(archive), hashlib.sha256(archive).hexdigest())}
    with pytest.raises(DownloadError, match=r"sha256 .* does not match"):
        download_speech_commands(
            "v0.02", tmp_path, base_url=server.url, test_set=False, known=known, progress=False
        )
    assert not list(tmp_path.glob(f"{FULL}*"))  # the next attempt starts afresh


def test_corrupt_archive_without_checksum_fails_gzip_check(server: Server, tmp_path: Path) -> None:
    server.files = {FULL: corrupt(make_archive(CONTENT))}
    with pytest.raises(DownloadError, match="corrupt or truncated"):
        download_speech_commands(
            "v0.02", tmp_path, base_url=server.url, test_set=False, known={}, progress=False
        )
    assert not (tmp_path / "speech_commands_v0.02").exists()


def test_truncated_archive_is_refused(server: Server, tmp_path: Path) -> None:
    archive = make_archive(CONTENT)
    server.files = {FULL: archive[: len(archive) * 2 // 3]}
    with pytest.raises(DownloadError, match="corrupt or truncated"):
        download_speech_commands(
            "v0.02", tmp_path, base_url=server.url, test_set=False, known={}, progress=False
        )


def test_size_mismatch_is_refused_before_downloading(server: Server, tmp_path: Path) -> None:
    archive = make_archive(CONTENT)
    server.files = {FULL: archive}
    with pytest.raises(DownloadError, match=f"announces {len(archive)} bytes, expected 5"):
        fetch(f"{server.url}/{FULL}", tmp_path / FULL, expected=ArchiveInfo(5), progress=False)


@pytest.mark.parametrize(
    ("members", "links", "message"),
    [
        ({"../evil.txt": b"x"}, None, "escapes the root"),
        ({"yes/../../evil.txt": b"x"}, None, "escapes the root"),
        ({"/tmp/evil.txt": b"x"}, None, "escapes the root"),
        ({}, {"yes/link": "/etc/passwd"}, "points outside"),
        ({}, {"yes/link": "../../evil.txt"}, "points outside"),
    ],
)
def test_unsafe_members_are_refused(
    server: Server,
    tmp_path: Path,
    members: dict[str, bytes],
    links: dict[str, str] | None,
    message: str,
) -> None:
    server.files = {FULL: make_archive({"yes/a_nohash_0.wav": b"ok", **members}, links)}
    root = tmp_path / "root"
    with pytest.raises(DownloadError, match=message):
        download_speech_commands(
            "v0.02", root, base_url=server.url, test_set=False, known={}, progress=False
        )
    assert not (tmp_path / "evil.txt").exists()
    assert not (root / "speech_commands_v0.02").exists()
    assert not (root / "speech_commands_v0.02.partial").exists()


def test_offline_gives_one_line_error_naming_the_url(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(DownloadError) as info:
        download_speech_commands("v0.02", tmp_path, base_url=url, known={}, progress=False)
    message = str(info.value)
    assert f"{url}/{FULL}" in message and "refused" in message.lower()
    assert "\n" not in message


def test_missing_file_and_unknown_version(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_speech_commands("v0.02", tmp_path, base_url=server.url, progress=False)
    with pytest.raises(DownloadError, match="unknown Speech Commands version"):
        download_speech_commands("v9", tmp_path, base_url=server.url, progress=False)


def test_archive_without_published_digest_is_pinned_on_first_download(
    server: Server, tmp_path: Path
) -> None:
    archive = make_archive(CONTENT)
    server.files = {FULL: archive}
    download_speech_commands(
        "v0.02", tmp_path, base_url=server.url, test_set=False, known={}, progress=False
    )
    pinned = read_pinned_digests(tmp_path)
    assert pinned == {FULL: ArchiveInfo(len(archive), hashlib.sha256(archive).hexdigest())}
    # The server's archive changes (same size): a fresh download into this root is refused.
    shutil.rmtree(tmp_path / "speech_commands_v0.02")
    server.files = {FULL: corrupt(archive)}
    with pytest.raises(DownloadError, match=f"sha256 .* does not match .*{PINNED_DIGESTS}"):
        download_speech_commands(
            "v0.02", tmp_path, base_url=server.url, test_set=False, known={}, progress=False
        )
    assert not (tmp_path / FULL).exists()


def test_a_published_digest_is_not_pinned(server: Server, tmp_path: Path) -> None:
    archive = make_archive(CONTENT)
    server.files = {FULL: archive}
    known = {FULL: ArchiveInfo(len(archive), hashlib.sha256(archive).hexdigest())}
    download_speech_commands(
        "v0.02", tmp_path, base_url=server.url, test_set=False, known=known, progress=False
    )
    assert read_pinned_digests(tmp_path) == {}


def test_a_damaged_digest_table_is_named(tmp_path: Path) -> None:
    (tmp_path / PINNED_DIGESTS).write_text("[1, 2]")
    with pytest.raises(DownloadError, match=f"{PINNED_DIGESTS}: not a digest table"):
        read_pinned_digests(tmp_path)
