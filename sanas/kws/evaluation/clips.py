"""Clip accuracy: the field's headline number for keyword spotting.

Each example of a split (TensorFlow's 12-class list: the ten words' clips, 10 % silence
and 10 % unknown words, :func:`~sanas.kws.data.speech_commands.make_examples`) is one
1 s clip, one window, classified by the model's full network (every node on, whatever
its architecture policy). As in TensorFlow's evaluation, no noise is mixed into the
clips and a silence example is digital silence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from sanas.kws.data.features import MFCC
from sanas.kws.data.sequences import SequenceConfig, SequenceDataset, collate_sequences
from sanas.kws.data.speech_commands import SpeechCommands, kws_task, make_examples
from sanas.kws.model.kws_model import KWSModel
from sanas.kws.runs import load_run

CLIP_SPLITS = ("validation", "testing")


@dataclass(frozen=True)
class ClipAccuracy:
    """Correct and total clips of a split, overall and per class (label → (correct, total))."""

    split: str
    correct: int
    total: int
    per_class: dict[str, tuple[int, int]]

    @property
    def accuracy(self) -> float:
        """Share of clips classified correctly (NaN without clips)."""
        return self.correct / self.total if self.total else float("nan")

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict, the accuracy in %."""
        return {
            "split": self.split,
            "accuracy": 100.0 * self.accuracy,
            "correct": self.correct,
            "total": self.total,
            "per_class": {k: list(v) for k, v in self.per_class.items()},
        }


def clip_accuracy(
    model: KWSModel,
    data: str | os.PathLike[str],
    split: str = "testing",
    task: str = "12",
    seed: int = 0,
    batch_size: int = 256,
) -> ClipAccuracy:
    """``model``'s full network on every clip of ``split`` of the Speech Commands folder
    ``data`` (``seed`` draws the silence and unknown examples, as training's lists do)."""
    if split not in CLIP_SPLITS:
        raise ValueError(f"split must be one of {CLIP_SPLITS}, got {split!r}")
    labels = kws_task(task).labels
    dataset = SpeechCommands(data)
    examples = make_examples(dataset, split, task, seed=seed)
    clips = SequenceDataset(
        examples,
        MFCC(),
        dataset.background_paths,  # read, never mixed in: probability 0
        config=SequenceConfig(lengths_s=(1.0,), background_probability=0.0),
        silence_label=kws_task(task).silence_index,
        fixed=True,
    )
    hits = torch.zeros(len(labels), dtype=torch.int64)
    counts = torch.zeros(len(labels), dtype=torch.int64)
    model.eval()
    with torch.inference_mode():
        for begin in range(0, len(clips), batch_size):
            batch = collate_sequences(
                [clips[i] for i in range(begin, min(begin + batch_size, len(clips)))]
            )
            features = model.input_norm(batch.features)
            logits = model.run_windows(features, model.all_on(features))[:, 0]
            truth = batch.labels[:, 0]
            counts += torch.bincount(truth, minlength=len(labels))
            hits += torch.bincount(truth[logits.argmax(-1) == truth], minlength=len(labels))
    per_class = {label: (int(h), int(n)) for label, h, n in zip(labels, hits, counts, strict=True)}
    return ClipAccuracy(split, int(hits.sum()), int(counts.sum()), per_class)


def run_clip_accuracy(
    run_dir: str | os.PathLike[str],
    split: str = "testing",
    data: str | os.PathLike[str] | None = None,
) -> ClipAccuracy:
    """:func:`clip_accuracy` of a run's best weights on ``data`` (default: the data
    folder it trained on), with its task and seed."""
    model, config = load_run(Path(run_dir))
    return clip_accuracy(model, data or config.data, split, config.task, config.seed)
