"""The timed cases of the streaming benchmark (:mod:`sanas.lab.bench_streaming`).

Runners that take one 200 ms chunk at a time (the features alone, the reference's
per-window computation, many streams batched; an engine is one too), timed in
interleaved rounds so that a busy neighbour slows all of them alike; where a running
engine's time goes, node by node; the bandwidth of a batch-1 matrix-vector product; the
real-time factor of the whole pipeline; training windows per second.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sanas.kws.data.features import MFCC
from sanas.kws.evaluation.metrics import detect
from sanas.kws.model.networks import cnn_trad_fpool3
from sanas.kws.model.window_forward import (
    STEP_FRAMES,
    WINDOW_FRAMES,
    forward_windows_plain,
    forward_windows_shared,
)
from sanas.kws.streaming.engine import MultiStreamEngine, StepResult, StreamingEngine
from sanas.kws.streaming.frontend import IncrementalFeatures
from sanas.supernet.costs import MacsCost
from sanas.supernet.executors import run_skipping
from sanas.supernet.graph import SuperNetwork
from sanas.supernet.policies import ArchitecturePolicy

SAMPLE_RATE = 16000
CHUNK = STEP_FRAMES * 160  # 200 ms of audio
CONVOLUTIONS = ("conv_0", "conv_1")  # compute-bound; every other weighted node is dense
RTF_SECONDS = 120.0  # the real-time factor's stretch of audio (from the start) ...
RTF_PASSES = 5  # ... and its timed passes over it, after a warm-up pass (median)


# ------------------------------------------------------------------------------ runners
class FeaturesOnly:
    """Incremental MFCC alone: what every configuration pays per step."""

    def __init__(self) -> None:
        self.features = IncrementalFeatures(MFCC())

    def reset(self) -> None:
        """Start a new stream."""
        self.features.reset()

    def feed(self, chunk: Tensor) -> list[None]:
        """Compute a chunk's frames; one step without results."""
        self.features.push([chunk])
        return [None]


@dataclass(frozen=True)
class _Macs:
    macs_window: float
    macs_executed: float


class ReferenceWindows:
    """The reference's per-window computation: incremental MFCC, then every node of the
    network on each 101-frame window, in the model's own (NCHW) layout."""

    def __init__(self, net: SuperNetwork) -> None:
        self.net = net
        self.used = net.used(None, 1)
        macs = float(MacsCost(net)(self.used)[0])
        self.macs = _Macs(macs, macs)
        self.features = IncrementalFeatures(MFCC())
        self.frames = torch.zeros(0, 40)

    def reset(self) -> None:
        """Start a new stream."""
        self.features.reset()
        self.frames = torch.zeros(0, 40)

    @torch.inference_mode()
    def feed(self, chunk: Tensor) -> list[_Macs]:
        """Run every window the chunk completes; their MACs."""
        self.frames = torch.cat([self.frames, self.features.push([chunk])[0]])
        steps = []
        while len(self.frames) >= WINDOW_FRAMES:
            window = self.frames[:WINDOW_FRAMES].reshape(1, 1, WINDOW_FRAMES, -1)
            run_skipping(self.net, window, self.used)
            steps.append(self.macs)
            self.frames = self.frames[STEP_FRAMES:]
        return steps


class ManyStreams:
    """``streams`` streams fed the same chunks in step: one batch per step (a server)."""

    def __init__(self, net: SuperNetwork, policy: ArchitecturePolicy | None, streams: int):
        self.engine = MultiStreamEngine(net, policy, streams=streams)

    def reset(self) -> None:
        """Start new streams."""
        self.engine.reset()

    def feed(self, chunk: Tensor) -> list[StepResult]:
        """Feed the chunk to every stream; the first stream's steps."""
        return self.engine.feed([chunk] * len(self.engine.streams))[0]


