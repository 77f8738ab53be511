"""Export a trained run's streaming step to ONNX (``sanas export``).

The graph is one step of the streaming engine (:class:`~sanas.kws.export.step.StreamingStep`):
the step's 20 new raw feature frames and the stream's state in (the 81 frames of context,
each trunk node's row cache and its fresh flag; for a SANAS model also the controller's
``first``, ``hidden``, ``previous``, ``balance``), the logits, posteriors, the step's
architecture, its MACs per window and executed, the feature tap, the used set and the new
state out. A fresh cache makes a convolution compute only its 20 new rows. Each node of
an adaptive model runs inside an ONNX ``If`` on its used flag (``torch.cond`` under the
dynamo exporter), so ONNX Runtime computes only what the step's architecture uses; each
cached node inside a second ``If`` on its fresh flag. A static or BSN model is a graph of
its used nodes, with an ``If`` per cached node only.

What a runtime needs besides the graph is in the model's ``metadata_props``, each value a
JSON text under a ``sanas.`` key (:func:`read_metadata`): the labels, the sample rate, the
step and window, the detection settings, the MACs per node and per tier, the operating
point, the caches' shapes and the controller's sizes. Output reuse is not in the graph: the
runtime (:mod:`sanas.kws.export.runtime`) applies it. ``cached=False`` exports the plain
step that recomputes its window of 101 frames (the benchmark's anchor).

The file keeps only what a runtime reads (:func:`~sanas.kws.export.graphs.strip_for_runtime`:
not the exporter's stack traces on every node, a quarter of a small model's file).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sanas.kws.data.audio import SAMPLE_RATE
from sanas.kws.data.features import MFCC
from sanas.kws.data.speech_commands import kws_task
from sanas.kws.evaluation.metrics import DetectionConfig
from sanas.kws.export import INSTALL_HINT
from sanas.kws.export.graphs import (
    move_weights_into_branches,
    strip_for_runtime,
)
from sanas.kws.export.quantize import quantize_int8
from sanas.kws.export.step import StreamingStep
from sanas.kws.model.kws_model import SANASKWS, KWSModel
from sanas.kws.model.operating_point import OperatingPoint
from sanas.kws.model.window_forward import STEP_FRAMES, WINDOW_FRAMES
from sanas.kws.runs import load_run, read_operating_point
from sanas.supernet.policies import BURST_STEPS, FixedPolicy

FORMAT = "sanas-streaming-step/1"


def export_run(
    run_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    point: OperatingPoint | None = None,
    int8: bool = False,
) -> Path:
    """Export a run's best model at ``point`` (None: the run's own operating point) to
    ``out_path`` (a ``.onnx`` file), with int8 weights if ``int8``
    (:mod:`sanas.kws.export.quantize`); returns its path."""
    point = point or read_operating_point(run_dir)
    model, config = load_run(run_dir, point=point)
    labels = tuple(kws_task(config.task).labels)
    return export_model(model, out_path, labels, point, int8=int8)


def export_model(
    model: KWSModel,
    out_path: str | os.PathLike[str],
    labels: tuple[str, ...],
    point: OperatingPoint | None = None,
    detection: DetectionConfig | None = None,
    int8: bool = False,
    architecture: Tensor | None = None,
    cached: bool = True,
) -> Path:
    """Export ``model`` (eval mode) at ``point`` (applied to it first) as one streaming
    step; ``labels``: its classes, in order, for the metadata; ``int8``: quantise it
    (:func:`~sanas.kws.export.quantize.quantize_int8`); ``architecture``: an (S,) fixed
    architecture instead of the model's own choice (e.g. one cost tier of a SANAS
    model, a graph of its used nodes); ``cached=False``: no row caches, the window
    recomputed at every step."""
    try:
        import onnx
    except ImportError:
        raise ImportError(f"exporting to ONNX needs onnx and onnxscript: {INSTALL_HINT}") from None
    point = point or OperatingPoint()
    point.apply(model)
    model.eval()
    policy = model.streaming_policy(point.hold_budget)  # validates the budget
    if architecture is None and isinstance(policy, FixedPolicy):
        architecture = policy.architecture
    budget = None if architecture is not None else point.hold_budget
    burst = None if budget is None else budget * BURST_STEPS
    step = StreamingStep(model, architecture, budget, burst, cached=cached).eval()
    args = step.initial_inputs()
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnx_ir", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:  # notes such as "torchvision is not installed"
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.export.export(step, args, strict=False)
            exported = torch.onnx.export(
                program,
                args,
                input_names=step.input_names(),
                output_names=step.output_names(),
                verbose=False,
            )
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    assert exported is not None
    graph = exported.model_proto
    move_weights_into_branches(graph.graph)  # constants there, for ONNX Runtime (graphs.py)
    strip_for_runtime(graph.graph)
    metadata = build_metadata(model, step, labels, point, detection or DetectionConfig())
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not int8:
        onnx.save(graph, str(path))
        return path
    with tempfile.TemporaryDirectory() as folder:
        fp32 = Path(folder) / "fp32.onnx"
        onnx.save(graph, str(fp32))
        return quantize_int8(fp32, path)


def build_metadata(
    model: KWSModel,
    step: StreamingStep,
    labels: tuple[str, ...],
    point: OperatingPoint,
    detection: DetectionConfig,
) -> dict[str, str]:
    """The ``metadata_props`` of an exported step: JSON texts under ``sanas.`` keys."""
    net = model.net
    frontend = MFCC()
    values: dict[str, Any] = {
        "format": FORMAT,
        "family": model.family,
        "adaptive": step.adaptive,
        "precision": "fp32",  # "int8" after sanas.kws.export.quantize
        "labels": list(labels),
        "sample_rate": SAMPLE_RATE,
        "step_frames": STEP_FRAMES,
        "window_frames": WINDOW_FRAMES,
        "hop_length": frontend.hop_length,
        "n_features": net.input_shape[2],
        "detection": dataclasses.asdict(detection),
        "operating_point": point.to_dict(),
        "burst_steps": BURST_STEPS,
        "nodes": list(net.order),
        "stochastic_nodes": list(net.stochastic_names),
        "macs_per_node": dict(zip(net.order, step.node_macs.tolist(), strict=True)),
        "tier_macs": step.tier_macs(),
        "architecture": step.fixed[0].tolist() if not step.adaptive else None,
        "cached": step.cached,
        "context_frames": step.context_frames,
        "caches": step.cache_shapes(),
    }
    if isinstance(model, SANASKWS) and step.adaptive:
        values["controller"] = {
            "hidden": model.controller.hidden,
            "features": model.controller.feature_dim,
            "architecture_threshold": model.architecture_threshold,
        }
    return {
        f"sanas.{key}": json.dumps(value, separators=(",", ":")) for key, value in values.items()
    }


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``sanas.`` metadata of an exported model, decoded (keys without the prefix)."""
    try:
        import onnx
    except ImportError:
        raise ImportError(f"reading an ONNX model needs onnx: {INSTALL_HINT}") from None
    from google.protobuf.message import DecodeError  # onnx's own dependency

    try:
        graph = onnx.load(str(path), load_external_data=False)
    except DecodeError:
        raise ValueError(f"{path}: not an ONNX model (it does not parse)") from None
    values = {
        p.key.removeprefix("sanas."): json.loads(p.value)
        for p in graph.metadata_props
        if p.key.startswith("sanas.")
    }
    if values.get("format") != FORMAT:
        raise ValueError(f"{path}: not a model exported by `sanas export` (no {FORMAT} metadata)")
    return values
