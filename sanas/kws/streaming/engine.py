"""Streaming inference: audio chunks in, one posterior row per 200 ms step out, computing
only what is new.

The engine runs a trained super network (static, BSN or SANAS) over live audio at batch
size 1, or over many streams at once, and does real work only where the papers count it:

- **Features, incrementally.** An MFCC frame k is the 480-sample window centred on sample
  160·k. The engine keeps the audio tail and runs the frontend on tail + new chunk, keeping
  the frames whose window lies entirely inside, so every frame equals the frontend's frame
  over the whole stream -- the stream's first frames too, as the engine starts from the
  same zero padding that the frontend's centring adds. Frame k is known once sample
  160·k + 240 has arrived (15 ms look-ahead), so with 200 ms chunks step t is emitted after
  chunk t + 6, not t + 5. The frontend's last frames, centred within 240 samples of the
  end, see the zero padding of the end: :meth:`MultiStreamEngine.flush` adds it, and then
  the stream has exactly the frontend's frames and windows.
- **Row caches.** conv_0 and conv_1 have stride 1 in time and no time pooling (the trunk of
  :func:`~sanas.kws.model.window_forward.trunk_layout`): row r of step t's output is row
  20·t + r of the stream. Each stream keeps the rows of the last window each trunk node
  computed, time-major (time, width, channels), in a buffer where a window is a contiguous
  slice (no copy per step); a step computes only the rows it lacks: 20 per node when the
  node ran at the previous step, more when it was off in between (all of them after 5
  steps off).
- **Kernels.** The nodes run as :mod:`sanas.kws.streaming.row_kernels` made from their modules at
  construction (:attr:`MultiStreamEngine.kernels`): a cached step's 20 rows of a
  convolution as one GEMM over their patches for one stream (the network's own
  convolution for a batch of streams, whose patch matrix would outgrow the caches), with
  pooling, bias and ReLU fused after it;
  dense layers fed by the trunk on its time-major rows (their weights' columns permuted
  once, refreshed when a weight changes); batch-1 dense layers as matrix-vector products;
  any other node's ``Sequential`` as a flat chain of calls, each batch norm folded into
  the convolution or linear layer before it and a small batch-1 convolution as one GEMM
  (a small network's step, TC-ResNet8's, is mostly per-call overhead).
- **Skipping.** The step's used set comes from a policy (:class:`ArchitecturePolicy`). Each
  distinct used set is resolved once into a plan (:mod:`sanas.kws.streaming.plan`): its used
  trunk nodes and the other used nodes in topological order, with their inputs and
  layouts; no unused node is ever computed. A fixed architecture (no policy,
  :class:`FixedPolicy`) is resolved once, not at every step.
- **MACs.** Each step reports the paper's per-window count (:class:`MacsCost` on the used
  set, the reference accounting) and the MACs actually executed (trunk nodes charged per
  computed row): for a static cnn-trad-fpool3 step with warm caches, 6.76M (conv_0) +
  26.2M (conv_1) + 1.2M (lin_0) + 5.6K instead of 124.6M.
- **Many streams.** :class:`MultiStreamEngine` keeps state per stream and batches the
  streams whose current step has the same used set and the same missing rows.

Outputs equal the window-by-window computation
(:func:`~sanas.kws.model.window_forward.forward_windows_plain` on the frontend's features over
the whole stream) to float rounding (summation order). The network must be in eval mode, on
the CPU.

Speed at batch 1 (``sanas bench streaming``): the convolutions are compute-bound, but a
dense layer reads each fp32 weight once per step for one MAC (memory-bound: shortcut_1
alone is 29.5 MB), so a tier's time follows its MACs only as far as its weight bytes
follow them; the benchmark measures both.

Threads: a batch-1 step is a chain of small operations; when the machine's other cores are
busy, a second torch thread makes each of them wait for a descheduled helper (measured on
a shared 2-core machine: 2.8 to 100 ms per static cached step with 2 threads, 2.2 ms with
1). Stream with ``torch.set_num_threads(1)``; ``sanas bench streaming`` measures both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from sanas.kws.data.features import MFCC, LogMel
from sanas.kws.model.window_forward import STEP_FRAMES, TrunkLayout, trunk_layout
from sanas.kws.streaming.frontend import IncrementalFeatures, cat_batch
from sanas.kws.streaming.plan import Plan, Planner, StreamState
from sanas.supernet.costs import MacsCost
from sanas.supernet.graph import SuperNetwork
from sanas.supernet.policies import ArchitecturePolicy, FixedPolicy

AudioChunk = np.ndarray | Tensor
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _inference(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``method`` in inference mode, entering it only when it is not on already
    (entering costs about 5 µs per call: a few percent of a batch-1 step's overhead)."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        if torch.is_inference_mode_enabled():
            return method(*args, **kwargs)
        with torch.inference_mode():
            return method(*args, **kwargs)

    return wrapper


def engine_for_model(
    model: nn.Module,
    cache: bool = True,
    policy: ArchitecturePolicy | None = None,
    budget: float | None = None,
) -> StreamingEngine:
    """A batch-1 :class:`StreamingEngine` that reproduces a trained
    :class:`~sanas.kws.model.kws_model.KWSModel` in evaluation: its policy, logit transform,
    input normalisation and output reuse. ``policy`` replaces the model's own (e.g. a
    fixed tier); ``budget``: a SANAS model's mean MACs per step, held
    (:meth:`~sanas.kws.model.kws_model.KWSModel.streaming_policy`)."""
    own_policy = model.streaming_policy(budget)
    return StreamingEngine(
        model.net,
        own_policy if policy is None else policy,
        cache=cache,
        logit_transform=model.logits,
        input_transform=model.input_norm,
        reuse_steps=model.reuse_steps,
    )


# ------------------------------------------------------------------------------ results
@dataclass
class StepResult:
    """One step of one stream: the window of frames 20·step … 20·step + 100.

    ``time_ms`` is the start of the window (the convention of
    :func:`~sanas.kws.evaluation.metrics.detect`).
    """

    step: int
    time_ms: float
    logits: Tensor
    posteriors: Tensor
    architecture: Tensor
    features: Tensor
    macs_window: float
    macs_executed: float


@dataclass
class StreamRun:
    """A whole stream's steps as arrays: (T,) times, (T, C) logits and posteriors, (T, S)
    architectures, (T,) MACs per window and executed, (T, F) feature taps."""

    times_ms: np.ndarray
    logits: np.ndarray
    posteriors: np.ndarray
    architectures: np.ndarray
    macs_window: np.ndarray
    macs_executed: np.ndarray
    features: np.ndarray

    @classmethod
    def from_steps(cls, steps: Sequence[StepResult]) -> StreamRun:
        """Stack step results (at least one)."""
        return cls(
            np.array([s.time_ms for s in steps]),
            torch.stack([s.logits for s in steps]).numpy(),
            torch.stack([s.posteriors for s in steps]).numpy(),
            torch.stack([s.architecture for s in steps]).numpy(),
            np.array([s.macs_window for s in steps]),
            np.array([s.macs_executed for s in steps]),
            torch.stack([s.features for s in steps]).numpy(),
        )


# ------------------------------------------------------------------------------- engine
class MultiStreamEngine:
    """Runs ``streams`` independent audio streams through ``net`` step by step.

    The engine computes with kernels made from the network's modules at construction
    (:mod:`sanas.kws.streaming.row_kernels`, in :attr:`kernels`); kernels that reorder a weight
    refresh their copy whenever the weight changes.

    Args:
        net: the super network, in eval mode.
        policy: chooses each step's architecture (``None``: every node on).
        frontend: features (default :class:`MFCC`); centred, zero-padded frames.
        streams: number of streams.
        cache: keep trunk rows across steps (``False``: recompute every window, the plain
            window-by-window baseline).
        logit_transform: applied to the network output before the softmax (e.g. a trained
            model's logit ReLU, :meth:`~sanas.kws.model.kws_model.KWSModel.logits`).
        step_frames: frames between consecutive windows (20 = 200 ms).
        input_transform: a frame-wise map applied to each new feature frame (a trained
            model's :class:`~sanas.kws.data.features.FeatureNormalizer`).
        reuse_steps: a step repeats the logits and posteriors of the most recent of the
            ``reuse_steps`` steps before it that ran a costlier architecture
            (:func:`~sanas.supernet.reuse.reuse_costlier_outputs`, a trained model's
            ``reuse_steps``); 0: every step gives its own.
    """

    def __init__(
        self,
        net: SuperNetwork,
        policy: ArchitecturePolicy | None = None,
        frontend: LogMel | None = None,
        streams: int = 1,
        cache: bool = True,
        logit_transform: Callable[[Tensor], Tensor] | None = None,
        step_frames: int = STEP_FRAMES,
        input_transform: Callable[[Tensor], Tensor] | None = None,
        reuse_steps: int = 0,
    ) -> None:
        if streams < 1:
            raise ValueError(f"streams must be at least 1, got {streams}")
        if reuse_steps < 0:
            raise ValueError(f"reuse steps must be >= 0, got {reuse_steps}")
        if not net.feature_outputs:
            raise ValueError("the network needs a feature tap (feature_outputs) for the policy")
        self.net = net
        self.policy = policy
        self.frontend = frontend if frontend is not None else MFCC()
        if self.frontend.n_features != net.input_shape[2]:
            raise ValueError(
                f"the frontend gives {self.frontend.n_features} features per frame; "
                f"the network takes {net.input_shape[2]}"
            )
        self.features = IncrementalFeatures(self.frontend, streams)
        self.cache = cache
        self.logit_transform = logit_transform
        self.input_transform = input_transform
        self.reuse_steps = reuse_steps
        self.step_frames = step_frames
        self.layout: TrunkLayout = trunk_layout(net)
        self.window = self.layout.window
        self.tap = net.feature_outputs[0]
        self.samples_per_step = step_frames * self.frontend.hop_length
        self.step_ms = 1000.0 * self.samples_per_step / self.frontend.sample_rate
        self.costs = MacsCost(net)
        self.planner = Planner(net, self.layout, self.costs)
        self.row_macs = self.planner.row_macs
        self.kernels: dict[str, nn.Module] = self.planner.kernels
        # A fixed architecture is resolved once: no policy call per step.
        self._fixed: Plan | None = None
        if policy is None:
            self._fixed = self.planner.plan(torch.ones(net.num_stochastic, dtype=torch.bool))
        elif isinstance(policy, FixedPolicy):
            self._fixed = self.planner.plan(policy.architecture.bool())
        self.streams: list[StreamState] = []
        self.reset(streams)

    # ------------------------------------------------------------------------ state
    def reset(self, streams: int | None = None) -> None:
        """Start every stream afresh (``streams`` changes their number)."""
        count = len(self.streams) if streams is None else streams
        self.features.reset(count)
        empty = torch.zeros(0, self.frontend.n_features)
        self.streams = [
            StreamState(frames=empty, buffers=self.planner.buffers()) for _ in range(count)
        ]
        self.flushed = False

    # ----------------------------------------------------------------------- public
    @_inference
    def feed(self, chunks: Sequence[AudioChunk | None]) -> list[list[StepResult]]:
        """Append one chunk of 16 kHz float audio per stream (``None``: nothing new) and
        return each stream's completed steps, in order."""
        if self.flushed:
            raise ValueError("the streams were flushed; reset() before feeding new audio")
        if len(chunks) != len(self.streams):
            raise ValueError(
                f"expected {len(self.streams)} chunks, one per stream; got {len(chunks)}"
            )
        audio = [None if c is None else torch.as_tensor(c, dtype=torch.float32) for c in chunks]
        return self._advance(self.features.push(audio))

    @_inference
    def flush(self) -> list[list[StepResult]]:
        """End every stream: add the zero padding the frontend puts after a whole stream
        and return the steps it completes. Streams must be :meth:`reset` before reuse."""
        if self.flushed:
            raise ValueError("the streams were already flushed; reset() first")
        self.flushed = True
        return self._advance(self.features.finish())

    # --------------------------------------------------------------------- features
    def _advance(self, frames: list[Tensor]) -> list[list[StepResult]]:
        """Add new frames, then run the completed windows in rounds: round r runs the
        r-th new step of every stream that has one."""
        if self.net.training:
            raise ValueError("the network is in training mode; call net.eval() first")
        if self.input_transform is not None:
            frames = [self.input_transform(f) for f in frames]
        windows = [self._ready_windows(s, new) for s, new in zip(self.streams, frames, strict=True)]
        results: list[list[StepResult]] = [[] for _ in self.streams]
        for r in range(max((len(w) for w in windows), default=0)):
            active = [i for i, w in enumerate(windows) if len(w) > r]
            steps = self._step(active, [windows[i][r] for i in active])
            for i, result in zip(active, steps, strict=True):
                results[i].append(result)
        return results

    def _ready_windows(self, stream: StreamState, new: Tensor) -> list[Tensor]:
        """Append frames to a stream; return its windows that became complete, as
        time-major rows (1, T, F, 1) (views)."""
        frames = torch.cat([stream.frames, new]) if len(new) else stream.frames
        count, coeffs = frames.shape
        windows = []
        start = stream.step * self.step_frames - stream.first_frame
        while start + self.window <= count:
            offset = frames.storage_offset() + start * coeffs
            shape, strides = (1, self.window, coeffs, 1), (self.window * coeffs, coeffs, 1, 1)
            windows.append(frames.as_strided(shape, strides, offset))
            start += self.step_frames
        if windows:  # keep the frames from the first window not yet complete
            frames = frames[start:]
            stream.first_frame += start
        stream.frames = frames
        return windows

    # ------------------------------------------------------------------------- steps
    def _architectures(self, active: list[int]) -> list[Plan]:
        """Ask the policy, once for the streams at their first step and once for the others."""
        if self._fixed is not None:
            return [self._fixed] * len(active)
        policy = self.policy
        assert policy is not None  # no policy means every node on: a fixed plan
        if len(active) == 1:  # the batch-1 path: the stream's own previous taps and state
            stream = self.streams[active[0]]
            architecture, stream.state = policy(stream.previous, stream.state, 1)
            return [self.planner.plan(architecture[0].bool())]
        plans: list[Plan | None] = [None] * len(active)
        for first in (True, False):
            streams = [self.streams[i] for i in active]
            members = [k for k, s in enumerate(streams) if (s.previous is None) == first]
            if not members:
                continue
            streams = [streams[k] for k in members]
            previous = None if first else cat_batch([s.previous for s in streams])  # type: ignore[misc]
            states = [s.state for s in streams]
            state = None if first or states[0] is None else cat_batch(states)  # type: ignore[arg-type]
            architecture, new_state = policy(previous, state, len(members))
            for j, (k, stream) in enumerate(zip(members, streams, strict=True)):
                stream.state = None if new_state is None else new_state[j : j + 1]
                plans[k] = self.planner.plan(architecture[j].detach().bool())
        return plans  # type: ignore[return-value]

    def _missing(self, stream: StreamState, plan: Plan) -> tuple[int, ...]:
        """First row to compute, per used trunk node (rows before it are cached)."""
        if not self.cache:
            return (0,) * len(plan.trunk)
        start = stream.step * self.step_frames
        return tuple(stream.buffers[t.name].kept(start) for t in plan.trunk)

    def _step(self, active: list[int], windows: list[Tensor]) -> list[StepResult]:
        """One step for the given streams: policy, then one batched pass per group of
        streams with the same used set and missing rows."""
        plans = self._architectures(active)
        if len(active) == 1:  # the batch-1 path
            stream = self.streams[active[0]]
            return self._run_group([stream], plans[0], self._missing(stream, plans[0]), windows)
        groups: dict[tuple[int, tuple[int, ...]], list[int]] = {}
        for k, i in enumerate(active):
            key = (id(plans[k]), self._missing(self.streams[i], plans[k]))
            groups.setdefault(key, []).append(k)
        results: list[StepResult | None] = [None] * len(active)
        for (_, firsts), members in groups.items():
            streams = [self.streams[active[k]] for k in members]
            plan = plans[members[0]]
            outputs = self._run_group(streams, plan, firsts, [windows[k] for k in members])
            for k, result in zip(members, outputs, strict=True):
                results[k] = result
        return results  # type: ignore[return-value]

    def _run_group(
        self, streams: list[StreamState], plan: Plan, firsts: tuple[int, ...], windows: list[Tensor]
    ) -> list[StepResult]:
        batch = len(streams)
        start = streams[0].step * self.step_frames
        values: list[Tensor | None] = [None] * self.net.num_nodes
        values[0] = cat_batch(windows)
        executed = plan.macs_fixed
        for trunk, first in zip(plan.trunk, firsts, strict=True):
            source: Tensor = values[trunk.source]  # type: ignore[assignment]
            new = self.kernels[trunk.name](source[:, first:] if first else source)
            if batch == 1:
                buffer = streams[0].buffers[trunk.name]
                buffer.write(start, first, new)
                values[trunk.index] = buffer.window(trunk.rows)
            else:
                buffers = [stream.buffers[trunk.name] for stream in streams]
                for k, buffer in enumerate(buffers):
                    buffer.write(start, first, new[k : k + 1])
                values[trunk.index] = torch.cat([buffer.window(trunk.rows) for buffer in buffers])
            executed += trunk.row_macs * (trunk.rows - first)
        for op in plan.ops:
            values[op.index] = self.planner.apply(op, values, batch)
        logits = self.planner.value(self.net.output_name, values, batch)
        scores = logits if self.logit_transform is None else self.logit_transform(logits)
        posteriors = torch.softmax(scores, dim=1)
        taps = self.planner.value(self.tap, values, batch)
        results = []
        for k, stream in enumerate(streams):
            reused_logits, reused_posteriors = self._reuse(
                stream, plan.macs_window, logits[k], posteriors[k]
            )
            results.append(
                StepResult(
                    step=stream.step,
                    time_ms=stream.step * self.step_ms,
                    logits=reused_logits,
                    posteriors=reused_posteriors,
                    architecture=plan.architecture,
                    features=taps[k],
                    macs_window=plan.macs_window,
                    macs_executed=executed,
                )
            )
            stream.previous = taps if batch == 1 else taps[k : k + 1]
            stream.step += 1
        return results

    def _reuse(
        self, stream: StreamState, cost: float, logits: Tensor, posteriors: Tensor
    ) -> tuple[Tensor, Tensor]:
        """This step's outputs, or those of the most recent of the ``reuse_steps`` steps
        before it that cost more; remembers this step's own."""
        if not self.reuse_steps:
            return logits, posteriors
        reused = next(
            ((lo, po) for c, lo, po in reversed(stream.recent) if c > cost), (logits, posteriors)
        )
        stream.recent = [*stream.recent, (cost, logits, posteriors)][-self.reuse_steps :]
        return reused


class StreamingEngine:
    """One stream at batch size 1: :class:`MultiStreamEngine` with ``streams=1``.

    Example::

        engine = StreamingEngine(net.eval(), ControllerPolicy(model.controller))
        for chunk in microphone_chunks(3200):       # 200 ms of 16 kHz audio
            for step in engine.feed(chunk):
                print(step.time_ms, step.posteriors.argmax(), step.macs_executed)
    """

    def __init__(
        self,
        net: SuperNetwork,
        policy: ArchitecturePolicy | None = None,
        frontend: LogMel | None = None,
        cache: bool = True,
        logit_transform: Callable[[Tensor], Tensor] | None = None,
        input_transform: Callable[[Tensor], Tensor] | None = None,
        reuse_steps: int = 0,
    ) -> None:
        self.engine = MultiStreamEngine(
            net,
            policy,
            frontend,
            streams=1,
            cache=cache,
            logit_transform=logit_transform,
            input_transform=input_transform,
            reuse_steps=reuse_steps,
        )

    @property
    def samples_per_step(self) -> int:
        """Audio samples per step (3200: 200 ms at 16 kHz)."""
        return self.engine.samples_per_step

    def reset(self) -> None:
        """Start a new stream."""
        self.engine.reset()

    def feed(self, chunk: AudioChunk) -> list[StepResult]:
        """Append audio; return the steps it completes."""
        return self.engine.feed([chunk])[0]

    def flush(self) -> list[StepResult]:
        """End the stream (see :meth:`MultiStreamEngine.flush`)."""
        return self.engine.flush()[0]

    def run(self, audio: AudioChunk, chunk_samples: int | None = None) -> StreamRun:
        """Reset, feed a whole recording chunk by chunk (default: one step), flush."""
        self.reset()
        audio = torch.as_tensor(audio, dtype=torch.float32)
        size = chunk_samples or self.samples_per_step
        steps = []
        for begin in range(0, len(audio), size):
            steps += self.feed(audio[begin : begin + size])
        steps += self.flush()
        if not steps:
            raise ValueError(f"{len(audio)} samples: shorter than one window")
        return StreamRun.from_steps(steps)
