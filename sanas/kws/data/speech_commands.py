"""The Speech Commands dataset (v0.01 and v0.02): index, splits, label sets and examples.

The layout is the released one: one folder per word, ``_background_noise_/`` with long
noise recordings, and optional ``validation_list.txt`` / ``testing_list.txt``. Without the
lists, clips are split by TensorFlow's hash rule (:func:`which_split`), which keeps every
speaker in one split. The 12-class examples follow TensorFlow's ``input_data.py``: the ten
wanted words, ``_unknown_`` drawn from the other words and ``_silence_`` (about 10% each).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

WANTED_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE = "_silence_"
UNKNOWN = "_unknown_"
BACKGROUND_DIR = "_background_noise_"
# The 35 words of Speech Commands v0.02 (v0.01 lacks backward, follow, forward, learn, visual).
WORDS_V2 = (
    *WANTED_WORDS,
    "backward", "bed", "bird", "cat", "dog", "eight", "five", "follow", "forward", "four",
    "happy", "house", "learn", "marvin", "nine", "one", "seven", "sheila", "six", "three",
    "tree", "two", "visual", "wow", "zero",
)  # fmt: skip
SPLITS = ("training", "validation", "testing")
LIST_FILES = {"validation": "validation_list.txt", "testing": "testing_list.txt"}
MAX_NUM_WAVS_PER_CLASS = 2**27 - 1
WAKE_TASK_PREFIX = "wake:"  # task "wake:<label>": one wake word against everything else
WAKE_LABEL_PATTERN = re.compile(r"[a-z0-9][a-z0-9_'-]*")


class DatasetError(ValueError):
    """A dataset folder or split that cannot be used; the message names the path."""


def which_split(
    filename: str | os.PathLike[str],
    validation_percentage: float = 10.0,
    testing_percentage: float = 10.0,
) -> str:
    """The split of a clip by the official hash rule (TensorFlow's ``which_set``).

    The sha1 of the file name with ``_nohash_.*`` removed (the speaker id) picks a stable
    bucket in [0, 100): a clip never changes split as the dataset grows, and all clips of
    one speaker land in the same split.
    """
    base_name = os.path.basename(os.fspath(filename))
    hash_name = re.sub(r"_nohash_.*$", "", base_name)
    hashed = int(hashlib.sha1(hash_name.encode("utf-8")).hexdigest(), 16)
    percentage = (hashed % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "testing"
    return "training"


def speaker_of(filename: str | os.PathLike[str]) -> str:
    """The speaker id of a clip: its file name up to ``_nohash_`` (the whole stem without)."""
    stem = Path(filename).stem
    return stem.split("_nohash_", 1)[0]


@dataclass(frozen=True)
class Clip:
    """One labelled recording of the dataset."""

    path: Path
    word: str
    speaker: str
    split: str


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


class SpeechCommands:
    """An index of a Speech Commands folder (v0.01 or v0.02 layout).

    ``split_rule`` is ``"auto"`` (the list files when present, else the hash rule),
    ``"lists"`` (both list files required; unlisted clips are training) or ``"hash"``.
    A list line naming a clip that is not in the folder is logged and counted in
    :attr:`skipped` (per split), never fatal.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        split_rule: Literal["auto", "lists", "hash"] = "auto",
        validation_percentage: float = 10.0,
        testing_percentage: float = 10.0,
    ) -> None:
        if split_rule not in ("auto", "lists", "hash"):
            raise ValueError(f"unknown split_rule {split_rule!r}; expected auto, lists or hash")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(
                f"{self.root}: no such directory (expected a Speech Commands folder)"
            )
        self.skipped: dict[str, int] = dict.fromkeys(LIST_FILES, 0)
        by_word = self._scan_words()
        if not by_word:
            raise DatasetError(
                f"{self.root}: no word folders with .wav files "
                "(expected <root>/<word>/<speaker>_nohash_<n>.wav)"
            )
        self._words = sorted(by_word)
        present = [name for name in LIST_FILES.values() if (self.root / name).is_file()]
        if split_rule == "auto":
            split_rule = "lists" if present else "hash"
        if split_rule == "lists" and len(present) != len(LIST_FILES):
            missing = sorted(set(LIST_FILES.values()) - set(present))
            raise DatasetError(f"{self.root}: split lists missing: {', '.join(missing)}")
        listed = None
        if split_rule == "lists":
            listed = self._read_lists({p for paths in by_word.values() for p in paths})
        self._clips: dict[str, list[Clip]] = {split: [] for split in SPLITS}
        for word, paths in by_word.items():
            for path in paths:
                if listed is None:
                    split = which_split(path.name, validation_percentage, testing_percentage)
                else:
                    split = listed.get(path, "training")
                self._clips[split].append(Clip(path, word, speaker_of(path), split))
        for clips in self._clips.values():
            clips.sort(key=lambda clip: clip.path)

    def _scan_words(self) -> dict[str, list[Path]]:
        by_word: dict[str, list[Path]] = {}
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if not entry.is_dir() or entry.name.startswith(".") or entry.name == BACKGROUND_DIR:
                continue
            paths = sorted(
                Path(entry.path) / name
                for name in os.listdir(entry.path)
                if name.lower().endswith(".wav")
            )
            if paths:
                by_word[entry.name] = paths
        return by_word

    def _read_lists(self, indexed: set[Path]) -> dict[Path, str]:
        listed: dict[Path, str] = {}
        for split, name in LIST_FILES.items():
            list_path = self.root / name
            try:
                text = list_path.read_text()
            except UnicodeDecodeError:
                raise DatasetError(f"{list_path}: not a text file (one clip path a line)") from None
            for line_number, line in enumerate(text.splitlines(), 1):
                relative = line.strip()
                if not relative:
                    continue
                path = self.root / relative
                if path not in indexed:
                    self.skipped[split] += 1
                    logger.warning("%s:%d: skipped %s (no such clip)", list_path, line_number, path)
                    continue
                listed[path] = split
        return listed

    @property
    def words(self) -> list[str]:
        """The word folder names, sorted."""
        return list(self._words)

    @property
    def background_paths(self) -> list[Path]:
        """The noise recordings of ``_background_noise_/`` (empty when the folder is absent)."""
        folder = self.root / BACKGROUND_DIR
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav")

    def clips(self, split: str) -> list[Clip]:
        """The clips of one split, sorted by path; an empty split is an error."""
        _check_split(split)
        clips = self._clips[split]
        if not clips:
            raise DatasetError(f"{self.root}: split {split!r} has no clips")
        return list(clips)

    def speakers(self, split: str) -> set[str]:
        """The speaker ids of one split."""
        _check_split(split)
        return {clip.speaker for clip in self._clips[split]}

    def check_speaker_disjoint(self) -> None:
        """Raise :class:`DatasetError` if a speaker appears in more than one split."""
        seen: dict[str, str] = {}
        for split in SPLITS:
            for clip in self._clips[split]:
                first = seen.setdefault(clip.speaker, split)
                if first != split:
                    raise DatasetError(
                        f"{self.root}: speaker {clip.speaker!r} is in both {first!r} and "
                        f"{split!r} (e.g. {clip.path})"
                    )

    def counts(self) -> dict[str, dict[str, int]]:
        """Clips per split per word: ``counts()["training"]["yes"]``."""
        return {
            split: dict(sorted(Counter(clip.word for clip in clips).items()))
            for split, clips in self._clips.items()
        }


