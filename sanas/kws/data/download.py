"""Download and safely extract the official Speech Commands archives.

The archives live in the storage bucket TensorFlow's ``speech_commands`` example uses. A
download goes to ``<name>.part`` and resumes from there with an HTTP ``Range`` request when
interrupted; the finished file is checked against a table of known sizes and sha256 digests
(overridable), or, for an archive the table does not know, against the server's
Content-Length and a full gzip read (which checks gzip's own CRC and length); such an
archive's size and sha256 are then pinned in ``<root>/sanas_digests.json``, so every later
download into that root must match the first one (trust on first use). Extraction
refuses members whose final path (following the links already extracted) lands outside
the target folder, links pointing outside it and special files, then uses tarfile's
``"data"`` filter where Python has it; a refused archive is deleted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path, PurePosixPath

from tqdm import tqdm

BASE_URL = "https://storage.googleapis.com/download.tensorflow.org/data"
VERSIONS = ("v0.01", "v0.02")
CHUNK = 1 << 20
# Written into an extracted folder once extraction finished, so a rerun can skip it.
COMPLETE_MARKER = ".sanas_complete"
# Size and sha256 of the archives without a published digest, as first downloaded.
PINNED_DIGESTS = "sanas_digests.json"
# tarfile's own guard where Python has it (PEP 706: 3.10.12, 3.11.4 and later); without it
# the checks of _check_member, which follow the links already extracted, hold alone.
EXTRACT_OPTIONS: dict[str, str] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


class DownloadError(OSError):
    """A download, verification or extraction failed; the message names the URL or file."""


class UnsafeArchiveError(DownloadError):
    """An archive that cannot be extracted safely (a member outside the folder, a special
    file, a broken tar stream): it is deleted, since a rerun must download it again."""


@dataclass(frozen=True)
class ArchiveInfo:
    """What a correct archive looks like: its size in bytes and sha256 (either may be unknown)."""

    size: int | None = None
    sha256: str | None = None


# Sources: TensorFlow Datasets' url_checksums/speech_commands.txt (both v0.02 archives),
# torchaudio's SPEECHCOMMANDS._CHECKSUMS (v0.01 sha256) and the server's Content-Length
# (v0.01 size). The v0.01 test set has no published digest (none of these sources lists
# one, and none was found elsewhere): it is checked by Content-Length and a full gzip read,
# and pinned on first download (PINNED_DIGESTS).
KNOWN_ARCHIVES: dict[str, ArchiveInfo] = {
    "speech_commands_v0.01.tar.gz": ArchiveInfo(
        1489096277, "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d"
    ),
    "speech_commands_v0.02.tar.gz": ArchiveInfo(
        2428923189, "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"
    ),
    "speech_commands_test_set_v0.02.tar.gz": ArchiveInfo(
        112563277, "cc2a00c1147c2254e9be3fa0f779d8c17421dc349b86366567a8edfa9acd51df"
    ),
}


@dataclass(frozen=True)
class SpeechCommandsDownload:
    """Where the extracted data went: the full set and (when asked for) the canonical test set."""

    dataset_dir: Path
    test_set_dir: Path | None


def archive_names(version: str) -> tuple[str, str]:
    """The file names of the full set and of the canonical test set of ``version``."""
    if version not in VERSIONS:
        raise DownloadError(f"unknown Speech Commands version {version!r} (choose from {VERSIONS})")
    return f"speech_commands_{version}.tar.gz", f"speech_commands_test_set_{version}.tar.gz"


def download_speech_commands(
    version: str,
    root: str | Path,
    *,
    base_url: str = BASE_URL,
    test_set: bool = True,
    known: Mapping[str, ArchiveInfo] = KNOWN_ARCHIVES,
    keep_archives: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
) -> SpeechCommandsDownload:
    """Fetch, verify and extract Speech Commands ``version`` under ``root``.

    The full set goes to ``root/speech_commands_<version>/`` and the canonical test set to
    ``root/speech_commands_test_set_<version>/``. Folders already extracted are kept as they
    are, so a rerun after an interruption only does what is left.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = archive_names(version)
    pinned = read_pinned_digests(root)
    dirs: list[Path] = []
    for name in names if test_set else names[:1]:
        target = root / name.removesuffix(".tar.gz")
        if not (target / COMPLETE_MARKER).is_file():
            published = known.get(name)
            archive = fetch(
                f"{base_url.rstrip('/')}/{name}",
                root / name,
                expected=published if published and published.sha256 else pinned.get(name),
                progress=progress,
                timeout=timeout,
            )
            try:
                safe_extract(archive, target)
            except UnsafeArchiveError:
                archive.unlink(missing_ok=True)  # never left in root to be extracted again
                raise
            if not (published and published.sha256) and name not in pinned:
                pin_digest(root, archive)  # only an archive that extracted safely
            if not keep_archives:
                archive.unlink()
        dirs.append(target)
    return SpeechCommandsDownload(dirs[0], dirs[1] if test_set else None)


