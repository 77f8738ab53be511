"""Synthetic keywords in the Speech Commands layout, spoken by espeak-ng (and flite).

A "speaker" is one synthesiser voice setting: engine, voice and variant, speed and pitch.
Each speaker says every keyword (as people do in Speech Commands), a random subset of them
also says each filler word (the ``_unknown_`` class); repeated takes of one speaker
(``_nohash_1``, ...) differ by a small speed and pitch jitter. Every clip is resampled to
16 kHz, trimmed of silence, placed at a random offset in one second, scaled to a random peak
and given a faint noise floor, then written as 16-bit PCM:
``<out>/<word>/<speaker>_nohash_<k>.wav``. Speakers are split between training, validation
and testing (``validation_list.txt``, ``testing_list.txt``), so no speaker is in two splits.
``_background_noise_/`` gets white, pink and brown noise. A "word" may be a phrase of
several words (its folder joins them with ``_``: ``smart_mirror/``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from sanas.kws.data.audio import SAMPLE_RATE, read_wav
from sanas.kws.data.speech_commands import BACKGROUND_DIR, LIST_FILES, WANTED_WORDS

# Filler words for the unknown class: the auxiliary words of Speech Commands v0.01.
DEFAULT_UNKNOWN_WORDS = (
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
)  # fmt: skip
ESPEAK_VOICES = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
    "en-029", "en-us-nyc",
)  # fmt: skip
ESPEAK_VARIANTS = (
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3",
)  # fmt: skip
ESPEAK_PITCHES = (35, 50, 65)  # espeak-ng's 0-99 scale
ESPEAK_WPM = 175  # espeak-ng's default speed, words per minute
# flite voices and their mean F0 settings in Hz (rms ignores the setting: default only).
FLITE_VOICES: dict[str, tuple[int | None, ...]] = {
    "slt": (160, 185, 210),
    "awb": (95, 115, 135),
    "kal16": (95, 115, 135),
    "rms": (None,),
}
SPEEDS = (0.9, 1.0, 1.15)  # relative to the engine's default
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1 / f^exponent
NOISE_RMS = 0.0033  # the level of Speech Commands' own white_noise.wav and pink_noise.wav
NOISE_FLOOR_RMS = 3e-4  # about -70 dBFS: no clip is digital silence
TRIM_DB = 35.0  # frames this far below the loudest one count as silence
# Words of letters, digits, ' and -, one space apart.
WORD_PATTERN = re.compile(r"[a-z0-9][a-z0-9'-]*(?: [a-z0-9][a-z0-9'-]*)*")


class SynthError(RuntimeError):
    """Speech synthesis cannot run or produced no usable audio."""


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: ``speed`` is relative to the engine default, ``pitch`` is
    espeak-ng's 0-99 value or flite's mean F0 in Hz (``None``: the voice's default)."""

    engine: str
    name: str
    speed: float
    pitch: int | None

    @property
    def speaker_id(self) -> str:
        """A stable 8-hex-digit id, like the dataset's speaker hashes."""
        key = f"{self.engine}|{self.name}|{self.speed:g}|{self.pitch}"
        return hashlib.sha1(key.encode()).hexdigest()[:8]

    def command(self, word: str, out: Path, speed: float, pitch: float | None) -> list[str]:
        """The command line that speaks ``word`` into the wav file ``out``."""
        if self.engine == "espeak-ng":
            args = ["espeak-ng", "-v", self.name, "-s", str(round(ESPEAK_WPM * speed))]
            if pitch is not None:
                args += ["-p", str(int(np.clip(round(pitch), 0, 99)))]
            return [*args, "-w", str(out), word]
        args = ["flite", "-voice", self.name, "--setf", f"duration_stretch={1 / speed:.3f}"]
        if pitch is not None:
            args += ["--setf", f"int_f0_target_mean={pitch:.1f}"]
        return [*args, "-t", word, "-o", str(out)]


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`synthesize_keywords` wrote."""

    root: Path
    clips_per_word: dict[str, int]
    speakers_per_split: dict[str, int]
    engines: tuple[str, ...]
    background_files: tuple[Path, ...]
    seconds: float

    @property
    def clips(self) -> int:
        """The number of word clips written."""
        return sum(self.clips_per_word.values())


@dataclass(frozen=True)
class _Take:
    """One clip to render: who says what, where it goes, and its own random seed."""

    voice: Voice
    word: str
    path: Path
    seed: int


def available_engines() -> tuple[str, ...]:
    """The synthesisers found on ``PATH`` (espeak-ng is required, flite optional)."""
    return tuple(engine for engine in ("espeak-ng", "flite") if shutil.which(engine))


def voice_families(engines: Sequence[str], speeds: Sequence[float] = SPEEDS) -> list[list[Voice]]:
    """All voice settings at ``speeds``, grouped by base voice (one group per espeak-ng voice
    or flite voice)."""
    families = []
    if "espeak-ng" in engines:
        for base in ESPEAK_VOICES:
            families.append(
                [
                    Voice("espeak-ng", f"{base}+{variant}" if variant else base, speed, pitch)
                    for variant, speed, pitch in product(ESPEAK_VARIANTS, speeds, ESPEAK_PITCHES)
                ]
            )
    if "flite" in engines:
        for name, pitches in FLITE_VOICES.items():
            families.append([Voice("flite", name, s, p) for s, p in product(speeds, pitches)])
    return families


def synthesize_keywords(
    out_dir: str | Path,
    words: Sequence[str] = WANTED_WORDS,
    per_word: int = 20,
    *,
    seed: int = 0,
    unknown_words: Sequence[str] = DEFAULT_UNKNOWN_WORDS,
    unknown_per_word: int | Mapping[str, int] | None = None,
    validation_percentage: float = 10.0,
    testing_percentage: float = 10.0,
    noise_seconds: float = 60.0,
    engines: Sequence[str] | None = None,
    speeds: Sequence[float] = SPEEDS,
    jobs: int | None = None,
    progress: bool = False,
) -> SynthSummary:
    """Render ``per_word`` clips of each word (by ``per_word`` speakers) into ``out_dir``.

    ``unknown_per_word`` clips (default: half of ``per_word``, at least one; at most
    ``per_word``) of each word of ``unknown_words`` come from random speakers of the set;
    a mapping gives each unknown word its own number.
    ``noise_seconds`` is the length of each background noise file (0: none). ``speeds``:
    the speaking rates of the voices, relative to each engine's default.
    ``engines=None`` uses every synthesiser found (espeak-ng, and flite when installed; the
    summary says which). Seeded: the same arguments and synthesiser versions give the same
    files. ``out_dir`` must be absent or empty, so that a dataset never mixes two runs.
    """
    started = time.perf_counter()
    words, unknown_words = _check_words(words, unknown_words)
    if isinstance(unknown_per_word, Mapping):
        given = {" ".join(w.lower().split()): n for w, n in unknown_per_word.items()}
        n_unknown = {word: given.get(word, 0) for word in unknown_words}
    else:
        n = max(1, per_word // 2) if unknown_per_word is None else unknown_per_word
        n_unknown = dict.fromkeys(unknown_words, n)
    if per_word < 1 or min(n_unknown.values(), default=0) < 0:
        raise SynthError(
            f"need per_word >= 1 and unknown_per_word >= 0, got {per_word}, {unknown_per_word}"
        )
    engines = _check_engines(engines)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise SynthError(f"{out}: not empty; synthesize into a new folder")

    rng = np.random.default_rng(seed)
    speakers = pick_speakers(voice_families(engines, speeds), per_word, rng)
    takes = _takes(out, words, unknown_words, speakers, n_unknown, rng)
    for take in takes:
        take.path.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        list(tqdm(pool.map(_render, takes), total=len(takes), disable=not progress, unit="clip"))

    split_of = _split_speakers(
        sorted({t.voice.speaker_id for t in takes}), validation_percentage, testing_percentage, rng
    )
    for split, list_name in LIST_FILES.items():
        lines = sorted(
            f"{t.path.parent.name}/{t.path.name}\n"
            for t in takes
            if split_of[t.voice.speaker_id] == split
        )
        (out / list_name).write_text("".join(lines))
    background: tuple[Path, ...] = ()
    if noise_seconds > 0:
        background = write_background_noise(out / BACKGROUND_DIR, noise_seconds, seed=seed)
    return SynthSummary(
        root=out,
        clips_per_word=dict(Counter(take.word for take in takes)),
        speakers_per_split=dict(sorted(Counter(split_of.values()).items())),
        engines=engines,
        background_files=background,
        seconds=time.perf_counter() - started,
    )


def _check_engines(engines: Sequence[str] | None) -> tuple[str, ...]:
    """The synthesisers to use (``None``: every one found), each on ``PATH``; espeak-ng is
    always needed."""
    engines = tuple(engines) if engines is not None else available_engines()
    for engine in ("espeak-ng", *engines):
        if not shutil.which(engine):
            raise SynthError(
                f"{engine} not found on PATH; install it with `sudo apt-get install {engine}`"
                + (" (or `make system-deps`)" if engine == "espeak-ng" else "")
            )
    return engines


def _takes(
    out: Path,
    words: Sequence[str],
    unknown_words: Sequence[str],
    speakers: list[Voice],
    n_unknown: Mapping[str, int],
    rng: np.random.Generator,
) -> list[_Take]:
    """Every clip to render: each speaker says every word, ``n_unknown[word]`` random
    speakers (at most all) each unknown word; a speaker's repeated takes of a word are
    numbered."""
    said = [(word, voice) for word in words for voice in speakers]
    for word in unknown_words:
        chosen = sorted(rng.permutation(len(speakers))[: min(n_unknown[word], len(speakers))])
        said += [(word, speakers[i]) for i in chosen]
    takes: list[_Take] = []
    repeats: Counter[tuple[str, Voice]] = Counter()
    for word, voice in said:
        name = f"{voice.speaker_id}_nohash_{repeats[(word, voice)]}.wav"
        repeats[(word, voice)] += 1
        path = out / word_folder(word) / name
        takes.append(_Take(voice, word, path, int(rng.integers(2**63))))
    return takes


def _check_words(
    words: Sequence[str], unknown_words: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Lower-cased words (or phrases, single-spaced), with no word in both lists."""
    words = tuple(" ".join(w.lower().split()) for w in words)
    unknown_words = tuple(" ".join(w.lower().split()) for w in unknown_words)
    if not words:
        raise SynthError("no words to synthesize")
    for word in (*words, *unknown_words):
        if not WORD_PATTERN.fullmatch(word):
            raise SynthError(f"cannot synthesize {word!r}: use words of letters, digits, ' and -")
    both = sorted(set(words) & set(unknown_words))
    if both or len(set(words)) < len(words) or len(set(unknown_words)) < len(unknown_words):
        raise SynthError(f"repeated words (or words also listed as unknown: {both})")
    return words, unknown_words