@dataclass(frozen=True)
class KWSTask:
    """A label set: class names in output order; silence first, then unknown if any.

    ``unknown_percentage``: how many ``_unknown_`` clips an example list draws, as a
    percentage of the task's own clips (``math.inf``: every one, for a corpus whose
    negatives were chosen when it was built).
    """

    name: str
    labels: tuple[str, ...]
    unknown_percentage: float = 10.0

    @property
    def num_classes(self) -> int:
        """The number of output classes."""
        return len(self.labels)

    @property
    def silence_index(self) -> int:
        """The class index of ``_silence_``."""
        return self.labels.index(SILENCE)

    def label_of(self, word: str) -> int | None:
        """The class of a word folder: its own, else ``_unknown_``, else ``None`` (unused)."""
        if word in self.labels:
            return self.labels.index(word)
        if UNKNOWN in self.labels:
            return self.labels.index(UNKNOWN)
        return None


def labels_12() -> list[str]:
    """The 12 classes of the standard task: silence, unknown and the ten wanted words."""
    return [SILENCE, UNKNOWN, *WANTED_WORDS]


def kws_task(name: str) -> KWSTask:
    """``"12"``: the standard task; ``"35"``: every v0.02 word as a class, plus silence;
    ``"wake:<label>"``: a wake word, ``(_silence_, _unknown_, <label>)``, trained on every
    unknown clip of its corpus (a wake-word corpus is built with its negatives chosen).

    The 35-word task keeps ``_silence_`` (class 0) because streaming needs a label for the
    steps between words; it has no ``_unknown_`` class.
    """
    if name == "12":
        return KWSTask("12", tuple(labels_12()))
    if name == "35":
        return KWSTask("35", (SILENCE, *sorted(WORDS_V2)))
    if name.startswith(WAKE_TASK_PREFIX):
        label = name[len(WAKE_TASK_PREFIX) :]
        if not WAKE_LABEL_PATTERN.fullmatch(label):
            raise ValueError(
                f"task {name!r}: a wake-word label is lower-case letters, digits, _ ' and - "
                "(e.g. 'wake:smart_mirror')"
            )
        return KWSTask(name, (SILENCE, UNKNOWN, label), unknown_percentage=math.inf)
    raise ValueError(f"unknown task {name!r}; expected '12', '35' or 'wake:<label>'")