# ------------------------------------------------------------------------------- timing
@dataclass
class Timed:
    """Per-step samples of one configuration."""

    runner: Any
    seconds: list[float] = field(default_factory=list)
    macs_window: list[float] = field(default_factory=list)
    macs_executed: list[float] = field(default_factory=list)
    position: int = 0

    def ms(self) -> float:
        """Median ms per step."""
        return 1e3 * statistics.median(self.seconds)

    def row(self, features_ms: float) -> dict[str, float]:
        """The configuration's JSON row: median and mean ms per step, the median beyond
        ``features_ms``, the steps timed and, where the runner counts them, mean MACs."""
        ms = self.ms()
        row = {
            "ms": ms,
            "ms_mean": 1e3 * statistics.fmean(self.seconds),
            "ms_beyond_features": ms - features_ms,
            "steps_timed": float(len(self.seconds)),
        }
        if self.macs_window:
            row["macs"] = statistics.fmean(self.macs_window)
            row["macs_executed"] = statistics.fmean(self.macs_executed)
        return row

    def restart(self, chunks: list[Tensor], warmup: int) -> None:
        """Reset the runner and feed it the first ``warmup`` chunks, untimed."""
        self.runner.reset()
        for chunk in chunks[:warmup]:
            self.runner.feed(chunk)
        self.position = warmup

    def time_next(self, chunks: list[Tensor], warmup: int) -> None:
        """Feed the next chunk (restarting at the end of the audio); record it when it
        completes exactly one step."""
        if self.position == len(chunks):
            self.restart(chunks, warmup)
        chunk = chunks[self.position]
        self.position += 1
        start = time.perf_counter()
        steps = self.runner.feed(chunk)
        elapsed = time.perf_counter() - start
        if len(steps) == 1:
            self.seconds.append(elapsed)
            if steps[0] is not None:
                self.macs_window.append(steps[0].macs_window)
                self.macs_executed.append(steps[0].macs_executed)


