"""ONNX Runtime backend: an exported streaming step (:mod:`sanas.kws.export.onnx_export`)
run over audio step by step, as the torch engine runs a trained model.

The front end stays in Python (:class:`~sanas.kws.streaming.frontend.IncrementalFeatures`,
the engine's, so the frames are the same); each completed window of 101 frames goes
through the ONNX graph with the controller's state of the previous step. The result is the
engine's :class:`~sanas.kws.streaming.engine.StreamRun`. The graph has no row caches:
each step computes its window whole, so the MACs executed are the window's MACs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sanas.kws.data.features import MFCC
from sanas.kws.evaluation.evaluate import StreamEvaluation, score_stream
from sanas.kws.evaluation.metrics import DetectionConfig
from sanas.kws.export.onnx_export import INSTALL_HINT, read_metadata
from sanas.kws.streaming.engine import StepResult, StreamRun
from sanas.kws.streaming.frontend import IncrementalFeatures


def _session(path: Path, threads: int) -> Any:
    """An ONNX Runtime session on the CPU with ``threads`` intra-op threads."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError(f"running an ONNX model needs onnxruntime: {INSTALL_HINT}") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxStreamingModel:
    """An exported model run by ONNX Runtime at batch size 1, step by step.

    Args:
        path: the ``model.onnx`` written by ``sanas export``.
        threads: ONNX Runtime's intra-op threads (1: a batch-1 step is a chain of small
            operations, which a second, busy core only delays).
        reuse_steps: output reuse (None: the exported operating point's).

    Example::

        model = OnnxStreamingModel("model.onnx")
        run = model.run(read_wav("stream.wav"))
        print(run.posteriors.shape, run.macs_window.mean())
    """

    def __init__(
        self, path: str | os.PathLike[str], threads: int = 1, reuse_steps: int | None = None
    ) -> None:
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        self.session = _session(self.path, threads)
        meta = self.metadata
        self.labels: tuple[str, ...] = tuple(meta["labels"])
        self.adaptive: bool = meta["adaptive"]
        point = meta["operating_point"]
        self.reuse_steps = point["reuse_steps"] if reuse_steps is None else reuse_steps
        if self.reuse_steps < 0:
            raise ValueError(f"reuse steps must be >= 0, got {self.reuse_steps}")
        self.step_frames: int = meta["step_frames"]
        self.window: int = meta["window_frames"]
        frontend = MFCC()
        if frontend.n_features != meta["n_features"]:
            raise ValueError(f"{path}: the model takes {meta['n_features']} features per frame")
        self.samples_per_step = self.step_frames * meta["hop_length"]
        self.step_ms = 1000.0 * self.samples_per_step / meta["sample_rate"]
        self.features = IncrementalFeatures(frontend)
        nodes, stochastic = meta["nodes"], meta["stochastic_nodes"]
        self.stochastic_columns = [nodes.index(name) for name in stochastic]
        self.reset()

    @property
    def detection(self) -> DetectionConfig:
        """The detection settings stored at export."""
        return DetectionConfig(**self.metadata["detection"])

    def reset(self) -> None:
        """Start a new stream."""
        self.features.reset(1)
        self.frames = np.zeros((0, self.metadata["n_features"]), dtype=np.float32)
        self.first_frame = 0
        self.step = 0
        self.used: list[np.ndarray] = []
        self.recent: list[tuple[float, np.ndarray, np.ndarray]] = []
        controller = self.metadata.get("controller") or {"hidden": 0, "features": 0}
        self.hidden = np.zeros((1, controller["hidden"]), dtype=np.float32)
        self.previous = np.zeros((1, controller["features"]), dtype=np.float32)
        self.balance = np.zeros(1, dtype=np.float64)

    def feed(self, chunk: np.ndarray) -> list[StepResult]:
        """Append 16 kHz float audio; return the steps it completes."""
        new = self.features.push([torch.as_tensor(chunk, dtype=torch.float32)])[0]
        return self._advance(new.numpy())

    def flush(self) -> list[StepResult]:
        """End the stream (the zero padding after it, as the engine's flush)."""
        return self._advance(self.features.finish()[0].numpy())

    def run(self, audio: np.ndarray) -> StreamRun:
        """Reset, feed a whole recording one step of audio at a time, flush."""
        self.reset()
        audio = np.asarray(audio, dtype=np.float32)
        steps = []
        for begin in range(0, len(audio), self.samples_per_step):
            steps += self.feed(audio[begin : begin + self.samples_per_step])
        steps += self.flush()
        if not steps:
            raise ValueError(f"{len(audio)} samples: shorter than one window")
        return StreamRun.from_steps(steps)

    def computed(self) -> np.ndarray:
        """(steps, stochastic nodes) booleans of the last run: the node was computed."""
        return np.stack(self.used)[:, self.stochastic_columns]

    def _advance(self, new: np.ndarray) -> list[StepResult]:
        frames = np.concatenate([self.frames, new]) if len(new) else self.frames
        results = []
        start = self.step * self.step_frames - self.first_frame
        while start + self.window <= len(frames):
            results.append(self._step(frames[start : start + self.window]))
            start = self.step * self.step_frames - self.first_frame
        keep = self.step * self.step_frames - self.first_frame
        self.frames = frames[keep:]
        self.first_frame += keep
        return results

    def _step(self, window: np.ndarray) -> StepResult:
        feeds: dict[str, np.ndarray] = {"frames": np.ascontiguousarray(window)}
        if self.adaptive:
            feeds |= {
                "first": np.array(self.step == 0),
                "hidden": self.hidden,
                "previous": self.previous,
                "balance": self.balance,
            }
        outputs = self.session.run(None, feeds)
        logits, posteriors, architecture, macs, features, used = outputs[:6]
        if self.adaptive:
            self.hidden, self.balance = outputs[6], outputs[7]
            self.previous = features
        self.used.append(used[0])
        cost = float(macs[0])
        logits, posteriors = self._reuse(cost, logits[0], posteriors[0])
        result = StepResult(
            step=self.step,
            time_ms=self.step * self.step_ms,
            logits=torch.from_numpy(logits),
            posteriors=torch.from_numpy(posteriors),
            architecture=torch.from_numpy(architecture[0].astype(bool)),
            features=torch.from_numpy(features[0]),
            macs_window=cost,
            macs_executed=cost,
        )
        self.step += 1
        return result

    def _reuse(
        self, cost: float, logits: np.ndarray, posteriors: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The engine's output reuse (:meth:`MultiStreamEngine._reuse`)."""
        if not self.reuse_steps:
            return logits, posteriors
        reused = next(
            ((lo, po) for c, lo, po in reversed(self.recent) if c > cost), (logits, posteriors)
        )
        self.recent = [*self.recent, (cost, logits, posteriors)][-self.reuse_steps :]
        return reused


def evaluate_onnx(
    path: str | os.PathLike[str],
    wav_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    json_path: str | os.PathLike[str] | None = None,
    threads: int = 1,
    reuse_steps: int | None = None,
) -> StreamEvaluation:
    """Score an exported model on a streaming wav, as
    :func:`~sanas.kws.evaluation.evaluate.evaluate_run` scores a run."""
    model = OnnxStreamingModel(path, threads=threads, reuse_steps=reuse_steps)
    evaluation = score_stream(
        lambda audio: model.run(audio),
        model.labels,
        wav_path,
        labels_path,
        model.detection,
        tuple(model.metadata["stochastic_nodes"]),
        lambda _: model.computed(),
    )
    if json_path is not None:
        point = {**model.metadata["operating_point"], "reuse_steps": model.reuse_steps}
        header = {"model": str(path), "operating_point": point}
        write_json(json_path, header, evaluation)
    return evaluation


def write_json(
    json_path: str | os.PathLike[str], header: dict[str, Any], evaluation: StreamEvaluation
) -> None:
    """Write scores as ``sanas evaluate --json`` does."""
    out = Path(json_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**header, **evaluation.to_dict()}, indent=2))
