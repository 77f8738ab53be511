"""The streaming engine equals the window-by-window computation on real audio, while
computing only new rows and used nodes."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import Tensor, nn

from sanas.kws.data.features import MFCC
from sanas.kws.model.kws_model import SANASKWS, StaticKWS
from sanas.kws.model.networks import cnn_trad_fpool3
from sanas.kws.model.tc_resnet import tc_resnet
from sanas.kws.model.window_forward import cut_windows, forward_windows_plain
from sanas.kws.streaming.engine import (
    MultiStreamEngine,
    StreamingEngine,
    engine_for_model,
)
from sanas.kws.streaming.frontend import IncrementalFeatures
from sanas.kws.streaming.row_kernels import Layers, RowConv
from sanas.supernet.costs import MacsCost
from sanas.supernet.graph import SuperNetwork
from sanas.supernet.policies import FixedPolicy, ScheduledPolicy

WORDS = ("yes", "no", "up", "left")
TIER_0 = ("in", "shortcut_0", "features", "classifier")
TIER_35 = ("in", "conv_0", "shortcut_1", "features", "classifier")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def audio(speech_commands_root: Path) -> np.ndarray:
    """About 4 s of real speech: the first clip of four words, back to back."""
    clips = [
        sf.read(sorted((speech_commands_root / word).glob("*.wav"))[0], dtype="float32")[0]
        for word in WORDS
    ]
    return np.concatenate(clips)


@pytest.fixture(scope="module")
def net() -> SuperNetwork:
    torch.manual_seed(0)
    return cnn_trad_fpool3(shortcuts=True).eval()


def _architecture(net: SuperNetwork, names: tuple[str, ...]) -> Tensor:
    on = torch.zeros(net.num_stochastic)
    for name in names:
        on[net.stochastic_names.index(name)] = 1.0
    return on


def _plain_logits(net: SuperNetwork, audio: np.ndarray, architectures: Tensor | None) -> Tensor:
    """Window by window on the MFCC of the whole stream (the reference computation)."""
    features = MFCC()(torch.from_numpy(audio)).unsqueeze(0)
    steps = cut_windows(features).shape[1]
    if architectures is not None:
        architectures = architectures[:steps]
    used = net.used(architectures, steps).unsqueeze(0)
    with torch.no_grad():
        return forward_windows_plain(net, features, used).output[0]


def _switching_schedule(net: SuperNetwork, steps: int) -> Tensor:
    """Random architectures in which conv_0 and conv_1 go off for 1, 2 and 6 steps."""
    generator = torch.Generator().manual_seed(1)
    schedule = (torch.rand(steps, net.num_stochastic, generator=generator) < 0.5).float()
    column = {name: net.stochastic_names.index(name) for name in net.stochastic_names}
    for name in ("in", "features", "classifier", "shortcut_1", "shortcut_2"):
        schedule[:, column[name]] = 1.0
    conv_0 = [1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    conv_1 = [0, 1, 1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 1]
    schedule[:, column["conv_0"]] = torch.tensor(conv_0[:steps], dtype=torch.float32)
    schedule[:, column["conv_1"]] = torch.tensor(conv_1[:steps], dtype=torch.float32)
    return schedule


def _expected_executed(net: SuperNetwork, schedule: Tensor) -> list[float]:
    """Executed MACs from first principles: a conv charges only the rows its last run lacks."""
    cost = MacsCost(net)
    rows = {"conv_0": 82, "conv_1": 73}
    last: dict[str, int] = {}
    expected = []
    for t, architecture in enumerate(schedule):
        used = net.used(architecture, 1)
        total = float(cost(used)[0])
        for name, count in rows.items():
            if used[0, net.index[name]]:
                missing = count if name not in last else min(count, 20 * (t - last[name]))
                total -= cost.per_node[name] * (count - missing) / count
                last[name] = t
        expected.append(total)
    return expected


# ------------------------------------------------------------------------------ features
def test_incremental_features_equal_the_whole_stream(audio: np.ndarray) -> None:
    whole = MFCC()(torch.from_numpy(audio))
    features = IncrementalFeatures(MFCC())
    sizes = [1, 159, 160, 3200, 37, 5000, 3200, 2]
    bounds = np.cumsum([0, *sizes, len(audio) - sum(sizes)])
    parts = [
        features.push([torch.from_numpy(audio[a:b])])[0] for a, b in itertools.pairwise(bounds)
    ]
    before_end = torch.cat(parts)
    # Everything but the frames within 240 samples of the end, which need the padding.
    assert len(before_end) == len(whole) - 2
    torch.testing.assert_close(before_end, whole[:-2], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(features.finish()[0], whole[-2:], rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------ equality, MACs
def test_static_cached_equals_plain_and_saves_macs(audio: np.ndarray) -> None:
    torch.manual_seed(0)
    static = cnn_trad_fpool3().eval()
    run = StreamingEngine(static).run(audio)
    plain = _plain_logits(static, audio, None)
    assert run.logits.shape == tuple(plain.shape)
    np.testing.assert_allclose(run.logits, plain.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(run.posteriors, plain.softmax(1).numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(run.times_ms, 200.0 * np.arange(len(plain)))
    assert (run.macs_window == 124_593_664).all()
    # method.md §4: a fully cached step costs ≈ 6.8M + 26.2M + 1.2M instead of 124.6M.
    cached = 6_758_400 + 26_214_400 + 1_196_032 + 4_096 + 1_536
    assert run.macs_executed[0] == 124_593_664
    assert (run.macs_executed[1:] == cached).all()
    assert run.macs_window[0] / cached > 3.6


def test_engine_follows_weight_changes(audio: np.ndarray) -> None:
    """Kernels keep reordered copies of some weights; a reload after construction (e.g. a
    checkpoint) must still be what the engine computes."""
    torch.manual_seed(0)
    static = cnn_trad_fpool3().eval()
    engine = StreamingEngine(static)
    engine.run(audio[:16000])  # the copies exist
    static.load_state_dict(cnn_trad_fpool3().state_dict())
    run = engine.run(audio)
    np.testing.assert_allclose(run.logits, _plain_logits(static, audio, None).numpy(), atol=1e-5)


def test_folded_batch_norms_keep_the_engine_equal_to_the_windows(audio: np.ndarray) -> None:
    """TC-ResNet8 with batch norms as training leaves them (statistics and affine
    parameters away from their initial values): the engine, which folds them into its own
    copies of the convolutions, equals the window-by-window network, also after a reload,
    and leaves the network's weights alone."""
    torch.manual_seed(0)
    net = tc_resnet(8, width=0.5).eval()
    with torch.no_grad():
        for norm in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
            norm.running_mean.normal_(0.0, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0.0, 0.3)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    engine = StreamingEngine(net)
    folded = [k.folded for k in engine.engine.kernels.values() if isinstance(k, Layers)]
    assert sum(folded) == 10  # stem, two per block, one per shortcut
    run = engine.run(audio)
    np.testing.assert_allclose(run.logits, _plain_logits(net, audio, None).numpy(), atol=1e-5)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    with torch.no_grad():
        for norm in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
            norm.running_var.mul_(2.0)
    run = engine.run(audio)
    np.testing.assert_allclose(run.logits, _plain_logits(net, audio, None).numpy(), atol=1e-5)


