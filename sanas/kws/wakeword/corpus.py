"""A wake word's training corpus, in the Speech Commands layout, built offline.

The corpus of a phrase (``RUN/corpus/``) holds:

- positives, ``<label>/``: the phrase said by synthetic speakers (espeak-ng voices ×
  variants × speeds × pitches, :mod:`sanas.kws.data.synth`), and the user's own
  recordings when given (each cut to its loudest second, copied with augmentation);
- synthetic negatives, spoken by the same synthetic voices (so that a synthetic voice is
  no cue for the phrase): the phrase's *parts* (:func:`confusable_parts`) and the 35
  Speech Commands words;
- real negatives: clips of the training speakers of a Speech Commands folder, and the
  user's false activations (``false_activations/``, each copied ``real_copies`` times);
- ``_background_noise_/``: generated white, pink and brown noise, plus the Speech
  Commands folder's own recordings when given.

Every synthetic clip, positive or negative alike, is augmented in place: a room
(a synthetic exponentially decaying impulse response), background noise at 5 to 30 dB
SNR and a gain of 0 to -20 dB, each with its own probability. Synthetic speakers are split
between training, validation and testing (the list files), so no voice is in two splits;
real clips are all training. ``corpus.json`` is written last: a corpus without it is
incomplete and is built again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import fftconvolve
from tqdm import tqdm

from sanas.kws.config import parse_setting
from sanas.kws.data.audio import SAMPLE_RATE, AudioError, read_wav
from sanas.kws.data.speech_commands import (
    BACKGROUND_DIR,
    LIST_FILES,
    WORDS_V2,
    DatasetError,
    SpeechCommands,
)
from sanas.kws.data.synth import (
    SPEEDS,
    SynthError,
    Voice,
    spoken_seconds,
    synthesize_keywords,
    word_folder,
)

logger = logging.getLogger(__name__)

CORPUS_DIR = "corpus"
CORPUS_RECORD = "corpus.json"  # written last: a complete corpus
FALSE_ACTIVATIONS_DIR = "false_activations"  # the user's negatives: an _unknown_ word folder
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
# The phrase, said by the reference voice at the slowest speed, must leave room in the
# model's one-second window: longer phrases get every speed scaled up to this length.
MAX_PHRASE_SECONDS = 0.85
REFERENCE_VOICE = Voice("espeak-ng", "en-us", min(SPEEDS), None)
VOWELS = re.compile(r"[aeiouy]+")
ROOM_RT60_S = (0.15, 0.8)  # reverberation times of the synthetic rooms
NOISE_SNR_DB = (5.0, 30.0)  # signal-to-noise ratios of the noise mixed into a clip
GAIN_DB = (-20.0, 0.0)  # gains of a clip: near and far talkers


class WakeWordError(ValueError):
    """A phrase, folder or corpus setting that cannot be used; the message names it."""


@dataclass(frozen=True)
class CorpusConfig:
    """How many clips of each kind a corpus gets (``--set corpus.<field>=value``).

    ``positives``: synthetic speakers saying the phrase. ``part_speakers``: speakers saying
    each part of the phrase; ``word_speakers``: each Speech Commands word.
    ``speech_commands_clips``: real negative clips at most (a random draw of the training
    speakers' clips). ``real_copies``: copies of each of the user's clips (the first
    clean, the others augmented), so that a few real clips weigh against many synthetic
    ones. ``reverb`` / ``noise`` / ``gain``: the probability of each augmentation of a
    clip. ``noise_seconds``: length of each generated noise file.
    """

    positives: int = 800
    part_speakers: int = 200
    word_speakers: int = 20
    speech_commands_clips: int = 1500
    real_copies: int = 4
    reverb: float = 0.5
    noise: float = 0.5
    gain: float = 0.5
    noise_seconds: float = 60.0
    seed: int = 0

    def validate(self) -> CorpusConfig:
        """Check every field; a :class:`WakeWordError` names the first bad one."""
        for spec in fields(self):
            value = getattr(self, spec.name)
            probability = spec.name in ("reverb", "noise", "gain")
            least = 1 if spec.name in ("positives", "real_copies") else 0
            ok = math.isfinite(value) and (0 <= value <= 1 if probability else value >= least)
            if not ok:
                wanted = "in [0, 1]" if probability else f">= {least}"
                raise WakeWordError(f"corpus.{spec.name} must be {wanted}, got {value!r}")
        return self

    @classmethod
    def from_settings(cls, settings: Sequence[str]) -> CorpusConfig:
        """The defaults with ``field=value`` settings on top, each checked."""
        values: dict[str, int | float] = {}
        types = {spec.name: type(spec.default) for spec in fields(cls)}
        for setting in settings:
            key, value = parse_setting(setting)
            kind = types.get(key)
            if kind is None:
                raise WakeWordError(
                    f"unknown setting 'corpus.{key}'; known: "
                    + ", ".join(f"corpus.{name}" for name in types)
                )
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise WakeWordError(f"corpus.{key} must be a number, got {value!r}")
            if kind is int and value != int(value):
                raise WakeWordError(f"corpus.{key} must be an integer, got {value!r}")
            values[key] = kind(value)
        return replace(cls(), **values).validate()


def normalize_phrase(phrase: str) -> str:
    """The phrase lower-cased and single-spaced; a :class:`WakeWordError` when it is empty
    or holds anything but words of letters, digits, ' and -."""
    words = phrase.lower().split()
    if not words:
        raise WakeWordError("--phrase is empty; give the wake phrase, e.g. --phrase 'computer'")
    for word in words:
        if not re.fullmatch(r"[a-z0-9][a-z0-9'-]*", word):
            raise WakeWordError(
                f"--phrase {phrase!r}: {word!r} is not a word (letters, digits, ' and -)"
            )
    return " ".join(words)


def phrase_label(phrase: str) -> str:
    """The class label (and folder) of a phrase: ``"smart mirror"`` → ``"smart_mirror"``."""
    return word_folder(normalize_phrase(phrase))


def confusable_parts(phrase: str) -> list[str]:
    """Near misses of the phrase, spoken as negatives: each word of a phrase of several
    words on its own, and each word of two syllables or more without its last syllable
    and without its first (``computer`` → ``compu``, ``puter``).

    Syllables are read off the spelling: a syllable starts at the consonant before a vowel
    group (a, e, i, o, u, y). The rule needs no dictionary and works for any phrase.
    """
    words = normalize_phrase(phrase).split()
    parts = set(words) if len(words) > 1 else set()
    for word in words:
        starts = [max(m.start() - 1, 0) for m in VOWELS.finditer(word)]
        if len(starts) >= 2:
            parts.update((word[: starts[-1]], word[starts[1] :]))
    return sorted(part for part in parts if len(part) >= 2)


def phrase_speeds(phrase: str) -> tuple[float, ...]:
    """The voices' speeds for ``phrase``: :data:`~sanas.kws.data.synth.SPEEDS`, scaled up
    when the reference voice at the slowest one takes longer than
    :data:`MAX_PHRASE_SECONDS` (the phrase then still fits the one-second window)."""
    seconds = spoken_seconds(phrase, REFERENCE_VOICE)
    factor = max(1.0, seconds / MAX_PHRASE_SECONDS)
    return tuple(round(speed * factor, 3) for speed in SPEEDS)


def corpus_is_complete(corpus: str | os.PathLike[str]) -> bool:
    """Whether ``corpus`` was built to the end (its record written)."""
    return (Path(corpus) / CORPUS_RECORD).is_file()


def read_corpus_record(corpus: str | os.PathLike[str]) -> dict:
    """What :func:`build_corpus` recorded: the phrase, label, settings and clip counts."""
    return json.loads((Path(corpus) / CORPUS_RECORD).read_text())


def build_corpus(
    phrase: str,
    out: str | os.PathLike[str],
    *,
    speech_commands: str | os.PathLike[str] | None = None,
    positives: str | os.PathLike[str] | None = None,
    negatives: str | os.PathLike[str] | None = None,
    config: CorpusConfig | None = None,
    progress: bool = False,
) -> dict:
    """Build the corpus of ``phrase`` into the folder ``out`` (absent or empty) and return
    its record (also written to ``out/corpus.json``, last).

    ``speech_commands``: a Speech Commands folder whose training speakers give real
    negatives and whose ``_background_noise_`` joins the generated noise. ``positives`` /
    ``negatives``: folders of the user's recordings of the phrase / of false activations
    (clips of any length; each cut to its loudest second; a file that does not decode is
    skipped with a warning naming it).
    """
    started = time.perf_counter()
    phrase = normalize_phrase(phrase)
    label = word_folder(phrase)
    config = (config or CorpusConfig()).validate()
    out = Path(out)
    for option, folder in (("--positives", positives), ("--negatives", negatives)):
        if folder is not None and not Path(folder).is_dir():
            raise WakeWordError(f"{option} {folder}: no such folder (expected audio clips)")
    dataset = SpeechCommands(speech_commands) if speech_commands is not None else None

    parts = confusable_parts(phrase)
    words = [w for w in WORDS_V2 if w not in phrase.split() and w not in parts and w != label]
    counts = {
        **dict.fromkeys(words, config.word_speakers),
        **dict.fromkeys(parts, config.part_speakers),
    }
    try:
        speeds = phrase_speeds(phrase)
        synthesize_keywords(
            out,
            [phrase],
            config.positives,
            seed=config.seed,
            unknown_words=[*parts, *words],
            unknown_per_word=counts,
            noise_seconds=config.noise_seconds,
            engines=("espeak-ng",),
            speeds=speeds,
            progress=progress,
        )
    except SynthError as error:
        raise WakeWordError(f"cannot synthesise {phrase!r}: {error}") from None
    rng = np.random.default_rng([config.seed, 2])
    real_noise = _copy_background(dataset, out)
    noises = [read_wav(path) for path in sorted((out / BACKGROUND_DIR).glob("*.wav"))]
    synthetic = sorted(out.glob("*/*.wav"))
    synthetic = [path for path in synthetic if path.parent.name != BACKGROUND_DIR]
    for path in tqdm(synthetic, disable=not progress, unit="clip", desc="augment"):
        clip = augment(read_wav(path), noises, config, rng)
        sf.write(path, clip, SAMPLE_RATE, subtype="PCM_16")

    real = {
        "speech_commands": _copy_speech_commands(dataset, out, label, config, rng),
        "positives": _add_recordings(positives, out / label, noises, config, rng),
        "negatives": _add_recordings(negatives, out / FALSE_ACTIVATIONS_DIR, noises, config, rng),
    }
    listed = {
        split: len((out / name).read_text().splitlines()) for split, name in LIST_FILES.items()
    }
    record = {
        "phrase": phrase,
        "label": label,
        "task": f"wake:{label}",
        "parts": parts,
        "speech_commands_words": words,
        "speeds": list(speeds),
        "config": asdict(config),
        "clips_per_folder": dict(
            sorted(Counter(p.parent.name for p in out.glob("*/*.wav")).items())
        ),
        "real_clips": real,
        "background_noise_files": len(noises),
        "real_background_noise_files": real_noise,
        "listed_clips": listed,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / CORPUS_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def augment(
    clip: np.ndarray, noises: Sequence[np.ndarray], config: CorpusConfig, rng: np.random.Generator
) -> np.ndarray:
    """``clip`` in a synthetic room (probability ``config.reverb``), with a random excerpt
    of ``noises`` mixed in at 5 to 30 dB SNR (``config.noise``) and a gain of 0 to
    -20 dB (``config.gain``); the same length, clipped to [-1, 1]."""
    out = clip.astype(np.float64)
    if rng.random() < config.reverb:
        out = fftconvolve(out, room_impulse_response(rng))[: len(clip)]
        out *= np.abs(clip).max() / max(np.abs(out).max(), 1e-9)
    if noises and rng.random() < config.noise:
        noise = noises[rng.integers(len(noises))]
        if len(noise) >= len(out):
            start = rng.integers(len(noise) - len(out) + 1)
            excerpt = noise[start : start + len(out)].astype(np.float64)
            snr = rng.uniform(*NOISE_SNR_DB)
            power = np.mean(out**2) / max(np.mean(excerpt**2), 1e-12)
            out = out + excerpt * math.sqrt(power / 10 ** (snr / 10))
    if rng.random() < config.gain:
        out *= 10 ** (rng.uniform(*GAIN_DB) / 20)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def room_impulse_response(rng: np.random.Generator) -> np.ndarray:
    """A synthetic room: a direct path, then Gaussian noise decaying by 60 dB over a
    reverberation time drawn from :data:`ROOM_RT60_S`, after a 1-10 ms gap."""
    rt60 = rng.uniform(*ROOM_RT60_S)
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # e^-6.9 = -60 dB
    gap = int(rng.uniform(0.001, 0.01) * SAMPLE_RATE)
    response = np.concatenate(([1.0], np.zeros(gap), tail * rng.uniform(0.1, 0.4)))
    return response / np.sqrt(np.sum(response**2))


def loudest_second(audio: np.ndarray) -> np.ndarray:
    """The one-second excerpt of ``audio`` with the most energy (zero-padded when shorter):
    where a recording of a phrase has the phrase."""
    n = SAMPLE_RATE
    if len(audio) <= n:
        return np.pad(audio, (0, n - len(audio)))
    energy = np.concatenate(([0.0], np.cumsum(audio.astype(np.float64) ** 2)))
    hop = SAMPLE_RATE // 100
    starts = np.arange(0, len(audio) - n + 1, hop)
    best = int(starts[np.argmax(energy[starts + n] - energy[starts])])
    return audio[best : best + n]


def _copy_background(dataset: SpeechCommands | None, out: Path) -> int:
    """Copy the dataset's background recordings beside the generated noise; how many."""
    if dataset is None:
        return 0
    for path in dataset.background_paths:
        shutil.copyfile(path, out / BACKGROUND_DIR / f"real_{path.name}")
    return len(dataset.background_paths)


def _copy_speech_commands(
    dataset: SpeechCommands | None,
    out: Path,
    label: str,
    config: CorpusConfig,
    rng: np.random.Generator,
) -> int:
    """Copy up to ``config.speech_commands_clips`` random clips of the dataset's training
    speakers (not of a word named like the phrase) into their word folders; how many."""
    if dataset is None or config.speech_commands_clips == 0:
        return 0
    try:
        clips = [clip for clip in dataset.clips("training") if clip.word != label]
    except DatasetError as error:
        raise WakeWordError(f"--speech-commands: {error}") from None
    chosen = sorted(rng.permutation(len(clips))[: config.speech_commands_clips])
    for i in chosen:
        clip = clips[i]
        (out / clip.word).mkdir(exist_ok=True)
        shutil.copyfile(clip.path, out / clip.word / clip.path.name)
    return len(chosen)


def _add_recordings(
    folder: str | os.PathLike[str] | None,
    target: Path,
    noises: Sequence[np.ndarray],
    config: CorpusConfig,
    rng: np.random.Generator,
) -> int:
    """Cut each recording of ``folder`` to its loudest second and write ``real_copies``
    copies into ``target`` (training speakers: they are in no list), the first clean, the
    others augmented; a file that does not decode is skipped with a warning. How many
    recordings were used."""
    if folder is None:
        return 0
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    target.mkdir(exist_ok=True)
    used = 0
    for path in paths:
        try:
            clip = loudest_second(read_wav(path))
        except AudioError as error:
            logger.warning("skipped %s: %s", path, error)
            continue
        speaker = "user" + hashlib.sha1(str(path.relative_to(folder)).encode()).hexdigest()[:8]
        for copy in range(config.real_copies):
            audio = clip if copy == 0 else augment(clip, noises, config, rng)
            sf.write(target / f"{speaker}_nohash_{copy}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
        used += 1
    if used == 0:
        raise WakeWordError(f"{folder}: no audio clip that decodes ({', '.join(AUDIO_SUFFIXES)})")
    return used