def word_folder(word: str) -> str:
    """The folder (and class label) of a word or phrase: its words joined by ``_``."""
    return "_".join(word.split())


def spoken_seconds(text: str, voice: Voice) -> float:
    """How long ``voice`` takes to say ``text`` at its own speed and pitch, silence trimmed."""
    with tempfile.TemporaryDirectory(prefix="sanas-synth-") as tmp:
        speech = _speak(voice, text, Path(tmp) / "raw.wav", voice.speed, voice.pitch)
    return len(speech) / SAMPLE_RATE


def pick_speakers(families: list[list[Voice]], n: int, rng: np.random.Generator) -> list[Voice]:
    """``n`` speakers, taken from each base voice in turn so that small sets stay varied.

    Beyond every distinct setting, speakers repeat (their clips then become ``_nohash_1``...).
    """
    pools = [[family[i] for i in rng.permutation(len(family))] for family in families]
    order = rng.permutation(len(pools))
    longest = max(map(len, pools))
    distinct = [pools[f][i] for i in range(longest) for f in order if i < len(pools[f])]
    return [distinct[i % len(distinct)] for i in range(n)]


def _split_speakers(
    speakers: list[str], validation: float, testing: float, rng: np.random.Generator
) -> dict[str, str]:
    """Assign each speaker one split; with three speakers or more, no split is empty."""
    order = [speakers[i] for i in rng.permutation(len(speakers))]
    n = len(order)
    n_val = max(1, round(n * validation / 100)) if n >= 3 and validation > 0 else 0
    n_test = max(1, round(n * testing / 100)) if n >= 3 and testing > 0 else 0
    split_of = dict.fromkeys(order, "training")
    split_of.update(dict.fromkeys(order[:n_val], "validation"))
    split_of.update(dict.fromkeys(order[n_val : n_val + n_test], "testing"))
    return split_of


