"""ONNX Runtime backend: an exported streaming step (:mod:`sanas.kws.export.onnx_export`)
run over audio step by step, as the torch engine runs a trained model.

The front end stays in Python (:class:`~sanas.kws.streaming.frontend.IncrementalFeatures`,
the engine's, so the frames are the same). Each step's 20 new frames go through the ONNX
graph with the state its previous step returned (the feature context, the row caches and
their fresh flags, the controller's state: every graph output ``NAME_out`` is the next
step's input ``NAME``); a stream's first step takes its context from its first window and
starts with every cache stale. The result is the engine's
:class:`~sanas.kws.streaming.engine.StreamRun`, with the MACs the graph executed. A graph
exported without caches (``sanas.cached`` false in its metadata) takes each window of 101
frames whole.
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
from sanas.kws.export import INSTALL_HINT
from sanas.kws.export.onnx_export import read_metadata
from sanas.kws.export.quantize import FOLD_DEQUANTIZE
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
    options.add_session_config_entry(*FOLD_DEQUANTIZE)  # int8 convolution weights → fp32
    options.log_severity_level = 3  # errors only: not its notes on the exporter's constants
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
        self.cached: bool = meta.get("cached", False)
        self.output_names = [output.name for output in self.session.get_outputs()]
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
        self.state = self._initial_state()

    def _initial_state(self) -> dict[str, np.ndarray]:
        """The state inputs of a stream's first step but the context (its first window's):
        every cache stale, the controller at its start."""
        state: dict[str, np.ndarray] = {}
        for name, shape in self.metadata.get("caches", {}).items():
            state[f"rows_{name}"] = np.zeros((1, *shape), dtype=np.float32)
            state[f"fresh_{name}"] = np.array(False)
        if self.adaptive:
            controller = self.metadata["controller"]
            state["first"] = np.array(True)
            state["hidden"] = np.zeros((1, controller["hidden"]), dtype=np.float32)
            state["previous"] = np.zeros((1, controller["features"]), dtype=np.float32)
            state["balance"] = np.zeros(1, dtype=np.float64)
        return state

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
        feeds = dict(self.state)
        if not self.cached:
            feeds["frames"] = np.ascontiguousarray(window)
        else:
            feeds["frames"] = np.ascontiguousarray(window[-self.step_frames :])
            feeds.setdefault("context", np.ascontiguousarray(window[: -self.step_frames]))
        outputs = dict(zip(self.output_names, self.session.run(None, feeds), strict=True))
        for name, value in outputs.items():
            if name.endswith("_out"):
                self.state[name.removesuffix("_out")] = value
        if self.adaptive:
            self.state["first"] = np.array(False)
            self.state["previous"] = outputs["features"]
        self.used.append(outputs["used"][0])
        cost = float(outputs["macs"][0])
        executed = float(outputs.get("macs_executed", outputs["macs"])[0])
        logits, posteriors = self._reuse(cost, outputs["logits"][0], outputs["posteriors"][0])
        result = StepResult(
            step=self.step,
            time_ms=self.step * self.step_ms,
            logits=torch.from_numpy(logits),
            posteriors=torch.from_numpy(posteriors),
            architecture=torch.from_numpy(outputs["architecture"][0].astype(bool)),
            features=torch.from_numpy(outputs["features"][0]),
            macs_window=cost,
            macs_executed=executed,
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
