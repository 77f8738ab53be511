"""The files of a run folder, written and read so that neither a crash, a damaged copy nor
a stranger's file can pass for a run.

* Every file is written atomically (a temporary file renamed into place).
* Weights files (best.pt, checkpoint.pt, front/*.pt) hold tensors and plain data only and
  are read with ``torch.load(weights_only=True)``: a pickle that would run code is refused,
  never executed. RNG states are stored as plain data for that reason (:func:`rng_state`).
* ``manifest.json`` records the size and SHA-256 of each weights file. It accepts both the
  old and the new digest while a file is replaced, so a kill between the two writes leaves
  a folder that still verifies; a truncated or damaged file is named when read.
* ``.lock`` keeps a second process from training into a folder already in use
  (:func:`run_lock`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    import fcntl
except ImportError:  # Windows: an exclusive-create lock file with the holder's PID
    fcntl = None  # type: ignore[assignment]

MANIFEST = "manifest.json"
LOCK = ".lock"


class RunFileError(ValueError):
    """A run folder's file that is damaged, not written by sanas, or in use; the message
    names the file and says what to do."""


# ---------------------------------------------------------------------------- writing
def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed into place."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def atomic_write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON, atomically."""
    atomic_write(path, (json.dumps(value, indent=2) + "\n").encode())


def _entry(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _manifest(run_dir: Path, strict: bool) -> dict[str, list[dict[str, Any]]]:
    """The recorded entries by file name; a damaged manifest is an error when ``strict``
    (reading), else forgotten (it is rewritten from what is saved next)."""
    path = run_dir / MANIFEST
    if not path.is_file():
        return {}
    try:
        files = json.loads(path.read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not a mapping")
        return files
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        if not strict:
            return {}
        raise RunFileError(
            f"{path}: damaged ({type(error).__name__}: {error}); the weights cannot be "
            "verified: copy the run folder again, or delete it to load them unverified"
        ) from None


def _record(run_dir: Path, changes: dict[str, list[dict[str, Any]] | None]) -> None:
    files = _manifest(run_dir, strict=False)
    for name, entries in changes.items():
        if entries is None:
            files.pop(name, None)
        else:
            files[name] = entries
    atomic_write_json(run_dir / MANIFEST, {"format": 1, "files": dict(sorted(files.items()))})


def save_weights(run_dir: Path, name: str, obj: dict[str, Any]) -> None:
    """Write ``obj`` (tensors and plain data) as ``run_dir/name`` and record its digest."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    entry = _entry(data)
    old = _manifest(run_dir, strict=False).get(name, [])
    _record(run_dir, {name: [*old, entry]})  # either version verifies while it changes
    atomic_write(run_dir / name, data)
    _record(run_dir, {name: [entry]})


def link_weights(run_dir: Path, source: str, name: str) -> None:
    """Make ``run_dir/name`` a hard link to the weights file ``source`` (no copy)."""
    entries = _manifest(run_dir, strict=False).get(source)
    if not entries:
        entries = [_entry((run_dir / source).read_bytes())]
    old = _manifest(run_dir, strict=False).get(name, [])
    _record(run_dir, {name: [*old, entries[-1]]})
    temporary = run_dir / f".{Path(name).name}.tmp"
    temporary.unlink(missing_ok=True)
    os.link(run_dir / source, temporary)
    os.replace(temporary, run_dir / name)
    _record(run_dir, {name: [entries[-1]]})


def remove_weights(run_dir: Path, name: str) -> None:
    """Delete the weights file ``run_dir/name`` and its manifest entry."""
    (run_dir / name).unlink(missing_ok=True)
    if name in _manifest(run_dir, strict=False):
        _record(run_dir, {name: None})


# ---------------------------------------------------------------------------- reading
def load_weights(run_dir: Path, name: str, advice: str) -> dict[str, Any]:
    """The weights file ``run_dir/name`` verified against the manifest and read as data
    (``weights_only``); a :class:`RunFileError` naming it, ending with ``advice``, when it
    is damaged or holds anything but tensors and plain data."""
    path = run_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    data = path.read_bytes()
    if not data:
        raise RunFileError(f"{path}: empty (0 bytes); {advice}")
    entries = _manifest(run_dir, strict=True).get(name)
    if entries:
        sizes = sorted({entry.get("size") for entry in entries})
        if len(data) not in sizes:
            raise RunFileError(
                f"{path}: damaged: {len(data)} bytes, {MANIFEST} records "
                f"{' or '.join(map(str, sizes))} (truncated or overwritten); {advice}"
            )
        if _entry(data)["sha256"] not in {entry.get("sha256") for entry in entries}:
            raise RunFileError(
                f"{path}: damaged: its SHA-256 differs from the one {MANIFEST} records; {advice}"
            )
    try:
        value = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        reason = f"unsupported global {found[1]}" if found else str(error).split(". ")[0]
        raise RunFileError(
            f"{path}: refused: it holds Python objects other than tensors and plain data, "
            f"which could run code when loaded ({reason}); sanas writes none (one of sanas "
            f"before manifest.json held numpy's RNG state); {advice}"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        reason = str(error).strip().split(". ")[0][:200] or type(error).__name__
        raise RunFileError(f"{path}: damaged or not a PyTorch file ({reason}); {advice}") from None
    if not isinstance(value, dict) or not isinstance(value.get("model"), dict):
        raise RunFileError(f"{path}: not a weights file written by sanas (no model); {advice}")
    return value


# ---------------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """torch's, numpy's and Python's global RNG states as tensors and plain data (what
    ``weights_only`` loads)."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "python": list(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------- locking
@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` while writing the run: a second process is refused with the
    PID of the first. The lock goes when the process does (flock; without fcntl, a lock
    file whose PID is no longer running is stale and taken over)."""
    path = run_dir / LOCK
    fd = _lock(path) if fcntl is not None else _lock_exclusive(path)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding it: no one can be waiting on it
        os.close(fd)


def _busy(path: Path, pid: str) -> RunFileError:
    return RunFileError(
        f"{path.parent} is in use by another sanas process (PID {pid or '?'}, lock {path}): "
        "two runs writing one folder would overwrite each other; wait for it to finish, or "
        "use another --out"
    )


def _lock(path: Path) -> int:
    """flock ``path`` (created if needed); the file descriptor that holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise _busy(path, holder) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed the file as we locked it: lock the new one


def _lock_exclusive(path: Path) -> int:
    """Create ``path`` exclusively; a file left by a process that is gone is taken over."""
    for _ in range(2):
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = path.read_text(errors="replace").strip() if path.is_file() else ""
            if holder.isdigit() and _running(int(holder)):
                raise _busy(path, holder) from None
            path.unlink(missing_ok=True)  # stale: its process crashed
    raise _busy(path, "")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != 0
