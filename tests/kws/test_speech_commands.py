"""Specification of the Speech Commands index: splits, label sets and examples."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sanas.kws.data.speech_commands import (
    SILENCE,
    SPLITS,
    UNKNOWN,
    WANTED_WORDS,
    WORDS_V2,
    DatasetError,
    Example,
    SpeechCommands,
    hold_out_speakers,
    kws_task,
    labels_12,
    make_examples,
    speaker_of,
    which_split,
)

# Speaker ids whose hash bucket falls in each split under the default 10% / 10% rule.
VALIDATION_ID, TESTING_ID, TRAINING_ID = "cfcd2084", "eccbc87e", "c4ca4238"


def make_tree(
    root: Path, clips: dict[str, list[str]], lists: dict[str, list[str]] | None = None
) -> Path:
    """Write a tiny dataset: ``clips`` maps word → file names; ``lists`` list file → lines."""
    for word, names in clips.items():
        (root / word).mkdir(parents=True, exist_ok=True)
        for name in names:
            sf.write(root / word / name, np.zeros(160, np.float32), 16000, subtype="PCM_16")
    for list_name, lines in (lists or {}).items():
        (root / list_name).write_text("".join(f"{line}\n" for line in lines))
    return root


@pytest.fixture(scope="module")
def real(speech_commands_root: Path) -> SpeechCommands:
    return SpeechCommands(speech_commands_root)


# --- the hash rule ---------------------------------------------------------------------


def test_which_split_pins_known_buckets() -> None:
    assert which_split(f"{VALIDATION_ID}_nohash_0.wav") == "validation"
    assert which_split(f"{TESTING_ID}_nohash_0.wav") == "testing"
    assert which_split(f"{TRAINING_ID}_nohash_0.wav") == "training"


def test_which_split_ignores_folder_and_nohash_suffix() -> None:
    assert which_split(f"yes/{TESTING_ID}_nohash_3.wav") == which_split(f"{TESTING_ID}_nohash_0")


def test_which_split_is_about_10_10_80_percent() -> None:
    rng = np.random.default_rng(0)
    names = [f"{rng.integers(2**32):08x}_nohash_0.wav" for _ in range(4000)]
    shares = Counter(which_split(name) for name in names)
    assert abs(shares["validation"] / 4000 - 0.1) < 0.02
    assert abs(shares["testing"] / 4000 - 0.1) < 0.02


def test_which_split_puts_the_whole_official_test_set_in_testing(
    speech_commands_root: Path,
) -> None:
    """The subset comes from the canonical test set, which the official rule sends to testing."""
    by_hash = SpeechCommands(speech_commands_root, split_rule="hash")
    sizes = {split: sum(words.values()) for split, words in by_hash.counts().items()}
    assert sizes == {"training": 0, "validation": 0, "testing": 3627}


def test_speaker_is_the_name_before_nohash() -> None:
    assert speaker_of("yes/0a7c2a8d_nohash_1.wav") == "0a7c2a8d"
    assert speaker_of("noise.wav") == "noise"


# --- the real subset -------------------------------------------------------------------


def test_real_subset_splits_follow_the_list_files(real: SpeechCommands) -> None:
    sizes = {split: len(real.clips(split)) for split in SPLITS}
    assert sizes == {"training": 2984, "validation": 227, "testing": 416}
    assert real.skipped == {"validation": 0, "testing": 0}


def test_real_subset_has_35_words_and_six_noise_recordings(real: SpeechCommands) -> None:
    assert real.words == sorted(WORDS_V2)
    assert [p.name for p in real.background_paths] == [
        "doing_the_dishes.wav",
        "dude_miaowing.wav",
        "exercise_bike.wav",
        "pink_noise.wav",
        "running_tap.wav",
        "white_noise.wav",
    ]


def test_real_subset_is_speaker_disjoint(real: SpeechCommands) -> None:
    real.check_speaker_disjoint()
    speakers = [real.speakers(split) for split in SPLITS]
    assert [len(s) for s in speakers] == [165, 17, 18]
    assert not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])


def test_counts_are_per_split_per_word(real: SpeechCommands) -> None:
    counts = real.counts()
    assert set(counts) == set(SPLITS)
    assert sum(sum(words.values()) for words in counts.values()) == 3627
    assert counts["testing"]["yes"] == sum(c.word == "yes" for c in real.clips("testing"))


def test_clips_carry_word_speaker_and_split(real: SpeechCommands) -> None:
    clip = real.clips("validation")[0]
    assert clip.path.parent.name == clip.word
    assert clip.path.name.startswith(clip.speaker + "_nohash_")
    assert clip.split == "validation"


# --- bad folders and lists -------------------------------------------------------------


def test_missing_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nowhere: no such directory"):
        SpeechCommands(tmp_path / "nowhere")


def test_folder_without_word_folders_is_an_error_naming_it(tmp_path: Path) -> None:
    make_tree(tmp_path, {"_background_noise_": ["noise.wav"]})
    (tmp_path / "empty_word").mkdir()
    with pytest.raises(DatasetError, match=rf"{tmp_path}: no word folders"):
        SpeechCommands(tmp_path)


def test_list_line_naming_a_missing_clip_is_a_logged_counted_skip(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_tree(
        tmp_path,
        {"yes": ["a_nohash_0.wav", "b_nohash_0.wav", "c_nohash_0.wav"]},
        {
            "validation_list.txt": ["yes/a_nohash_0.wav", "yes/gone_nohash_0.wav"],
            "testing_list.txt": ["yes/b_nohash_0.wav", "", "no/gone_nohash_1.wav"],
        },
    )
    with caplog.at_level(logging.WARNING):
        dataset = SpeechCommands(tmp_path)
    assert dataset.skipped == {"validation": 1, "testing": 1}
    assert "gone_nohash_0.wav" in caplog.text and "gone_nohash_1.wav" in caplog.text
    assert [c.path.name for c in dataset.clips("training")] == ["c_nohash_0.wav"]


def test_empty_split_is_an_error_naming_it(tmp_path: Path) -> None:
    make_tree(tmp_path, {"yes": [f"{TRAINING_ID}_nohash_0.wav"]})
    dataset = SpeechCommands(tmp_path)
    assert len(dataset.clips("training")) == 1
    with pytest.raises(DatasetError, match=r"split 'validation' has no clips"):
        dataset.clips("validation")


def test_unknown_split_name_is_an_error(real: SpeechCommands) -> None:
    with pytest.raises(ValueError, match=r"unknown split 'train'"):
        real.clips("train")


def test_only_one_list_file_is_an_error_naming_the_missing_one(tmp_path: Path) -> None:
    make_tree(tmp_path, {"yes": ["a_nohash_0.wav"]}, {"validation_list.txt": []})
    with pytest.raises(DatasetError, match=r"missing: testing_list\.txt"):
        SpeechCommands(tmp_path)


def test_without_lists_the_hash_rule_splits_by_speaker(tmp_path: Path) -> None:
    names = [f"{VALIDATION_ID}_nohash_0.wav", f"{TESTING_ID}_nohash_0.wav"]
    make_tree(tmp_path, {"yes": names, "no": [f"{TRAINING_ID}_nohash_2.wav"]})
    dataset = SpeechCommands(tmp_path)
    assert dataset.speakers("validation") == {VALIDATION_ID}
    assert dataset.speakers("testing") == {TESTING_ID}
    assert dataset.speakers("training") == {TRAINING_ID}
    assert dataset.words == ["no", "yes"]
    assert dataset.background_paths == []


def test_speaker_in_two_splits_is_an_error_naming_speaker_and_splits(tmp_path: Path) -> None:
    make_tree(
        tmp_path,
        {"yes": ["spk_nohash_0.wav", "spk_nohash_1.wav"]},
        {"validation_list.txt": ["yes/spk_nohash_1.wav"], "testing_list.txt": []},
    )
    with pytest.raises(DatasetError, match=r"speaker 'spk' is in both 'training' and 'validation'"):
        SpeechCommands(tmp_path).check_speaker_disjoint()


# --- label sets and examples -----------------------------------------------------------


def test_labels_12_are_silence_unknown_then_the_wanted_words() -> None:
    assert labels_12() == [SILENCE, UNKNOWN, *WANTED_WORDS]
    task = kws_task("12")
    assert task.num_classes == 12
    assert task.label_of("yes") == 2
    assert task.label_of("marvin") == 1
    assert task.silence_index == 0


def test_task_35_has_every_v2_word_plus_silence_and_no_unknown() -> None:
    task = kws_task("35")
    assert task.num_classes == 36
    assert task.labels[0] == SILENCE and UNKNOWN not in task.labels
    assert task.label_of("marvin") == task.labels.index("marvin")
    assert task.label_of("not_a_word") is None
    with pytest.raises(ValueError, match="unknown task"):
        kws_task("30")


def test_task_35_on_a_v001_folder_is_an_error_naming_the_missing_words(tmp_path: Path) -> None:
    make_tree(tmp_path, {"yes": [f"{TRAINING_ID}_nohash_0.wav"]})
    with pytest.raises(DatasetError, match="needs word folders"):
        make_examples(SpeechCommands(tmp_path), "training", task="35")


def test_make_examples_12_has_about_10_percent_silence_and_unknown(real: SpeechCommands) -> None:
    examples = make_examples(real, "training")
    labels = Counter(e.label for e in examples)
    wanted = sum(c.word in WANTED_WORDS for c in real.clips("training"))
    others = len(real.clips("training")) - wanted
    assert (wanted, others) == (2719, 265)
    assert labels[0] == 272  # ceil(10% of 2719)
    assert labels[1] == 265  # ceil(10% of 2719), capped by the unknown clips available
    assert len(examples) == wanted + 272 + 265
    assert all((e.path is None) == (e.label == 0) for e in examples)
    unknown_words = {e.path.parent.name for e in examples if e.label == 1 and e.path}
    assert unknown_words and not unknown_words & set(WANTED_WORDS)


def test_make_examples_is_seeded(real: SpeechCommands) -> None:
    first = make_examples(real, "validation", seed=3)
    assert first == make_examples(real, "validation", seed=3)
    other = make_examples(real, "validation", seed=4)
    assert first != other
    assert Counter(e.label for e in first) == Counter(e.label for e in other)


def test_make_examples_percentages_are_configurable(real: SpeechCommands) -> None:
    examples = make_examples(real, "testing", silence_percentage=0, unknown_percentage=50)
    labels = Counter(e.label for e in examples)
    assert labels[0] == 0
    assert labels[1] == sum(c.word not in WANTED_WORDS for c in real.clips("testing"))  # all


def test_make_examples_35_labels_every_clip_by_its_word(real: SpeechCommands) -> None:
    task = kws_task("35")
    examples = make_examples(real, "validation", task=task)
    clips = [e for e in examples if e.path is not None]
    assert len(clips) == 227
    assert all(task.labels[e.label] == e.path.parent.name for e in clips if e.path)
    assert Example(None, 0) in examples


def test_held_out_speakers_are_disjoint_from_the_kept_ones(real: SpeechCommands) -> None:
    examples = make_examples(real, "training", "12", seed=0)
    kept, held = hold_out_speakers(examples, 0.15)
    assert sorted(map(id, kept + held)) == sorted(map(id, examples))
    kept_speakers = {speaker_of(e.path) for e in kept if e.path is not None}
    held_speakers = {speaker_of(e.path) for e in held if e.path is not None}
    assert kept_speakers.isdisjoint(held_speakers)
    assert 0.08 < len(held_speakers) / len(kept_speakers | held_speakers) < 0.25
    silence = sum(e.path is None for e in examples)
    assert sum(e.path is None for e in held) == round(0.15 * silence)
    assert hold_out_speakers(examples, 0.15) == (kept, held)  # stable
    assert hold_out_speakers(examples, 0.0) == (examples, [])
    with pytest.raises(ValueError, match="held-out fraction"):
        hold_out_speakers(examples, 1.0)
