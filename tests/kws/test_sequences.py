"""Specification of the streaming training sequences (method.md §5)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from sanas.kws.data.features import MFCC
from sanas.kws.data.sequences import (
    DEFAULT_LENGTHS_S,
    IGNORE_INDEX,
    REFERENCE_LENGTHS_S,
    STEP_FRAMES,
    WINDOW_FRAMES,
    SequenceConfig,
    SequenceDataset,
    SequenceItem,
    clip_frames,
    collate_sequences,
    n_steps,
    step_labels,
    window_starts,
    windows,
)
from sanas.kws.data.speech_commands import Example, SpeechCommands, make_examples

SILENCE = 0


@pytest.fixture(scope="module")
def real_examples(speech_commands_root: Path) -> tuple[list[Example], list[Path]]:
    """Thirty 12-class validation examples of the real subset and its noise recordings."""
    dataset = SpeechCommands(speech_commands_root)
    return make_examples(dataset, "validation", seed=0)[:30], dataset.background_paths


@pytest.fixture
def tone_examples(tmp_path: Path) -> list[Example]:
    """Three one-second tone clips with labels 2, 3, 4."""
    examples = []
    for label in (2, 3, 4):
        path = tmp_path / f"tone{label}.wav"
        t = np.arange(16000) / 16000
        sf.write(path, (0.3 * np.sin(2 * np.pi * 300 * label * t)).astype(np.float32), 16000)
        examples.append(Example(path, label))
    return examples


# --- windows and steps -----------------------------------------------------------------


def test_windows_are_101_frames_every_20_frames() -> None:
    assert (WINDOW_FRAMES, STEP_FRAMES) == (101, 20)
    assert window_starts(101).tolist() == [0]
    assert window_starts(121).tolist() == [0, 20]
    assert window_starts(301).tolist() == list(range(0, 201, 20))
    assert n_steps(100) == 0 and window_starts(100).tolist() == []


def test_windows_view_slices_the_features_at_the_window_starts() -> None:
    features = torch.arange(121 * 2, dtype=torch.float32).reshape(1, 121, 2)
    views = windows(features)
    assert views.shape == (1, 2, 101, 2)
    assert torch.equal(views[0, 1], features[0, 20:121])


def test_default_lengths_give_every_step_count_from_1_to_11() -> None:
    frontend = MFCC()
    steps = [n_steps(frontend.n_frames(round(s * 16000))) for s in DEFAULT_LENGTHS_S]
    assert steps == list(range(1, 12))
    reference = [n_steps(frontend.n_frames(round(s * 16000))) for s in REFERENCE_LENGTHS_S]
    assert reference == [1, 6, 11]


def test_a_clip_covers_the_frames_whose_centre_lies_in_it() -> None:
    assert clip_frames(0, 16000, 160) == (0, 100)
    assert clip_frames(8000, 16000, 160) == (50, 150)
    assert clip_frames(8001, 16000, 160) == (51, 151)


def test_step_label_needs_more_than_half_of_the_window() -> None:
    """51 of 101 frames is more than half; 50 is not."""
    assert step_labels(121, [(50, 150, 7)], SILENCE).tolist() == [7, 7]
    assert step_labels(121, [(51, 151, 7)], SILENCE).tolist() == [SILENCE, 7]
    assert step_labels(101, [], SILENCE).tolist() == [SILENCE]


def test_hand_constructed_clip_in_a_two_second_sequence() -> None:
    """A clip at 0.5 s of a 2 s sequence covers frames 50..149; the last window (frames
    100..200) overlaps it by only 50 frames, so it is silence."""
    spans = [(*clip_frames(8000, 16000, 160), 5)]
    assert step_labels(201, spans, SILENCE).tolist() == [5, 5, 5, 5, 5, SILENCE]


def test_two_clips_label_their_own_windows() -> None:
    spans = [(0, 100, 3), (200, 300, 4)]
    assert step_labels(301, spans, SILENCE).tolist() == [3, 3, 3, 0, 0, 0, 0, 0, 4, 4, 4]


# --- the dataset -----------------------------------------------------------------------


def test_items_are_whole_sequence_features_and_one_label_per_step(
    real_examples: tuple[list[Example], list[Path]],
) -> None:
    examples, backgrounds = real_examples
    data = SequenceDataset(examples, MFCC(), backgrounds, seed=1)
    for index, example in enumerate(examples[:12]):
        item = data[index]
        frames = len(item.features)
        assert (frames - 101) % 20 == 0 and 101 <= frames <= 301
        assert item.features.shape == (frames, 40)
        assert item.labels.shape == (n_steps(frames),)
        assert set(item.labels.tolist()) <= {SILENCE, example.label}
        if example.path is None:
            assert set(item.labels.tolist()) == {SILENCE}
        else:  # a one-second clip always covers some window by more than half
            assert example.label in item.labels.tolist()


def test_reference_lengths_give_1_6_or_11_steps(
    real_examples: tuple[list[Example], list[Path]],
) -> None:
    examples, backgrounds = real_examples
    config = SequenceConfig(lengths_s=REFERENCE_LENGTHS_S)
    data = SequenceDataset(examples, MFCC(), backgrounds, config)
    assert {len(data[i].labels) for i in range(len(examples))} <= {1, 6, 11}


def test_lengths_under_one_second_are_refused(tone_examples: list[Example]) -> None:
    with pytest.raises(ValueError, match=">= 1 s"):
        SequenceDataset(tone_examples, MFCC(), config=SequenceConfig(lengths_s=(0.5, 1.0)))


def test_fixed_set_is_the_same_every_epoch_and_every_instance(
    tone_examples: list[Example],
) -> None:
    first = SequenceDataset(tone_examples, MFCC(), seed=5, fixed=True)
    second = SequenceDataset(tone_examples, MFCC(), seed=5, fixed=True)
    second.set_epoch(7)
    for index in range(len(tone_examples)):
        assert torch.equal(first[index].features, second[index].features)
        assert torch.equal(first[index].labels, second[index].labels)


def test_training_set_changes_with_the_epoch(tone_examples: list[Example]) -> None:
    data = SequenceDataset(tone_examples, MFCC(), seed=5)
    before = [data[i].features for i in range(3)]
    data.set_epoch(1)
    after = [data[i].features for i in range(3)]
    changed = [
        b.shape != a.shape or not torch.equal(b, a) for b, a in zip(before, after, strict=True)
    ]
    assert any(changed)


def test_batches_do_not_depend_on_the_number_of_workers(tone_examples: list[Example]) -> None:
    data = SequenceDataset(tone_examples * 2, MFCC(), seed=2, fixed=True)
    batches = []
    for workers in (0, 2):
        loader = DataLoader(data, batch_size=3, num_workers=workers, collate_fn=collate_sequences)
        batches.append(list(loader))
    for serial, parallel in zip(*batches, strict=True):
        assert torch.equal(serial.features, parallel.features)
        assert torch.equal(serial.labels, parallel.labels)


def test_collate_pads_labels_with_the_ignore_index_and_masks_them() -> None:
    short = SequenceItem(torch.ones(101, 40), torch.tensor([3]))
    long = SequenceItem(torch.ones(141, 40), torch.tensor([0, 4, 4]))
    batch = collate_sequences([short, long])
    assert batch.features.shape == (2, 141, 40)
    assert torch.equal(batch.features[0, 101:], torch.zeros(40, 40))
    assert batch.labels.tolist() == [[3, IGNORE_INDEX, IGNORE_INDEX], [0, 4, 4]]
    assert batch.mask.tolist() == [[True, False, False], [True, True, True]]
    assert batch.n_frames.tolist() == [101, 141]
    assert windows(batch.features).shape[1] == batch.labels.shape[1]
    assert batch.to("cpu").mask.dtype == torch.bool
    assert torch.nn.CrossEntropyLoss().ignore_index == IGNORE_INDEX


def test_bad_clip_is_a_logged_counted_skip_replaced_by_the_next_clip(
    tmp_path: Path, tone_examples: list[Example], caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"")
    examples = [Example(bad, 9), *tone_examples]
    data = SequenceDataset(examples, MFCC(), config=SequenceConfig(lengths_s=(1.0,)))
    with caplog.at_level(logging.WARNING):
        item = data[0]
        data[0]
    assert item.labels.tolist() == [tone_examples[0].label]
    assert data.skipped["clips"] == 1  # a known bad file is not retried
    assert "bad.wav: empty file" in caplog.text


def test_bad_background_is_a_counted_skip(
    tmp_path: Path, tone_examples: list[Example], caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"RIFF")
    with caplog.at_level(logging.WARNING):
        data = SequenceDataset(tone_examples, MFCC(), [bad])
    assert data.skipped == {"clips": 0, "backgrounds": 1}
    assert "noise.wav" in caplog.text
    assert data[0].labels.numel() >= 1


def test_multi_word_sequences_hold_several_non_overlapping_clips(
    tone_examples: list[Example],
) -> None:
    config = SequenceConfig(lengths_s=(3.0,), multi_word=True, max_words=3)
    data = SequenceDataset(tone_examples * 4, MFCC(), config=config, seed=0)
    runs_per_item = []
    for index in range(len(data)):
        labels = data[index].labels.tolist()
        runs = [a for i, a in enumerate(labels) if a != SILENCE and labels[i - 1 : i] != [a]]
        runs_per_item.append(len(runs))
    assert min(runs_per_item) >= 1
    assert max(runs_per_item) >= 2
    assert max(runs_per_item) <= 3


def test_time_shift_moves_the_content_but_not_the_labels(tone_examples: list[Example]) -> None:
    plain = SequenceDataset(tone_examples, MFCC(), seed=3, fixed=True)
    shifted = SequenceDataset(
        tone_examples, MFCC(), config=SequenceConfig(time_shift_s=0.1), seed=3, fixed=True
    )
    for index in range(len(tone_examples)):
        assert torch.equal(plain[index].labels, shifted[index].labels)
    assert not torch.equal(plain[0].features, shifted[0].features)


def test_silence_only_examples_are_refused() -> None:
    with pytest.raises(ValueError, match="every example is silence"):
        SequenceDataset([Example(None, SILENCE)], MFCC())
