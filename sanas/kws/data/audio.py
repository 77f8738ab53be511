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
        AudioError: the file is missing, empty, undecodable, has no samples, has NaN or
            infinite samples, or has the wrong rate and ``resample`` is false.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file (expected a WAV file)")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes; expected a WAV file)")
    try:
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)
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
