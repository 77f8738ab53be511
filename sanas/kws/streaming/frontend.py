"""The streaming front end: feature frames of audio arriving chunk by chunk, equal to the
frontend's frames over the whole stream (see :class:`IncrementalFeatures`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sanas.kws.data.features import LogMel


# ----------------------------------------------------------------------------- features
class IncrementalFeatures:
    """Frontend frames of ``streams`` audio streams, chunk by chunk.

    The frames equal those of ``frontend`` over each whole stream (centred, zero-padded):
    frame k, the ``n_fft`` samples centred on sample ``hop·k``, is emitted once sample
    ``hop·k + n_fft/2`` has arrived; the first frames see the same zeros before the stream
    as the frontend's centring, and :meth:`finish` adds the zeros after it. Streams fed
    chunks of the same length share one frontend call.
    """

    def __init__(self, frontend: LogMel, streams: int = 1) -> None:
        if frontend.n_fft % 2:
            raise ValueError(f"n_fft must be even, got {frontend.n_fft}")
        self.frontend = frontend
        self.half = frontend.n_fft // 2
        self.hop = frontend.hop_length
        self.lead = -(-self.half // self.hop)  # buffer frames before the first exact one
        self.tails: list[Tensor] = []
        self.no_frames = torch.zeros(0, frontend.n_features)  # shared: nobody writes to it
        self.reset(streams)

    def reset(self, streams: int | None = None) -> None:
        """Start every stream afresh (``streams`` changes their number)."""
        count = len(self.tails) if streams is None else streams
        # Each tail holds the audio from sample hop · (next frame − lead) on; before the
        # stream, that is the frontend's zero padding.
        self.tails = [torch.zeros(self.lead * self.hop) for _ in range(count)]

    def push(self, chunks: Sequence[Tensor | None]) -> list[Tensor]:
        """Append a 1-D chunk per stream (``None``: nothing); the new frames of each,
        (n, features)."""
        out = [self.no_frames] * len(self.tails)
        buffers: dict[int, list[tuple[int, Tensor]]] = {}
        for i, chunk in enumerate(chunks):
            if chunk is None or chunk.numel() == 0:
                continue
            if chunk.dim() != 1:
                raise ValueError(f"stream {i}: expected a 1-D chunk, got {tuple(chunk.shape)}")
            buffer = torch.cat([self.tails[i], chunk])
            buffers.setdefault(len(buffer), []).append((i, buffer))
        for length, group in buffers.items():
            last = (length - self.half) // self.hop  # the last frame whose window is inside
            if last < self.lead:
                for i, buffer in group:
                    self.tails[i] = buffer
                continue
            audio = cat_batch([buffer.unsqueeze(0) for _, buffer in group])
            # The windows of frames lead … last, all inside the buffer: no padding needed.
            inside = audio[:, self.lead * self.hop - self.half :]
            frames = self.frontend.of_windows(inside.unfold(-1, self.frontend.n_fft, self.hop))
            for k, (i, buffer) in enumerate(group):
                out[i] = frames[k]
                self.tails[i] = buffer[(last + 1 - self.lead) * self.hop :]
        return out

    def finish(self) -> list[Tensor]:
        """The last frames of every stream, which see the zeros after its end."""
        return self.push([torch.zeros(self.half)] * len(self.tails))


def cat_batch(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """``torch.cat``, without a copy for a single tensor (the batch-1 path)."""
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors), dim=dim)
