"""Export a trained run's streaming step to ONNX (``sanas export``).

The graph is one step of the streaming engine (:class:`~sanas.kws.export.step.StreamingStep`):
one window of raw feature frames in, logits, posteriors, the step's architecture, its MACs,
the feature tap and the used set out; for a SANAS model also the controller's state in and
out (``first``, ``hidden``, ``previous``, ``balance``). Each node of an adaptive model runs
inside an ONNX ``If`` on its used flag (``torch.cond`` under the dynamo exporter), so
ONNX Runtime computes only what the step's architecture uses. A static or BSN model is one
plain graph of its used nodes.

What a runtime needs besides the graph is in the model's ``metadata_props``, each value a
JSON text under a ``sanas.`` key (:func:`read_metadata`): the labels, the sample rate, the
step and window, the detection settings, the MACs per node and per tier, the operating
point and the state sizes. Row caches and output reuse are not in the graph: the runtime
(:mod:`sanas.kws.export.runtime`) applies the reuse, and each step computes its window
whole.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sanas.kws.data.audio import SAMPLE_RATE
from sanas.kws.data.features import MFCC
from sanas.kws.data.speech_commands import kws_task
from sanas.kws.evaluation.metrics import DetectionConfig
from sanas.kws.export.step import StreamingStep, architecture_tables
from sanas.kws.model.kws_model import SANASKWS, KWSModel
from sanas.kws.model.operating_point import OperatingPoint
from sanas.kws.model.window_forward import STEP_FRAMES, WINDOW_FRAMES
from sanas.kws.runs import load_run, read_operating_point
from sanas.supernet.costs import MacsCost
from sanas.supernet.policies import BURST_STEPS, FixedPolicy

FORMAT = "sanas-streaming-step/1"
FIXED_INPUTS = ("frames",)
ADAPTIVE_INPUTS = ("frames", "first", "hidden", "previous", "balance")
OUTPUTS = ("logits", "posteriors", "architecture", "macs", "features", "used")
STATE_OUTPUTS = ("hidden_out", "balance_out")
INSTALL_HINT = "pip install 'sanas[export]'"


def export_run(
    run_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    point: OperatingPoint | None = None,
) -> Path:
    """Export a run's best model at ``point`` (None: the run's own operating point) to
    ``out_path`` (a ``.onnx`` file); returns its path."""
    point = point or read_operating_point(run_dir)
    model, config = load_run(run_dir, point=point)
    return export_model(model, out_path, tuple(kws_task(config.task).labels), point)


def export_model(
    model: KWSModel,
    out_path: str | os.PathLike[str],
    labels: tuple[str, ...],
    point: OperatingPoint | None = None,
    detection: DetectionConfig | None = None,
) -> Path:
    """Export ``model`` (eval mode) at ``point`` (applied to it first) as one streaming
    step; ``labels``: its classes, in order, for the metadata."""
    try:
        import onnx
    except ImportError:
        raise ImportError(f"exporting to ONNX needs onnx and onnxscript: {INSTALL_HINT}") from None
    point = point or OperatingPoint()
    point.apply(model)
    model.eval()
    policy = model.streaming_policy(point.hold_budget)  # validates the budget
    fixed = policy.architecture if isinstance(policy, FixedPolicy) else None
    budget = point.hold_budget
    step = StreamingStep(model, fixed, budget, None if budget is None else budget * BURST_STEPS)
    step.eval()
    args = example_inputs(step)
    names = ADAPTIVE_INPUTS if step.adaptive else FIXED_INPUTS
    outputs = OUTPUTS + (STATE_OUTPUTS if step.adaptive else ())
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnx_ir", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:  # notes such as "torchvision is not installed"
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.export.export(step, args, strict=False)
            exported = torch.onnx.export(
                program, args, input_names=list(names), output_names=list(outputs), verbose=False
            )
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    assert exported is not None
    graph = exported.model_proto
    metadata = build_metadata(model, step, labels, point, detection or DetectionConfig())
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, str(path))
    return path


def example_inputs(step: StreamingStep) -> tuple[Tensor, ...]:
    """Inputs of a first step, as the exporter traces them."""
    frames = torch.zeros(WINDOW_FRAMES, step.net.input_shape[2])
    if not step.adaptive:
        return (frames,)
    controller = step.model.controller  # type: ignore[union-attr]
    return (
        frames,
        torch.tensor(True),
        torch.zeros(1, controller.hidden),
        torch.zeros(1, controller.feature_dim),
        torch.zeros(1, dtype=torch.float64),
    )


def _tiers(model: KWSModel) -> list[dict[str, Any]]:
    """Each distinct used set that reaches the output: its nodes and MACs per window."""
    net = model.net
    used, macs, _ = architecture_tables(model)
    output = net.index[net.output_name]
    tiers: dict[frozenset[str], float] = {}
    for row, cost in zip(used, macs.tolist(), strict=True):
        if row[output]:
            tiers.setdefault(net.used_names(row), cost)
    ordered = sorted(tiers.items(), key=lambda item: (item[1], len(item[0])))
    return [{"nodes": [n for n in net.order if n in s], "macs": c} for s, c in ordered]


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
        "macs_per_node": {n: float(v) for n, v in MacsCost(net).per_node.items()},
        "tiers": _tiers(model),
        "architecture": step.fixed[0].tolist() if not step.adaptive else None,
    }
    if isinstance(model, SANASKWS) and step.adaptive:
        values["controller"] = {
            "hidden": model.controller.hidden,
            "features": model.controller.feature_dim,
            "architecture_threshold": model.architecture_threshold,
        }
    return {f"sanas.{key}": json.dumps(value) for key, value in values.items()}


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``sanas.`` metadata of an exported model, decoded (keys without the prefix)."""
    try:
        import onnx
    except ImportError:
        raise ImportError(f"reading an ONNX model needs onnx: {INSTALL_HINT}") from None
    graph = onnx.load(str(path), load_external_data=False)
    values = {
        p.key.removeprefix("sanas."): json.loads(p.value)
        for p in graph.metadata_props
        if p.key.startswith("sanas.")
    }
    if values.get("format") != FORMAT:
        raise ValueError(f"{path}: not a model exported by `sanas export` (no {FORMAT} metadata)")
    return values
