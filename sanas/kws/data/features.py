"""Speech features in torch: log-mel and MFCC as honk and the reference compute them.

The reference computes, with librosa, per clip::

    S = librosa.feature.melspectrogram(y=x, sr=16000, n_fft=480, hop_length=160, n_mels=40,
                                       fmin=20, fmax=4000, pad_mode="constant")
    S[S > 0] = np.log(S[S > 0])
    mfcc = scipy.fftpack.dct(S, axis=0, type=2, norm="ortho")

:class:`MFCC` reproduces it (to about 1e-5) with torch alone, batched, on CPU or GPU; the
mel filterbank (Slaney scale and norm, librosa's default) is built here so the library does
not depend on librosa. :class:`FeatureCache` stores the features of fixed clips once.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from tqdm import tqdm

from sanas.kws.data.audio import SAMPLE_RATE, fit_length, read_wav

_F_SP = 200.0 / 3  # Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz) ...
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0  # ... logarithmic above (27 mels per factor 6.4)


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Frequencies in Hz to Slaney mels (librosa's ``hz_to_mel(htk=False)``)."""
    hz = np.asarray(hz, dtype=np.float64)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, hz / _F_SP)


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Slaney mels to Hz, the inverse of :func:`hz_to_mel`."""
    mels = np.asarray(mels, dtype=np.float64)
    log_part = _MIN_LOG_HZ * np.exp(_LOG_STEP * (np.maximum(mels, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mels >= _MIN_LOG_MEL, log_part, mels * _F_SP)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """Triangular Slaney-normalised mel filters, shape (n_mels, n_fft // 2 + 1), float32.

    Same construction as ``librosa.filters.mel(htk=False, norm="slaney")``: triangles
    between consecutive points equally spaced in mels, scaled to unit area in Hz.
    """
    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.astype(np.float32)


def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II as an (n, n) matrix: ``coefficients = D @ x``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.sqrt(2.0 / n) * np.cos(np.pi * k * (2 * i + 1) / (2 * n))
    matrix[0] /= np.sqrt(2.0)
    return matrix


class LogMel(torch.nn.Module):
    """Log mel power spectrogram: (batch, samples) → (batch, frames, n_mels).

    Hann window (periodic) of ``n_fft`` samples, hop ``hop_length``, centred with zero
    padding, so ``frames = 1 + samples // hop_length`` (101 per second at the defaults).
    The log is taken of positive values only; zero energy stays 0, as in the reference.
    A 1-D waveform gives (frames, n_mels).
    """

    use_dct: ClassVar[bool] = False

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        n_fft: int = 480,
        hop_length: int = 160,
        n_mels: int = 40,
        fmin: float = 20.0,
        fmax: float = 4000.0,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.fmin = fmin
        self.fmax = fmax
        # Built in float64: in float32, 0.5 - 0.5 cos(.) loses the small edge weights.
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        self.register_buffer("window", window.float())
        filters = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
        self.register_buffer("mel_filters", torch.from_numpy(filters.T.copy()))
        if self.use_dct:
            dct = dct_matrix(n_mels).T.astype(np.float32)
            self.register_buffer("dct", torch.from_numpy(dct))

    @property
    def n_features(self) -> int:
        """Features per frame."""
        return self.n_mels

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for a waveform of ``n_samples`` samples."""
        return 1 + n_samples // self.hop_length

    def describe(self) -> dict[str, object]:
        """The class name and parameters: what determines the output (a cache key)."""
        return {
            "frontend": type(self).__name__,
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "n_mels": self.n_mels,
            "fmin": self.fmin,
            "fmax": self.fmax,
        }

    def windows(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(batch, samples) → (batch, frames, n_fft): each frame's window of the waveform,
        centred, with zero padding (a view of a padded copy)."""
        half = self.n_fft // 2
        padded = torch.nn.functional.pad(waveforms, (half, half))
        return padded.unfold(-1, self.n_fft, self.hop_length)

    def of_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """(batch, frames, n_fft) windows of audio → (batch, frames, features).

        ``torch.stft``'s computation spelled out (the same values, bit for bit, in
        frame-major order) without its wrapper's per-call cost, on windows given
        directly: a streaming frontend passes the ones it holds whole, uncentred."""
        spectrum = torch.fft.rfft(windows * self.window)
        power = spectrum.real.square().add_(spectrum.imag.square())
        mel = power @ self.mel_filters
        features = torch.log_(torch.where(mel > 0, mel, 1.0))  # log of positives; 0 stays 0
        return features @ self.dct if self.use_dct else features

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(batch, samples) or (samples,) float waveforms → (batch, frames, features)."""
        if waveforms.ndim not in (1, 2):
            raise ValueError(
                f"{type(self).__name__}: expected (batch, samples) or (samples,), "
                f"got shape {tuple(waveforms.shape)}"
            )
        squeeze = waveforms.ndim == 1
        features = self.of_windows(self.windows(waveforms.unsqueeze(0) if squeeze else waveforms))
        return features[0] if squeeze else features


class MFCC(LogMel):
    """MFCC as in honk and the reference: log mel followed by an orthonormal DCT-II.

    All ``n_mels`` coefficients are kept: (batch, samples) → (batch, frames, 40).
    """

    use_dct = True


class FeatureNormalizer(torch.nn.Module):
    """A fixed per-coefficient affine map, (x − mean) / std, fitted on training features.

    Raw MFCCs span very different ranges (coefficient 0 ≈ −80 ± 25, the others a few
    units), which slows and destabilises training. The map acts frame by frame, so a
    streaming engine applies it to each new frame and stays exact. Its statistics are
    buffers: they are saved with the model's weights. Unfitted, it is the identity.
    """

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    @torch.no_grad()
    def fit(self, features: Sequence[torch.Tensor], min_std: float = 1e-3) -> FeatureNormalizer:
        """Set mean and std from (frames, n_features) tensors (e.g. training sequences)."""
        if not features:
            raise ValueError("FeatureNormalizer.fit needs at least one feature tensor")
        frames = torch.cat([f.reshape(-1, self.mean.numel()).double() for f in features])
        self.mean.copy_(frames.mean(0))
        self.std.copy_(frames.std(0).clamp_min(min_std))
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(..., n_features) → the same shape, normalised."""
        return (features - self.mean) / self.std


class FeatureCache:
    """Features of fixed-length clips, computed once into a memory-mapped ``.npy`` file.

    ``get(name, paths)`` returns a read-only (clips, frames, features) float32 array. The file
    is ``<directory>/<name>-<key>.npy`` where the key hashes the frontend's parameters, the
    clip length and the clip list (path, size, modification time): a change of any of them
    builds a new file and deletes the stale one. Files are written to a temporary name and
    moved into place, so an interrupted build never leaves a truncated cache.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        frontend: LogMel,
        *,
        clip_samples: int = SAMPLE_RATE,
        batch_size: int = 64,
        progress: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.frontend = frontend
        self.clip_samples = clip_samples
        self.batch_size = batch_size
        self.progress = progress

    def key(self, paths: Sequence[str | os.PathLike[str]]) -> str:
        """The hash naming the cache of these clips with this frontend."""
        clips = []
        for path in paths:
            stat = os.stat(path)
            clips.append([str(path), stat.st_size, stat.st_mtime_ns])
        description = {
            "frontend": self.frontend.describe(),
            "clip_samples": self.clip_samples,
            "clips": clips,
        }
        return hashlib.sha256(json.dumps(description).encode()).hexdigest()[:16]

    def path(self, name: str, paths: Sequence[str | os.PathLike[str]]) -> Path:
        """Where the cache of these clips lives."""
        return self.directory / f"{name}-{self.key(paths)}.npy"

    def get(self, name: str, paths: Sequence[str | os.PathLike[str]]) -> np.ndarray:
        """The features of ``paths`` (built on first use), memory-mapped read-only.

        Raises :class:`~sanas.kws.data.audio.AudioError` naming the first unreadable clip.
        """
        target = self.path(name, paths)
        if not target.is_file():
            self.directory.mkdir(parents=True, exist_ok=True)
            self._build(target, paths)
            for stale in self.directory.glob(f"{name}-*.npy"):
                if stale != target:
                    stale.unlink()
        return np.load(target, mmap_mode="r")

    def _read(self, path: str | os.PathLike[str]) -> np.ndarray:
        return fit_length(read_wav(path, self.frontend.sample_rate), self.clip_samples)

    def _build(self, target: Path, paths: Sequence[str | os.PathLike[str]]) -> None:
        shape = (
            len(paths),
            self.frontend.n_frames(self.clip_samples),
            self.frontend.n_features,
        )
        device = self.frontend.window.device
        handle, temporary = tempfile.mkstemp(dir=self.directory, suffix=".npy.tmp")
        os.close(handle)
        try:
            out = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=shape)
            bar = tqdm(total=len(paths), unit="clip", desc=target.name, disable=not self.progress)
            with bar, torch.no_grad():
                for start in range(0, len(paths), self.batch_size):
                    chunk = paths[start : start + self.batch_size]
                    waves = np.stack([self._read(path) for path in chunk])
                    features = self.frontend(torch.from_numpy(waves).to(device))
                    out[start : start + len(chunk)] = features.cpu().numpy()
                    bar.update(len(chunk))
            out.flush()
            del out
            os.replace(temporary, target)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
