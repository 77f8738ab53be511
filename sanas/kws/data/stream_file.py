"""Streaming test files: one long wav plus ``word, time_ms`` labels (TensorFlow's format).

:func:`generate_streaming_test` follows TensorFlow's ``generate_streaming_test_wav.py``:
background noise in 1.5 s segments every second (250 ms cross-fades, a random recording at a
random offset, volume U(0, ``background_volume``)), then one word per slot of
``clip_duration_ms + word_gap_ms`` (3 s by default) at a random offset within the first
``word_gap_ms`` of the slot, unknown with probability ``unknown_percentage`` %, mixed at full
volume with 500-sample ramps. Wanted words are labelled with their own name, other words
``_unknown_``; the labels are written as ``"%s, %f"`` lines, as TensorFlow writes them.
Only clips of the chosen split are used, so a testing stream never holds a training speaker.
With ``noise_only`` the words are left out: the same background (the word stream of the
same seed minus its words) and an empty label file, to measure false alarms and compute
where nobody speaks.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from sanas.kws.data.audio import SAMPLE_RATE, fit_length, read_wav
from sanas.kws.data.speech_commands import SILENCE, UNKNOWN, WANTED_WORDS, Clip, SpeechCommands

WAV_NAME = "stream.wav"
LABELS_NAME = "labels.txt"
WORD_RAMP_SAMPLES = 500  # TensorFlow's fade in and out of each word
BACKGROUND_CROSSOVER_MS = 500  # background segments overlap by this much, faded over half


class StreamFileError(ValueError):
    """A streaming test that cannot be made or a label file that cannot be read."""


@dataclass(frozen=True)
class StreamSummary:
    """What :func:`generate_streaming_test` wrote."""

    wav_path: Path
    labels_path: Path
    duration_s: float
    sample_rate: int
    split: str
    seed: int
    wanted_words: tuple[str, ...]
    label_counts: dict[str, int]
    clipped_samples: int

    @property
    def words(self) -> int:
        """How many words the stream holds."""
        return sum(self.label_counts.values())

    @property
    def unknown_fraction(self) -> float:
        """The share of words labelled ``_unknown_``."""
        return self.label_counts.get(UNKNOWN, 0) / max(self.words, 1)


def generate_streaming_test(
    dataset: SpeechCommands | str | Path,
    out_dir: str | Path,
    *,
    minutes: float,
    seed: int = 0,
    split: str = "testing",
    wanted_words: Sequence[str] | None = None,
    word_gap_ms: float = 2000.0,
    unknown_percentage: float = 30.0,
    background_volume: float = 0.1,
    clip_duration_ms: float = 1000.0,
    sample_rate: int = SAMPLE_RATE,
    subtype: str = "PCM_16",
    noise_only: bool = False,
) -> StreamSummary:
    """Write ``out_dir/stream.wav`` and ``out_dir/labels.txt`` from one split of ``dataset``.

    ``word_gap_ms`` is TensorFlow's flag: the slot of a word is one clip plus this gap, so the
    default 2000 ms gives a word every 3 s. ``wanted_words=None`` takes the ten standard
    words present in the split (all ten in the real dataset); words given explicitly must all
    be there. ``subtype`` is a soundfile subtype: ``"PCM_16"`` (TensorFlow's, samples clipped
    to [-1, 1]) or ``"FLOAT"``. Seeded: the same arguments give the same files.

    ``noise_only``: no word at all, only the background (which needs a volume above 0) and
    an empty label file; the word arguments are then unused and ``wanted_words`` refused.
    """
    if minutes <= 0 or word_gap_ms <= 0 or clip_duration_ms <= 0:
        raise StreamFileError("minutes, word_gap_ms and clip_duration_ms must be positive")
    if not 0 <= unknown_percentage <= 100 or background_volume < 0:
        raise StreamFileError("unknown_percentage must be in [0, 100], background_volume >= 0")
    if noise_only and wanted_words is not None:
        raise StreamFileError("a noise-only stream has no words: give no wanted words")
    if noise_only and background_volume == 0:
        raise StreamFileError("a noise-only stream needs a background volume > 0, not silence")
    if not isinstance(dataset, SpeechCommands):
        dataset = SpeechCommands(dataset)
    pools = {} if noise_only else _word_pools(dataset.clips(split), wanted_words)
    words = tuple(w for w in pools if w != UNKNOWN)
    if not noise_only and unknown_percentage > 0 and UNKNOWN not in pools:
        raise StreamFileError(f"{dataset.root}: split {split!r} has no unknown-word clips")

    rng = np.random.default_rng(seed)
    total = round(minutes * 60 * sample_rate)
    clip_samples = round(clip_duration_ms * sample_rate / 1000)
    track = np.zeros(total, dtype=np.float32)
    if background_volume > 0:  # first, so that the words do not change the background
        _mix_background(track, dataset, rng, clip_samples, background_volume, sample_rate)

    gap = round(word_gap_ms * sample_rate / 1000)
    labels: list[tuple[str, float]] = []
    for slot in range(0 if noise_only else total // (clip_samples + gap)):
        offset = slot * (clip_samples + gap) + int(rng.integers(gap))
        unknown = rng.integers(100) < unknown_percentage
        label = UNKNOWN if unknown else words[rng.integers(len(words))]
        clip = pools[label][rng.integers(len(pools[label]))]
        audio = fit_length(read_wav(clip.path, sample_rate), clip_samples)
        _mix(track, offset, audio, clip_samples, 1.0, WORD_RAMP_SAMPLES, WORD_RAMP_SAMPLES)
        labels.append((label, offset * 1000 / sample_rate))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clipped = int(np.count_nonzero(np.abs(track) > 1.0))
    if subtype.upper().startswith("PCM"):
        track = np.clip(track, -1.0, 1.0)
    sf.write(out / WAV_NAME, track, sample_rate, subtype=subtype)
    write_stream_labels(out / LABELS_NAME, labels)
    return StreamSummary(
        wav_path=out / WAV_NAME,
        labels_path=out / LABELS_NAME,
        duration_s=total / sample_rate,
        sample_rate=sample_rate,
        split=split,
        seed=seed,
        wanted_words=words,
        label_counts=dict(sorted(Counter(label for label, _ in labels).items())),
        clipped_samples=clipped,
    )


def _word_pools(clips: list[Clip], wanted_words: Sequence[str] | None) -> dict[str, list[Clip]]:
    """The clips to draw from, per wanted word and for ``_unknown_`` (silence excluded)."""
    present = {clip.word for clip in clips}
    if wanted_words is None:
        wanted = [w for w in WANTED_WORDS if w in present]
    else:
        wanted = list(wanted_words)
        missing = [w for w in wanted if w not in present]
        if missing:
            raise StreamFileError(f"wanted words with no clip in the split: {', '.join(missing)}")
    if not wanted:
        raise StreamFileError(f"the split has none of the wanted words {', '.join(WANTED_WORDS)}")
    pools: dict[str, list[Clip]] = {w: [] for w in wanted}
    for clip in clips:
        if clip.word in pools:
            pools[clip.word].append(clip)
        elif clip.word != SILENCE:
            pools.setdefault(UNKNOWN, []).append(clip)
    return pools


def _mix_background(
    track: np.ndarray,
    dataset: SpeechCommands,
    rng: np.random.Generator,
    stride: int,
    volume: float,
    sample_rate: int,
) -> None:
    """Lay cross-faded background segments, one per ``stride`` samples, over ``track``."""
    segment = stride + round(BACKGROUND_CROSSOVER_MS * sample_rate / 1000)
    ramp = round(BACKGROUND_CROSSOVER_MS / 2 * sample_rate / 1000)
    noises = [read_wav(path, sample_rate) for path in dataset.background_paths]
    noises = [noise for noise in noises if len(noise) >= segment]
    if not noises:
        raise StreamFileError(
            f"{dataset.root}: no background recording of at least {segment / sample_rate:g} s "
            "in _background_noise_/ (set the background volume to 0 for none)"
        )
    for start in range(0, len(track), stride):
        noise = noises[rng.integers(len(noises))]
        offset = int(rng.integers(len(noise) - segment + 1))
        _mix(track, start, noise[offset:], segment, rng.uniform(0, volume), ramp, ramp)


def _mix(
    track: np.ndarray,
    offset: int,
    sample: np.ndarray,
    duration: int,
    volume: float,
    ramp_in: int,
    ramp_out: int,
) -> None:
    """Add ``sample`` × a trapezoid envelope × ``volume`` into ``track`` at ``offset``.

    The envelope rises over ``ramp_in`` samples and falls over the last ``ramp_out`` of
    ``duration``, as TensorFlow's ``mix_in_audio_sample``.
    """
    n = min(duration, len(track) - offset, len(sample))
    i = np.arange(n, dtype=np.float32)
    envelope = np.clip(np.minimum(i / ramp_in, (duration - i) / ramp_out), 0.0, 1.0)
    track[offset : offset + n] += sample[:n] * envelope * volume


def write_stream_labels(path: str | Path, labels: Iterable[tuple[str, float]]) -> None:
    """Write ``word, time_ms`` lines as TensorFlow does (``"%s, %f"``)."""
    lines = []
    for label, time_ms in labels:
        if not label or any(c in label for c in ",\n\r") or label != label.strip():
            raise StreamFileError(f"{path}: label {label!r} cannot be written (empty, comma...)")
        if not math.isfinite(time_ms) or time_ms < 0:
            raise StreamFileError(f"{path}: time {time_ms!r} of {label!r} is not a time in ms")
        lines.append(f"{label}, {time_ms:f}\n")
    Path(path).write_text("".join(lines))


def read_stream_labels(
    path: str | Path,
    *,
    words: Collection[str] | None = None,
    duration_ms: float | None = None,
    allow_empty: bool = False,
) -> list[tuple[str, float]]:
    """Read a ``word,time_ms`` label file; return ``(word, time_ms)`` sorted by time.

    Accepts TensorFlow's ``"yes, 1234.500000"`` lines and any spacing around the comma;
    blank lines are skipped. Unlike TensorFlow's reader, which silently drops malformed
    lines, any other line is an error naming the file and the line, so that a broken file is
    never scored as a shorter one. Sorted by time, as TensorFlow sorts them.

    To score a model the labels must fit it and the audio: with ``words`` (the model's
    labels) a word outside them is an error (a word the model does not know is labelled
    ``_unknown_``), with ``duration_ms`` (the audio's length) so is a word that starts at
    or past the end, and a file without a word is an error (a ground-truth gate has nothing
    to imitate), unless ``allow_empty``: a stream of background noise alone, whose score is
    its false alarms.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise StreamFileError(f"{path}: cannot read label file ({error})") from error
    labels = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = [part.strip() for part in line.split(",")]
        time_ms = _float_or_none(fields[1]) if len(fields) == 2 else None
        if not fields[0] or time_ms is None or not math.isfinite(time_ms) or time_ms < 0:
            raise StreamFileError(
                f"{path}:{number}: expected 'word,time_ms' with a time >= 0, got {line!r}"
            )
        if words is not None and fields[0] not in words:
            raise StreamFileError(
                f"{path}:{number}: word {fields[0]!r} is not a label of the model "
                f"({', '.join(words)}); label a word it does not know {UNKNOWN}"
            )
        if duration_ms is not None and time_ms >= duration_ms:
            raise StreamFileError(
                f"{path}:{number}: {fields[0]!r} at {time_ms / 1000:.3f} s starts past the "
                f"end of the audio ({duration_ms / 1000:.3f} s): labels and audio do not match"
            )
        labels.append((fields[0], time_ms))
    if not labels and not allow_empty and (words is not None or duration_ms is not None):
        raise StreamFileError(f"{path}: no labelled word; a stream needs words to be scored")
    return sorted(labels, key=lambda item: item[1])


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