def fetch(
    url: str,
    dest: str | Path,
    *,
    expected: ArchiveInfo | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``) and verify it; return ``dest``.

    A file that fails verification is deleted so that the next attempt starts afresh.
    """
    dest = Path(dest)
    expected = expected or ArchiveInfo()
    if not dest.is_file():
        part = dest.with_name(dest.name + ".part")
        total = _download(url, part, expected.size, progress, timeout)
        got = part.stat().st_size
        if total is not None and got < total:
            raise DownloadError(
                f"download of {url} interrupted at {got} of {total} bytes; "
                f"run again to resume from {part}"
            )
        if total is not None and got > total:
            part.unlink()
            raise DownloadError(f"{url}: {part} had {got} bytes, more than the {total} served")
        part.replace(dest)
    try:
        verify(dest, expected)
    except DownloadError:
        dest.unlink()
        raise
    return dest


def read_pinned_digests(root: Path) -> dict[str, ArchiveInfo]:
    """The digests pinned in ``root`` by earlier downloads (none when there is no file)."""
    path = root / PINNED_DIGESTS
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
        return {name: ArchiveInfo(int(e["size"]), str(e["sha256"])) for name, e in entries.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise DownloadError(
            f"{path}: not a digest table written by sanas ({error}); delete it to pin afresh"
        ) from error


def pin_digest(root: Path, archive: Path) -> None:
    """Record ``archive``'s size and sha256 in ``root``'s pinned digests (atomically)."""
    entries = {
        name: {"size": info.size, "sha256": info.sha256}
        for name, info in read_pinned_digests(root).items()
    }
    entries[archive.name] = {"size": archive.stat().st_size, "sha256": file_sha256(archive)}
    part = root / (PINNED_DIGESTS + ".part")
    part.write_text(json.dumps(entries, indent=2) + "\n")
    part.replace(root / PINNED_DIGESTS)


def file_sha256(path: Path) -> str:
    """The hex sha256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: ArchiveInfo) -> None:
    """Check ``path`` against the known size and sha256, else read it through gzip.

    A gzip read to the end checks gzip's CRC-32 and length trailer, which catches truncated
    and corrupted archives when no digest is known.
    """
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        raise DownloadError(f"{path}: size {size} bytes, expected {expected.size}")
    if expected.sha256 is not None:
        digest = file_sha256(path)
        if digest != expected.sha256.lower():
            raise DownloadError(
                f"{path}: sha256 {digest} does not match expected {expected.sha256} (published, "
                f"or pinned in {path.parent / PINNED_DIGESTS} by this folder's first download)"
            )
        return
    try:
        with gzip.open(path, "rb") as f:
            while f.read(CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as error:
        raise DownloadError(f"{path}: corrupt or truncated gzip archive ({error})") from error


def safe_extract(archive: Path, target: Path) -> None:
    """Extract the tar archive ``archive`` into ``target``, refusing anything unsafe.

    One streaming pass checks each member against the folder as extracted so far (its
    final path, following the links already there, must stay inside), then extracts it
    (with tarfile's ``"data"`` filter where Python has it; the checks hold without it).
    Extraction goes to ``target.partial``, renamed at the end, so ``target`` never holds
    half an archive and a refused archive leaves nothing behind.
    """
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    root = partial.resolve()
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                _check_member(member, archive, root)
                tar.extract(member, partial, **EXTRACT_OPTIONS)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(error, DownloadError):
            raise
        if isinstance(error, tarfile.TarError | EOFError | zlib.error):
            raise UnsafeArchiveError(f"{archive}: cannot extract ({error})") from error
        raise DownloadError(f"{archive}: cannot extract ({error})") from error
    (partial / COMPLETE_MARKER).write_text(f"{archive.name}\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)


def _check_member(member: tarfile.TarInfo, archive: Path, root: Path) -> None:
    """Raise when ``member`` would write outside ``root`` (its path resolved through the
    links extracted before it), link outside it, or is a special file."""

    def refuse(what: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{archive}: refusing {what}")

    if not member.name or PurePosixPath(member.name).is_absolute():
        raise refuse(f"member {member.name!r} (path escapes the root)")
    path = root / member.name
    if not _within(path, root):  # a parent is a link pointing out, or ".." climbs out
        raise refuse(f"member {member.name!r} (path escapes the root)")
    if member.issym() or member.islnk():
        # A symbolic link resolves from its own folder, a hard link from the archive root.
        start = path.parent if member.issym() else root
        if not _within(start / member.linkname, root):
            raise refuse(f"link {member.name!r} -> {member.linkname!r} (points outside)")
    elif not (member.isfile() or member.isdir()):
        raise refuse(f"special file {member.name!r}")


def _within(path: Path, root: Path) -> bool:
    """Whether ``path``, resolved on disk (links followed, ``..`` applied), is in ``root``."""
    final = Path(os.path.realpath(path))
    return final == root or root in final.parents


def _download(
    url: str, part: Path, known_size: int | None, progress: bool, timeout: float
) -> int | None:
    """Append ``url``'s remaining bytes to ``part``; return the total size the server gave."""
    have = part.stat().st_size if part.is_file() else 0
    if known_size is not None and have == known_size:
        return known_size
    request = urllib.request.Request(url, headers={"User-Agent": "sanas"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if have and response.status == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != have:
                    raise DownloadError(f"{url}: asked to resume at byte {have}, got {start}")
            else:  # a fresh download, or a server that ignored Range: start again
                have = 0
                length = response.headers.get("Content-Length")
                total = int(length) if length is not None else None
            if known_size is not None and total is not None and total != known_size:
                raise DownloadError(f"{url}: server announces {total} bytes, expected {known_size}")
            with (
                part.open("ab" if have else "wb") as out,
                tqdm(
                    total=total,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    desc=part.name.removesuffix(".part"),
                    disable=not progress,
                ) as bar,
            ):
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            return total
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing left to fetch: the part may be complete
            return _content_range(error.headers.get("Content-Range"))[1]
        raise DownloadError(f"cannot download {url}: HTTP {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        raise DownloadError(f"cannot download {url}: {error.reason}") from error
    except (HTTPException, TimeoutError, ConnectionError) as error:
        raise DownloadError(
            f"download of {url} interrupted ({error!r}); run again to resume from {part}"
        ) from error


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """The first byte and the total size in ``Content-Range: bytes A-B/N`` (or ``*/N``)."""
    try:
        spans, total = (header or "").removeprefix("bytes ").split("/")
        start = None if spans == "*" else int(spans.split("-")[0])
        return start, None if total == "*" else int(total)
    except ValueError:
        return None, None
