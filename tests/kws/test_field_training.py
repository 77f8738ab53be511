"""The field's training (SpecAugment, label smoothing) and its headline number, clip
accuracy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import typer
from typer.testing import CliRunner

from sanas.cli.evaluate import register
from sanas.kws.config import ConfigError, TrainConfig
from sanas.kws.data.features import MFCC
from sanas.kws.data.sequences import SequenceConfig, SequenceDataset, spec_augment
from sanas.kws.data.speech_commands import SpeechCommands, kws_task, make_examples
from sanas.kws.evaluation.clips import clip_accuracy, run_clip_accuracy
from sanas.kws.runs import load_run
from sanas.supernet.budgets import LinearPenalty
from sanas.supernet.sequence import SequenceObjective

MASKS = SequenceConfig(time_masks=2, time_mask_frames=20, freq_masks=2, freq_mask_bins=8)


def test_spec_augment_masks_bands_with_the_mean_and_draws_nothing_without_masks() -> None:
    features = torch.randn(201, 40)
    rng = np.random.default_rng(0)
    assert spec_augment(features, rng, SequenceConfig()) is features
    assert rng.integers(1 << 30) == np.random.default_rng(0).integers(1 << 30)  # no draw
    masked = spec_augment(features, np.random.default_rng(1), MASKS)
    changed = masked != features
    assert changed.any() and torch.equal(features, features.clone())  # a copy
    rows, columns = changed.all(dim=1), changed.all(dim=0)
    assert changed.equal(rows[:, None] | columns[None, :])  # whole frames and whole bins
    assert 0 < rows.sum() <= 40 and 0 < columns.sum() <= 16
    assert torch.allclose(masked[changed], features.mean().expand(int(changed.sum())))


def test_spec_augment_is_drawn_per_item_and_training_only(tone_data: Path) -> None:
    examples = make_examples(SpeechCommands(tone_data), "training", "12")
    train = SequenceDataset(examples, MFCC(), config=MASKS, seed=3)
    again = SequenceDataset(examples, MFCC(), config=MASKS, seed=3)
    plain = SequenceDataset(examples, MFCC(), config=SequenceConfig(), seed=3)
    i = next(i for i, example in enumerate(examples) if example.path is not None)
    assert torch.equal(train[i].features, again[i].features)  # a resumed epoch: the same
    assert not torch.equal(train[i].features, plain[i].features)
    assert torch.equal(train[i].labels, plain[i].labels)
    fixed = SequenceDataset(examples, MFCC(), config=MASKS, seed=3, fixed=True)
    fixed_plain = SequenceDataset(examples, MFCC(), seed=3, fixed=True)
    assert torch.equal(fixed[i].features, fixed_plain[i].features)  # validation: no masks


def test_label_smoothing_is_the_objectives_cross_entropy() -> None:
    logits = torch.randn(2, 3, 12)
    labels = torch.randint(0, 12, (2, 3))
    output = SimpleNamespace(logits=logits, log_prob=None, cost=torch.zeros(2, 3))
    mask = torch.ones(2, 3, dtype=torch.bool)
    objective = SequenceObjective(LinearPenalty(0.0), label_smoothing=0.1)
    loss, _ = objective(output, labels, mask)  # type: ignore[arg-type]
    expected = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), label_smoothing=0.1)
    assert torch.allclose(loss, expected)


@pytest.mark.parametrize("values", [{"label_smoothing": 1.0}, {"sequence": {"time_masks": -1}}])
def test_bad_augmentation_fields_are_named(values: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"label_smoothing|sequence\.time_masks"):
        TrainConfig.from_dict({"data": "d", "out": "o", **values})


def test_clip_accuracy_is_the_full_network_on_each_clip(tiny_run: Path) -> None:
    model, config = load_run(tiny_run)
    result = clip_accuracy(model, config.data, "testing")
    examples = make_examples(SpeechCommands(config.data), "testing", "12")
    assert result.total == len(examples) == sum(n for _, n in result.per_class.values())
    labels = kws_task("12").labels
    truth = torch.tensor([example.label for example in examples])
    counts = torch.bincount(truth, minlength=len(labels))
    assert [n for _, n in result.per_class.values()] == counts.tolist()
    clips = SequenceDataset(
        examples, MFCC(), config=SequenceConfig(lengths_s=(1.0,), background_probability=0.0),
        silence_label=kws_task("12").silence_index, fixed=True,
    )  # fmt: skip
    with torch.inference_mode():
        predicted = [
            int(model(clips[i].features[None]).logits[0, 0].argmax()) for i in range(len(clips))
        ]
    assert result.correct == sum(p == int(t) for p, t in zip(predicted, truth, strict=True))
    assert run_clip_accuracy(tiny_run, "testing") == result


def test_evaluate_clips_prints_and_writes_the_accuracy(tiny_run: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    out = tmp_path / "clips.json"
    result = CliRunner().invoke(
        app, ["evaluate", str(run), "--clips", "validation", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["split"] == "validation" and scores["total"] > 0
    assert f"{scores['correct']}/{scores['total']} clips" in result.output
    refused = CliRunner().invoke(app, ["evaluate", str(run)])
    assert refused.exit_code == 2 and "--stream-wav" in refused.output
