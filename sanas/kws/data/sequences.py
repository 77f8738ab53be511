"""Training sequences for streaming keyword spotting (method.md §5).

A sequence is a few seconds of audio: with probability 0.8 a random background excerpt
scaled by U(0, 0.3), and a one-second clip pasted at a random offset (silence examples paste
nothing). The frontend turns it into (frames, 40) features; the model sees windows of
:data:`WINDOW_FRAMES` frames every :data:`STEP_FRAMES` frames, one label per window (a
"step"): the class of the clip covering more than half of the window's frames, else silence.

Lengths: the reference draws the length from {1, 2, 3} s (T = 1, 6 or 11 steps,
:data:`REFERENCE_LENGTHS_S`); by default we draw it from 1 to 3 s in 200 ms steps
(:data:`DEFAULT_LENGTHS_S`), which gives every T in 1..11 with the same range.

Beyond the reference (off by default): several non-overlapping keywords and unknown words
in one sequence (``multi_word``), and a random shift of each clip's content
(``time_shift_s``). Every item is drawn from its own generator seeded by (seed, epoch,
index), so a set is reproducible whatever the number of workers; ``fixed=True`` ignores the
epoch, which gives a fixed validation set for model selection.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from sanas.kws.data.audio import AudioError, fit_length, read_wav
from sanas.kws.data.features import LogMel
from sanas.kws.data.speech_commands import Example
from sanas.supernet.sequence import IGNORE_INDEX

logger = logging.getLogger(__name__)

WINDOW_FRAMES = 101  # one second of features at a 10 ms hop: the model's input window
STEP_FRAMES = 20  # 200 ms between consecutive windows (steps)
REFERENCE_LENGTHS_S = (1.0, 2.0, 3.0)
DEFAULT_LENGTHS_S = tuple(round(1.0 + 0.2 * i, 1) for i in range(11))


def n_steps(n_frames: int) -> int:
    """Windows (steps) in a sequence of ``n_frames`` frames; 0 when shorter than a window."""
    return max(0, (n_frames - WINDOW_FRAMES) // STEP_FRAMES + 1)


def window_starts(n_frames: int) -> torch.Tensor:
    """First frame of each window of a sequence of ``n_frames`` frames (int64)."""
    return torch.arange(n_steps(n_frames), dtype=torch.int64) * STEP_FRAMES


def windows(features: torch.Tensor) -> torch.Tensor:
    """(..., frames, features) → (..., steps, WINDOW_FRAMES, features), as views."""
    return features.unfold(-2, WINDOW_FRAMES, STEP_FRAMES).transpose(-1, -2)


def clip_frames(offset: int, n_samples: int, hop_length: int) -> tuple[int, int]:
    """Frames [first, end) whose centre (frame · hop, centred frames) lies in the clip.

    The clip occupies samples [offset, offset + n_samples) of the sequence.
    """
    return math.ceil(offset / hop_length), math.ceil((offset + n_samples) / hop_length)


def step_labels(
    n_frames: int, spans: Sequence[tuple[int, int, int]], silence_label: int
) -> torch.Tensor:
    """One label per step: a span's label if it covers more than half of the window.

    ``spans`` are non-overlapping (first_frame, end_frame, label) triples, e.g. from
    :func:`clip_frames`; a window that no span covers by more than half is silence.
    """
    starts = window_starts(n_frames)
    ends = starts + WINDOW_FRAMES
    labels = torch.full((len(starts),), silence_label, dtype=torch.int64)
    for first, end, label in spans:
        overlap = (torch.clamp(ends, max=end) - torch.clamp(starts, min=first)).clamp(min=0)
        labels[2 * overlap > WINDOW_FRAMES] = label
    return labels


@dataclass(frozen=True)
class SequenceConfig:
    """How sequences are drawn. The defaults are the reference's recipe (method.md §5).

    ``lengths_s``: sequence lengths to draw from, uniformly. ``background_probability`` /
    ``background_volume``: chance of a background excerpt, and the maximum of its U(0, v)
    gain. ``multi_word``: paste up to ``max_words`` clips (never more than fit without
    overlapping) instead of one. ``time_shift_s``: shift each clip's content by up to this
    much, zero-filled, inside its one-second slot. ``time_masks`` / ``time_mask_frames``
    and ``freq_masks`` / ``freq_mask_bins`` (SpecAugment, Park et al. 2019): that many
    masks of up to that many frames / coefficients each set to the sequence's mean
    feature, on training sequences only (a ``fixed`` set, validation, is never masked).
    """

    lengths_s: tuple[float, ...] = DEFAULT_LENGTHS_S
    background_probability: float = 0.8
    background_volume: float = 0.3
    multi_word: bool = False
    max_words: int = 3
    time_shift_s: float = 0.0
    time_masks: int = 0
    time_mask_frames: int = 0
    freq_masks: int = 0
    freq_mask_bins: int = 0


class SequenceItem(NamedTuple):
    """One sequence: its features (frames, n_features) and its step labels (steps,)."""

    features: torch.Tensor
    labels: torch.Tensor


@dataclass
class SequenceBatch:
    """Padded sequences: features (B, frames, F), labels (B, steps) with ``IGNORE_INDEX``
    past each sequence's end, ``mask`` (B, steps) true on real steps, ``n_frames`` (B,)."""

    features: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    n_frames: torch.Tensor

    def to(self, device: torch.device | str) -> SequenceBatch:
        """The batch on ``device``."""
        return SequenceBatch(
            self.features.to(device),
            self.labels.to(device),
            self.mask.to(device),
            self.n_frames.to(device),
        )