def time_steps(
    runners: Mapping[str, Any], chunks: list[Tensor], rounds: int, per_round: int
) -> dict[str, Timed]:
    """Feed every runner ``per_round`` chunks per round, in turn, timing each step.

    Only chunks that complete exactly one step count; a runner that reaches the end of the
    audio restarts (its first windows warm up untimed).
    """
    timed = {name: Timed(runner) for name, runner in runners.items()}
    warmup = -(-WINDOW_FRAMES // STEP_FRAMES) + 2
    for entry in timed.values():
        entry.restart(chunks, warmup)
    for _ in range(rounds):
        for entry in timed.values():
            for _ in range(per_round):
                entry.time_next(chunks, warmup)
    return timed


def static_by_threads(net: SuperNetwork, chunks: list[Tensor], per_round: int) -> dict[str, float]:
    """Median ms of the static cached step with 1 and with 2 threads (batch-1 latency)."""
    result = {}
    for count in sorted({1, min(2, torch.get_num_threads())}):
        torch.set_num_threads(count)
        engine = StreamingEngine(net)
        with torch.inference_mode():
            result[str(count)] = time_steps({"static": engine}, chunks, 4, per_round)["static"].ms()
    return result


# ---------------------------------------------------------------------------- breakdown
def node_breakdown(
    engine: StreamingEngine, chunks: list[Tensor], steps: int = 40
) -> dict[str, Any]:
    """Where the time goes in a running engine with a fixed architecture: the median ms
    per step of each node's kernel (forward hooks), its executed MACs and weight bytes per
    step in the steady state, the resulting GMAC/s and GB/s (``nodes``); and, in the same
    run, the median ms of the whole step and of the features alone (``step_ms``,
    ``features_ms``), so that the rest is the per-step overhead."""
    core = engine.engine
    starts: dict[str, float] = {}
    seconds: dict[str, list[float]] = {}

    def before(name: str) -> Callable[..., None]:
        return lambda *_: starts.__setitem__(name, time.perf_counter())

    def after(name: str) -> Callable[..., None]:
        return lambda *_: seconds.setdefault(name, []).append(time.perf_counter() - starts[name])

    handles = []
    for name, kernel in core.kernels.items():
        handles.append(kernel.register_forward_pre_hook(before(name)))
        handles.append(kernel.register_forward_hook(after(name)))
    try:
        step_seconds, feature_seconds = _step_and_feature_seconds(engine, chunks, steps)
    finally:
        for handle in handles:
            handle.remove()
    nodes = {}
    for name, samples in seconds.items():
        ms = 1e3 * statistics.median(samples[2:])  # the first steps fill the caches
        macs = core.costs.per_node[name]
        if core.cache and name in core.row_macs:
            macs = core.row_macs[name] * core.step_frames
        weight = weight_bytes(core.net, name)
        nodes[name] = {
            "ms": ms,
            "macs_executed": macs,
            "gmacs_per_s": macs / ms / 1e6,
            "weight_bytes": weight,
            "gb_per_s": weight / ms / 1e6,
        }
    return {
        "nodes": nodes,
        "step_ms": 1e3 * statistics.median(step_seconds),
        "features_ms": 1e3 * statistics.median(feature_seconds),
    }


def _step_and_feature_seconds(
    engine: StreamingEngine, chunks: list[Tensor], steps: int
) -> tuple[list[float], list[float]]:
    """Seconds of each of ``steps`` engine steps (after 8 chunks of warm-up) and of the
    features alone on the same chunk."""
    features = FeaturesOnly()
    step_seconds: list[float] = []
    feature_seconds: list[float] = []
    engine.reset()
    for k, chunk in enumerate(chunks[: steps + 8]):
        start = time.perf_counter()
        completed = engine.feed(chunk)
        middle = time.perf_counter()
        features.feed(chunk)
        if k >= 8 and len(completed) == 1:
            step_seconds.append(middle - start)
            feature_seconds.append(time.perf_counter() - middle)
    return step_seconds, feature_seconds


def weight_bytes(net: SuperNetwork, name: str) -> float:
    """Bytes of a node's parameters: what a batch-1 step reads from memory to run it."""
    module = net.nodes[name].module
    return float(sum(p.numel() * p.element_size() for p in module.parameters())) if module else 0.0


def gemv_bandwidth(rows: int = 128, columns: int = 57_728, repeats: int = 40) -> dict[str, float]:
    """GB/s of the batch-1 fp32 matrix-vector product (``addmv``) of a shortcut_1-sized
    weight (29.5 MB) and of one 2x smaller (14.8 MB, the size of half of L3), at 1 and 2
    threads, interleaved: the memory bandwidth that bounds every batch-1 dense layer."""
    weights = {"full": torch.randn(rows, columns), "half": torch.randn(rows, columns // 2)}
    bias = torch.randn(rows)
    samples: dict[str, list[float]] = {}
    default = torch.get_num_threads()
    try:
        for _ in range(repeats):
            for threads in sorted({1, min(2, os.cpu_count() or 1)}):
                torch.set_num_threads(threads)
                for size, weight in weights.items():
                    vector = torch.randn(weight.shape[1])
                    start = time.perf_counter()
                    torch.addmv(bias, weight, vector)
                    elapsed = time.perf_counter() - start
                    key = f"{size}_{threads}_thread"
                    samples.setdefault(key, []).append(weight.numel() * 4 / elapsed / 1e9)
    finally:
        torch.set_num_threads(default)
    return {key: statistics.median(values) for key, values in samples.items()}


# ------------------------------------------------------------------- pipeline, training
def real_time_factor(
    engine: StreamingEngine,
    audio: np.ndarray,
    labels: list[str],
    seconds: float = RTF_SECONDS,
    passes: int = RTF_PASSES,
) -> float:
    """Wall time of audio in → detections out over the duration of the audio: the median
    of ``passes`` passes over the first ``seconds`` of ``audio`` (all of it if shorter),
    after one untimed warm-up pass; each pass starts a fresh stream (``run`` resets the
    engine): a single pass that includes the first call's warm-up reads high and varies
    with the machine's load."""
    if passes < 1:
        raise ValueError(f"passes must be at least 1, got {passes}")
    audio = audio[: int(seconds * SAMPLE_RATE)]
    times = []
    with torch.inference_mode():
        for timed in [False] + [True] * passes:
            start = time.perf_counter()
            run = engine.run(audio)
            detect(run.times_ms, run.posteriors, labels)
            if timed:
                times.append(time.perf_counter() - start)
    return statistics.median(times) / (len(audio) / SAMPLE_RATE)


def training_rate(
    batch: int = 16, seconds: float = 3.0, rounds: int = 4, seed: int = 0
) -> dict[str, float]:
    """Training windows per second (forward + backward, random per-window architectures)
    of the super network with shortcuts, plain vs shared convolutions."""
    torch.manual_seed(seed)
    net = cnn_trad_fpool3(shortcuts=True).train()
    frames = 1 + int(seconds * SAMPLE_RATE) // 160
    steps = (frames - WINDOW_FRAMES) // STEP_FRAMES + 1
    features = torch.randn(batch, frames, 40)
    architecture = (torch.rand(batch * steps, net.num_stochastic) < 0.8).float()
    for name in ("in", "features", "classifier"):
        architecture[:, net.stochastic_names.index(name)] = 1.0
    used = net.used(architecture, batch * steps).view(batch, steps, -1)
    targets = torch.randint(0, 12, (batch * steps,))
    runs = {"plain": forward_windows_plain, "shared": forward_windows_shared}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds + 1):  # the first round warms up
        for name, run in runs.items():
            start = time.perf_counter()
            net.zero_grad()
            output = run(net, features, used).output
            torch.nn.functional.cross_entropy(output.flatten(0, 1), targets).backward()
            if r:
                times[name].append(time.perf_counter() - start)
    rate = {name: batch * steps / statistics.median(t) for name, t in times.items()}
    return {**rate, "speedup": rate["shared"] / rate["plain"], "windows_per_batch": batch * steps}