def _render(take: _Take) -> None:
    """Synthesise one take and write it as a one-second 16 kHz PCM16 clip."""
    rng = np.random.default_rng(take.seed)
    speed = take.voice.speed * rng.uniform(0.94, 1.06)
    pitch: float | None = take.voice.pitch
    if pitch is not None:  # espeak-ng's pitch is a 0-99 scale, flite's a frequency
        espeak = take.voice.engine == "espeak-ng"
        pitch = pitch + rng.uniform(-4, 4) if espeak else pitch * rng.uniform(0.95, 1.05)
    with tempfile.TemporaryDirectory(prefix="sanas-synth-") as tmp:
        speech = _speak(take.voice, take.word, Path(tmp) / "raw.wav", speed, pitch)
    if speech.size == 0:
        raise SynthError(f"{take.voice.engine} {take.voice.name} said nothing for {take.word!r}")
    clip = np.zeros(SAMPLE_RATE, dtype=np.float32)
    if len(speech) > SAMPLE_RATE:  # keep the middle second
        start = (len(speech) - SAMPLE_RATE) // 2
        speech = speech[start : start + SAMPLE_RATE]
    offset = int(rng.uniform(0.25, 0.75) * (SAMPLE_RATE - len(speech)))
    clip[offset : offset + len(speech)] = speech * (rng.uniform(0.3, 0.9) / np.abs(speech).max())
    clip += rng.normal(0.0, NOISE_FLOOR_RMS, SAMPLE_RATE).astype(np.float32)
    sf.write(take.path, np.clip(clip, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")


def _speak(voice: Voice, text: str, raw: Path, speed: float, pitch: float | None) -> np.ndarray:
    """``voice`` saying ``text`` through the wav file ``raw``: 16 kHz, silence trimmed."""
    command = voice.command(text, raw, speed, pitch)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not raw.is_file():
        raise SynthError(f"`{' '.join(command)}` failed: {result.stderr.strip()}")
    return _trim(read_wav(raw, SAMPLE_RATE))


def _trim(x: np.ndarray, frame: int = SAMPLE_RATE // 100, margin: int = 2) -> np.ndarray:
    """Cut leading and trailing silence: 10 ms frames ``TRIM_DB`` below the loudest, kept
    with ``margin`` frames of context each side."""
    n = len(x) // frame
    if n == 0:
        return x[:0]
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-TRIM_DB / 20))
    if loud.size == 0:
        return x[:0]
    start = max(loud[0] - margin, 0) * frame
    stop = min(loud[-1] + 1 + margin, n) * frame
    return x[start:stop]


def write_background_noise(
    folder: str | Path, seconds: float, *, seed: int = 0
) -> tuple[Path, ...]:
    """Write ``white_noise.wav``, ``pink_noise.wav`` and ``brown_noise.wav`` (16 kHz PCM16).

    Coloured by shaping white Gaussian noise's spectrum (below 20 Hz kept flat, so brown
    noise does not drift); every file at RMS ``NOISE_RMS``, the level of the real dataset's
    white and pink noise files.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 1])
    n = round(seconds * SAMPLE_RATE)
    freqs = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0)
    paths = []
    for colour, exponent in NOISE_COLOURS.items():
        spectrum = np.fft.rfft(rng.standard_normal(n)) * freqs ** (-exponent / 2)
        spectrum[0] = 0.0
        noise = np.fft.irfft(spectrum, n)
        noise *= NOISE_RMS / np.sqrt(np.mean(noise**2))
        path = folder / f"{colour}_noise.wav"
        sf.write(path, noise.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        paths.append(path)
    return tuple(paths)