@dataclass(frozen=True)
class Example:
    """A training or evaluation example: a clip and its class; ``path=None`` is silence."""

    path: Path | None
    label: int


def make_examples(
    dataset: SpeechCommands,
    split: str,
    task: str | KWSTask = "12",
    seed: int = 0,
    silence_percentage: float = 10.0,
    unknown_percentage: float | None = None,
) -> list[Example]:
    """The shuffled examples of one split, as TensorFlow's ``input_data.py`` builds them.

    All clips of the task's words, plus ``ceil(n · silence_percentage / 100)`` silence
    examples and ``ceil(n · unknown_percentage / 100)`` unknown-word clips drawn at random
    from the other words (fewer if the split has fewer), where ``n`` is the number of clips
    of the task's words and ``unknown_percentage`` defaults to the task's (10 % for the
    Speech Commands tasks). Seeded: the same arguments give the same list.
    """
    task = kws_task(task) if isinstance(task, str) else task
    if task.name == "35":
        missing = sorted(set(WORDS_V2) - set(dataset.words))
        if missing:
            raise DatasetError(f"{dataset.root}: task '35' needs word folders {missing}")
    rng = random.Random(seed)
    known: list[Example] = []
    unknown: list[Example] = []
    for clip in dataset.clips(split):
        label = task.label_of(clip.word)
        if label is None:
            continue
        if task.labels[label] == UNKNOWN:
            unknown.append(Example(clip.path, label))
        else:
            known.append(Example(clip.path, label))
    if not known:
        raise DatasetError(f"{dataset.root}: split {split!r} has no clips of {task.labels}")
    n = len(known)
    examples = known + [Example(None, task.silence_index)] * math.ceil(n * silence_percentage / 100)
    rng.shuffle(unknown)
    share = task.unknown_percentage if unknown_percentage is None else unknown_percentage
    examples += unknown[: len(unknown) if math.isinf(share) else math.ceil(n * share / 100)]
    rng.shuffle(examples)
    return examples


def hold_out_speakers(
    examples: list[Example], fraction: float
) -> tuple[list[Example], list[Example]]:
    """Split ``examples`` into (kept, held out), holding out about ``fraction`` of the
    speakers: all clips of a speaker fall on one side, chosen by a hash of the speaker id
    (stable as the dataset grows, like :func:`which_split`). Silence examples (no clip) are
    shared out in the same proportion. Orders are kept."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")

    def held(example: Example) -> bool:
        speaker = speaker_of(example.path)  # type: ignore[arg-type]
        digest = hashlib.sha1(f"search:{speaker}".encode()).hexdigest()
        return int(digest, 16) % 10_000 < fraction * 10_000

    silence_to_hold = round(fraction * sum(e.path is None for e in examples))
    kept, held_out = [], []
    for example in examples:
        if example.path is None:
            side, silence_to_hold = silence_to_hold > 0, silence_to_hold - 1
        else:
            side = held(example)
        (held_out if side else kept).append(example)
    return kept, held_out
