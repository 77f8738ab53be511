"""Reading keyword-spotting audio: 16 kHz float32 mono, with clear errors for bad files.

Every failure is an :class:`AudioError` that names the file and what was expected, so that a
dataset loader can log and skip a bad clip instead of crashing mid-epoch.
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SAMPLE_RATE = 16000
# Recordings that need more memory than this to decode are checked against what is free.
CHECKED_BYTES = 256 * 2**20


class AudioError(ValueError):
    """A sound file that cannot be used; the message names the file and what was expected."""


def read_wav(
    path: str | Path, sample_rate: int = SAMPLE_RATE, *, resample: bool = True
) -> np.ndarray:
    """Read a sound file as a float32 mono waveform in [-1, 1] at ``sample_rate`` Hz.

    Integer PCM is scaled by soundfile (int16 / 32768), float files are kept as stored.
    Multi-channel files are mixed down to mono by averaging the channels. A file at another
    rate is resampled with a polyphase filter when ``resample`` is true, refused otherwise.

    Raises:
        AudioError: the file is missing, empty, undecodable, too long to hold in the memory
            available, has no samples, has NaN or infinite samples, or has the wrong rate
            and ``resample`` is false.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file (expected a WAV file)")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes; expected a WAV file)")
    try:
        with sf.SoundFile(path) as f:
            _check_memory(path, f.frames, f.channels, f.samplerate, sample_rate)
            file_rate = f.samplerate
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(f"{path}: cannot decode ({error}); expected a WAV file") from error
    if data.shape[0] == 0:
        raise AudioError(f"{path}: no samples (expected at least one {sample_rate} Hz sample)")
    waveform = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(waveform).all():
        raise AudioError(f"{path}: NaN or infinite samples (expected finite audio)")
    if file_rate != sample_rate:
        if not resample:
            raise AudioError(f"{path}: sample rate {file_rate} Hz, expected {sample_rate} Hz")
        common = gcd(int(file_rate), int(sample_rate))
        waveform = resample_poly(waveform, sample_rate // common, file_rate // common)
    return np.ascontiguousarray(waveform, dtype=np.float32)


def _check_memory(path: Path, frames: int, channels: int, file_rate: int, rate: int) -> None:
    """Refuse a recording whose decoding (float32 samples, the mono mix, the resampled
    copy) would not fit in the memory available: it would be killed, not read."""
    needed = 4 * frames * (channels + 1) + 8 * frames * rate / max(file_rate, 1)
    if needed < CHECKED_BYTES:
        return
    available = _available_memory()
    if available is not None and needed > available:
        raise AudioError(
            f"{path}: {frames / max(file_rate, 1) / 3600:.1f} h of audio needs about "
            f"{needed / 1e9:.1f} GB of memory to read, {available / 1e9:.1f} GB are "
            "available; split it into shorter files"
        )


def _available_memory() -> int | None:
    """Bytes this process may still allocate: Linux's MemAvailable, within the cgroup's
    limit when there is one (None when neither is known)."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            limits.append(int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError, IndexError):
        pass
    return min(limits) if limits else None


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Crop the end of ``x`` or pad it with zeros so that it has exactly ``n`` samples.

    Speech Commands clips are nominally one second but some are shorter (or, elsewhere,
    longer); models and caches need a fixed length.
    """
    if n < 0:
        raise ValueError(f"fit_length: n must be >= 0, got {n}")
    if x.ndim != 1:
        raise ValueError(f"fit_length: expected a 1-D waveform, got shape {x.shape}")
    if len(x) >= n:
        return x[:n]
    return np.pad(x, (0, n - len(x)))
