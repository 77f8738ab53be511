"""Training on two processes (gloo, as torchrun starts them) gives one process's result at
the same global batch, resumes, and only the first process writes the run folder."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sanas.kws.config import ConfigError, TrainConfig
from sanas.kws.run_files import load_weights
from sanas.kws.training import distributed
from sanas.kws.training.loop import train
from sanas.kws.training.recipes import train_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, world: int, port: int) -> None:
    """What torchrun sets for each process."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))  # fmt: skip


def _train_rank(rank: int, world: int, port: int, config: dict[str, Any], report: str) -> None:
    """A torchrun process: train, then write what it returned to ``report``-RANK.json."""
    _join(rank, world, port)
    torch.set_num_threads(1)
    result = train(TrainConfig.from_dict(config))
    Path(f"{report}-{rank}.json").write_text(json.dumps(result.history))


def _average_rank(rank: int, world: int, port: int, report: str) -> None:
    """Process r has gradients on ``a`` (r + 1 everywhere) with weight r + 1; ``b`` only on
    rank 1; ``c`` nowhere."""
    _join(rank, world, port)
    with distributed.process_group(torch.device("cpu")):
        model = torch.nn.ParameterDict({k: torch.nn.Parameter(torch.zeros(2)) for k in "abc"})
        model["a"].grad = torch.full((2,), float(rank + 1))
        if rank == 1:
            model["b"].grad = torch.ones(2)
        distributed.average_gradients(model, weight=rank + 1)
        grads = {k: None if p.grad is None else p.grad.tolist() for k, p in model.items()}
        Path(f"{report}-{rank}.json").write_text(json.dumps(grads))
    assert not dist.is_initialized()


def _spawn(function: Any, *args: Any) -> None:
    mp.spawn(function, args=(2, _free_port(), *args), nprocs=2, join=True)


def _config(data: Path, out: Path, epochs: int) -> dict[str, Any]:
    return {"data": str(data), "out": str(out), "model": "static-shortcuts", "epochs": epochs,
            "batch_size": 8, "channels": 2, "workers": 0, "progress": False}  # fmt: skip


def test_two_processes_train_as_one_at_the_same_global_batch_and_resume(
    tone_data: Path, tmp_path: Path
) -> None:
    single = train(TrainConfig.from_dict(_config(tone_data, tmp_path / "one", 2)))
    both = tmp_path / "two"
    report = str(tmp_path / "report")
    _spawn(_train_rank, _config(tone_data, both, 1), report)  # killed after epoch 1, say
    _spawn(_train_rank, _config(tone_data, both, 2), report)  # the same command resumes
    ours = load_weights(both, "checkpoint.pt", "")["model"]
    theirs = load_weights(single.run_dir, "checkpoint.pt", "")["model"]
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    history = [json.loads(line) for line in (both / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2]
    for mine, one in zip(history, single.history, strict=True):
        assert mine["val_accuracy"] == pytest.approx(one["val_accuracy"], abs=1e-6)
        assert mine["val_loss"] == pytest.approx(one["val_loss"], rel=1e-4)
    # each process returned the first one's result; the first alone wrote the run folder
    returned = [json.loads(Path(f"{report}-{rank}.json").read_text()) for rank in (0, 1)]
    assert returned[0] == returned[1] == history
    assert not (both / ".lock").exists()


def test_gradients_are_averaged_by_real_steps_and_an_unused_parameter_keeps_none(
    tmp_path: Path,
) -> None:
    report = str(tmp_path / "grads")
    _spawn(_average_rank, report)
    grads = [json.loads(Path(f"{report}-{rank}.json").read_text()) for rank in (0, 1)]
    assert grads[0] == grads[1]
    assert grads[0]["a"] == [pytest.approx((1 * 1 + 2 * 2) / 3)] * 2  # weighted by steps
    assert grads[0]["b"] == [pytest.approx(2 / 3)] * 2  # rank 0 had none: zero there
    assert grads[0]["c"] is None  # no process had one: the optimizer leaves it alone


def test_each_process_takes_its_share_of_every_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    order = list(range(11))
    monkeypatch.setenv("WORLD_SIZE", "2")
    shares = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        shares.append(distributed.shard_batches(order, 4))
    assert shares == [[[0, 2], [4, 6], [8, 10]], [[1, 3], [5, 7], [9]]]
    assert distributed.shard_batches(list(range(9)), 4)[-1] == [5, 7]  # [8]: too few, left out
    with pytest.raises(ConfigError, match="'batch_size' \\(5\\) must be a multiple of the 2"):
        distributed.shard_batches(order, 5)


def test_a_recipe_that_imitates_is_refused_under_torchrun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="imitates on one process: run it without torchrun"):
        train_recipe("kws-efficient-sanas", tmp_path / "data", tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before any stage starts
