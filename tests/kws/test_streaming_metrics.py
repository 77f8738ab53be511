"""Specification of the streaming evaluation (TensorFlow speech_commands protocol).

Streams below step every 100 ms, so the default 500 ms averaging window holds up to six
rows ``[t - 500, t]``. A block ``("yes", c, n)`` is n rows with ``c`` on "yes" and
``1 - c`` on ``_silence_``; the expected times and scores are worked out by hand.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from sanas.kws.evaluation.metrics import (
    CurvePoint,
    Detection,
    DetectionConfig,
    detect,
    evaluate_stream,
    false_alarm_false_reject_curve,
    match_detections,
    operating_front,
    plot_fa_fr_curve,
)

LABELS = ("_silence_", "_unknown_", "yes", "no")
STEP_MS = 100.0
HOUR_MS = 3_600_000.0


def stream(*blocks: tuple[str, float, int], step_ms: float = STEP_MS):
    """Times (T,) and posteriors (T, 4) for consecutive blocks of (label, confidence, rows)."""
    rows = []
    for label, confidence, count in blocks:
        row = np.zeros(len(LABELS))
        row[LABELS.index(label)] += confidence
        row[LABELS.index("_silence_")] += 1.0 - confidence
        rows += [row] * count
    return np.arange(len(rows)) * step_ms, np.array(rows)


def fired(times, posteriors, config=None) -> list[tuple[str, float]]:
    return [(d.label, d.time_ms) for d in detect(times, posteriors, LABELS, config)]


QUIET = ("_silence_", 1.0, 10)  # one second of silence


# --- detection (RecognizeCommands) -------------------------------------------------------


def test_a_clean_word_fires_once_when_the_window_average_passes_the_threshold():
    # "yes" occupies 1000..1900 ms. At 1300 the window holds 4/6 "yes" rows (0.67 <= 0.7);
    # at 1400 it holds 5/6 = 0.83 > 0.7: one detection, scored by the window average.
    times, posteriors = stream(QUIET, ("yes", 1.0, 10), QUIET)
    (detection,) = detect(times, posteriors, LABELS)
    assert (detection.label, detection.time_ms) == ("yes", 1400.0)
    assert detection.score == pytest.approx(5 / 6)


def test_a_clean_word_is_scored_correct():
    times, posteriors = stream(QUIET, ("yes", 1.0, 10), QUIET)
    score = evaluate_stream(times, posteriors, LABELS, [("yes", 1000.0)], duration_ms=3000.0)
    assert (score.matched, score.correct, score.wrong, score.false_alarm) == (1, 1, 0, 0)
    assert (score.matched_pct, score.correct_pct, score.false_alarm_pct) == (100.0, 100.0, 0.0)


def test_averaging_smooths_away_isolated_peaks():
    # Rows alternate 1.0 / 0.3 on "yes": every other row passes 0.7, their mean (0.65) never
    # does. Alternating 1.0 / 0.6 averages 0.8 and fires.
    spiky = [("yes", 1.0, 1), ("yes", 0.3, 1)] * 10
    assert fired(*stream(QUIET, *spiky, QUIET)) == []
    steady = [("yes", 1.0, 1), ("yes", 0.6, 1)] * 10
    assert [label for label, _ in fired(*stream(QUIET, *steady, QUIET))] == ["yes"]


def test_the_threshold_is_strict():
    times, posteriors = stream(QUIET, ("yes", 0.75, 20), QUIET)
    assert fired(times, posteriors, DetectionConfig(detection_threshold=0.74)) != []
    assert fired(times, posteriors, DetectionConfig(detection_threshold=0.76)) == []


def test_minimum_count_delays_the_first_decision():
    # A stream that starts on "yes": the window holds 1, 2, 3, ... rows at 0, 100, 200, ...
    times, posteriors = stream(("yes", 1.0, 10))
    assert fired(times, posteriors) == [("yes", 200.0)]
    assert fired(times, posteriors, DetectionConfig(minimum_count=5)) == [("yes", 400.0)]


def test_the_window_must_also_span_a_quarter_of_its_length():
    # At 10 ms steps three rows exist at 20 ms, but they span less than 500 / 4 = 125 ms.
    times, posteriors = stream(("yes", 1.0, 50), step_ms=10.0)
    assert fired(times, posteriors) == [("yes", 130.0)]


def test_suppression_blocks_any_word_within_1500_ms_of_the_last_detection():
    # "yes" fires at 1400; "no" (2000..2700) peaks at 2400..2800, under 1500 ms later.
    # TensorFlow requires a new label AND the suppression time, so "no" is dropped.
    times, posteriors = stream(QUIET, ("yes", 1.0, 10), ("no", 1.0, 8), QUIET, QUIET)
    assert fired(times, posteriors) == [("yes", 1400.0)]
    assert fired(times, posteriors, DetectionConfig(suppression_ms=500.0)) == [
        ("yes", 1400.0),
        ("no", 2400.0),
    ]


def test_a_different_word_fires_once_the_suppression_time_has_passed():
    # "no" follows "yes" without silence: it wins the window from 2400 on but may fire only
    # when more than 1500 ms have passed (2900 - 1400 is not > 1500); at 3000 it is 5/6.
    times, posteriors = stream(QUIET, ("yes", 1.0, 10), ("no", 1.0, 10), QUIET)
    assert fired(times, posteriors) == [("yes", 1400.0), ("no", 3000.0)]


def test_a_word_held_long_fires_once():
    # The same label never fires twice in a row, however long it lasts.
    times, posteriors = stream(QUIET, ("yes", 1.0, 40), QUIET)
    assert fired(times, posteriors) == [("yes", 1400.0)]


def test_silence_is_never_reported_but_rearms_the_detector():
    # After "yes" fires at 1400, silence wins the vote and fires (unreported) at 3000, the
    # first time 1500 ms have passed; the next "yes" (3100..) then fires at once, at 3500.
    times, posteriors = stream(
        QUIET, ("yes", 1.0, 10), ("_silence_", 1.0, 11), ("yes", 1.0, 10), QUIET
    )
    assert fired(times, posteriors) == [("yes", 1400.0), ("yes", 3500.0)]


def test_unknown_is_reported_like_any_word():
    times, posteriors = stream(QUIET, ("_unknown_", 1.0, 10), QUIET)
    assert fired(times, posteriors) == [("_unknown_", 1400.0)]


def test_an_empty_stream_has_no_detections():
    assert detect(np.zeros(0), np.zeros((0, len(LABELS))), LABELS) == []


# --- matching (CalculateAccuracyStats) ---------------------------------------------------


def score_of(detections, ground_truth, **kwargs):
    kwargs.setdefault("duration_ms", HOUR_MS)
    return match_detections(
        [Detection(label, time, 1.0) for label, time in detections], ground_truth, **kwargs
    )


def counts(score) -> tuple[int, int, int, int, int]:
    return (score.matched, score.correct, score.wrong, score.false_alarm, score.ground_truth)


def test_a_wrong_label_within_tolerance_is_wrong_not_false_alarm():
    assert counts(score_of([("no", 1500.0)], [("yes", 1000.0)])) == (1, 0, 1, 0, 1)


def test_the_tolerance_bounds_are_inclusive():
    truth = [("yes", 1000.0)]
    assert counts(score_of([("yes", 1750.0)], truth)) == (1, 1, 0, 0, 1)
    assert counts(score_of([("yes", 1750.5)], truth)) == (0, 0, 0, 1, 1)


def test_a_detection_far_from_any_word_is_a_false_alarm():
    assert counts(score_of([("yes", 5000.0)], [("yes", 1000.0)])) == (0, 0, 0, 1, 1)


def test_the_earliest_word_in_range_is_taken_even_if_a_later_one_would_be_correct():
    truth = [("no", 1000.0), ("yes", 1600.0)]
    assert counts(score_of([("yes", 1300.0)], truth)) == (1, 0, 1, 0, 2)


def test_tensorflow_unit_test_case():
    # accuracy_utils_test.cc, CalculateAccuracyStats, with a 500 ms tolerance.
    score = score_of(
        [("a", 1200.0), ("b", 5000.0), ("a", 8700.0)],
        [("a", 1000.0), ("b", 9000.0)],
        config=DetectionConfig(time_tolerance_ms=500.0),
    )
    assert counts(score) == (2, 1, 1, 1, 2)


def test_ground_truth_order_does_not_matter():
    truth = [("yes", 9000.0), ("no", 1000.0)]
    assert counts(score_of([("no", 1100.0), ("yes", 9100.0)], truth)) == (2, 2, 0, 0, 2)


def test_conventions_differ_on_a_word_detected_twice():
    # Both detections take the same word: the first is correct, the second wrong.
    detections, truth = [("yes", 1000.0), ("yes", 1600.0)], [("yes", 1000.0)]
    tensorflow = score_of(detections, truth, convention="tensorflow")
    reference = score_of(detections, truth, convention="reference")
    assert counts(tensorflow) == (1, 1, 1, 0, 1)
    assert counts(reference) == (2, 1, 1, 0, 1)
    assert (tensorflow.matched_pct, reference.matched_pct) == (100.0, 200.0)


def test_false_alarms_per_hour():
    # Three false alarms in half an hour: 6 per hour; as % of the 4 words: 75 %.
    truth = [("yes", t) for t in (10_000.0, 20_000.0, 30_000.0, 40_000.0)]
    detections = [("no", t) for t in (100_000.0, 200_000.0, 300_000.0)]
    score = score_of(detections, truth, duration_ms=HOUR_MS / 2)
    assert score.fa_per_hour == pytest.approx(6.0)
    assert score.false_alarm_pct == pytest.approx(75.0)


def test_percentages_are_nan_without_ground_truth_but_fa_per_hour_is_not():
    score = score_of([("yes", 0.0)], [], duration_ms=HOUR_MS)
    assert math.isnan(score.matched_pct)
    assert score.fa_per_hour == 1.0


def test_to_dict_is_flat_and_json_ready():
    record = score_of([("yes", 1000.0)], [("yes", 1000.0)]).to_dict()
    assert record["correct"] == 1 and record["correct_pct"] == 100.0
    assert record["convention"] == "tensorflow" and record["fa_per_hour"] == 0.0
    assert json.loads(json.dumps(record)) == record


# --- false-alarm / false-reject curve ----------------------------------------------------


def curve_stream():
    """Spurious "no" bumps at 0.75, 0.85 and 0.95, "yes" words at 0.8 and 0.9, an unknown
    word never detected; 36 s = 0.01 h, so each false alarm is 100 per hour."""
    gap = ("_silence_", 1.0, 30)
    times, posteriors = stream(
        gap,
        ("no", 0.75, 10),
        gap,
        ("yes", 0.8, 10),
        gap,
        ("no", 0.85, 10),
        gap,
        ("yes", 0.9, 10),
        gap,
        ("no", 0.95, 10),
        ("_silence_", 1.0, 160),
    )
    truth = [("yes", 7000.0), ("yes", 15000.0), ("_unknown_", 30000.0)]
    assert times[-1] + STEP_MS == 36_000.0
    return times, posteriors, truth, 36_000.0


def test_curve_points_are_worked_out_by_hand():
    times, posteriors, truth, duration = curve_stream()
    thresholds = [0.5, 0.78, 0.82, 0.88, 0.92, 0.97]
    points = false_alarm_false_reject_curve(
        times, posteriors, LABELS, truth, duration, thresholds=thresholds
    )
    assert [p.threshold for p in points] == thresholds
    assert [p.false_alarms_per_hour for p in points] == pytest.approx([300, 200, 200, 100, 100, 0])
    # The unknown word is not a keyword: the rate is over the two "yes" words.
    assert [p.false_reject_rate for p in points] == pytest.approx([0, 0, 0.5, 0.5, 1, 1])


def test_curve_is_monotone_when_detections_do_not_interact():
    times, posteriors, truth, duration = curve_stream()
    points = false_alarm_false_reject_curve(times, posteriors, LABELS, truth, duration)
    fa = [p.false_alarms_per_hour for p in points]
    fr = [p.false_reject_rate for p in points]
    assert all(a >= b for a, b in itertools.pairwise(fa))
    assert all(a <= b for a, b in itertools.pairwise(fr))


def test_curve_agrees_with_evaluate_stream_at_the_configured_threshold():
    times, posteriors, truth, duration = curve_stream()
    (point,) = false_alarm_false_reject_curve(
        times, posteriors, LABELS, truth, duration, thresholds=[0.7]
    )
    assert (
        point.false_alarms_per_hour
        == evaluate_stream(times, posteriors, LABELS, truth, duration).fa_per_hour
    )


def test_suppression_can_make_a_higher_threshold_raise_false_alarms():
    # At 0.7 "yes" (0.75) fires at 1500 and suppresses the spurious "no" (0.9) that follows;
    # at 0.8 "yes" is missed, so "no" fires at 2500, 1500 ms from the word: a false alarm.
    times, posteriors = stream(QUIET, ("yes", 0.75, 10), ("no", 0.9, 8), QUIET, QUIET)
    low, high = false_alarm_false_reject_curve(
        times, posteriors, LABELS, [("yes", 1000.0)], HOUR_MS, thresholds=[0.7, 0.8]
    )
    assert (low.false_alarms_per_hour, high.false_alarms_per_hour) == (0.0, 1.0)


def test_operating_front_keeps_the_best_false_reject_rate_per_false_alarm_level():
    points = [
        CurvePoint(0.9, 0.0, 0.9),
        CurvePoint(0.8, 1.0, 0.95),  # more false alarms and more rejects: never worth it
        CurvePoint(0.7, 0.0, 0.6),  # no false alarm either, fewer rejects
        CurvePoint(0.5, 2.0, 0.4),
        CurvePoint(0.3, 3.0, math.nan),
    ]
    front = operating_front(points)
    assert [(p.false_alarms_per_hour, p.false_reject_rate) for p in front] == [
        (0.0, 0.6),
        (2.0, 0.4),
    ]


def test_plot_writes_an_image(tmp_path):
    curves = {
        "a": [CurvePoint(0.5, 0.0, 0.1), CurvePoint(0.9, 2.0, 0.3)],
        "b": [CurvePoint(0.5, 10.0, 0.05)],
    }
    path = plot_fa_fr_curve(curves, tmp_path / "plots" / "fa_fr.png")
    assert path.read_bytes().startswith(b"\x89PNG")


# --- input validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("averaging_window_ms", 0.0),
        ("detection_threshold", 1.5),
        ("detection_threshold", math.nan),
        ("suppression_ms", -1.0),
        ("time_tolerance_ms", math.inf),
        ("minimum_count", 0),
        ("minimum_count", 2.5),
    ],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"DetectionConfig.{field}"):
        DetectionConfig(**{field: value})


GOOD_TIMES, GOOD_POSTERIORS = stream(QUIET)


@pytest.mark.parametrize(
    ("times", "posteriors", "labels", "message"),
    [
        (GOOD_TIMES[:, None], GOOD_POSTERIORS, LABELS, "times_ms must be 1-D"),
        (GOOD_TIMES[:5], GOOD_POSTERIORS, LABELS, r"shape \(T, C\)"),
        (GOOD_TIMES, GOOD_POSTERIORS, LABELS[:3], "4 columns but 3 labels"),
        (GOOD_TIMES, GOOD_POSTERIORS, ("a", "a", "b", "c"), "distinct"),
        (GOOD_TIMES[::-1], GOOD_POSTERIORS, LABELS, "non-decreasing"),
        (np.where(GOOD_TIMES == 0, np.nan, GOOD_TIMES), GOOD_POSTERIORS, LABELS, "finite"),
        (GOOD_TIMES, np.full_like(GOOD_POSTERIORS, np.nan), LABELS, "posteriors must be finite"),
    ],
)
def test_stream_errors(times, posteriors, labels, message):
    with pytest.raises(ValueError, match=message):
        detect(times, posteriors, labels)


@pytest.mark.parametrize(
    ("truth", "kwargs", "message"),
    [
        ([("yes",)], {}, r"ground_truth\[0\] must be a \(label, time_ms\) pair"),
        ([("yes", 0.0), (3, 1.0)], {}, r"ground_truth\[1\]"),
        ([("yes", math.nan)], {}, r"ground_truth\[0\] time_ms"),
        ([], {"duration_ms": 0.0}, "duration_ms"),
        ([], {"convention": "paper"}, "convention"),
    ],
)
def test_matching_errors(truth, kwargs, message):
    with pytest.raises(ValueError, match=message):
        score_of([], truth, **kwargs)