def test_uncached_engine_executes_every_row(audio: np.ndarray, net: SuperNetwork) -> None:
    run = StreamingEngine(net, cache=False).run(audio)
    np.testing.assert_allclose(run.logits, _plain_logits(net, audio, None).numpy(), atol=1e-5)
    np.testing.assert_array_equal(run.macs_executed, run.macs_window)


def test_switching_architectures_equal_plain(audio: np.ndarray, net: SuperNetwork) -> None:
    steps = cut_windows(MFCC()(torch.from_numpy(audio)).unsqueeze(0)).shape[1]
    schedule = _switching_schedule(net, steps)
    run = StreamingEngine(net, ScheduledPolicy(schedule)).run(audio, chunk_samples=2500)
    np.testing.assert_allclose(run.logits, _plain_logits(net, audio, schedule).numpy(), atol=1e-5)
    np.testing.assert_array_equal(run.architectures, schedule.bool().numpy())
    np.testing.assert_allclose(run.macs_executed, _expected_executed(net, schedule))
    assert (run.macs_executed <= run.macs_window).all()


@pytest.mark.parametrize("max_rows", [0, 10_000])
def test_switching_equals_plain_with_either_convolution_path(
    audio: np.ndarray, net: SuperNetwork, max_rows: int
) -> None:
    """Rows missing after a convolution was off are computed exactly by the GEMM (forced
    for every row count) and by the module itself (forced for every row count)."""
    steps = cut_windows(MFCC()(torch.from_numpy(audio)).unsqueeze(0)).shape[1]
    schedule = _switching_schedule(net, steps)
    engine = StreamingEngine(net, ScheduledPolicy(schedule))
    for name in ("conv_0", "conv_1"):
        kernel = engine.engine.kernels[name]
        assert isinstance(kernel, RowConv)
        kernel.max_rows = max_rows
    run = engine.run(audio)
    np.testing.assert_allclose(run.logits, _plain_logits(net, audio, schedule).numpy(), atol=1e-5)


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_sanas_controller_policy_matches_the_model(audio: np.ndarray, threshold: float) -> None:
    """The engine driven by a SANAS controller reproduces the model's own evaluation, at
    the model's architecture threshold."""
    torch.manual_seed(0)
    model = SANASKWS(cnn_trad_fpool3(shortcuts=True), init_bias=0.0).eval()
    model.architecture_threshold = threshold
    features = MFCC()(torch.from_numpy(audio)).unsqueeze(0)
    with torch.no_grad():
        expected = model(features)
    policy, transform = model.streaming_policy(), model.logits
    run = StreamingEngine(model.net, policy, logit_transform=transform).run(audio)
    used = model.net.used(torch.from_numpy(run.architectures), len(run.architectures))
    assert torch.equal(used, expected.used[0])
    assert len(set(map(tuple, run.architectures.tolist()))) > 1  # the policy does adapt
    logits = transform(torch.from_numpy(run.logits))
    torch.testing.assert_close(logits, expected.logits[0], rtol=1e-5, atol=1e-5)


