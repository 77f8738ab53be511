"""Live audio: a microphone (through ``sounddevice``, the ``live`` extra) feeding a
streaming model step by step (``sanas listen``).

PortAudio calls :meth:`LiveAudio.callback` on its own thread with each block of samples;
the callback only copies the block, mixed to mono, into a queue, so that it returns at
once whatever the model costs. The consumer (:func:`listen`) takes the blocks from the
queue, feeds them to the model (a :class:`~sanas.kws.streaming.engine.StreamingEngine` or
the ONNX Runtime backend: anything with ``feed(chunk) -> steps`` and ``flush()``), and
reports each block's steps with the wall and CPU time they took.

The microphone is opened at 16 kHz mono: PortAudio's host APIs (PulseAudio, PipeWire, ALSA's
``plug`` devices, Core Audio, WASAPI shared mode) convert any hardware rate to it. A device
that refuses 16 kHz is a :class:`MicrophoneError` naming its own rate, rather than a
resampler here: resampling block by block would need a filter state across blocks for
exact results, which PortAudio's converters already keep.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from sanas.kws.data.audio import SAMPLE_RATE

BLOCK_SAMPLES = 1600  # 100 ms: half a streaming step, so each step is emitted promptly
LIVE_INSTALL_HINT = "pip install 'sanas[live]'"
PORTAUDIO_HINT = (
    "the PortAudio library is not installed: install the system package "
    "(Debian/Ubuntu: sudo apt-get install libportaudio2; macOS: brew install portaudio), "
    f"then {LIVE_INSTALL_HINT}"
)


class MicrophoneError(ValueError):
    """No usable microphone: sounddevice or PortAudio missing, a bad device, a rate the
    device refuses."""


class StepModel(Protocol):
    """A streaming model: audio in, completed steps out."""

    def feed(self, chunk: np.ndarray) -> list[Any]: ...

    def flush(self) -> list[Any]: ...


def load_sounddevice() -> ModuleType:
    """The ``sounddevice`` module, or a one-line :class:`MicrophoneError` saying what to
    install (importing it raises OSError when PortAudio is missing)."""
    try:
        import sounddevice
    except ImportError:
        raise MicrophoneError(f"live input needs sounddevice: {LIVE_INSTALL_HINT}") from None
    except OSError:
        raise MicrophoneError(PORTAUDIO_HINT) from None
    return sounddevice


def list_input_devices() -> list[str]:
    """One line per input device: its number (for ``--device``), name and default rate."""
    sd = load_sounddevice()
    try:
        devices = sd.query_devices()
    except sd.PortAudioError as err:
        raise MicrophoneError(f"cannot list the audio devices: {err}") from None
    return [
        f"{index}: {device['name']} ({device['max_input_channels']} channels, "
        f"{device['default_samplerate']:.0f} Hz)"
        for index, device in enumerate(devices)
        if device["max_input_channels"] > 0
    ]


class LiveAudio:
    """Blocks of audio from a callback thread to a consumer, through a queue.

    ``callback`` has the signature of sounddevice's ``InputStream`` callback; ``close`` is
    its ``finished_callback`` (the stream stopped), after which :meth:`blocks` ends.
    """

    def __init__(self) -> None:
        self.queue: queue.Queue[np.ndarray | None] = queue.Queue()
        self.overflows = 0  # blocks PortAudio reported as dropped (the consumer too slow)

    def callback(self, indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        """Queue a copy of ``indata`` (frames, channels), mixed to mono float32."""
        if status and getattr(status, "input_overflow", False):
            self.overflows += 1
        block = np.asarray(indata, dtype=np.float32)[:frames]
        self.queue.put(block.mean(axis=1) if block.ndim == 2 else block.copy())

    def close(self) -> None:
        """The stream has ended: let :meth:`blocks` return once the queue is drained."""
        self.queue.put(None)

    def blocks(self) -> Iterator[np.ndarray]:
        """The queued blocks, in order, waiting for each, until :meth:`close`."""
        while (block := self.queue.get()) is not None:
            yield block


def open_microphone(audio: LiveAudio, device: int | None = None) -> Any:
    """An unstarted sounddevice ``InputStream`` at 16 kHz mono that calls ``audio``'s
    callback (``device``: a number from :func:`list_input_devices`, None: the default)."""
    sd = load_sounddevice()
    try:
        sd.check_input_settings(device=device, channels=1, samplerate=SAMPLE_RATE)
    except (ValueError, sd.PortAudioError) as err:
        raise MicrophoneError(_device_problem(sd, device, err)) from None
    try:
        return sd.InputStream(
            samplerate=SAMPLE_RATE,
            blocksize=BLOCK_SAMPLES,
            device=device,
            channels=1,
            dtype="float32",
            callback=audio.callback,
            finished_callback=audio.close,
        )
    except sd.PortAudioError as err:  # e.g. the device is busy
        raise MicrophoneError(f"cannot open the microphone: {err}") from None


def _device_problem(sd: ModuleType, device: int | None, error: Exception) -> str:
    """Why ``device`` cannot record 16 kHz mono, in one line."""
    name = "the default input device" if device is None else f"input device {device}"
    try:
        info = sd.query_devices(device, "input")
    except ValueError:
        return f"{name}: not an input device ({error}); see sanas listen --list-devices"
    return (
        f"{name} ({info['name']}) does not record 16000 Hz mono (its rate is "
        f"{info['default_samplerate']:.0f} Hz: {error}); choose a device that converts, "
        "e.g. PulseAudio's or PipeWire's, with --device (sanas listen --list-devices)"
    )


@dataclass(frozen=True)
class BlockReport:
    """What one block of audio gave: its completed steps, the wall seconds the model took
    on it and the share of one core the process used meanwhile."""

    steps: list[Any]
    seconds: float
    cpu_load: float


def listen(
    model: StepModel, blocks: Iterator[np.ndarray], report: Callable[[BlockReport], None]
) -> None:
    """Feed each block to ``model`` as it arrives and ``report`` what it gave; flush the
    model when the blocks end."""
    wall, cpu = time.perf_counter(), time.process_time()
    for block in blocks:
        start = time.perf_counter()
        steps = model.feed(block)
        now, cpu_now = time.perf_counter(), time.process_time()
        load = (cpu_now - cpu) / max(now - wall, 1e-9)
        report(BlockReport(steps, now - start, load))
        wall, cpu = now, cpu_now
    start = time.perf_counter()
    steps = model.flush()
    report(BlockReport(steps, time.perf_counter() - start, 0.0))