def collate_sequences(items: Sequence[SequenceItem]) -> SequenceBatch:
    """Pad a list of :class:`SequenceItem` into a :class:`SequenceBatch` (a DataLoader
    ``collate_fn``); padded frames are zeros."""
    features = torch.nn.utils.rnn.pad_sequence([item.features for item in items], batch_first=True)
    labels = torch.nn.utils.rnn.pad_sequence(
        [item.labels for item in items], batch_first=True, padding_value=IGNORE_INDEX
    )
    n_frames = torch.tensor([len(item.features) for item in items], dtype=torch.int64)
    return SequenceBatch(features, labels, labels != IGNORE_INDEX, n_frames)


def _shifted(wave: np.ndarray, shift: int) -> np.ndarray:
    out = np.zeros_like(wave)
    if shift >= 0:
        out[shift:] = wave[: len(wave) - shift]
    else:
        out[:shift] = wave[-shift:]
    return out


def spec_augment(
    features: torch.Tensor, rng: np.random.Generator, config: SequenceConfig
) -> torch.Tensor:
    """``features`` (frames, coefficients) with ``config``'s SpecAugment masks (each of a
    width drawn from 0 to its maximum, at a random place) set to their mean; drawn from
    ``rng`` (no draw at all without masks, so older runs draw the same sequences)."""
    masks = ((0, config.time_masks, config.time_mask_frames),
             (1, config.freq_masks, config.freq_mask_bins))  # fmt: skip
    if not any(count and width for _, count, width in masks):
        return features
    features = features.clone()
    fill = features.mean()
    for axis, count, width in masks:
        size = features.shape[axis]
        for _ in range(count if width else 0):
            span = min(int(rng.integers(0, width + 1)), size)
            start = int(rng.integers(0, size - span + 1))
            features.narrow(axis, start, span).fill_(fill)
    return features


