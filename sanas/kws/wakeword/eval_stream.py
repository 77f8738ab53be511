"""A wake-word test stream in the manner of Picovoice's wake-word benchmark.

Upstream spreads real recordings of the phrase through 24 h of background speech
(LibriSpeech test-clean, speech in 20 % of the background) mixed with DEMAND noise at
10 dB SNR. Neither corpus is available here, so stand-ins take their places: Speech
Commands words of testing-list speakers for the background speech, and the recordings
of Speech Commands' ``_background_noise_/`` with generated white, pink and brown noise
for DEMAND. The stream is a continuous noise bed; bursts of background words fill a
``speech_fraction`` of the time between the phrases; each phrase (and each background
word) sits ``snr_db`` above the noise under it, measured on its voiced part.

Written as ``stream.wav`` (16-bit), ``labels.txt`` (``phrase, onset_ms`` lines, the
format of :mod:`sanas.kws.data.stream_file`) and ``stream.json`` (the settings, the clips
used, and the speech spans: every step whose window overlaps none is non-speech, which is
how MACs on silence are counted). Seeded: the same settings give the same files, and a
folder that already holds a stream of the same settings is reused.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from sanas.kws.data.audio import SAMPLE_RATE, AudioError, fit_length, read_wav
from sanas.kws.data.speech_commands import Clip, SpeechCommands
from sanas.kws.data.stream_file import LABELS_NAME, WAV_NAME, write_stream_labels

logger = logging.getLogger(__name__)

INFO_NAME = "stream.json"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
NOISE_RMS = 0.02  # the bed (-34 dBFS, ±3 dB per segment): speech 10 dB above is at -24 dBFS
NOISE_PEAK = 0.25  # no noise segment peaks above this (a click in a quiet recording)
NOISE_SEGMENT_S = (5.0, 15.0)  # each noise segment's length, drawn uniformly
CROSSFADE_S = 0.25
WORDS_PER_BURST = (2, 6)  # background words in one burst, drawn uniformly (inclusive)
WORD_GAP_S = (0.0, 0.3)  # silence between the words of a burst
GUARD_S = 2.0  # no background word this close to a phrase (beyond the matching tolerance)
FRAME = 400  # 25 ms frames, 10 ms hop: the energy detector of voiced parts
HOP = 160
GENERATED_NOISES = ("white", "pink", "brown")
LOWEST_NOISE_HZ = 50.0
PEAK = 0.95  # no recording is mixed in louder than this at its peak


class WakeStreamError(ValueError):
    """A test stream that cannot be made or read; the message names the file or setting."""


@dataclass(frozen=True)
class StreamSettings:
    """What a test stream is made of; two streams of equal settings are equal."""

    phrase: str
    positives: str
    speech_commands: str
    hours: float
    seed: int = 0
    snr_db: float = 10.0
    speech_fraction: float = 0.2
    seconds_per_positive: float = 20.0
    exclude: tuple[str, ...] = ()

    def check(self) -> None:
        """Raise :class:`WakeStreamError` naming the first setting out of range."""
        rules = (
            ("hours", self.hours > 0, "> 0"),
            ("snr_db", math.isfinite(self.snr_db), "finite"),
            ("speech_fraction", 0 <= self.speech_fraction < 1, "in [0, 1)"),
            ("seconds_per_positive", self.seconds_per_positive >= 8, ">= 8"),
        )
        for name, ok, rule in rules:
            if not ok:
                raise WakeStreamError(f"{name} must be {rule}, got {getattr(self, name)!r}")


@dataclass(frozen=True, eq=False)
class WakeStream:
    """A written test stream: its files, ground truth and speech spans."""

    folder: Path
    settings: StreamSettings
    duration_ms: float
    phrase_times_ms: tuple[float, ...]
    speech_spans_ms: np.ndarray  # (K, 2) start and end of every span holding speech
    positives_used: tuple[str, ...]
    positives_skipped: tuple[str, ...]  # undecodable files, named with the reason

    @property
    def wav_path(self) -> Path:
        return self.folder / WAV_NAME

    @property
    def labels_path(self) -> Path:
        return self.folder / LABELS_NAME

    @property
    def ground_truth(self) -> list[tuple[str, float]]:
        """``(phrase, onset_ms)`` pairs, as the matching of detections takes them."""
        return [(self.settings.phrase, t) for t in self.phrase_times_ms]

    def speech_steps(self, times_ms: np.ndarray, window_ms: float = 1000.0) -> np.ndarray:
        """Booleans: the window ``[t, t + window_ms]`` of each step overlaps speech."""
        times = np.asarray(times_ms, dtype=np.float64)
        starts, ends = self.speech_spans_ms[:, 0], self.speech_spans_ms[:, 1]
        # spans are sorted and disjoint: the first span ending after t decides
        first = np.searchsorted(ends, times, side="right")
        padded = np.append(starts, math.inf)
        return padded[first] < times + window_ms


def read_positives(
    folder: str | Path, exclude: Collection[str] = ()
) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """The recordings of ``folder`` (wav, flac, ogg; sorted by name) as 16 kHz audio, less
    the names in ``exclude``; and the undecodable ones, each warned about and skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise WakeStreamError(f"{root}: no such folder (expected recordings of the phrase)")
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    clips, skipped = [], []
    for path in paths:
        if path.name in exclude:
            continue
        try:
            clips.append((path.name, read_wav(path)))
        except AudioError as error:
            logger.warning("%s; skipped", error)
            skipped.append(f"{error}; skipped")
    if not clips:
        raise WakeStreamError(
            f"{root}: no decodable recording ({', '.join(AUDIO_SUFFIXES)}) to use as a positive"
        )
    return clips, skipped


