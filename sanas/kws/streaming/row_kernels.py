"""Kernels of the streaming engine: a network's layers on *time-major rows*.

The engine (:mod:`sanas.kws.streaming.engine`) keeps each trunk node's output as time-major rows,
(batch, time, width, channels), in a buffer per stream: a window is then a contiguous slice
of it, with no copy per step. These kernels compute the same values as the network's own
modules, which take NCHW (batch, channels, time, width), in that layout:

- :class:`RowConv`: a trunk node's convolution, computed for one stream as one GEMM over
  the patches of its input rows (im2col), with the node's max pooling over width, bias
  and ReLU applied after it on the smaller pooled output (``max(y + b) == max(y) + b``
  exactly, and ReLU commutes with the max); for a batch of streams, the module itself.
- :class:`ModuleOnRows`: any other time-sliding module (the network's own, on NCHW views).
- :class:`Dense`: a ``[Flatten,] Linear[, ReLU]`` node. Fed by a trunk node, it takes the
  time-major rows directly, with the weight's columns permuted to that order (a copy made
  once, refreshed whenever the weight changes); at batch size 1 it is a matrix-vector
  product (``addmv``), the fastest of PyTorch's batch-1 paths (it is memory-bound).
- :class:`Layers`: any other node's ``Sequential`` (on NCHW values) as a flat chain of
  direct calls, each eval-mode batch norm folded into the convolution or linear layer
  before it (a small network's step is mostly per-call overhead: TC-ResNet8's full step
  makes 10 convolution and 10 batch-norm calls).

Every kernel is an ``nn.Module`` holding the network's module, so forward hooks observe
its calls. Outputs equal the modules' to float rounding (summation order only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

# Layers that are the identity in evaluation mode (the engine refuses training mode).
_IDENTITY_IN_EVAL = (nn.Dropout, nn.Identity)
_Derived = TypeVar("_Derived")


def _layers(module: nn.Module) -> list[nn.Module]:
    """The layers of a Sequential (a single module otherwise), without eval identities."""
    layers = list(module) if isinstance(module, nn.Sequential) else [module]
    return [layer for layer in layers if not isinstance(layer, _IDENTITY_IN_EVAL)]


def _width_pool(layer: nn.Module) -> int | None:
    """The kernel width k of a MaxPool2d over width only ((1, k), stride k, no padding)."""
    if not isinstance(layer, nn.MaxPool2d) or layer.ceil_mode:
        return None
    kernel, stride = _pair(layer.kernel_size), _pair(layer.stride or layer.kernel_size)
    plain = _pair(layer.padding) == (0, 0) and _pair(layer.dilation) == (1, 1)
    return kernel[1] if plain and kernel[0] == 1 and stride == (1, kernel[1]) else None


class _Snapshot(Generic[_Derived]):
    """A value derived from parameters (and buffers), recomputed when one of them changes
    in place (its version counter) or is replaced (its storage)."""

    def __init__(self, parameters: Sequence[Tensor], derive: Callable[..., _Derived]) -> None:
        self.parameters = tuple(parameters)
        self.derive = derive
        self.key: list[tuple[int, int]] | None = None
        self.value: _Derived | None = None

    def get(self) -> _Derived:
        key = [(p._version, p.data_ptr()) for p in self.parameters]
        if key != self.key:
            with torch.no_grad():
                self.value = self.derive(*(p.detach() for p in self.parameters))
            self.key = key
        return self.value  # type: ignore[return-value]


def _gemm_weight(weight: Tensor) -> Tensor:
    """A convolution's weight (out, in, kt, kw) as the matrix (out, kt · kw · in) that
    multiplies :func:`_patch_view`'s patches (their time, width, channel order)."""
    return weight.permute(0, 2, 3, 1).reshape(len(weight), -1).contiguous()


