"""ONNX export of the streaming step and the ONNX Runtime backend (issue 19): the same
architectures, posteriors and detections as the torch engine, `If` nodes around the
skippable nodes, row caches and the feature context carried by the graph from step to step
(a convolution computes its 20 new rows; one that was off computes its window again),
metadata that round-trips, and `sanas export` / `sanas evaluate model.onnx`."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("onnxruntime", reason="the export extra is not installed (sanas[export])")
pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript")

import onnx

from sanas.cli import app
from sanas.kws.data.audio import read_wav
from sanas.kws.data.speech_commands import kws_task
from sanas.kws.evaluation.evaluate import run_model_on_audio
from sanas.kws.evaluation.metrics import DetectionConfig, detect
from sanas.kws.export.graphs import all_graphs
from sanas.kws.export.onnx_export import export_model, export_run, read_metadata
from sanas.kws.export.runtime import OnnxStreamingModel
from sanas.kws.model.kws_model import SANASKWS
from sanas.kws.model.operating_point import OperatingPoint
from sanas.kws.model.registry import build_kws_model
from sanas.kws.model.window_forward import STEP_FRAMES, trunk_layout
from sanas.kws.runs import load_run, sanas_from_run
from sanas.kws.streaming.engine import StreamRun
from sanas.supernet.costs import MacsCost

TOLERANCE = 1e-4
LONG_TABLE = 256  # an int64 initializer this long is a table of indices, not a shape


def _switching_sanas(run: Path) -> tuple[SANASKWS, tuple[str, ...]]:
    """The SANAS model on a tiny run's network, its controller set to switch architectures
    with the audio (a fresh one keeps every node on)."""
    model, config = sanas_from_run(run)
    return _switching(model), tuple(kws_task(config.task).labels)


def _switching(model: SANASKWS) -> SANASKWS:
    """``model`` with a random controller that switches between architectures that reach
    the output."""
    generator = torch.Generator().manual_seed(0)
    scales = {"gru.weight_ih": 1.0, "head.weight": 3.0, "head.bias": 1.0}
    with torch.no_grad():
        for name, parameter in model.controller.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            # a contracting recurrence (small recurrent weights), as trained ones are
            parameter.copy_(scales.get(name, 0.05) * noise)
        names = model.net.stochastic_names
        always = [names.index(n) for n in model.net.bottleneck_names() if n in names]
        model.controller.head.bias[always] = 10.0  # e.g. in, features, classifier
        model.controller.initial.zero_()
    return model.eval()


def _assert_same(
    reference: StreamRun,
    exported: StreamRun,
    labels: tuple[str, ...],
    detection: DetectionConfig | None = None,
) -> float:
    """Same steps, architectures, MACs and detections (with ``detection``'s settings);
    posteriors within TOLERANCE."""
    assert len(exported.times_ms) == len(reference.times_ms)
    np.testing.assert_array_equal(exported.architectures, reference.architectures)
    np.testing.assert_array_equal(exported.macs_window, reference.macs_window)
    gap = float(np.abs(exported.posteriors - reference.posteriors).max())
    assert gap < TOLERANCE
    np.testing.assert_allclose(exported.features, reference.features, atol=TOLERANCE)
    fired = detect(exported.times_ms, exported.posteriors, labels, detection)
    expected = detect(reference.times_ms, reference.posteriors, labels, detection)
    assert [(d.label, d.time_ms) for d in fired] == [(d.label, d.time_ms) for d in expected]
    assert [d.score for d in fired] == pytest.approx([d.score for d in expected], abs=TOLERANCE)
    return gap


def _branches(graph: Any) -> Iterator[Any]:
    """The ``If`` branches of ``graph``, at any depth."""
    for node in graph.node:
        for attribute in node.attribute if node.op_type == "If" else ():
            yield attribute.g
            yield from _branches(attribute.g)


def _branch_nodes(graph: Any) -> Iterator[Any]:
    """The nodes inside the ``If`` branches of ``graph``, at any depth."""
    for branch in _branches(graph):
        yield from branch.node


def _if_nodes(path: Path) -> int:
    """How many ``If`` nodes the main graph has; asserts that convolutions run only in
    their branches (so a skipped node, or a cached one's window, is never computed), each
    with its weight in its own branch (a constant to ONNX Runtime, which then optimises it)."""
    graph = onnx.load(str(path)).graph
    branches = {node.op_type for node in _branch_nodes(graph)}
    if branches:
        assert "Conv" not in {node.op_type for node in graph.node} and "Conv" in branches
    for branch in _branches(graph):
        weights = {init.name for init in branch.initializer}
        assert all(n.input[1] in weights for n in branch.node if n.op_type == "Conv")
    return sum(node.op_type == "If" for node in graph.node)


def _assert_lean(path: Path) -> None:
    """Nothing in any graph of ``path`` that a runtime does not read (the exporter's node
    metadata and doc strings, the graph's metadata, shape hints) and no long int64 table
    (such as the gather indices of an adaptive pooling whose bins do not divide its input);
    the model's own metadata kept."""
    model = onnx.load(str(path))
    for graph in all_graphs(model.graph):
        assert not graph.doc_string and not graph.metadata_props and not graph.value_info
        assert not any(node.metadata_props or node.doc_string for node in graph.node)
        long_tables = [
            init.name
            for init in graph.initializer
            if init.data_type == onnx.TensorProto.INT64 and np.prod(init.dims) >= LONG_TABLE
        ]
        assert not long_tables
    assert read_metadata(path)["labels"]


def _cached_nodes(model: SANASKWS) -> tuple[str, ...]:
    """The trunk nodes whose rows the exported step keeps (conv_0 and conv_1)."""
    return trunk_layout(model.net).nodes


def _expected_executed(model: Any, computed: np.ndarray, macs_window: np.ndarray) -> np.ndarray:
    """MACs a cached step executes: its window's, less the rows a cached node kept because
    it also ran at the previous step (``computed``: (steps, nodes) of every node)."""
    net, layout = model.net, trunk_layout(model.net)
    executed = macs_window.copy()
    for name in _cached_nodes(model):
        column = computed[:, net.index[name]]
        fresh = np.concatenate([[False], column[:-1]]) & column
        saved = MacsCost(net).per_node[name] * (1 - STEP_FRAMES / layout.rows[name])
        executed -= saved * fresh
    return executed


def test_a_static_run_gives_the_engine_s_posteriors(
    tiny_run: Path, tiny_stream: Path, tmp_path: Path
) -> None:
    path = export_run(tiny_run, tmp_path / "model.onnx")
    model, config = load_run(tiny_run)
    audio = read_wav(tiny_stream / "stream.wav")
    labels = tuple(kws_task(config.task).labels)
    exported = OnnxStreamingModel(path).run(audio)
    reference = run_model_on_audio(model, audio)
    _assert_same(reference, exported, labels)
    _assert_lean(path)
    # A fixed architecture: an If only on each cached node's fresh flag.
    assert _if_nodes(path) == len(read_metadata(path)["caches"]) == 2
    # The first step computes its windows, the others 20 rows per convolution (the engine's).
    np.testing.assert_allclose(exported.macs_executed, reference.macs_executed, rtol=1e-9)
    assert exported.macs_executed[0] == exported.macs_window[0]
    assert (exported.macs_executed[1:] < exported.macs_window[1:]).all()


def test_the_plain_window_export_needs_no_state(
    tiny_run: Path, tiny_stream: Path, tmp_path: Path
) -> None:
    model, config = load_run(tiny_run)
    labels = tuple(kws_task(config.task).labels)
    path = export_model(model, tmp_path / "window.onnx", labels, cached=False)
    runtime = OnnxStreamingModel(path)
    assert [i.name for i in runtime.session.get_inputs()] == ["frames"]
    assert read_metadata(path)["caches"] == {} and _if_nodes(path) == 0
    audio = read_wav(tiny_stream / "stream.wav")[: 16000 * 4]
    exported = runtime.run(audio)
    _assert_same(run_model_on_audio(model, audio), exported, labels)
    np.testing.assert_array_equal(exported.macs_executed, exported.macs_window)


def test_the_cached_sanas_step_equals_the_engine_on_a_real_stream(
    real_run: Path, real_stream: Path, tmp_path: Path
) -> None:
    model, labels = _switching_sanas(real_run)
    names = model.net.stochastic_names
    with torch.no_grad():  # the cheapest path on, the convolutions on and off in runs
        model.controller.head.bias[names.index("shortcut_0")] = 10.0
        for name in ("conv_0", "conv_1", "shortcut_1", "shortcut_2"):
            model.controller.head.bias[names.index(name)] = 0.5
    path = export_model(model, tmp_path / "sanas.onnx", labels)
    audio = read_wav(real_stream / "stream.wav")
    reference = run_model_on_audio(model, audio)
    runtime = OnnxStreamingModel(path)
    exported = runtime.run(audio)
    # One short epoch and a random controller: a low threshold, so that words fire.
    detection = DetectionConfig(detection_threshold=0.2)
    _assert_same(reference, exported, labels, detection)
    assert detect(reference.times_ms, reference.posteriors, labels, detection)
    assert read_metadata(path)["caches"].keys() == set(_cached_nodes(model))
    computed = np.stack(runtime.used)
    for name in _cached_nodes(model):  # each goes off and comes back on, its cache stale
        column = computed[:, model.net.index[name]]
        assert (column[1:] & ~column[:-1]).any() and (column[1:] & column[:-1]).any()
    expected = _expected_executed(model, computed, exported.macs_window)
    np.testing.assert_allclose(exported.macs_executed, expected, rtol=1e-9)


@pytest.mark.parametrize("held", [False, True])
def test_a_sanas_model_switches_as_the_engine_does(
    tiny_run: Path, tiny_stream: Path, tmp_path: Path, held: bool
) -> None:
    model, labels = _switching_sanas(tiny_run)
    fallback = float(model.cost.of_architecture(model.net, model.cheapest_architecture)[0])
    point = OperatingPoint(hold_budget=1.1 * fallback if held else None, reuse_steps=1)
    path = export_model(model, tmp_path / "sanas.onnx", labels, point)
    audio = read_wav(tiny_stream / "stream.wav")
    reference = run_model_on_audio(model, audio, budget=point.hold_budget)
    exported = OnnxStreamingModel(path).run(audio)
    live = {
        tuple(a)
        for a, m in zip(reference.architectures, reference.macs_window, strict=True)
        if m > 0
    }
    assert len(live) > 1  # it switches between architectures that reach the output
    _assert_same(reference, exported, labels)
    assert _if_nodes(path) == model.net.num_nodes - 1  # every node but the input


def test_a_bsn_model_exports_its_one_architecture(tiny_stream: Path, tmp_path: Path) -> None:
    model = build_kws_model("bsn", num_classes=3, channels=2).eval()
    with torch.no_grad():  # a learned architecture that drops some nodes
        model.distribution.logits.copy_(torch.linspace(-3.0, 3.0, model.net.num_stochastic))
    labels = ("a", "b", "c")
    path = export_model(model, tmp_path / "bsn.onnx", labels)
    audio = read_wav(tiny_stream / "stream.wav")[: 16000 * 4]
    exported = OnnxStreamingModel(path).run(audio)
    _assert_same(run_model_on_audio(model, audio), exported, labels)
    architecture = model.deterministic_architecture().numpy()
    assert (exported.architectures == architecture.astype(bool)).all()
    assert read_metadata(path)["architecture"] == architecture.tolist()


@pytest.mark.parametrize("name", ["tc-resnet8-sanas", "bc-resnet-1-sanas"])
def test_backbones_with_exits_export_too(tiny_stream: Path, tmp_path: Path, name: str) -> None:
    model = build_kws_model(name, num_classes=3, channels=8)
    assert isinstance(model, SANASKWS)
    _switching(model)
    labels = ("a", "b", "c")
    path = export_model(model, tmp_path / "backbone.onnx", labels)
    audio = read_wav(tiny_stream / "stream.wav")[: 16000 * 5]
    reference = run_model_on_audio(model, audio)
    assert len({tuple(a) for a in reference.architectures}) > 1
    # exit_0 averages the 101 input rows in 4 bins of 26 rows every 25: a plain AveragePool,
    # no gather table; the graph stripped, it gives the engine's outputs.
    _assert_lean(path)
    # per architecture code (2^13 of them for BC-ResNet-1's gates) one int32 of used-node
    # bits: no table of node flags, MACs or costs
    codes = 2**model.net.num_stochastic
    kinds = (onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.BOOL)
    kinds += (onnx.TensorProto.DOUBLE,)
    tables = [
        (init.data_type, list(init.dims))
        for graph in all_graphs(onnx.load(str(path)).graph)
        for init in graph.initializer
        if init.dims and init.dims[0] == codes and init.data_type in kinds
    ]
    assert tables == [(onnx.TensorProto.INT32, [codes])]
    _assert_same(reference, OnnxStreamingModel(path).run(audio), labels)


def test_the_metadata_round_trips(tiny_run: Path, tmp_path: Path) -> None:
    model, labels = _switching_sanas(tiny_run)
    point = OperatingPoint(architecture_threshold=0.3, reuse_steps=2)
    path = export_model(model, tmp_path / "sanas.onnx", labels, point)
    meta = read_metadata(path)
    assert meta["labels"] == list(labels)
    assert meta["operating_point"] == point.to_dict()
    assert (meta["sample_rate"], meta["step_frames"], meta["window_frames"]) == (16000, 20, 101)
    assert meta["detection"]["detection_threshold"] == 0.7
    assert meta["macs_per_node"] == pytest.approx(MacsCost(model.net).per_node)
    assert meta["stochastic_nodes"] == list(model.net.stochastic_names)
    assert meta["family"] == "sanas" and meta["adaptive"]
    assert meta["controller"]["architecture_threshold"] == 0.3
    net = model.net
    cheapest = net.used(model.cheapest_architecture.unsqueeze(0), 1)
    full = net.used(None, 1)
    expected = {"cheapest": MacsCost(net)(cheapest).item(), "full": MacsCost(net)(full).item()}
    assert meta["tier_macs"] == pytest.approx(expected)
    assert expected["cheapest"] < expected["full"]
    runtime = OnnxStreamingModel(path, threads=1)
    assert runtime.labels == labels and runtime.reuse_steps == 2


def test_sanas_export_then_evaluate_gives_the_run_s_scores(
    tiny_run: Path, tiny_stream: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    onnx_path = tmp_path / "model.onnx"
    exported = runner.invoke(app, ["export", str(tiny_run), "--out", str(onnx_path)])
    assert exported.exit_code == 0, exported.output
    macs = read_metadata(onnx_path)["tier_macs"]  # the run's one architecture
    assert f"fp32; {macs['full']:,.0f} MACs per window" in exported.output
    stream = ["--stream-wav", str(tiny_stream / "stream.wav")]
    stream += ["--stream-labels", str(tiny_stream / "labels.txt")]
    scores = []
    for source, name in ((tiny_run, "run.json"), (onnx_path, "onnx.json")):
        result = runner.invoke(
            app, ["evaluate", str(source), *stream, "--json", str(tmp_path / name)]
        )
        assert result.exit_code == 0, result.output
        scores.append(json.loads((tmp_path / name).read_text()))
    keys = ("matched", "correct", "wrong", "false_alarm", "fa_per_hour", "macs_per_step", "steps")
    assert {k: scores[1][k] for k in keys} == {k: scores[0][k] for k in keys}
    assert scores[1]["counts"] == scores[0]["counts"]
    wav = ["--wav", str(tiny_stream / "stream.wav")]
    lines = [
        runner.invoke(app, ["stream", str(source), *wav]).output.splitlines()[:-1]
        for source in (tiny_run, onnx_path)
    ]
    assert lines[0] == lines[1]


def test_without_onnxruntime_the_error_names_the_extra(
    tiny_run: Path, tiny_stream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = export_run(tiny_run, tmp_path / "model.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = CliRunner().invoke(
        app, ["stream", str(path), "--wav", str(tiny_stream / "stream.wav")]
    )
    assert result.exit_code != 0
    assert "pip install 'sanas[export]'" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_an_exported_model_refuses_a_new_budget(
    tiny_run: Path, tiny_stream: Path, tmp_path: Path
) -> None:
    path = export_run(tiny_run, tmp_path / "model.onnx")
    wav = ["--wav", str(tiny_stream / "stream.wav")]
    result = CliRunner().invoke(app, ["stream", str(path), *wav, "--hold-budget", "1e6"])
    assert result.exit_code != 0 and "sanas export" in result.output


def test_export_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["export", "--help"])
    assert result.exit_code == 0 and "sanas export runs/sanas --out" in result.output


def test_threads_reach_the_session_and_change_nothing_else(
    tiny_run: Path, tiny_stream: Path, tmp_path: Path
) -> None:
    path = export_run(tiny_run, tmp_path / "model.onnx")
    options = OnnxStreamingModel(path, threads=2).session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    wav = ["--wav", str(tiny_stream / "stream.wav")]
    outputs = [
        CliRunner().invoke(app, ["stream", str(source), *wav, "--threads", threads]).output
        for source in (tiny_run, path)
        for threads in ("1", "2")
    ]
    assert outputs[0] == outputs[1] and outputs[2] == outputs[3]


def test_a_file_that_is_not_a_sanas_model_is_one_line(tiny_stream: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    plain = tmp_path / "plain.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "empty", [], [])), str(plain))
    wav = str(tiny_stream / "stream.wav")
    labels = str(tiny_stream / "labels.txt")
    for path, says in ((garbage, "not an ONNX model"), (plain, "not a model exported by")):
        for args in (
            ["stream", str(path), "--wav", wav],
            ["evaluate", str(path), "--stream-wav", wav, "--stream-labels", labels],
        ):
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 2 and says in result.output
            assert result.output.count(str(path)) == 1
            assert len(result.output.strip().splitlines()) == 1
