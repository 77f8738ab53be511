"""Row kernels compute what the network's modules compute, on time-major rows."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from sanas.kws.model.networks import cnn_trad_fpool3
from sanas.kws.streaming.row_kernels import (
    Dense,
    Layers,
    ModuleOnRows,
    RowConv,
    dense_kernel,
    node_kernel,
    row_kernel,
)


def _nchw(rows: Tensor) -> Tensor:
    return rows.permute(0, 3, 1, 2)


def _rows(nchw: Tensor) -> Tensor:
    return nchw.permute(0, 2, 3, 1)


@pytest.fixture(scope="module")
def trunk() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    net = cnn_trad_fpool3().eval()
    return {name: net.nodes[name].module for name in ("conv_0", "conv_1")}


@torch.no_grad()
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("out_rows", [1, 20, 73])
@pytest.mark.parametrize(("name", "width", "channels"), [("conv_0", 40, 1), ("conv_1", 11, 64)])
def test_row_conv_equals_the_module(
    trunk: dict[str, nn.Module], name: str, width: int, channels: int, out_rows: int, batch: int
) -> None:
    """Both the GEMM (forced for every row count) and the module path equal the module."""
    module = trunk[name]
    kernel = row_kernel(module)
    assert isinstance(kernel, RowConv)
    kt = kernel.conv.kernel_size[0]
    rows = torch.randn(batch, out_rows + kt - 1, width, channels)
    expected = _rows(module(_nchw(rows)))
    torch.testing.assert_close(kernel(rows), expected, rtol=0, atol=1e-5)
    kernel.max_rows = kernel.max_batch = 10_000  # always the GEMM
    torch.testing.assert_close(kernel(rows), expected, rtol=0, atol=1e-5)


@torch.no_grad()
def test_many_streams_run_the_module_not_a_patch_matrix(trunk: dict[str, nn.Module]) -> None:
    """A cached step's rows go through one GEMM for one stream; for a batch of streams the
    patch matrix would grow with it (~105 MB at 64), so the module's own convolution runs."""
    kernel = row_kernel(trunk["conv_1"])
    assert isinstance(kernel, RowConv)
    calls: list[int] = []
    kernel.conv.register_forward_hook(lambda module, inputs, output: calls.append(len(output)))
    kt = kernel.conv.kernel_size[0]
    for batch in (1, 8):
        rows = torch.randn(batch, 20 + kt - 1, 11, 64)
        expected = _rows(trunk["conv_1"](_nchw(rows)))
        torch.testing.assert_close(kernel(rows), expected, rtol=0, atol=1e-5)
    assert calls == [1, 8, 8]  # the reference at batch 1, then the kernel and the reference