class SequenceDataset(Dataset[SequenceItem]):
    """Streaming training sequences built from :class:`Example` s, one per example.

    A clip that cannot be read (:class:`AudioError`) is logged, counted in
    ``skipped["clips"]`` and replaced by the next readable clip of the list (with its
    label), so an epoch never stops on a bad file; unreadable background files are counted
    in ``skipped["backgrounds"]``. Counts are per process (each DataLoader worker keeps its
    own); the log lines are the complete record.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        frontend: LogMel,
        background_paths: Sequence[str | Path] = (),
        config: SequenceConfig | None = None,
        *,
        silence_label: int = 0,
        seed: int = 0,
        fixed: bool = False,
    ) -> None:
        if not examples:
            raise ValueError("SequenceDataset: no examples")
        self.examples = list(examples)
        self.frontend = frontend
        self.config = config or SequenceConfig()
        self.silence_label = silence_label
        self.seed = seed
        self.fixed = fixed
        self.epoch = 0
        self.clip_samples = frontend.sample_rate
        self.skipped = {"clips": 0, "backgrounds": 0}
        self._bad: set[Path] = set()
        self._clip_indices = [i for i, e in enumerate(self.examples) if e.path is not None]
        if not self._clip_indices:
            raise ValueError("SequenceDataset: every example is silence; need some clips")
        if min(self.config.lengths_s) < 1.0:
            raise ValueError(f"sequence lengths must be >= 1 s, got {self.config.lengths_s}")
        self.backgrounds: list[np.ndarray] = []
        for path in background_paths:
            try:
                self.backgrounds.append(read_wav(path, frontend.sample_rate))
            except AudioError as error:
                self.skipped["backgrounds"] += 1
                logger.warning("skipped background %s", error)
        if not self.backgrounds:
            logger.warning("no background noise: sequences are clips on digital silence")

    def __len__(self) -> int:
        return len(self.examples)

    def set_epoch(self, epoch: int) -> None:
        """Draw the next epoch's sequences (ignored when ``fixed``)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> SequenceItem:
        rng = np.random.default_rng([self.seed, 0 if self.fixed else self.epoch, index])
        config = self.config
        length = round(float(rng.choice(config.lengths_s)) * self.clip_samples)
        audio = np.zeros(length, dtype=np.float32)
        if self.backgrounds and rng.random() < config.background_probability:
            audio += self._background(rng, length) * rng.uniform(0, config.background_volume)
        clips = []
        if self.examples[index].path is not None:
            clips.append(self._read_clip(index))
            if config.multi_word:
                most = min(config.max_words, length // self.clip_samples)
                for _ in range(int(rng.integers(1, most + 1)) - 1):
                    clips.append(self._read_clip(int(rng.choice(self._clip_indices))))
        spans = []
        for (wave, label), offset in zip(
            clips, self._offsets(rng, length, len(clips)), strict=True
        ):
            audio[offset : offset + self.clip_samples] += self._shift(rng, wave)
            spans.append((*clip_frames(offset, self.clip_samples, self.frontend.hop_length), label))
        np.clip(audio, -1.0, 1.0, out=audio)
        with torch.no_grad():
            waveform = torch.from_numpy(audio).to(self.frontend.window.device)
            features = self.frontend(waveform).cpu()
        if not self.fixed:
            features = spec_augment(features, rng, config)
        return SequenceItem(features, step_labels(len(features), spans, self.silence_label))

    def _background(self, rng: np.random.Generator, length: int) -> np.ndarray:
        noise = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        if len(noise) < length:
            noise = np.resize(noise, length)
        start = int(rng.integers(0, len(noise) - length + 1))
        return noise[start : start + length]

    def _offsets(self, rng: np.random.Generator, length: int, n: int) -> list[int]:
        """Random non-overlapping offsets of ``n`` clips, in a random order."""
        free = length - n * self.clip_samples
        gaps = np.sort(rng.integers(0, free + 1, size=n))
        offsets = [int(gap) + i * self.clip_samples for i, gap in enumerate(gaps)]
        return [offsets[i] for i in rng.permutation(n)]

    def _shift(self, rng: np.random.Generator, wave: np.ndarray) -> np.ndarray:
        most = round(self.config.time_shift_s * self.clip_samples)
        return _shifted(wave, int(rng.integers(-most, most + 1))) if most else wave

    def _read_clip(self, index: int) -> tuple[np.ndarray, int]:
        """The waveform and label of example ``index``, or of the next readable clip."""
        n = len(self.examples)
        for k in range(n):
            example = self.examples[(index + k) % n]
            if example.path is None or example.path in self._bad:
                continue
            try:
                wave = read_wav(example.path, self.frontend.sample_rate)
            except AudioError as error:
                self._bad.add(example.path)
                self.skipped["clips"] += 1
                logger.warning("skipped clip %s", error)
                continue
            return fit_length(wave, self.clip_samples), example.label
        raise AudioError(f"no readable clip among {n} examples (first: {self.examples[0].path})")