def test_reused_outputs_match_the_models_own_reuse(audio: np.ndarray) -> None:
    """With ``reuse_steps`` the engine repeats a recent costlier step's outputs on cheaper
    steps exactly as the model's own evaluation does, and only there."""
    torch.manual_seed(0)
    model = SANASKWS(cnn_trad_fpool3(shortcuts=True), init_bias=0.0).eval()
    model.architecture_threshold = 0.4  # whole networks, then cheap paths or none
    features = MFCC()(torch.from_numpy(audio)).unsqueeze(0)
    own = engine_for_model(model).run(audio)
    model.reuse_steps = 2
    with torch.no_grad():
        expected = model(features)
    reused = engine_for_model(model).run(audio)
    torch.testing.assert_close(
        model.logits(torch.from_numpy(reused.logits)), expected.logits[0], rtol=1e-5, atol=1e-5
    )
    changed = (reused.posteriors != own.posteriors).any(axis=1)
    cheaper = reused.macs_window[1:] < np.maximum.accumulate(reused.macs_window)[:-1]
    assert changed.any()
    assert not changed[0] and not (changed[1:] & ~cheaper).any()
    assert np.array_equal(reused.architectures, own.architectures)  # the policy is untouched


def test_a_held_budget_bounds_every_prefix_of_the_stream(audio: np.ndarray) -> None:
    """A controller that wants every node on, held to a fifth of the full network's MACs:
    the bucket lets whole networks through in bursts and keeps every prefix in budget."""
    model = SANASKWS(cnn_trad_fpool3(shortcuts=True, channels=4), init_bias=3.0).eval()
    full = float(model.cost(model.net.used(None, 1))[0])
    budget = full / 5
    cheapest = float(model.cost(model.net.used(model.cheapest_architecture, 1))[0])
    run = engine_for_model(model, budget=budget).run(np.tile(audio, 5))  # 20 s, 96 steps
    spent = np.cumsum(run.macs_window)
    assert (spent <= budget * np.arange(1, len(spent) + 1) * (1 + 1e-9)).all()
    assert spent[-1] > 0.8 * budget * len(spent)  # the savings are spent, not hoarded
    assert set(run.macs_window.tolist()) == {full, cheapest}
    with pytest.raises(ValueError, match="a budget to hold needs a sanas model, not StaticKWS"):
        engine_for_model(StaticKWS(cnn_trad_fpool3(shortcuts=True, channels=4)), budget=budget)