@torch.no_grad()
def test_row_conv_reads_strided_rows(trunk: dict[str, nn.Module]) -> None:
    """Rows sliced out of a larger buffer (the engine's caches) need no copy first."""
    kernel = row_kernel(trunk["conv_1"])
    storage = torch.randn(2, 60, 11, 64)
    rows = storage[:, 17:46]  # 29 rows: 20 output rows, batch stride 60 rows
    assert not rows.is_contiguous()
    expected = _rows(trunk["conv_1"](_nchw(rows.contiguous())))
    torch.testing.assert_close(kernel(rows), expected, rtol=0, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize(
    "layers",
    [
        [nn.Conv2d(3, 5, (4, 3)), nn.ReLU(), nn.MaxPool2d((1, 2))],  # ReLU before the pool
        [nn.Conv2d(3, 5, (4, 3), stride=(1, 2)), nn.MaxPool2d((1, 2)), nn.Dropout(0.5)],
        [nn.Conv2d(3, 5, (2, 3), bias=False)],
    ],
)
def test_row_conv_variants_equal_the_module(layers: list[nn.Module]) -> None:
    module = nn.Sequential(*layers).eval()
    kernel = row_kernel(module)
    assert isinstance(kernel, RowConv)
    rows = torch.randn(2, 9, 16, 3)  # width 16: the pool drops a partial group
    torch.testing.assert_close(kernel(rows), _rows(module(_nchw(rows))), rtol=0, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize(
    "module",
    [
        nn.Sequential(nn.Conv2d(3, 5, (4, 3), padding=(0, 1)), nn.ReLU()),  # padded in width
        nn.Sequential(nn.Conv2d(3, 5, (4, 3)), nn.AvgPool2d((1, 2))),
        nn.Sequential(nn.Conv2d(3, 5, (4, 3)), nn.Tanh()),
        nn.Sequential(nn.Dropout(0.5)),
        nn.ReLU(),
    ],
)
def test_other_modules_run_as_themselves(module: nn.Module) -> None:
    kernel = row_kernel(module.eval())
    assert type(kernel) is ModuleOnRows
    rows = torch.randn(2, 9, 16, 3)
    torch.testing.assert_close(kernel(rows), _rows(module(_nchw(rows))), rtol=0, atol=0)


@torch.no_grad()
@pytest.mark.parametrize("batch", [1, 4])
def test_dense_on_rows_equals_flatten_linear(batch: int) -> None:
    """The weight's columns are permuted to the rows' (time, width, channel) order."""
    torch.manual_seed(0)
    shape = (64, 82, 11)  # shortcut_1's input: conv_0's output
    module = nn.Sequential(nn.Flatten(), nn.Linear(64 * 82 * 11, 128), nn.ReLU()).eval()
    kernel = dense_kernel(module, shape, rows=True)
    assert isinstance(kernel, Dense) and kernel.rows
    x = torch.randn(batch, *shape)
    torch.testing.assert_close(kernel(_rows(x).contiguous()), module(x), rtol=0, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("batch", [1, 4])
def test_dense_on_vectors_equals_the_module(batch: int) -> None:
    module = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Dropout(0.1)).eval()
    kernel = dense_kernel(module, (32,))
    assert kernel is not None and not kernel.rows
    x = torch.randn(batch, 32)
    torch.testing.assert_close(kernel(x), module(x), rtol=0, atol=1e-6)
    bare = nn.Linear(32, 12, bias=False)
    torch.testing.assert_close(dense_kernel(bare, (32,))(x), bare(x), rtol=0, atol=1e-6)  # type: ignore[misc]


def test_dense_kernel_refuses_what_it_cannot_compute() -> None:
    assert dense_kernel(nn.Sequential(nn.Linear(4, 3), nn.Tanh()), (4,)) is None
    assert dense_kernel(nn.Linear(4, 3), (2, 1, 2), rows=True) is None  # rows need a Flatten
    assert dense_kernel(nn.Linear(4, 3), (2, 4)) is None  # a Linear over the last dim only
    assert dense_kernel(nn.ReLU(), (4,)) is None


@torch.no_grad()
def test_kernels_follow_weight_changes(trunk: dict[str, nn.Module]) -> None:
    """Reordered weight copies are refreshed after an in-place update or a reload."""
    conv = row_kernel(trunk["conv_1"])
    module = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 4, 5)).eval()
    dense = dense_kernel(module, (2, 3, 4), rows=True)
    assert dense is not None
    rows, x = torch.randn(1, 29, 11, 64), torch.randn(1, 2, 3, 4)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    conv(rows), dense(_rows(x).contiguous())  # the copies exist
    trunk["conv_1"][0].weight.mul_(-0.5)
    module[1].weight.add_(1.0)
    try:
        expected = _rows(trunk["conv_1"](_nchw(rows)))
        torch.testing.assert_close(conv(rows), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(dense(_rows(x).contiguous()), module(x), rtol=0, atol=1e-5)
        module.load_state_dict(state)
        torch.testing.assert_close(dense(_rows(x).contiguous()), module(x), rtol=0, atol=1e-5)
    finally:
        trunk["conv_1"][0].weight.mul_(-2.0)


# ------------------------------------------------------------------------------- layers
def _trained_norm(norm: nn.Module) -> nn.Module:
    """A batch norm with the statistics and affine parameters of a trained one."""
    channels = norm.num_features
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(channels))
        norm.running_var.copy_(torch.rand(channels) + 0.2)
        if norm.affine:
            norm.weight.copy_(torch.randn(channels))
            norm.bias.copy_(torch.randn(channels))
    return norm


