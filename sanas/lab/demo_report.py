"""What the demo prints: the scores of both models with word counts and 95 % intervals,
the validation points, and a verdict that claims no more than the counts support."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

# A baseline with fewer than this share of the words right has not learned them: matching
# it proves nothing, and the verdict says so instead.
LEARNED = 0.25


Z_95 = 1.959964  # the normal quantile of a two-sided 95 % interval


@dataclass(frozen=True)
class ModelScores:
    """One model at one operating point on one stream: word counts, false alarms, and the
    mean MACs per step overall and on each class of step (silence, keywords, unknown)."""

    name: str
    run: Path
    threshold: float | None
    words: int
    matched: int
    correct: int
    wrong: int
    false_alarms: int
    fa_per_hour: float
    macs_per_step: float
    macs_by_class: dict[str, float]
    steps_by_class: dict[str, int]

    @property
    def words_macs_per_step(self) -> float:
        """Mean MACs of the steps that hold a word (keyword or not)."""
        return self.macs_by_class["words"]


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` measured and wrote: the test-stream scores of the baseline
    and of the SANAS operating point chosen on validation, every validation point, the
    printed table and verdict, the figures (``notes``: why one was not drawn) and the
    seconds it all took."""

    out: Path
    baseline: ModelScores
    sanas: ModelScores
    validation: list[ModelScores]
    table: str
    verdict: str
    figures: list[Path]
    notes: list[str]
    seconds: float


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion (bounds in [0, 1]; NaN without trials): unlike
    the normal approximation it stays inside [0, 1] and is honest at 0 or n successes."""
    if trials <= 0:
        return math.nan, math.nan
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(a: int, b: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """95 % interval of the difference a/n − b/n of two proportions (Newcombe's hybrid
    score method from the two Wilson intervals). It treats the two as independent; on one
    stream they are correlated, so the interval is wider than it need be, never narrower."""
    pa, pb = a / trials, b / trials
    la, ua = wilson_interval(a, trials, z)
    lb, ub = wilson_interval(b, trials, z)
    difference = pa - pb
    return (
        difference - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2),
        difference + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2),
    )


def _count(part: int, whole: int) -> str:
    """``"45/60  75 % (63–85 %)"``: a count of words, its share and Wilson interval."""
    low, high = wilson_interval(part, whole)
    return f"{part}/{whole}  {100 * part / whole:.0f} % ({100 * low:.0f}–{100 * high:.0f} %)"


def format_demo_table(baseline: ModelScores, sanas: ModelScores, stream_minutes: float) -> str:
    """The test-stream table: word counts with 95 % Wilson intervals, false alarms, and
    mean MACs per step overall, on silence and on words, for both models side by side."""
    width = 34
    rows: list[tuple[str, str, str]] = [("", baseline.name, sanas.name)]
    for label, field in (
        ("Matched", "matched"),
        ("Correct", "correct"),
        ("Wrong", "wrong"),
    ):
        rows.append(
            (
                label,
                _count(getattr(baseline, field), baseline.words),
                _count(getattr(sanas, field), sanas.words),
            )
        )
    rows.append(
        (
            "False alarms",
            f"{baseline.false_alarms} ({baseline.fa_per_hour:.0f}/h)",
            f"{sanas.false_alarms} ({sanas.fa_per_hour:.0f}/h)",
        )
    )
    ratio = sanas.macs_per_step / baseline.macs_per_step
    rows.append(
        (
            "MACs/step, mean",
            f"{baseline.macs_per_step / 1e6:.2f}M",
            f"{sanas.macs_per_step / 1e6:.2f}M ({ratio:.2f}×)",
        )
    )
    for label, key in (
        ("  on silence", "silence"),
        ("  on keywords", "keywords"),
        ("  on unknown words", "unknown"),
    ):
        if key in baseline.macs_by_class and key in sanas.macs_by_class:
            rows.append(
                (
                    label,
                    f"{baseline.macs_by_class[key] / 1e6:.2f}M",
                    f"{sanas.macs_by_class[key] / 1e6:.2f}M",
                )
            )
    head = (
        f"test stream: {stream_minutes:g} min, {baseline.words} words of speakers never "
        "trained on; 95 % intervals in brackets"
    )
    lines = [head] + [f"{a:<20} {b:<{width}} {c}" for a, b, c in rows]
    return "\n".join(lines)


def _words(count: float) -> str:
    """``"+5 words"``, ``"-1 word"``, ``"0 words"``: a signed, rounded number of words."""
    rounded = round(count)
    return f"{rounded:+d} word{'' if abs(rounded) == 1 else 's'}" if rounded else "0 words"


def compare_counts(ours: int, theirs: int, words: int) -> tuple[str, int]:
    """One count of SANAS against the baseline's on the same ``words``: a line with the
    difference and its 95 % interval in words, and its sign (0: within noise, the interval
    holds 0; 1: SANAS higher; -1: lower)."""
    low, high = difference_interval(ours, theirs, words)
    sign = 1 if low > 0 else -1 if high < 0 else 0
    reading = {0: "within noise", 1: "SANAS higher", -1: "SANAS lower"}[sign]
    line = (
        f"{ours}/{words} vs {theirs}/{words}: {_words(ours - theirs)} "
        f"(95 % interval of the difference {_words(low * words)} to {_words(high * words)}), "
        f"{reading}"
    )
    return line, sign


def demo_verdict(baseline: ModelScores, sanas: ModelScores) -> str:
    """What the test-stream counts support: the cost ratio (overall, on silence, on words);
    Correct and Matched of SANAS against the baseline with the 95 % interval of each
    difference (:func:`compare_counts`); false alarms; and one sentence that claims no more
    than those intervals allow."""
    n = baseline.words
    cost = sanas.macs_per_step / baseline.macs_per_step
    silence = sanas.macs_by_class["silence"] / baseline.macs_by_class["silence"]
    words = sanas.words_macs_per_step / baseline.words_macs_per_step
    correct, correct_sign = compare_counts(sanas.correct, baseline.correct, n)
    matched, matched_sign = compare_counts(sanas.matched, baseline.matched, n)
    beyond = [
        f"{'more' if sign > 0 else 'fewer'} {name} words"
        for name, sign in (("Correct", correct_sign), ("Matched", matched_sign))
        if sign
    ]
    if baseline.correct < LEARNED * n:
        summary = (
            f"The baseline gets only {baseline.correct}/{n} words right: it has not learned "
            "the words, so matching it shows nothing; train longer (--epochs) or on more "
            "speakers (--per-word)."
        )
    elif beyond:
        summary = (
            f"So SANAS has {' and '.join(beyond)} than the baseline, beyond noise, "
            f"at {cost:.2f}× its compute."
        )
    else:
        summary = (
            f"So SANAS finds and labels as many words as the baseline, as far as {n} words "
            f"can tell, at {cost:.2f}× its compute."
        )
    return "\n".join(
        [
            f"verdict on the test stream ({n} words):",
            f"- compute: SANAS spends {cost:.2f}× the baseline's MACs per step "
            f"({silence:.2f}× on silence, {words:.2f}× on words)",
            f"- Correct {correct}",
            f"- Matched {matched}",
            f"- false alarms: {sanas.false_alarms} vs {baseline.false_alarms}",
            summary,
        ]
    )


def format_validation(result: DemoResult) -> str:
    """The controller's operating points on the validation stream, the chosen one marked."""
    lines = ["validation stream (chooses the threshold: most Correct, then fewest MACs):"]
    for point in result.validation:
        mark = "←" if point.threshold == result.sanas.threshold else ""
        lines.append(
            f"  τ={point.threshold:<4g} Correct {point.correct}/{point.words}  Matched "
            f"{point.matched}/{point.words}  {point.macs_per_step / 1e6:.2f}M MACs/step {mark}"
        )
    return "\n".join(lines)