# ------------------------------------------------------------------------------ skipping
@contextmanager
def _recorded_calls(modules: dict[nn.Module, str]) -> Iterator[list[tuple[str, tuple[int, ...]]]]:
    """(name, input shape) of every call of the given modules while the context is open."""
    calls: list[tuple[str, tuple[int, ...]]] = []
    handles = [
        module.register_forward_pre_hook(
            lambda _module, args, name=name: calls.append((name, tuple(args[0].shape)))
        )
        for module, name in modules.items()
    ]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def test_unused_nodes_are_never_computed(audio: np.ndarray, net: SuperNetwork) -> None:
    """Only the used nodes' kernels (or modules) run, and a cached convolution sees only
    its new rows plus their context (kernels take time-major rows: time is dim 1)."""
    for tier in (TIER_0, TIER_35):
        engine = StreamingEngine(net, FixedPolicy(_architecture(net, tier)))
        modules = {module: name for name, module in net.modules_by_node.items()}
        kernels = {kernel: name for name, kernel in engine.engine.kernels.items()}
        with _recorded_calls(modules) as module_calls, _recorded_calls(kernels) as calls:
            engine.run(audio)
        assert {name for name, _ in calls} == set(tier) - {"in"}
        assert {name for name, _ in module_calls} <= set(tier)
    conv_rows = [shape[1] for name, shape in calls if name == "conv_0"]
    assert conv_rows[0] == 101 and set(conv_rows[1:]) == {20 + 19}  # new rows + context


# --------------------------------------------------------------------------- multi-stream
def test_multi_stream_equals_independent_streams(audio: np.ndarray, net: SuperNetwork) -> None:
    streams = [audio, audio[::-1].copy(), audio[1000:]]
    chunk_sizes = [3200, 3200, 2000]  # the third stream runs out of step with the others
    schedule = _switching_schedule(net, 16)
    batches: list[int] = []
    engine = MultiStreamEngine(net, ScheduledPolicy(schedule), streams=3)
    hook = engine.kernels["classifier"].register_forward_pre_hook(
        lambda _m, args: batches.append(args[0].shape[0])
    )
    try:
        results: list[list[Tensor]] = [[], [], []]
        longest = max(len(a) // size + 1 for a, size in zip(streams, chunk_sizes, strict=True))
        for k in range(longest):
            chunks = [
                a[k * size : (k + 1) * size] for a, size in zip(streams, chunk_sizes, strict=True)
            ]
            for i, steps in enumerate(engine.feed(chunks)):
                results[i] += [s.logits for s in steps]
        for i, steps in enumerate(engine.flush()):
            results[i] += [s.logits for s in steps]
    finally:
        hook.remove()
    assert max(batches) > 1  # streams at the same step with the same architecture batch
    for stream, logits in zip(streams, results, strict=True):
        alone = StreamingEngine(net, ScheduledPolicy(schedule)).run(stream)
        np.testing.assert_allclose(torch.stack(logits).numpy(), alone.logits, atol=1e-5)


def test_feeding_after_flush_is_refused(net: SuperNetwork) -> None:
    engine = StreamingEngine(net)
    engine.feed(np.zeros(3200, dtype=np.float32))
    engine.flush()
    with pytest.raises(ValueError, match="reset"):
        engine.feed(np.zeros(3200, dtype=np.float32))
    engine.reset()
    assert engine.feed(np.zeros(3200, dtype=np.float32)) == []


def test_training_mode_is_refused(net: SuperNetwork) -> None:
    engine = StreamingEngine(net)
    net.train()
    try:
        with pytest.raises(ValueError, match="eval"):
            engine.feed(np.zeros(3200, dtype=np.float32))
    finally:
        net.eval()
