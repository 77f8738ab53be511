"""The benchmark's real-time factor: a warm-up pass, then the median of timed passes over
the first stretch of the audio, each a fresh stream."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sanas.lab import bench_timing
from sanas.lab.bench_timing import SAMPLE_RATE, real_time_factor

LABELS = ["_silence_", "yes", "no"]


class _Clock:
    """A fake ``time`` module whose clock the fake engine advances."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class _Engine:
    """Takes ``durations[k]`` seconds of the fake clock for its k-th whole-stream run."""

    def __init__(self, clock: _Clock, durations: list[float]) -> None:
        self.clock = clock
        self.durations = durations
        self.lengths: list[int] = []

    def run(self, audio: np.ndarray) -> SimpleNamespace:
        self.clock.now += self.durations[len(self.lengths)]
        self.lengths.append(len(audio))
        steps = max(1, len(audio) // 3200)
        posteriors = np.zeros((steps, len(LABELS)), dtype=np.float32)
        posteriors[:, 0] = 1.0
        return SimpleNamespace(times_ms=200.0 * np.arange(steps), posteriors=posteriors)


def test_the_median_of_passes_after_a_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(bench_timing, "time", clock)
    engine = _Engine(clock, [9.0, 1.0, 3.0, 2.0, 8.0, 1.5])  # the warm-up pass is slow
    audio = np.zeros(200 * SAMPLE_RATE, dtype=np.float32)
    rtf = real_time_factor(engine, audio, LABELS)  # type: ignore[arg-type]
    assert engine.lengths == [120 * SAMPLE_RATE] * 6  # the first 120 s, 1 + 5 passes
    assert rtf == pytest.approx(2.0 / 120)  # median of 1, 3, 2, 8, 1.5; not the warm-up


def test_short_audio_is_used_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(bench_timing, "time", clock)
    engine = _Engine(clock, [5.0, 0.3, 0.1])
    audio = np.zeros(10 * SAMPLE_RATE, dtype=np.float32)
    rtf = real_time_factor(engine, audio, LABELS, passes=2)  # type: ignore[arg-type]
    assert engine.lengths == [10 * SAMPLE_RATE] * 3
    assert rtf == pytest.approx(0.2 / 10)
    with pytest.raises(ValueError, match="passes must be at least 1, got 0"):
        real_time_factor(engine, audio, LABELS, passes=0)  # type: ignore[arg-type]
