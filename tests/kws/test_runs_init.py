"""``init_from`` across tasks: a 12-word network starts a wake word, all but its class head."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from sanas.kws.config import ConfigError, TrainConfig
from sanas.kws.runs import initialize_from, load_run, make_model, save_run

CLASSIFIER = ["modules_by_node.classifier.0.bias", "modules_by_node.classifier.0.weight"]


def config(out: Path, **fields: object) -> TrainConfig:
    """A tiny TC-ResNet8 configuration (width 2) writing to ``out``."""
    values = {"data": str(out / "data"), "out": str(out), "model": "tc-resnet8", "channels": 2}
    return TrainConfig.from_dict({**values, **fields})


@pytest.fixture
def twelve_words(tmp_path: Path) -> Path:
    """A run folder holding an (untrained, seeded) 12-class TC-ResNet8."""
    torch.manual_seed(0)
    source = config(tmp_path / "twelve", task="12")
    return save_run(make_model(source, 12), source)


@pytest.mark.parametrize("model", ["tc-resnet8", "tc-resnet8-bsn"])
def test_a_twelve_word_run_starts_a_wake_word_but_its_class_head(
    twelve_words: Path, tmp_path: Path, model: str, caplog: pytest.LogCaptureFixture
) -> None:
    wake = config(tmp_path / "wake", model=model, task="wake:computer", init_from=str(twelve_words))
    torch.manual_seed(1)
    target = make_model(wake, 3)
    fresh = {k: v.clone() for k, v in target.net.state_dict().items()}
    source, _ = load_run(twelve_words)

    with caplog.at_level(logging.WARNING):
        initialize_from(target, wake)

    ours, theirs = target.net.state_dict(), source.net.state_dict()
    for key in ours:
        expected = fresh[key] if key in CLASSIFIER or key not in theirs else theirs[key]
        assert torch.equal(ours[key], expected), key
    assert ours["modules_by_node.classifier.0.weight"].shape[0] == 3
    assert "12 classes, this run's 3" in caplog.text
    assert "left out (fresh): " + ", ".join(CLASSIFIER) in caplog.text


def test_a_network_of_other_widths_is_still_refused(twelve_words: Path, tmp_path: Path) -> None:
    wide = config(tmp_path / "wide", channels=3, task="wake:computer", init_from=str(twelve_words))
    with pytest.raises(ConfigError, match=r"'init_from'.*another super network"):
        initialize_from(make_model(wide, 3), wide)


def test_the_same_task_loads_every_tensor_without_a_notice(
    twelve_words: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    same = config(tmp_path / "same", task="12", init_from=str(twelve_words))
    target = make_model(same, 12)
    with caplog.at_level(logging.WARNING):
        initialize_from(target, same)
    source, _ = load_run(twelve_words)
    assert torch.equal(
        target.net.state_dict()[CLASSIFIER[1]], source.net.state_dict()[CLASSIFIER[1]]
    )
    assert "left out" not in caplog.text
