"""Streaming test files from the real Speech Commands subset, and the label file format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sanas.kws.data.speech_commands import UNKNOWN, WANTED_WORDS, SpeechCommands
from sanas.kws.data.stream_file import (
    StreamFileError,
    generate_streaming_test,
    read_stream_labels,
    write_stream_labels,
)


@pytest.fixture(scope="module")
def dataset(speech_commands_root: Path) -> SpeechCommands:
    return SpeechCommands(speech_commands_root)


def test_one_minute_stream(dataset: SpeechCommands, tmp_path: Path) -> None:
    summary = generate_streaming_test(dataset, tmp_path, minutes=1, seed=0)
    info = sf.info(summary.wav_path)
    assert (info.samplerate, info.channels, info.frames) == (16000, 1, 60 * 16000)
    assert info.subtype == "PCM_16"
    labels = read_stream_labels(summary.labels_path)
    assert len(labels) == summary.words == 60 // 3
    assert summary.wanted_words == WANTED_WORDS
    # One word per 3 s slot, starting within the first 2 s of its slot.
    for slot, (label, time_ms) in enumerate(labels):
        assert slot * 3000 <= time_ms < slot * 3000 + 2000
        assert label in (*WANTED_WORDS, UNKNOWN)
    audio, _ = sf.read(summary.wav_path)
    assert np.sqrt(np.mean(audio**2)) > 0.01  # words and noise, not silence


def test_only_clips_of_the_split_are_used(
    dataset: SpeechCommands, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sanas.kws.data.stream_file as stream_file

    read: list[Path] = []

    def spy(path: Path, sample_rate: int = 16000) -> np.ndarray:
        read.append(Path(path))
        return original(path, sample_rate)

    original = stream_file.read_wav
    monkeypatch.setattr(stream_file, "read_wav", spy)
    generate_streaming_test(dataset, tmp_path, minutes=2, seed=1)
    testing = {clip.path for clip in dataset.clips("testing")}
    words = [p for p in read if p.parent.name != "_background_noise_"]
    assert len(words) == 40
    assert set(words) <= testing


def test_unknown_share_and_determinism(dataset: SpeechCommands, tmp_path: Path) -> None:
    a = generate_streaming_test(dataset, tmp_path / "a", minutes=20, seed=3, background_volume=0)
    assert a.words == 400
    assert 0.25 < a.unknown_fraction < 0.35
    assert set(a.label_counts) == {*WANTED_WORDS, UNKNOWN}
    b = generate_streaming_test(dataset, tmp_path / "b", minutes=20, seed=3, background_volume=0)
    assert a.labels_path.read_text() == b.labels_path.read_text()
    assert a.wav_path.read_bytes() == b.wav_path.read_bytes()


def test_bad_requests(dataset: SpeechCommands, tmp_path: Path) -> None:
    with pytest.raises(StreamFileError, match="no clip in the split: banana"):
        generate_streaming_test(dataset, tmp_path, minutes=1, wanted_words=["yes", "banana"])
    with pytest.raises(StreamFileError, match="must be positive"):
        generate_streaming_test(dataset, tmp_path, minutes=0)


def test_labels_round_trip(tmp_path: Path) -> None:
    labels = [("yes", 1234.5), (UNKNOWN, 4000.0625), ("no", 0.0)]
    path = tmp_path / "labels.txt"
    write_stream_labels(path, labels)
    assert path.read_text().splitlines()[0] == "yes, 1234.500000"  # TensorFlow's "%s, %f"
    assert read_stream_labels(path) == sorted(labels, key=lambda item: item[1])


def test_reader_accepts_other_spacing_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("yes,1000\n\n  no ,  2500.5  \r\n")
    assert read_stream_labels(path) == [("yes", 1000.0), ("no", 2500.5)]


@pytest.mark.parametrize(
    "bad_line",
    ["yes 1000", "yes,1000,extra", ",1000", "yes,soon", "yes,-5", "yes,nan", "yes,"],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, bad_line: str) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(f"no, 10.0\n{bad_line}\n")
    with pytest.raises(StreamFileError, match=r"labels\.txt:2: expected 'word,time_ms'"):
        read_stream_labels(path)


def test_unwritable_labels_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StreamFileError, match="cannot be written"):
        write_stream_labels(tmp_path / "l.txt", [("a,b", 1.0)])
    with pytest.raises(StreamFileError, match="not a time"):
        write_stream_labels(tmp_path / "l.txt", [("yes", float("inf"))])


def test_noise_only_stream_is_the_word_stream_without_its_words(
    dataset: SpeechCommands, tmp_path: Path
) -> None:
    noise = generate_streaming_test(
        dataset, tmp_path / "noise", minutes=0.5, seed=4, subtype="FLOAT", noise_only=True
    )
    assert noise.labels_path.read_text() == ""
    assert (noise.words, noise.wanted_words, noise.label_counts) == (0, (), {})
    background, rate = sf.read(noise.wav_path, dtype="float32")
    assert (rate, len(background)) == (16000, 30 * 16000)
    assert np.count_nonzero(background) > 0.99 * len(background)  # noise throughout
    # the same seed's word stream holds exactly this background outside its words
    words = generate_streaming_test(
        dataset, tmp_path / "words", minutes=0.5, seed=4, subtype="FLOAT"
    )
    spoken, _ = sf.read(words.wav_path, dtype="float32")
    outside_words = np.ones(len(spoken), dtype=bool)
    for _, time_ms in read_stream_labels(words.labels_path):
        outside_words[round(time_ms * 16) : round(time_ms * 16) + 16000] = False
    assert np.array_equal(spoken[outside_words], background[outside_words])
    assert not np.array_equal(spoken, background)


def test_noise_only_stream_is_seeded(dataset: SpeechCommands, tmp_path: Path) -> None:
    a, b, c = (
        generate_streaming_test(dataset, tmp_path / name, minutes=0.25, seed=seed, noise_only=True)
        for name, seed in (("a", 7), ("b", 7), ("c", 8))
    )
    assert a.wav_path.read_bytes() == b.wav_path.read_bytes()
    assert a.wav_path.read_bytes() != c.wav_path.read_bytes()


def test_noise_only_refuses_words_and_silence(dataset: SpeechCommands, tmp_path: Path) -> None:
    with pytest.raises(StreamFileError, match="noise-only stream has no words"):
        generate_streaming_test(dataset, tmp_path, minutes=1, wanted_words=["yes"], noise_only=True)
    with pytest.raises(StreamFileError, match="needs a background volume > 0"):
        generate_streaming_test(dataset, tmp_path, minutes=1, background_volume=0, noise_only=True)
    assert not list(tmp_path.iterdir())  # refused before anything is written


@pytest.mark.parametrize("text", ["", "\n  \n\n"])
def test_a_label_file_without_words_is_scored_only_when_allowed(tmp_path: Path, text: str) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(text)
    assert read_stream_labels(path) == []  # reading alone: nothing to check it against
    with pytest.raises(StreamFileError, match=r"labels\.txt: no labelled word"):
        read_stream_labels(path, words=("yes", "no"), duration_ms=60_000.0)
    fitted = read_stream_labels(path, words=("yes", "no"), duration_ms=60_000.0, allow_empty=True)
    assert fitted == []
