"""int8 models (``sanas export --int8``): an exported streaming step with 8-bit weights.

Dynamic quantisation (ONNX Runtime's ``quantize_dynamic``), chosen for three reasons:

- **It reaches inside the** ``If`` **nodes.** ONNX Runtime quantises subgraphs in dynamic
  mode only (``extra_options={"EnableSubgraph": True}``; its static QDQ quantiser leaves
  them float), and every node of a SANAS model lives in one.
- **No calibration set.** Each step quantises its activations with their own range, so
  a quiet room and a shout are both represented well; a static scale calibrated on
  training audio would clip or waste levels on live audio.
- **It speeds up what is slow.** A batch-1 dense layer reads every weight once per step
  for one MAC (memory-bound: shortcut_1 alone is 29.5 MB in fp32); as int8
  (``MatMulInteger``) it reads 4× fewer bytes.

The convolutions are compute-bound, and quantising them too (ONNX Runtime's
``ConvInteger``) made a static window 5× slower (8.7 ms against 1.5 ms per step, 1
thread, on the development machine; docs/deploy.md), so they keep fp32 arithmetic: their
weights are stored as int8 per output channel behind a ``DequantizeLinear``, which ONNX
Runtime folds back to fp32 when the session loads (session option
``session.disable_quant_qdq = 1``, which :mod:`sanas.kws.export.runtime` sets).
The controller of a SANAS model is stored the same way (its GRU and head matrices int8 per
output channel behind a ``DequantizeLinear``, fp32 arithmetic at run time, no quantised
activations): its output is a discrete choice, and its weights alone rounded flip it
rarely. Measured on an hour of real stream (17,996 steps) against the fp32 export, the
TC-ResNet8-SANAS point chose the same architecture from the same state at 99.9 % of the
steps and free-running at 99.3 % (99.4 % with the controller fp32), Correct 55.1 % (55.0 %
with the controller fp32, 54.4 % fp32); the cnn-trad-fpool3 point 99.9 % and 97.3 %
(97.2 % with the controller fp32). Left fp32, its matrices were 58 % of TC-ResNet8's
int8 file. The file is then a quarter to a third of the fp32 one: a quarter where
the weights dominate it, more where the model metadata and the graph weigh (a small model).

ONNX Runtime's quantiser expects a subgraph's weights inside the subgraph, where
:func:`~sanas.kws.export.onnx_export.export_model` has moved them
(:func:`~sanas.kws.export.graphs.move_weights_into_branches`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from sanas.kws.export import INSTALL_HINT
from sanas.kws.export.graphs import all_graphs, drop_unused_initializers, strip_for_runtime

CONTROLLER_PREFIX = "model.controller."
PRECISION_KEY = "sanas.precision"
# The output-channel axis of each weight stored int8 behind a DequantizeLinear: a Conv's
# (O, I, kH, kW), a MatMul's (..., K, N) right-hand side.
WEIGHT_OUTPUT_AXIS = {"Conv": 0, "MatMul": -1}
# The session option under which ONNX Runtime folds a constant DequantizeLinear at load.
FOLD_DEQUANTIZE = ("session.disable_quant_qdq", "1")


def quantize_int8(fp32_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Write the int8 version of an fp32 step written by
    :func:`~sanas.kws.export.onnx_export.export_model` (see the module docstring), with the
    same metadata but ``sanas.precision``: ``"int8"``; returns its path."""
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ImportError(f"int8 export needs onnx and onnxruntime: {INSTALL_HINT}") from None
    model = onnx.load(str(fp32_path))
    controller = [  # the quantiser first rewrites a Gemm as NAME_MatMul and an Add
        name
        for node in model.graph.node
        if any(value.startswith(CONTROLLER_PREFIX) for value in node.input)
        for name in (node.name, f"{node.name}_MatMul")
    ]
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    # Its advice to pre-process (shape inference, fusions) is for static quantisation.
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            Path(fp32_path),
            path,
            op_types_to_quantize=["MatMul", "Gemm"],  # the dense layers (module docstring)
            weight_type=QuantType.QInt8,
            nodes_to_exclude=controller,  # int8-stored below, fp32 arithmetic (docstring)
            extra_options={"EnableSubgraph": True},  # inside the If nodes too
        )
    finally:
        root.setLevel(level)
    quantized = onnx.load(str(path))
    for graph in all_graphs(quantized.graph):
        _store_weights_int8(graph)
        drop_unused_initializers(graph)
    strip_for_runtime(quantized.graph)
    del quantized.metadata_props[:]
    for prop in model.metadata_props:
        value = '"int8"' if prop.key == PRECISION_KEY else prop.value
        quantized.metadata_props.add(key=prop.key, value=value)
    onnx.save(quantized, str(path))
    return path


def _store_weights_int8(graph: Any) -> None:
    """Replace each float weight initializer of a ``Conv`` or ``MatMul`` of ``graph`` (what
    the dynamic quantiser left float: the convolutions, the controller) by int8 values and
    a scale per output channel behind a ``DequantizeLinear`` (in place)."""
    from onnx import TensorProto, helper, numpy_helper

    initializers = {init.name: init for init in graph.initializer}
    nodes = list(graph.node)
    for position in reversed(range(len(nodes))):
        node = nodes[position]
        name = node.input[1] if len(node.input) > 1 else ""
        axis = WEIGHT_OUTPUT_AXIS.get(node.op_type)
        if axis is None or name not in initializers:
            continue
        if initializers[name].data_type != TensorProto.FLOAT:
            continue
        weight = numpy_helper.to_array(initializers[name])
        channels = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)
        peak = np.abs(channels).max(axis=1)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        shape = [1] * weight.ndim
        shape[axis] = -1
        values = np.round(weight / scale.reshape(shape)).clip(-127, 127).astype(np.int8)
        graph.initializer.remove(initializers[name])
        graph.initializer.extend(
            [
                numpy_helper.from_array(values, f"{name}_int8"),
                numpy_helper.from_array(scale, f"{name}_scale"),
            ]
        )
        dequantize = helper.make_node(
            "DequantizeLinear", [f"{name}_int8", f"{name}_scale"], [name], axis=axis
        )
        graph.node.insert(position, dequantize)
