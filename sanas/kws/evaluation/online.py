"""Detections step by step, as the steps of a live stream arrive (``sanas listen``).

The offline rule (:func:`~sanas.kws.evaluation.metrics.detect`) sees the whole stream; a
live stream has only its past, so :class:`OnlineDetector` keeps the steps of the last
averaging window and fires by the same rule, one step at a time.
"""

from __future__ import annotations

import math

import numpy as np

from sanas.kws.evaluation.metrics import (
    SILENCE_LABEL,
    Detection,
    DetectionConfig,
    smooth_posteriors,
)


class OnlineDetector:
    """Detections as the steps arrive, by the rule of
    :func:`~sanas.kws.evaluation.metrics.detect` (RecognizeCommands'): each step's
    posteriors averaged over the last 500 ms (:func:`smooth_posteriors` on those steps
    only, so the cost per step stays constant), then fired unless it repeats the last
    label or comes within the suppression time of the last detection."""

    def __init__(self, labels: tuple[str, ...], config: DetectionConfig) -> None:
        self.labels = labels
        self.config = config
        self.times: list[float] = []  # the steps of the last averaging window
        self.posteriors: list[np.ndarray] = []
        self.silence = SILENCE_LABEL
        self.last_label = SILENCE_LABEL  # nothing fired yet
        self.last_ms = -math.inf

    def add(self, time_ms: float, posteriors: np.ndarray) -> list[Detection]:
        """Add a step; return the detection it fires, if any."""
        self.times.append(time_ms)
        self.posteriors.append(posteriors)
        while self.times[0] < time_ms - self.config.averaging_window_ms:
            del self.times[0], self.posteriors[0]
        averaged, reliable = smooth_posteriors(
            np.array(self.times), np.stack(self.posteriors), self.labels, self.config
        )
        top = int(averaged[-1].argmax())
        score, label = float(averaged[-1, top]), self.labels[top]
        if not reliable[-1] or score <= self.config.detection_threshold:
            return []
        since_last = math.inf if self.last_label == self.silence else time_ms - self.last_ms
        if label == self.last_label or since_last <= self.config.suppression_ms:
            return []
        self.last_label, self.last_ms = label, time_ms
        return [] if label == self.silence else [Detection(label, float(time_ms), score)]