def _patch_view(rows: Tensor, kernel: Sequence[int], stride: Sequence[int]) -> Tensor:
    """The im2col patches of time-major rows (batch, time, width, channels) as a view
    (batch, out time, out width, kt, kw, channels): no copy until it is reshaped."""
    (kt, kw), (st, sw) = kernel, stride
    batch, time, width, channels = rows.shape
    s_batch, s_time, s_width, s_channel = rows.stride()
    return rows.as_strided(
        (batch, (time - kt) // st + 1, (width - kw) // sw + 1, kt, kw, channels),
        (s_batch, s_time * st, s_width * sw, s_time, s_width, s_channel),
    )


class ModuleOnRows(nn.Module):
    """A time-sliding module applied as is, to the NCHW view of time-major rows.

    That view has channels-last strides, so oneDNN's convolutions return channels-last
    outputs (and PyTorch's max pooling over width is fast on them, about 15x faster than
    on NCHW): the time-major result is a free view of the module's output.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, rows: Tensor) -> Tensor:
        x = rows.permute(0, 3, 1, 2)
        if x.shape[1] == 1:  # the stride of a single channel is free: make it channels-last
            x = x.as_strided(x.shape, (x.stride(0), 1, x.stride(2), x.stride(3)))
        return self.module(x).permute(0, 2, 3, 1).contiguous()


# Output rows up to which the GEMM beats the network's own (oneDNN) convolution, measured
# on cnn-trad-fpool3 at batch 1, one thread: 12-25% faster for conv_1 at 20 rows (conv_0:
# equal), equal near 30, 4% slower at 40 and 15% at a whole window (73 rows).
GEMM_MAX_ROWS = 30
# Streams up to which the GEMM is used. Its patch matrix grows with the batch (~105 MB
# for conv_1 at 64 streams, far beyond the caches), and oneDNN's convolution, which
# never materialises it, was faster at every batch above 1 (issue 19).
GEMM_MAX_BATCH = 1


class RowConv(ModuleOnRows):
    """``Conv2d → [MaxPool2d((1, k))] → [ReLU]`` on time-major rows, as one GEMM for a few
    rows (a cached step's) of one stream, as the module itself for more rows or streams.

    Input (batch, time, width, in channels), any strides; output (batch, time − kt + 1,
    pooled width, out channels), contiguous. The convolution needs groups 1, dilation 1,
    no padding, stride 1 in time (any stride in width).
    """

    def __init__(
        self,
        module: nn.Module,
        conv: nn.Conv2d,
        pool: int = 1,
        relu: bool = False,
        max_rows: int = GEMM_MAX_ROWS,
        max_batch: int = GEMM_MAX_BATCH,
    ) -> None:
        super().__init__(module)
        self.conv = conv
        self.pool = pool
        self.relu = relu
        self.max_rows = max_rows
        self.max_batch = max_batch
        self.weight = _Snapshot((conv.weight,), _gemm_weight)

    @staticmethod
    def supports(conv: nn.Module) -> bool:
        """Whether ``conv`` is a Conv2d this kernel computes."""
        return (
            isinstance(conv, nn.Conv2d)
            and conv.groups == 1
            and _pair(conv.dilation) == (1, 1)
            and conv.padding != "same"
            and (conv.padding == "valid" or _pair(conv.padding) == (0, 0))
            and conv.stride[0] == 1
        )

    def forward(self, rows: Tensor) -> Tensor:
        view = _patch_view(rows, self.conv.kernel_size, self.conv.stride)
        batch, out_time, out_width = view.shape[:3]
        if out_time > self.max_rows or batch > self.max_batch:
            return super().forward(rows)
        patches = view.reshape(batch * out_time * out_width, -1)
        # linear (patches · weightᵀ) rather than mm: 10% faster for conv_0's shape.
        y = F.linear(patches, self.weight.get()).view(batch, out_time, out_width, -1)
        if self.pool > 1:
            pooled = out_width // self.pool
            y = y[:, :, : pooled * self.pool].unflatten(2, (pooled, self.pool)).amax(3)
        if self.conv.bias is not None:  # after the pooling: on fewer values, same result
            y = y.add_(self.conv.bias)
        return y.relu_() if self.relu else y


def row_kernel(module: nn.Module) -> nn.Module:
    """The kernel of a trunk node's module on time-major rows: a :class:`RowConv` for
    ``Conv2d`` followed by at most one width pooling and ReLUs (in any order: they
    commute), else :class:`ModuleOnRows`."""
    layers = _layers(module)
    if not layers:  # the identity in eval mode
        return ModuleOnRows(module)
    head, rest = layers[0], layers[1:]
    pools = [_width_pool(layer) for layer in rest]
    relus = [isinstance(layer, nn.ReLU) for layer in rest]
    compiles = (
        RowConv.supports(head)
        and all(p is not None or r for p, r in zip(pools, relus, strict=True))
        and sum(p is not None for p in pools) <= 1
    )
    if not compiles:
        return ModuleOnRows(module)
    pool = next((p for p in pools if p is not None), 1)
    return RowConv(module, head, pool, relu=any(relus))  # type: ignore[arg-type]


class Dense(nn.Module):
    """``[Flatten →] Linear [→ ReLU]``; with ``rows_shape`` = (channels, time, width), on
    the time-major rows (batch, time, width, channels) of a (channels, time, width) input.
    """

    def __init__(
        self,
        linear: nn.Linear,
        relu: bool,
        rows_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.linear = linear
        self.relu = relu
        self.rows = rows_shape is not None  # takes time-major rows
        self.weight: _Snapshot[Tensor] | None = None
        if rows_shape is not None and rows_shape[0] > 1:  # one channel: the same order
            channels, time, width = rows_shape
            self.weight = _Snapshot(
                (linear.weight,),
                lambda w: w.view(-1, channels, time, width).permute(0, 2, 3, 1).flatten(1).clone(),
            )

    def forward(self, x: Tensor) -> Tensor:
        linear = self.linear
        weight = linear.weight if self.weight is None else self.weight.get()
        if x.shape[0] > 1:
            y = F.linear(x.reshape(x.shape[0], -1), weight, linear.bias)
            return y.relu_() if self.relu else y
        # Batch 1: a matrix-vector product, ~10% faster than linear on a large weight.
        vector = x.reshape(-1)
        bias = linear.bias
        y = torch.mv(weight, vector) if bias is None else torch.addmv(bias, weight, vector)
        return (y.relu_() if self.relu else y).unsqueeze(0)


def dense_kernel(module: nn.Module, input_shape: Sequence[int], rows: bool = False) -> Dense | None:
    """A :class:`Dense` for ``[Flatten,] Linear[, ReLU…]`` on per-sample inputs of
    ``input_shape`` (``None`` for anything else); ``rows``: the (channels, time, width)
    input comes as time-major rows (a Flatten is then required)."""
    layers = _layers(module)
    flatten = bool(layers) and isinstance(layers[0], nn.Flatten)
    if flatten:
        if (layers[0].start_dim, layers[0].end_dim) != (1, -1):  # type: ignore[union-attr]
            return None
        layers = layers[1:]
    elif rows or len(input_shape) != 1:
        return None
    if not layers or not isinstance(layers[0], nn.Linear):
        return None
    if not all(isinstance(layer, nn.ReLU) for layer in layers[1:]):
        return None
    return Dense(layers[0], relu=len(layers) > 1, rows_shape=input_shape if rows else None)


# The batch norm that folds into each layer type (eval mode: a fixed affine map per
# output channel, dim 1 of both).
_FOLDING_NORM = {nn.Conv2d: nn.BatchNorm2d, nn.Conv1d: nn.BatchNorm1d, nn.Linear: nn.BatchNorm1d}


def _folds(layer: nn.Module, norm: nn.Module) -> bool:
    """Whether ``norm`` is a batch norm with running statistics right after a convolution
    or linear layer ``layer``, over its output channels."""
    if type(norm) is not _FOLDING_NORM.get(type(layer)):
        return False
    channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    return norm.running_mean is not None and norm.num_features == channels  # type: ignore[union-attr]


def _fold(
    weight: Tensor,
    bias: Tensor | None,
    mean: Tensor,
    var: Tensor,
    scale: Tensor | None,
    shift: Tensor | None,
    eps: float,
) -> tuple[Tensor, Tensor]:
    """The weight and bias of ``norm(layer(x))`` as one layer, computed in float64 so that
    the folded layer differs from the pair by float32 rounding only."""
    factor = torch.rsqrt(var.double() + eps)
    if scale is not None:
        factor = factor * scale.double()
    offset = -mean.double() if bias is None else bias.double() - mean.double()
    folded_bias = offset * factor + (0.0 if shift is None else shift.double())
    folded = weight.double() * factor.view(-1, *[1] * (weight.dim() - 1))
    return folded.to(weight.dtype), folded_bias.to(weight.dtype)


def _folded_call(layer: nn.Module, norm: nn.Module) -> Callable[[Tensor], Tensor]:
    """``norm(layer(x))`` as one convolution or linear layer, refreshed when either
    module's parameters or statistics change."""
    tensors = [layer.weight, layer.bias, norm.running_mean, norm.running_var]
    tensors += [norm.weight, norm.bias]
    present = [t is not None for t in tensors]
    eps = norm.eps

    def derive(*given: Tensor) -> tuple[Tensor, Tensor]:
        values = iter(given)
        full = [next(values) if here else None for here in present]
        return _fold(*full, eps=eps)  # type: ignore[arg-type]

    parameters = [t for t in tensors if t is not None]
    if isinstance(layer, nn.Linear):  # folds on (batch, features) only: the norm's dim 1
        snapshot = _Snapshot(parameters, derive)
        return lambda x: F.linear(x, *snapshot.get()) if x.dim() == 2 else norm(layer(x))
    return _ConvCall(layer, parameters, derive)  # type: ignore[arg-type]


# Patch-matrix elements (batch 1) up to which a convolution runs as one GEMM. Measured on
# TC-ResNet8's temporal convolutions (patch matrices of 3.7K-12K elements), one thread:
# the GEMM took 40-60 % of oneDNN's time; a 1×1 kernel, already a GEMM there, gained
# nothing. The bound, a few times the largest measured, keeps bigger inputs (res8's
# 101×40 maps) on oneDNN, which never builds the matrix.
GEMM_MAX_PATCHES = 32_768


class _ConvCall:
    """A ``Conv2d`` with given weight and bias (the module's own, or derived from its
    parameters, e.g. a folded batch norm): for one small input, one GEMM over its
    patches (im2col); else the module's convolution."""

    def __init__(
        self,
        conv: nn.Conv2d | nn.Conv1d,
        parameters: Sequence[Tensor],
        derive: Callable[..., tuple[Tensor, Tensor | None]],
    ) -> None:
        self.conv_forward = conv._conv_forward
        self.gemm = (
            isinstance(conv, nn.Conv2d)
            and conv.groups == 1
            and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple)
            and _pair(conv.dilation) == (1, 1)
            and conv.kernel_size != (1, 1)
        )
        self.kernel, self.stride = _pair(conv.kernel_size), _pair(conv.stride)
        padding = _pair(conv.padding) if self.gemm else (0, 0)
        self.padding = (padding[1], padding[1], padding[0], padding[0])  # F.pad's order
        self.padded = padding != (0, 0)
        gemm = self.gemm

        def with_gemm_weight(*given: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
            weight, bias = derive(*given)
            return weight, bias, _gemm_weight(weight) if gemm else None

        self.snapshot = _Snapshot(parameters, with_gemm_weight)

    def __call__(self, x: Tensor) -> Tensor:
        weight, bias, gemm = self.snapshot.get()
        if not self.gemm or x.dim() != 4 or x.shape[0] != 1:
            return self.conv_forward(x, weight, bias)
        xp = F.pad(x, self.padding) if self.padded else x
        view = _patch_view(xp.permute(0, 2, 3, 1), self.kernel, self.stride)  # time-major
        out_time, out_width = view.shape[1:3]
        if out_time * out_width * gemm.shape[1] > GEMM_MAX_PATCHES:  # type: ignore[union-attr]
            return self.conv_forward(x, weight, bias)
        patches = view.reshape(out_time * out_width, -1)
        y = F.linear(patches, gemm, bias)  # (time · width, out channels)
        return y.view(1, out_time, out_width, -1).permute(0, 3, 1, 2)


def _weight_and_bias(weight: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """A layer's own weight and bias, as :class:`_ConvCall` derives them."""
    return weight, bias


def _direct_call(layer: nn.Module) -> Callable[[Tensor], Tensor]:
    """A layer as a direct call of its functional form (no ``nn.Module`` dispatch), or
    the layer itself when it is not exactly one of these common types (a subclass may
    compute something else)."""
    kind = type(layer)
    if kind is nn.ReLU:
        return torch.relu
    if kind is nn.Flatten:
        start, end = layer.start_dim, layer.end_dim
        return lambda x: x.flatten(start, end)
    if kind is nn.Linear:
        weight, bias = layer.weight, layer.bias
        return lambda x: F.linear(x, weight, bias)
    if kind in (nn.Conv1d, nn.Conv2d):
        own = [t for t in (layer.weight, layer.bias) if t is not None]
        return _ConvCall(layer, own, _weight_and_bias)  # type: ignore[arg-type]
    if kind is nn.AdaptiveAvgPool2d:
        size = layer.output_size
        return lambda x: F.adaptive_avg_pool2d(x, size)
    return layer


class Layers(nn.Module):
    """A node's ``Sequential`` (in eval mode) as a flat chain of direct calls: each batch
    norm right after a convolution or linear layer folded into it (weights derived once,
    refreshed when the parameters or statistics change), the common layers called in
    their functional form, the identities of eval mode dropped, any other layer called
    as itself. Its output equals the module's to float rounding."""

    def __init__(self, module: nn.Sequential) -> None:
        super().__init__()
        self.module = module
        layers = _layers(module)
        self.chain: list[Callable[[Tensor], Tensor]] = []
        self.folded = 0
        k = 0
        while k < len(layers):
            if k + 1 < len(layers) and _folds(layers[k], layers[k + 1]):
                self.chain.append(_folded_call(layers[k], layers[k + 1]))
                self.folded += 1
                k += 2
            else:
                self.chain.append(_direct_call(layers[k]))
                k += 1

    def forward(self, x: Tensor) -> Tensor:
        for call in self.chain:
            x = call(x)
        return x


def node_kernel(module: nn.Module) -> nn.Module:
    """The kernel of a node that runs on NCHW values: :class:`Layers` for a
    ``Sequential``, else the module itself."""
    return Layers(module) if isinstance(module, nn.Sequential) else module