class _Tanh(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)


@torch.no_grad()
@pytest.mark.parametrize(
    ("layers", "shape", "folded"),
    [
        # TC-ResNet's temporal blocks: padded, strided (k, 1) kernels (the GEMM path).
        ([nn.Conv2d(6, 8, (9, 1), (2, 1), (4, 0), bias=False), nn.BatchNorm2d(8), nn.ReLU(),
          nn.Conv2d(8, 8, (9, 1), padding=(4, 0)), nn.BatchNorm2d(8)], (1, 6, 51, 1), 2),
        ([nn.Conv2d(6, 8, (9, 1), (2, 1), (4, 0)), nn.BatchNorm2d(8)], (3, 6, 51, 1), 1),
        ([nn.Conv2d(6, 8, 1, (2, 1), bias=False), nn.BatchNorm2d(8), nn.ReLU()], (1, 6, 51, 1), 1),
        ([nn.Conv2d(2, 4, 3, padding=1, dilation=1), nn.Dropout(0.5), nn.BatchNorm2d(4),
          nn.AdaptiveAvgPool2d(1), nn.Flatten()], (1, 2, 12, 10), 1),
        ([nn.Conv2d(2, 4, 3, groups=2, padding=1), nn.BatchNorm2d(4), _Tanh()], (1, 2, 9, 9), 1),
        ([nn.Conv2d(2, 4, 3), nn.ReLU(), nn.BatchNorm2d(4, affine=False)], (1, 2, 9, 9), 0),
        ([nn.Conv1d(3, 5, 3, padding=1), nn.BatchNorm1d(5), nn.ReLU()], (2, 3, 20), 1),
        ([nn.Flatten(), nn.Linear(12, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 3)],
         (2, 3, 4), 1),
    ],
)  # fmt: skip
def test_layers_fold_norms_and_equal_the_module(
    layers: list[nn.Module], shape: tuple[int, ...], folded: int
) -> None:
    """A node's Sequential as a chain with each batch norm right after a convolution or
    linear layer folded into it: the module's output to float rounding, and only those
    norms folded (not one after a ReLU)."""
    module = nn.Sequential(*layers)
    for layer in module:
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            _trained_norm(layer)
    module.eval()
    state = {k: v.clone() for k, v in module.state_dict().items()}
    kernel = node_kernel(module)
    assert isinstance(kernel, Layers) and kernel.folded == folded
    x = torch.randn(shape)
    torch.testing.assert_close(kernel(x), module(x), rtol=1e-5, atol=1e-5)
    for name, value in module.state_dict().items():  # the user's model is untouched
        assert torch.equal(value, state[name]), name


@torch.no_grad()
def test_layers_follow_weight_and_statistics_changes() -> None:
    """Folded weights are derived again after an in-place update or a reload."""
    module = nn.Sequential(nn.Conv2d(4, 6, (9, 1), padding=(4, 0)), nn.BatchNorm2d(6))
    _trained_norm(module[1]).eval()
    kernel = node_kernel(module)
    x = torch.randn(1, 4, 26, 1)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    kernel(x)  # the folded copy exists
    module[0].weight.mul_(-0.5)
    module[1].running_var.add_(1.0)
    torch.testing.assert_close(kernel(x), module(x), rtol=1e-5, atol=1e-5)
    module.load_state_dict(state)
    torch.testing.assert_close(kernel(x), module(x), rtol=1e-5, atol=1e-5)


def test_only_sequentials_become_layers() -> None:
    relu = nn.ReLU()
    assert node_kernel(relu) is relu
