"""Train a SANAS controller to imitate a gate that knew the answer (imitation learning).

REINFORCE rewards each step's architecture on that step's cross-entropy. On a stream what
counts is a detection, made of the posteriors of several steps averaged over 500 ms: the
per-step reward does not say which steps of a word to spend on, and a search spends its
budget on windows that are right but rarely confident enough to fire (results in the
README). A gate that knows the ground truth of a stream does know: run the full network
on the steps best aligned with each word (``"aligned"``), or on the fewest steps that make
the detector fire on it (``"hindsight"``, :func:`~sanas.lab.oracle.hindsight_gate`). With
output reuse (:mod:`sanas.supernet.reuse`) one or two such steps per word fill the
detector's 500 ms window. Here the controller learns to predict that gate's choice from
what it sees at run time, the previous step's feature tap: supervised learning on
per-step targets, with DAgger-style roll-ins (Ross et al., 2011) so that it also learns
from the states its own choices lead to.

The aligned gate depends on the ground truth alone, so a stream of the training
speakers serves. The hindsight gate depends on the network's posteriors, which are better
on the speakers it trained on: there it spends less than new speakers need.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from sanas.kws.data.audio import SAMPLE_RATE, read_wav
from sanas.kws.data.speech_commands import kws_task
from sanas.kws.data.stream_file import read_stream_labels
from sanas.kws.evaluation.metrics import DetectionConfig
from sanas.kws.model.kws_model import SANASKWS, KWSModel
from sanas.kws.model.operating_point import OperatingPoint
from sanas.kws.runs import RunResult, sanas_from_run, save_run
from sanas.kws.training.gates import (
    HindsightCount,
    gate_tiers,
    hindsight_gate_within,
    run_tiers,
    speech_steps,
)

GateKind = Literal["aligned", "hindsight"]
GATE_KINDS: tuple[str, ...] = ("aligned", "hindsight")

IMITATION_RECORD = "imitation.json"  # written last: a finished imitation run


@dataclass
class GateExample:
    """One stream seen through two tiers of a network, and the steps a gate spent on:
    ``expensive`` / ``cheap`` feature taps (T, F) and ``gate`` (T,) booleans."""

    expensive: np.ndarray
    cheap: np.ndarray
    gate: np.ndarray

    def __post_init__(self) -> None:
        steps = self.gate.shape[0]
        if self.expensive.shape != self.cheap.shape or self.expensive.shape[0] != steps:
            raise ValueError(
                f"expensive {self.expensive.shape} and cheap {self.cheap.shape} features "
                f"need one row per gate step ({steps})"
            )


def gate_example(
    model: KWSModel,
    labels: Sequence[str],
    wav_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    gate: GateKind = "aligned",
    reuse_steps: int = 0,
    min_overlap_ms: float = 800.0,
    budget_per_step: float | None = None,
    count: HindsightCount = "correct",
    config: DetectionConfig | None = None,
) -> GateExample:
    """A stream's :class:`GateExample`: ``model``'s full and cheap tiers, and the steps on
    which a gate that knows the ground truth runs the full one. ``"aligned"``: the steps
    whose window overlaps a word by more than ``min_overlap_ms`` (two per word at 800),
    whatever the network says; ``"hindsight"``: :func:`~sanas.lab.oracle.hindsight_gate`,
    the fewest steps that make the detector fire on each word (``count``), within
    ``budget_per_step`` MACs per step on average (``None``: as many as the words need)."""
    if gate not in GATE_KINDS:
        raise ValueError(f"gate must be one of {GATE_KINDS}, got {gate!r}")
    tiers = gate_tiers(model)
    audio = read_wav(wav_path)
    duration_ms = 1000.0 * len(audio) / SAMPLE_RATE
    ground_truth = read_stream_labels(  # a stream without words: the gate spends nothing
        labels_path, words=labels, duration_ms=duration_ms, allow_empty=True
    )
    runs = run_tiers(model, audio, tiers)
    full, cheap = runs["full"], runs["cheap"]
    if gate == "aligned":
        spend = speech_steps(full.times_ms, [time for _, time in ground_truth], min_overlap_ms)
    else:
        spend = hindsight_gate_within(
            full, cheap, labels, ground_truth, budget_per_step, config, count, reuse_steps
        )
    return GateExample(full.features, cheap.features, spend)


def _chunks(example: GateExample, steps: int) -> tuple[Tensor, Tensor, Tensor]:
    """The example cut into whole chunks of ``steps``: (n, steps, F) twice, (n, steps)."""
    count = len(example.gate) // steps
    if count == 0:
        raise ValueError(f"a stream of {len(example.gate)} steps is shorter than one chunk")
    cut = count * steps

    def shaped(array: np.ndarray) -> Tensor:
        return torch.as_tensor(array[:cut], dtype=torch.float32).view(count, steps, -1)

    return shaped(example.expensive), shaped(example.cheap), shaped(example.gate).squeeze(-1)


def imitate_gate(
    model: SANASKWS,
    examples: Sequence[GateExample],
    epochs: int = 20,
    chunk_steps: int = 150,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train ``model``'s controller to choose, at each step, the full tier where the gate
    did and the cheap tier elsewhere: binary cross-entropy on each stochastic node's
    probability, its bias starting from the targets' base rate; the network's weights do
    not change. Streams are cut into chunks of ``chunk_steps``; each chunk starts from the
    controller's initial state. Over the first half of the epochs the controller is fed
    the features of the gate's choices with a probability falling from 1 to 0 (teacher
    forcing), else those of its own sampled choices (roll-in), as it will be fed at run
    time. Returns the mean loss (summed over nodes) of each epoch."""
    if epochs < 1 or chunk_steps < 1 or batch_size < 1:
        raise ValueError("epochs, chunk_steps and batch_size must be at least 1")
    if not examples:
        raise ValueError("imitation needs at least one example stream")
    net, tiers = model.net, gate_tiers(model)
    expensive_on = net.architecture_of(tiers["full"]).float()
    cheap_on = net.architecture_of(tiers["cheap"]).float()
    deciding = expensive_on != cheap_on  # the nodes whose choice is the gate's
    parts = [_chunks(example, chunk_steps) for example in examples]
    expensive, cheap, gate = (torch.cat(column) for column in zip(*parts, strict=True))
    controller = model.controller
    share = gate.mean()
    rate = (share * expensive_on + (1 - share) * cheap_on).clamp(1e-3, 1 - 1e-3)
    with torch.no_grad():  # start from the gate's base rates, not from "every node on"
        controller.head.bias.copy_(torch.logit(rate))
    optimizer = torch.optim.Adam(model.architecture_parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.eval()  # the network's dropout stays off; only the controller learns
    losses = []
    for epoch in tqdm(range(epochs), disable=not progress, unit="epoch", desc="imitation"):
        teacher = max(0.0, 1.0 - 2.0 * epoch / epochs)
        order = torch.randperm(len(gate), generator=generator)
        total = 0.0
        for begin in range(0, len(order), batch_size):
            rows = order[begin : begin + batch_size]
            hidden, previous, loss = None, None, torch.zeros(())
            for t in range(chunk_steps):
                distribution, hidden = controller.step(previous, hidden, len(rows))
                spend = gate[rows, t].unsqueeze(1)
                target = spend * expensive_on + (1 - spend) * cheap_on
                per_node = F.binary_cross_entropy_with_logits(
                    distribution.logits, target, reduction="none"
                )
                loss = loss + per_node.sum(dim=1).mean()  # each node learns at the full rate
                with torch.no_grad():
                    own = torch.bernoulli(
                        distribution.probs[:, deciding].mean(dim=1), generator=generator
                    )
                    forced = torch.rand(len(rows), generator=generator) < teacher
                    chosen = torch.where(forced, gate[rows, t], own).bool().unsqueeze(1)
                previous = torch.where(chosen, expensive[rows, t], cheap[rows, t])
            optimizer.zero_grad()
            (loss / chunk_steps).backward()
            optimizer.step()
            total += loss.item() / chunk_steps * len(rows)
        losses.append(total / len(gate))
    return losses


def imitation_run(
    source_run: str | os.PathLike[str],
    streams: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    gate: GateKind = "aligned",
    reuse_steps: int = 2,
    min_overlap_ms: float = 800.0,
    budget_per_step: float | None = None,
    count: HindsightCount = "correct",
    epochs: int = 20,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """A SANAS run folder at ``out`` on the trained network of ``source_run`` (e.g. static
    + shortcuts), its controller imitating ``gate`` (:func:`gate_example`) on ``streams``
    (folders with stream.wav and labels.txt, from speakers of the training list), and
    evaluated with ``reuse_steps``. It loads like any run (:func:`~sanas.kws.runs.load_run`);
    its imitation.json records the settings, the gates' shares of steps, the losses and the
    seconds it all took."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    model, config = sanas_from_run(source_run, out=str(out), seed=seed)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)  # as train(): batch-1 steps, a busy machine
    try:
        labels = kws_task(config.task).labels
        examples = [
            gate_example(
                model,
                labels,
                Path(stream) / "stream.wav",
                Path(stream) / "labels.txt",
                gate,
                reuse_steps,
                min_overlap_ms,
                budget_per_step,
                count,
            )
            for stream in tqdm(streams, disable=not progress, unit="stream", desc="gates")
        ]
        losses = imitate_gate(model, examples, epochs=epochs, lr=lr, seed=seed, progress=progress)
    finally:
        torch.set_num_threads(threads)
    record = {
        "source_run": str(source_run),
        "streams": [str(stream) for stream in streams],
        "gate": gate,
        "gate_share": [float(example.gate.mean()) for example in examples],
        "reuse_steps": reuse_steps,
        "min_overlap_ms": min_overlap_ms,
        "budget_per_step": budget_per_step,
        "count": count,
        "epochs": epochs,
        "lr": lr,
        "losses": losses,
        "seconds": time.perf_counter() - start,
    }
    return save_run(model, config, OperatingPoint(reuse_steps=reuse_steps), imitation=record)


def imitation_result(run_dir: str | os.PathLike[str]) -> RunResult:
    """The :class:`~sanas.kws.runs.RunResult` of a finished imitation run: one history entry
    per imitation epoch (its loss and seconds) and no validation accuracy (NaN)."""
    run_dir = Path(run_dir)
    record = json.loads((run_dir / IMITATION_RECORD).read_text())
    losses = record["losses"]
    history = [
        {"epoch": i + 1, "seconds": record["seconds"] / len(losses), "loss": loss}
        for i, loss in enumerate(losses)
    ]
    return RunResult(run_dir, history, [], len(losses), math.nan, math.nan)
