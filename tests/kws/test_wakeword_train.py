"""`sanas wakeword train`: a corpus synthesised for a phrase, trained into an ordinary run
folder of task wake:<label>, on tiny settings (a few voices, one epoch per stage)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from sanas.cli import app
from sanas.kws.config import ConfigError, TrainConfig, load_recipe
from sanas.kws.data.audio import SAMPLE_RATE, read_wav
from sanas.kws.data.speech_commands import SpeechCommands, kws_task, make_examples
from sanas.kws.runs import load_run, read_operating_point
from sanas.kws.wakeword.corpus import (
    CorpusConfig,
    WakeWordError,
    build_corpus,
    confusable_parts,
    loudest_second,
    phrase_label,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_CORPUS = ["corpus.positives=8", "corpus.part_speakers=3", "corpus.word_speakers=1",
               "corpus.speech_commands_clips=6", "corpus.noise_seconds=2",
               "corpus.real_copies=2"]  # fmt: skip
TINY_TRAINING = ["channels=4", "batch_size=8", "limit_train=24", "limit_val=8", "workers=0",
                 "pretrain.pretrain.epochs=1", "pretrain.epochs=1", "imitate.epochs=1",
                 "imitate.stream_minutes=1"]  # fmt: skip
TINY = [*TINY_CORPUS, *TINY_TRAINING]


def _settings(settings: list[str]) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


def _recordings(folder: Path, n: int, seconds: float = 2.5) -> Path:
    """``n`` clips of ``seconds`` of faint noise with a loud one-second burst inside."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for k in range(n):
        audio = 0.01 * rng.standard_normal(int(seconds * SAMPLE_RATE))
        audio[SAMPLE_RATE // 2 : 3 * SAMPLE_RATE // 2] += 0.4 * np.sin(np.arange(SAMPLE_RATE) / 5)
        sf.write(folder / f"take{k}.flac", audio.astype(np.float32), SAMPLE_RATE)
    return folder


@pytest.fixture(scope="module")
def wake_run(tone_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished wake-word run for "smart mirror", trained through the command line with
    real positives and false activations."""
    root = tmp_path_factory.mktemp("wake")
    positives = _recordings(root / "mine", 2)
    negatives = _recordings(root / "false", 1)
    out = root / "run"
    result = CliRunner().invoke(
        app,
        ["wakeword", "train", "--phrase", "Smart  Mirror", "--out", str(out), "--no-progress",
         "--speech-commands", str(tone_data), "--positives", str(positives),
         "--negatives", str(negatives), *_settings(TINY)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "sanas stream" in result.output
    return out


def test_the_run_is_an_ordinary_run_of_the_phrase(wake_run: Path) -> None:
    model, config = load_run(wake_run)
    assert config.task == "wake:smart_mirror" and config.model == "tc-resnet8-sanas"
    assert kws_task(config.task).labels == ("_silence_", "_unknown_", "smart_mirror")
    assert model.num_classes == 3
    assert json.loads((wake_run / "imitation.json").read_text())["epochs"] == 1
    stored = read_operating_point(wake_run).architecture_threshold
    assert stored == load_recipe("wakeword").operating_point["architecture_threshold"]


def test_sanas_stream_listens_with_a_wake_word_run(wake_run: Path) -> None:
    wav = next((wake_run / "trainstream").glob("*.wav"))
    result = CliRunner().invoke(app, ["stream", str(wake_run), "--wav", str(wav), "--json"])
    assert result.exit_code == 0, result.output
    assert "steps over 60.0 s" in result.output  # the 1-minute training stream, listened to
    for line in result.output.splitlines():
        if line.startswith("{") and "label" in line:
            assert json.loads(line)["label"] in ("_unknown_", "smart_mirror")


def test_the_corpus_splits_synthetic_voices_and_holds_every_kind_of_clip(wake_run: Path) -> None:
    corpus = wake_run / "corpus"
    record = json.loads((corpus / "corpus.json").read_text())
    assert record["phrase"] == "smart mirror" and record["label"] == "smart_mirror"
    dataset = SpeechCommands(corpus)
    dataset.check_speaker_disjoint()  # no voice in two splits
    for split in ("training", "validation", "testing"):
        words = {clip.word for clip in dataset.clips(split)}
        assert "smart_mirror" in words and len(words) > 1, split  # positives and negatives
    training = dataset.counts()["training"]
    assert {"smart", "mirror", "mir", "ror"} <= set(training)  # the phrase's parts
    assert training["false_activations"] == 2  # one clip, real_copies=2
    assert record["real_clips"] == {"speech_commands": 6, "positives": 2, "negatives": 1}
    users = [c for c in dataset.clips("training") if c.speaker.startswith("user")]
    assert len(users) == 2 * 2 + 2 and all(c.split == "training" for c in users)
    assert any(p.name.startswith("real_") for p in dataset.background_paths)
    clip = read_wav(next((corpus / "smart_mirror").glob("*.wav")))
    assert len(clip) == SAMPLE_RATE
    examples = make_examples(dataset, "training", kws_task(record["task"]))
    negatives = sum(e.path is not None and e.path.parent.name != "smart_mirror" for e in examples)
    assert negatives == sum(n for w, n in training.items() if w != "smart_mirror")  # every one


def test_an_interrupted_run_resumes_without_building_its_corpus_again(
    tone_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sanas.kws.wakeword import train as wake_train

    out = tmp_path / "run"
    (out / "corpus.partial" / "junk").mkdir(parents=True)  # a corpus killed mid-way

    def killed(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(wake_train, "train_recipe", killed)
    with pytest.raises(KeyboardInterrupt):
        wake_train.train_wakeword("alexa", out, settings=TINY, progress=False)
    assert (out / "corpus" / "corpus.json").is_file() and not (out / "corpus.partial").exists()
    monkeypatch.undo()

    def never(*_: object, **__: object) -> None:
        raise AssertionError("the corpus was built again")

    monkeypatch.setattr(wake_train, "build_corpus", never)
    result = wake_train.train_wakeword("alexa", out, settings=TINY, progress=False)
    assert load_run(result.run_dir)[1].task == "wake:alexa"
    with pytest.raises(WakeWordError, match="holds a run for 'alexa'"):
        wake_train.train_wakeword("jarvis", out, settings=TINY, progress=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--phrase", "  "], "--phrase is empty"),
        (["--phrase", "hey, you"], "'hey,' is not a word"),
        (["--phrase", "alexa", "--positives", "nowhere"], "--positives nowhere: no such folder"),
        (["--phrase", "alexa", "--set", "corpus.voices=3"], "unknown setting 'corpus.voices'"),
        (["--phrase", "alexa", "--set", "corpus.noise=2"], "corpus.noise must be in [0, 1]"),
        (["--phrase", "alexa", "--set", "epochs=0"], "'epochs' must be >= 1"),
    ],
)
def test_bad_input_is_one_line_naming_it(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SANAS_SPEECH_COMMANDS", raising=False)
    result = CliRunner().invoke(
        app, ["wakeword", "train", "--out", "run", "--no-progress", *args, *_settings(TINY_CORPUS)]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_a_recording_that_does_not_decode_is_skipped_with_a_warning_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    positives = _recordings(tmp_path / "mine", 2)
    (positives / "broken.wav").write_bytes(b"RIFF not really")
    config = CorpusConfig.from_settings([s.removeprefix("corpus.") for s in TINY_CORPUS])
    with caplog.at_level(logging.WARNING):
        record = build_corpus("alexa", tmp_path / "corpus", positives=positives, config=config)
    assert record["real_clips"]["positives"] == 2
    assert any("broken.wav" in message for message in caplog.messages)
    (positives / "take0.flac").unlink()
    (positives / "take1.flac").unlink()
    with pytest.raises(WakeWordError, match="no audio clip that decodes"):
        build_corpus("alexa", tmp_path / "again", positives=positives, config=config)


def test_the_near_misses_are_parts_of_the_phrase() -> None:
    assert confusable_parts("computer") == ["compu", "puter"]
    assert confusable_parts("jarvis") == ["jar", "vis"]
    assert confusable_parts("hey jarvis") == ["hey", "jar", "jarvis", "vis"]
    assert confusable_parts("go") == []
    assert phrase_label(" Smart Mirror ") == "smart_mirror"


def test_a_long_recording_is_cut_to_its_loudest_second() -> None:
    audio = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)
    audio[SAMPLE_RATE + 800 : 2 * SAMPLE_RATE] = 0.5
    cut = loudest_second(audio)
    assert len(cut) == SAMPLE_RATE and np.count_nonzero(cut) == SAMPLE_RATE - 800
    assert len(loudest_second(audio[:100])) == SAMPLE_RATE


def test_a_wake_task_names_its_label_and_every_check_names_the_field() -> None:
    assert kws_task("wake:computer").labels == ("_silence_", "_unknown_", "computer")
    with pytest.raises(ConfigError, match="config field 'task' must be '12', '35' or 'wake:"):
        TrainConfig.from_dict({"data": "d", "out": "o", "task": "wake:Bad Label"})


def test_copies_of_the_run_folder_need_no_corpus(wake_run: Path, tmp_path: Path) -> None:
    """A run moved elsewhere without its (large) corpus still loads and streams."""
    moved = tmp_path / "moved"
    shutil.copytree(wake_run, moved, ignore=shutil.ignore_patterns("corpus", "pretrain"))
    config = load_run(moved)[1]
    assert kws_task(config.task).labels[-1] == "smart_mirror"
