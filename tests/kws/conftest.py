"""Fixtures of the keyword-spotting tests: ``tone_data`` is in tests/conftest.py, shared with
the command-line tests; ``one_thread`` pins torch to one thread for a module; ``real_run``
and ``real_stream`` are a model trained on the real Speech Commands subset and a real
stream, shared by the export tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Small models at small batches: a second torch thread only waits on a busy core (slow
    on a shared machine). Modules use it with ``pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def real_run(speech_commands_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static network with shortcuts, one short epoch on 512 real training clips."""
    from sanas.kws.config import TrainConfig
    from sanas.kws.training.loop import train

    out = tmp_path_factory.mktemp("real_run") / "run"
    config = {"data": str(speech_commands_root), "out": str(out), "model": "static-shortcuts",
              "epochs": 1, "batch_size": 32, "channels": 8, "threads": 1, "workers": 0,
              "progress": False, "limit_train": 512, "limit_val": 64}  # fmt: skip
    train(TrainConfig.from_dict(config))
    return out


@pytest.fixture(scope="session")
def real_stream(speech_commands_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One minute of real test words on background noise (stream.wav, labels.txt)."""
    from sanas.kws.data.stream_file import generate_streaming_test

    out = tmp_path_factory.mktemp("real_stream")
    generate_streaming_test(speech_commands_root, out, minutes=1.0, seed=0)
    return out