def voiced_span(audio: np.ndarray) -> tuple[int, int]:
    """First and last sample of a clip's voiced part: the frames within 25 dB of its loud
    frames and 6 dB above its quiet ones (the whole clip when none stands out)."""
    if len(audio) < FRAME:
        return 0, len(audio)
    frames = np.lib.stride_tricks.sliding_window_view(audio, FRAME)[::HOP]
    level = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    floor = max(np.percentile(level, 95) - 25, np.percentile(level, 10) + 6)
    loud = np.flatnonzero(level > floor)
    if len(loud) == 0:
        return 0, len(audio)
    return int(loud[0] * HOP), int(loud[-1] * HOP + FRAME)


def build_test_stream(
    settings: StreamSettings, out_dir: str | Path, progress: bool = True
) -> WakeStream:
    """Write the test stream of ``settings`` into ``out_dir`` (reused when it already holds
    one of the same settings) and return it."""
    settings.check()
    out = Path(out_dir)
    if (out / INFO_NAME).is_file() and (out / WAV_NAME).is_file():
        try:
            stream = load_test_stream(out)
        except WakeStreamError:
            stream = None
        if stream is not None and stream.settings == settings:
            return stream
    positives, skipped = read_positives(settings.positives, settings.exclude)
    dataset = SpeechCommands(settings.speech_commands)
    words = [c for c in dataset.clips("testing") if c.word != settings.phrase]
    if settings.speech_fraction > 0 and not words:
        raise WakeStreamError(
            f"{settings.speech_commands}: no testing-list word other than "
            f"{settings.phrase!r} for background speech"
        )
    rng = np.random.default_rng(settings.seed)
    total = round(settings.hours * 3600 * SAMPLE_RATE)
    slots = min(len(positives), int(total // (settings.seconds_per_positive * SAMPLE_RATE)))
    if slots == 0:
        raise WakeStreamError(
            f"hours {settings.hours:g}: too short for one positive "
            f"({settings.seconds_per_positive:g} s each)"
        )
    chosen = [positives[k] for k in rng.permutation(len(positives))[:slots]]
    bed = _noise_bed(total, dataset.background_paths, rng, progress)
    track = bed.copy()
    slot = total // slots
    margin = round(GUARD_S * SAMPLE_RATE)
    spans: list[tuple[int, int]] = []
    onsets: list[float] = []
    snrs: list[float] = []
    for k, (_, clip) in enumerate(tqdm(chosen, desc="phrases", disable=not progress)):
        clip = clip[: slot - 2 * margin]
        start = k * slot + margin + int(rng.integers(slot - 2 * margin - len(clip) + 1))
        onset, snr = mix_at_snr(track, bed, clip, start, settings.snr_db)
        onsets.append(1000.0 * (start + onset) / SAMPLE_RATE)
        snrs.append(round(snr, 2))
        spans.append((start, start + len(clip)))
    guarded = [(a - margin, b + margin) for a, b in spans]
    spans += _background_speech(track, bed, words, guarded, settings, rng, progress)
    clipped = int(np.count_nonzero(np.abs(track) > 1.0))  # a peak on a loud noise
    out.mkdir(parents=True, exist_ok=True)
    (out / INFO_NAME).unlink(missing_ok=True)  # written last: its presence means complete
    sf.write(out / WAV_NAME, np.clip(track, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
    write_stream_labels(out / LABELS_NAME, [(settings.phrase, t) for t in onsets])
    spans.sort()
    info = {
        "settings": asdict(settings),
        "duration_ms": 1000.0 * total / SAMPLE_RATE,
        "phrase_times_ms": onsets,
        "speech_spans_ms": [[1000.0 * a / SAMPLE_RATE, 1000.0 * b / SAMPLE_RATE] for a, b in spans],
        "positives_used": [name for name, _ in chosen],
        "phrase_snr_db": snrs,
        "positives_skipped": skipped,
        "background_words": len(spans) - len(chosen),
        "clipped_samples": clipped,
    }
    (out / INFO_NAME).write_text(json.dumps(info, indent=1) + "\n")
    return load_test_stream(out)


def load_test_stream(folder: str | Path) -> WakeStream:
    """The test stream written by :func:`build_test_stream` into ``folder``."""
    path = Path(folder) / INFO_NAME
    try:
        info = json.loads(path.read_text())
        values = dict(info["settings"])
        values["exclude"] = tuple(values.get("exclude", ()))
        return WakeStream(
            folder=Path(folder),
            settings=StreamSettings(**values),
            duration_ms=float(info["duration_ms"]),
            phrase_times_ms=tuple(float(t) for t in info["phrase_times_ms"]),
            speech_spans_ms=np.array(info["speech_spans_ms"], dtype=np.float64).reshape(-1, 2),
            positives_used=tuple(info["positives_used"]),
            positives_skipped=tuple(info["positives_skipped"]),
        )
    except FileNotFoundError:
        raise WakeStreamError(f"{path}: missing; not a wake-word test stream folder") from None
    except (ValueError, KeyError, TypeError) as error:
        raise WakeStreamError(f"{path}: not a wake-word test stream ({error})") from None


def mix_at_snr(
    track: np.ndarray, bed: np.ndarray, clip: np.ndarray, start: int, snr_db: float
) -> tuple[int, float]:
    """Add ``clip`` at ``start`` with its voiced part ``snr_db`` above the noise bed under
    it, or less when that would lift its peak above :data:`PEAK` (a click in a quiet
    recording); return where the voiced part begins within the clip and the SNR given."""
    on, off = voiced_span(clip)
    voice = max(float(np.mean(clip[on:off].astype(np.float64) ** 2)), 1e-12)
    noise = float(np.mean(bed[start + on : start + off].astype(np.float64) ** 2))
    gain = math.sqrt(noise * 10 ** (snr_db / 10) / voice)
    gain = min(gain, PEAK / max(float(np.max(np.abs(clip))), 1e-6))
    track[start : start + len(clip)] += gain * clip
    return on, 10 * math.log10(gain**2 * voice / max(noise, 1e-12))


def _background_speech(
    track: np.ndarray,
    bed: np.ndarray,
    words: list[Clip],
    guarded: list[tuple[int, int]],
    settings: StreamSettings,
    rng: np.random.Generator,
    progress: bool,
) -> list[tuple[int, int]]:
    """Lay bursts of background words over ``track`` between noise-only gaps, the bursts
    taking about ``speech_fraction`` of the time outside the ``guarded`` (sorted) spans,
    which no word overlaps; return each word's span."""
    if settings.speech_fraction == 0:
        return []
    mean_burst = np.mean(WORDS_PER_BURST) * (1 + np.mean(WORD_GAP_S))
    mean_gap = mean_burst * (1 - settings.speech_fraction) / settings.speech_fraction
    spans: list[tuple[int, int]] = []
    blocked = iter([*guarded, (len(track), len(track))])
    block = next(blocked)
    at = round(rng.uniform(0, 2 * mean_gap) * SAMPLE_RATE)
    with tqdm(total=len(track), desc="background speech", unit_scale=1 / SAMPLE_RATE,
              unit="s", disable=not progress) as bar:  # fmt: skip
        while at + SAMPLE_RATE <= len(track):
            for _ in range(int(rng.integers(WORDS_PER_BURST[0], WORDS_PER_BURST[1] + 1))):
                while block[0] < len(track) and (block[1] <= at or at + SAMPLE_RATE > block[0]):
                    at = max(at, block[1])  # past a phrase this word would overlap
                    block = next(blocked)
                if at + SAMPLE_RATE > len(track):
                    break
                word = words[int(rng.integers(len(words)))]
                mix_at_snr(track, bed, fit_length(read_wav(word.path), SAMPLE_RATE), at,
                            settings.snr_db)  # fmt: skip
                spans.append((at, at + SAMPLE_RATE))
                at += SAMPLE_RATE + round(rng.uniform(*WORD_GAP_S) * SAMPLE_RATE)
            at += round(rng.uniform(0, 2 * mean_gap) * SAMPLE_RATE)
            bar.update(min(at, len(track)) - bar.n)
    return spans


def _noise_bed(
    total: int, recordings: list[Path], rng: np.random.Generator, progress: bool
) -> np.ndarray:
    """``total`` samples of noise: cross-faded segments, each a random part of a recording
    of ``recordings`` or generated coloured noise, at about :data:`NOISE_RMS`."""
    sources: list[np.ndarray | str] = [read_wav(p) for p in recordings]
    sources += list(GENERATED_NOISES)
    bed = np.zeros(total, dtype=np.float32)
    fade = round(CROSSFADE_S * SAMPLE_RATE)
    at = 0
    with tqdm(total=total, desc="noise bed", unit_scale=1 / SAMPLE_RATE, unit="s",
              disable=not progress) as bar:  # fmt: skip
        while at < total:
            length = min(round(rng.uniform(*NOISE_SEGMENT_S) * SAMPLE_RATE), total - at)
            source = sources[int(rng.integers(len(sources)))]
            segment = _segment(source, length + fade, rng)
            level = NOISE_RMS * 10 ** (rng.uniform(-3, 3) / 20) / max(_rms(segment), 1e-9)
            segment *= min(level, NOISE_PEAK / max(float(np.max(np.abs(segment))), 1e-9))
            ramp = np.ones(len(segment), dtype=np.float32)
            ramp[:fade] = np.linspace(0, 1, fade) if at > 0 else 1
            ramp[-fade:] = np.linspace(1, 0, fade)
            n = min(len(segment), total - at)
            bed[at : at + n] += (segment * ramp)[:n]
            at += length
            bar.update(length)
    return bed


def _segment(source: np.ndarray | str, length: int, rng: np.random.Generator) -> np.ndarray:
    """``length`` samples of a recording (from a random offset, looped when short) or of
    generated noise of the named colour."""
    if isinstance(source, str):
        exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}[source]
        spectrum = np.fft.rfft(rng.standard_normal(length))
        hertz = np.fft.rfftfreq(length, 1 / SAMPLE_RATE)
        audible = hertz >= LOWEST_NOISE_HZ  # below: drifts that would swamp the mean power
        spectrum[~audible] = 0
        spectrum[audible] /= (hertz[audible] / LOWEST_NOISE_HZ) ** exponent
        return np.fft.irfft(spectrum, length).astype(np.float32)
    offset = int(rng.integers(len(source)))
    return np.resize(np.roll(source, -offset), length).astype(np.float32)


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
